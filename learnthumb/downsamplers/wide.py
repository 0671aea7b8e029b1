"""The wide thumbnail: bicubic channels plus learned channels of each cell's pixels."""

from __future__ import annotations

import torch
from torch import nn

from learnthumb._checks import check_choice, check_ints
from learnthumb.downsamplers._base import _INTERPOLATION_MODES, _interpolate_down
from learnthumb.downsamplers.space_to_depth import SpaceToDepthDownsampler


class WideDownsampler(nn.Module):
    """A bicubic thumbnail plus ``extra_channels`` learned channels of the detail it drops.

    ``thumbnail = concat(interpolate(x), mix(pixel_unshuffle(x)))``: the first ``C`` channels
    are the fixed antialiased interpolation (bicubic by default), the next ``extra_channels``
    a learned convolution (:class:`SpaceToDepthDownsampler`, all weights at PyTorch's default
    initialisation) of all ``C * s^2`` pixels of each ``s x s`` cell. The thumbnail has the
    same height and width as a 3-channel one, more channels, and no pixel thrown away before
    the learned layer. The model reading it takes ``C + extra_channels`` input channels: widen
    its first convolution with :func:`learnthumb.widen_input_conv`, whose new weights start at
    zero, so the student starts exactly as the same model on the bicubic thumbnail and learns
    how much of the extra channels to use. Beyond the paper (our design, chosen by the quality
    suite, docs/quality.md).

    Args:
        scale: downsampling factor.
        extra_channels: learned channels after the interpolated ones; by default enough for
            half of a cell's ``C * s^2`` values in all (21 at 4x and 3 at 2x for RGB), the
            setting the quality suite measured (docs/quality.md).
        kernel_size: odd size of the learned convolution, at the thumbnail resolution.
        mode: interpolation of the first channels (as :class:`InterpolateDownsampler`).
        antialias: antialiasing of the interpolation.
        in_channels: channels of the input image.

    Attributes:
        out_channels: ``in_channels + extra_channels``, the input width the model needs.

    Shape:
        - input: :math:`(B, C, H, W)`, :math:`C` = ``in_channels``.
        - output: :math:`(B, C + extra, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`: the
          interpolation in channels :math:`[0, C)`, the learned channels after it.

    Example:
        >>> from learnthumb import InterpolateDownsampler
        >>> down = WideDownsampler(4)
        >>> x = torch.rand(2, 3, 37, 50)
        >>> down(x).shape
        torch.Size([2, 24, 10, 13])
        >>> torch.equal(down(x)[:, :3], InterpolateDownsampler(4)(x))
        True
    """

    def __init__(
        self,
        scale: int = 4,
        extra_channels: int | None = None,
        kernel_size: int = 1,
        mode: str = "bicubic",
        antialias: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_ints(in_channels=in_channels, scale=scale)
        if extra_channels is None:
            # Half of a cell's values in all: 21 learned channels at 4x, 3 at 2x (RGB).
            extra_channels = max(1, in_channels * scale * scale // 2 - in_channels)
        check_ints(extra_channels=extra_channels)
        self.detail = SpaceToDepthDownsampler(
            scale, out_channels=extra_channels, kernel_size=kernel_size, in_channels=in_channels
        )
        self.mode = check_choice(mode, "mode", _INTERPOLATION_MODES)
        self.antialias = bool(antialias)
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = in_channels + extra_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation for every learned weight (no area start)."""
        self.detail.mix.reset_parameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        detail = self.detail(images)  # first: its check validates the images for both branches
        base = _interpolate_down(images, self.scale, self.mode, self.antialias)
        return torch.cat([base, detail], dim=1)

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, mode={self.mode!r}, antialias={self.antialias}, "
            f"out_channels={self.out_channels}"
        )
