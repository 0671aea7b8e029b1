"""The space-to-depth thumbnail: ``pixel_unshuffle`` plus a learned channel mixing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb._checks import check_ints
from learnthumb.downsamplers._base import _check_odd_kernel, _CheckedDownsampler


class SpaceToDepthDownsampler(_CheckedDownsampler):
    """Space-to-depth ("wide") thumbnail: ``pixel_unshuffle`` plus a learned channel mixing.

    Each ``scale x scale`` cell of the image becomes one thumbnail pixel holding all of the
    cell's ``C * s^2`` values (:func:`torch.nn.functional.pixel_unshuffle`); a convolution of
    ``kernel_size`` (1 or 3, any odd size) mixes them to ``out_channels``. No pixel is thrown
    away before the learned layer, and it is the cheapest learned baseline: one convolution
    at the thumbnail resolution. Inputs whose sides are not multiples of ``scale`` are padded
    with zeros on the bottom and right first, so the output is exactly :func:`thumbnail_size`
    (a partial border cell averages its zeros in at initialisation).

    Initialisation (our choice): when ``out_channels == in_channels`` the mixing starts as the
    area average, output channel ``c`` being the mean of channel ``c`` over each cell (zero
    bias; for ``kernel_size > 1`` only the centre tap is set), so at initialisation the module
    equals ``F.avg_pool2d(x, scale)`` on sizes that are multiples of ``scale``. Otherwise the
    first ``min(in_channels, out_channels)`` outputs start as that area average and the rest
    keep PyTorch's default initialisation. ``reset_parameters`` restores this state.

    Args:
        scale: downsampling factor (the cell size).
        out_channels: channels of the thumbnail; 3 by default, more for a student whose stem
            is widened to take them.
        kernel_size: odd size of the mixing convolution, at the thumbnail resolution.
        in_channels: channels of the input image.

    Shape:
        - input: :math:`(B, C_{in}, H, W)`, zero-padded on the bottom and right to multiples
          of :math:`s`.
        - output: :math:`(B, C_{out}, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`, one pixel per
          (padded) cell, :math:`C_{out}` = ``out_channels``.

    Example:
        >>> down = SpaceToDepthDownsampler(scale=4, out_channels=8)
        >>> down.mix.in_channels  # the 3 * 4 * 4 values of a cell
        48
        >>> down(torch.rand(2, 3, 37, 50)).shape  # padded to 40 x 52 first
        torch.Size([2, 8, 10, 13])
        >>> x = torch.rand(1, 3, 16, 24)
        >>> area = torch.nn.functional.avg_pool2d(x, 4)
        >>> torch.allclose(SpaceToDepthDownsampler(4)(x), area, atol=1e-6)
        True
    """

    def __init__(
        self, scale: int = 4, out_channels: int = 3, kernel_size: int = 1, in_channels: int = 3
    ) -> None:
        super().__init__()
        check_ints(scale=scale, out_channels=out_channels, in_channels=in_channels)
        _check_odd_kernel(kernel_size)
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.mix = nn.Conv2d(
            in_channels * scale * scale, out_channels, kernel_size, padding=kernel_size // 2
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Default initialisation, then the area average on the first channels (see above)."""
        self.mix.reset_parameters()
        cell = self.scale * self.scale
        centre = self.kernel_size // 2
        for channel in range(min(self.in_channels, self.out_channels)):
            self.mix.weight[channel].zero_()
            # pixel_unshuffle puts channel c's cell at input channels c*s^2 .. (c+1)*s^2 - 1.
            self.mix.weight[channel, channel * cell : (channel + 1) * cell, centre, centre] = (
                1.0 / cell
            )
            self.mix.bias[channel] = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check_input(images)
        height, width = images.shape[-2], images.shape[-1]
        pad_bottom = (self.scale - height % self.scale) % self.scale
        pad_right = (self.scale - width % self.scale) % self.scale
        x = F.pad(images, [0, pad_right, 0, pad_bottom])
        if x.shape[0] == 0:
            # pixel_unshuffle returns an empty batch as it is, without the cells' channels.
            size = [0, x.shape[1] * self.scale * self.scale]
            size += [x.shape[2] // self.scale, x.shape[3] // self.scale]
            return self.mix(x.new_zeros(size))
        return self.mix(F.pixel_unshuffle(x, self.scale))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
