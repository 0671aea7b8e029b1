"""Interpolation plus a learned residual that starts at zero."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from learnthumb.downsamplers._base import _check_image
from learnthumb.downsamplers.conv import ConvDownsampler
from learnthumb.downsamplers.interpolate import InterpolateDownsampler


class ResidualDownsampler(nn.Module):
    """Interpolation plus a learned residual that starts at zero.

    ``thumbnail = interpolate(x) + residual(x)`` where ``residual`` is a
    :class:`ConvDownsampler` body whose last convolution is initialised to zero and has no
    final ReLU (so it can both add and remove). At initialisation the module equals the
    interpolation baseline, which removes the cliff the paper reports for one-stage training
    from random initialisation (Table 5: worse than bicubic). Beyond the paper.

    Args:
        scale: downsampling factor.
        hidden_channels: channels of the residual branch.
        num_layers: convolutions in the residual branch.
        kernel_size: as in :class:`ConvDownsampler`.
        mode: interpolation of the base branch.
        antialias: antialiasing of the base branch.
        in_channels: image channels.
        centred: centre the residual branch's output pixels on their cells, as the
            interpolation's are (see :class:`ConvDownsampler`); ``False`` keeps the paper
            module's layers, whose output sits 1.5 input pixels up and left at 4x.

    Shape:
        - input: :math:`(B, C, H, W)`, :math:`C` = ``in_channels``.
        - output: that of the interpolation, to which the residual branch adds:
          :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`.

    Example:
        >>> down = ResidualDownsampler(4)
        >>> x = torch.rand(1, 3, 16, 16)
        >>> torch.equal(down(x), InterpolateDownsampler(4)(x))
        True
    """

    def __init__(
        self,
        scale: int = 4,
        hidden_channels: int = 12,
        num_layers: int = 2,
        kernel_size: int | Sequence[int] | None = None,
        mode: str = "bicubic",
        antialias: bool = True,
        in_channels: int = 3,
        centred: bool = False,
    ) -> None:
        super().__init__()
        self.base = InterpolateDownsampler(scale, mode=mode, antialias=antialias)
        self.residual = ConvDownsampler(
            scale,
            hidden_channels=hidden_channels,
            num_layers=num_layers,
            kernel_size=kernel_size,
            in_channels=in_channels,
            final_activation=False,
            centred=centred,
        )
        self.scale = scale
        self.in_channels = in_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default initialisation for the residual body, zeros for its last layer."""
        self.residual.reset_parameters()
        last = self.residual.convs[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_image(images, self.in_channels)
        return self.base(images) + self.residual(images)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
