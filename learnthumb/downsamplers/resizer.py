"""The learned resizer of Talebi & Milanfar (ICCV 2021) at an integer downsampling scale."""

from __future__ import annotations

import torch
from torch import nn

from learnthumb._checks import check_choice, check_int, check_ints
from learnthumb.downsamplers._base import (
    _CheckedDownsampler,
    _interpolate_down,
    _resize_smooth,
    _thumbnail_hw,
)

#: Negative slope of the learned resizer's LeakyReLUs (the value Talebi & Milanfar use).
_RESIZER_SLOPE = 0.2
_RESIZER_MODES = ("bilinear", "bicubic")


class _ResizerBlock(nn.Module):
    """A residual block at the target resolution: ``x + BN(conv(LReLU(BN(conv(x)))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # The convolutions feed a BatchNorm, which has its own shift: no bias.
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.LeakyReLU(_RESIZER_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return x + self.bn2(self.conv2(y))


class LearnedResizer(_CheckedDownsampler):
    """The learned resizer of Talebi & Milanfar, "Learning to Resize Images for Computer
    Vision Tasks" (ICCV 2021, Fig. 2), at an integer downsampling ``scale``.

    ``thumbnail = resize(x) + cnn(x)``: a skip path that is a plain ``mode`` resize of the
    image to the thumbnail size, plus a CNN branch: ``conv 7x7 (channels) -> LeakyReLU ->
    conv 1x1 -> LeakyReLU -> BatchNorm``, a bilinear resize of these features to the thumbnail
    size, ``num_blocks`` residual blocks there (``conv3x3 -> BN -> LeakyReLU -> conv3x3 -> BN``
    plus identity), ``conv3x3 -> BN`` plus the resized features, and a final ``conv 7x7`` back
    to the image's channels. LeakyReLUs have slope 0.2. The paper's defaults are
    ``channels=16`` (its ``n``) and ``num_blocks=1`` (its ``r``).

    Beyond the paper (our choice): the final convolution starts at zero, so at initialisation
    the module *is* its interpolation (``InterpolateDownsampler(scale, mode, antialias)``):
    training starts from the baseline rather than below it, and with no final activation no
    channel can die. ``reset_parameters`` restores this state.

    The output size is exactly :func:`thumbnail_size` for every ``H, W >= 1``, computed from
    the input's shape inside ``forward`` so that traced and exported graphs keep height and
    width dynamic. In training mode BatchNorm needs more than one value per channel: a batch
    of one image whose thumbnail is ``1 x 1`` raises PyTorch's ``ValueError`` (eval mode has no
    such limit). Exporting with ``antialias=True`` needs ``torch.onnx.export(..., dynamo=True)``
    (the TorchScript-based exporter has no antialiased resize), with dynamic dimensions whose
    minimum gives thumbnail sides of at least 2 (``torch.export.Dim("height", min=5)`` at 4x).

    Args:
        scale: downsampling factor.
        channels: filters of the CNN branch (``n`` in the paper).
        num_blocks: residual blocks at the target resolution (``r`` in the paper); 0 allowed.
        mode: ``"bilinear"`` (the paper's) or ``"bicubic"`` resize of the skip path. The
            features are always resized bilinearly, as in the paper.
        antialias: low-pass filter before both resizes (as :class:`InterpolateDownsampler`).
        in_channels: channels of the image and of the thumbnail.

    Shape:
        - input: :math:`(B, C, H, W)`, :math:`C` = ``in_channels``; in training mode more
          than one thumbnail pixel per batch (BatchNorm).
        - output: :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`, the size of the
          skip path's resize.

    Example:
        >>> from learnthumb import InterpolateDownsampler
        >>> down = LearnedResizer(scale=4, num_blocks=2)
        >>> len(down.blocks), down.tail.out_channels
        (2, 3)
        >>> x = torch.rand(2, 3, 37, 50)
        >>> torch.equal(down(x), InterpolateDownsampler(4, mode="bilinear")(x))  # at init
        True
    """

    def __init__(
        self,
        scale: int = 4,
        channels: int = 16,
        num_blocks: int = 1,
        mode: str = "bilinear",
        antialias: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_ints(scale=scale, channels=channels, in_channels=in_channels)
        check_int(num_blocks, "num_blocks", minimum=0)
        check_choice(mode, "mode", _RESIZER_MODES)
        self.scale = scale
        self.channels = channels
        self.num_blocks = num_blocks
        self.mode = mode
        self.antialias = bool(antialias)
        self.in_channels = in_channels
        self.head = nn.Conv2d(in_channels, channels, 7, padding=3)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.head_bn = nn.BatchNorm2d(channels)
        self.blocks = nn.ModuleList(_ResizerBlock(channels) for _ in range(num_blocks))
        self.merge = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.merge_bn = nn.BatchNorm2d(channels)
        self.tail = nn.Conv2d(channels, in_channels, 7, padding=3)
        self.act = nn.LeakyReLU(_RESIZER_SLOPE)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default initialisation and fresh BatchNorm statistics; zeros for the last conv."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check_input(images)
        size = _thumbnail_hw(images, self.scale)
        resized = _interpolate_down(images, self.scale, self.mode, self.antialias)
        x = self.act(self.head(images))
        x = self.head_bn(self.act(self.pointwise(x)))
        features = _resize_smooth(x, size, "bilinear", self.antialias)
        x = features
        for block in self.blocks:
            x = block(x)
        x = self.merge_bn(self.merge(x)) + features
        return resized + self.tail(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode!r}, antialias={self.antialias}"
