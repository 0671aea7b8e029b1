"""Fixed interpolation to the thumbnail size: the bicubic baseline and its kin."""

from __future__ import annotations

import torch
from torch import nn

from learnthumb._checks import check_choice, check_int
from learnthumb.downsamplers._base import _INTERPOLATION_MODES, _check_image, _interpolate_down


class InterpolateDownsampler(nn.Module):
    """Fixed interpolation to the thumbnail size: the paper's "Bicubic" baseline.

    Uses :func:`torch.nn.functional.interpolate` with an explicit output size, so the
    result is exactly :func:`thumbnail_size` for every input size.

    Args:
        scale: downsampling factor.
        mode: ``"bicubic"`` (default), ``"bilinear"``, ``"area"`` or ``"nearest"``.
        antialias: low-pass filter before resampling (bicubic and bilinear only), as
            PIL and OpenCV's ``INTER_AREA`` do when shrinking. Without it 4x bicubic aliases.

    Shape:
        - input: :math:`(B, C, H, W)`, any number of channels (nothing is learned).
        - output: :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`, the input's dtype.

    Example:
        >>> InterpolateDownsampler(4)(torch.rand(1, 5, 5, 7)).shape
        torch.Size([1, 5, 2, 2])
        >>> x = torch.rand(1, 3, 16, 24)
        >>> area = InterpolateDownsampler(4, mode="area")
        >>> torch.allclose(area(x), torch.nn.functional.avg_pool2d(x, 4))
        True
    """

    def __init__(self, scale: int = 4, mode: str = "bicubic", antialias: bool = True) -> None:
        super().__init__()
        self.scale = check_int(scale, "scale", minimum=1)
        self.mode = check_choice(mode, "mode", _INTERPOLATION_MODES)
        self.antialias = bool(antialias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_image(images, None)
        return _interpolate_down(images, self.scale, self.mode, self.antialias)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode!r}, antialias={self.antialias}"
