"""Downsamplers: modules that turn an image into its thumbnail.

Every downsampler maps ``(B, C, H, W)`` to ``(B, C, ceil(H / s), ceil(W / s))`` for any
``H, W >= 1`` (see :func:`thumbnail_size`), so they are interchangeable in front of a model.

- :class:`ConvDownsampler` is the learned module of ThumbDet (Fig. 3 of the paper) and the
  variants of its Table 4.
- :class:`InterpolateDownsampler` is the fixed baseline (bicubic, bilinear, area, nearest).
- :class:`ResidualDownsampler` is bicubic plus a learned residual that starts at zero, so at
  initialisation it *is* the bicubic baseline.
- :class:`LearnedResizer` is the learned resizer of Talebi & Milanfar (ICCV 2021): a resize
  plus a residual CNN at the target resolution, equal to its interpolation at initialisation.
- :class:`SpaceToDepthDownsampler` is the "wide" thumbnail: ``pixel_unshuffle`` plus a learned
  channel mixing, equal to the area average at initialisation.
- :class:`WideDownsampler` is bicubic plus learned extra channels of each cell's pixels, for a
  model whose first convolution takes them (:func:`learnthumb.widen_input_conv`).

Names usable from strings (CLI flags, configs) live in a registry: :func:`create_downsampler`,
:func:`list_downsamplers`, :func:`register_downsampler`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb._checks import (
    check_choice,
    check_floating,
    check_int,
    check_ndim,
)

__all__ = [
    "RECOMMENDED_DOWNSAMPLER",
    "ConvDownsampler",
    "InterpolateDownsampler",
    "LearnedResizer",
    "ResidualDownsampler",
    "SpaceToDepthDownsampler",
    "WideDownsampler",
    "create_downsampler",
    "downsample_padding_mask",
    "list_downsamplers",
    "register_downsampler",
    "thumbnail_size",
]


def thumbnail_size(size: Sequence[int], scale: int) -> tuple[int, int]:
    """Size of the thumbnail of an image of ``size`` at a downsampling ``scale``.

    Args:
        size: ``(H, W)`` of the original image, each at least 1.
        scale: the integer downsampling factor ``s``.

    Returns:
        ``(ceil(H / s), ceil(W / s))``: a partial cell at the border still gives a pixel.

    Example:
        >>> thumbnail_size((37, 50), 4)
        (10, 13)
    """
    check_int(scale, "scale", minimum=1)
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {tuple(size)}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be >= 1 in both dimensions, got {(height, width)}")
    return math.ceil(height / scale), math.ceil(width / scale)


def _scale_between(size: Sequence[int], thumbnail: Sequence[int]) -> int | None:
    """The integer factor ``s`` with ``thumbnail == ceil(size / s)``, or ``None`` if none fits."""
    height, width = (int(v) for v in size)
    scale = max(1, round(height / int(thumbnail[0])))
    if thumbnail_size((height, width), scale) != tuple(int(v) for v in thumbnail):
        return None
    return scale


def downsample_padding_mask(mask: torch.Tensor, scale: int) -> torch.Tensor:
    """Reduce a padding mask to the thumbnail size.

    A thumbnail pixel is padding only when its whole ``scale x scale`` cell of the original is
    padding; one valid pixel in the cell makes it valid. Cells that overhang the border count
    only their pixels inside the image.

    Args:
        mask: bool padding mask, True = padded pixel (the DETR convention).
        scale: the integer downsampling factor.

    Shape:
        - mask: :math:`(B, H, W)`
        - output: :math:`(B, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`, bool.

    Example:
        >>> mask = torch.zeros(1, 5, 7, dtype=torch.bool)
        >>> mask[:, :, 4:] = True
        >>> downsample_padding_mask(mask, 4)[0]
        tensor([[False,  True],
                [False,  True]])
    """
    check_ndim(mask, 3, "mask", "(B, H, W)")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = padded), got {mask.dtype}")
    check_int(scale, "scale", minimum=1)
    if scale == 1:
        return mask.clone()
    valid = (~mask).to(torch.float32).unsqueeze(1)  # (B, 1, H, W)
    # ceil_mode keeps the partial border cells; max-pooling ignores their out-of-image part.
    any_valid = F.max_pool2d(valid, kernel_size=scale, stride=scale, ceil_mode=True)
    return any_valid.squeeze(1) == 0  # (B, ceil(H/s), ceil(W/s))


def _check_image(images: torch.Tensor, channels: int | None, name: str = "images") -> None:
    check_ndim(images, 4, name, "(B, C, H, W)")
    check_floating(images, name)
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (B, {channels}, H, W), "
            f"got shape {tuple(images.shape)}"
        )


def _split_scale(scale: int, num_layers: int) -> list[int]:
    """Per-layer strides whose product is ``scale``: factors of 2 first, then the rest."""
    strides = []
    remaining = scale
    for layer in range(num_layers):
        if layer == num_layers - 1:
            strides.append(remaining)
        elif remaining % 2 == 0 and remaining > 1:
            strides.append(2)
            remaining //= 2
        else:
            strides.append(remaining)
            remaining = 1
    return strides


class ConvDownsampler(nn.Module):
    """The learned downsampling module of ThumbDet (Fig. 3, Sec. 3.3 of the paper).

    A stack of strided convolutions, each followed by a ReLU: ``conv -> ReLU -> conv -> ReLU``
    by default, 12 hidden channels, strides that multiply to ``scale`` (2 and 2 for 4x), 3x3
    kernels for 4x and 5x5 kernels for 2x (Sec. 4.2). Padding ``(k - 1) / 2`` makes every
    layer map ``n`` pixels to ``ceil(n / stride)``, so the output is exactly
    :func:`thumbnail_size`. Table 4's ablation variants are ``num_layers=1, kernel_size=5``
    (one stride-4 conv) and ``num_layers=5, kernel_size=(7, 5, 3, 1, 1)``.

    Args:
        scale: downsampling factor (product of the strides).
        hidden_channels: channels between layers (12 in the paper).
        num_layers: number of convolutions (2 in the paper).
        kernel_size: one odd kernel size for every layer, or one per layer. ``None`` picks the
            paper's default: 3 when ``scale >= 4``, else 5.
        in_channels: channels of the input image.
        out_channels: channels of the thumbnail; defaults to ``in_channels``.
        final_activation: apply a ReLU after the last convolution (the paper does).

    Shape:
        - input: :math:`(B, C_{in}, H, W)`, :math:`C_{in}` = ``in_channels``.
        - output: :math:`(B, C_{out}, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`,
          :math:`C_{out}` = ``out_channels``; non-negative with ``final_activation``.

    Example:
        >>> down = ConvDownsampler(scale=4, out_channels=8)
        >>> [conv.stride for conv in down.convs]
        [(2, 2), (2, 2)]
        >>> thumbnail = down(torch.rand(2, 3, 37, 50))
        >>> thumbnail.shape  # 8 channels; a partial border cell still gives a pixel
        torch.Size([2, 8, 10, 13])
        >>> bool((thumbnail >= 0).all())  # the final ReLU
        True
    """

    def __init__(
        self,
        scale: int = 4,
        hidden_channels: int = 12,
        num_layers: int = 2,
        kernel_size: int | Sequence[int] | None = None,
        in_channels: int = 3,
        out_channels: int | None = None,
        final_activation: bool = True,
    ) -> None:
        super().__init__()
        self.scale = check_int(scale, "scale", minimum=1)
        check_int(hidden_channels, "hidden_channels", minimum=1)
        check_int(num_layers, "num_layers", minimum=1)
        check_int(in_channels, "in_channels", minimum=1)
        out_channels = in_channels if out_channels is None else out_channels
        check_int(out_channels, "out_channels", minimum=1)
        if kernel_size is None:
            kernel_size = 3 if scale >= 4 else 5
        kernels = [kernel_size] * num_layers if isinstance(kernel_size, int) else list(kernel_size)
        if len(kernels) != num_layers:
            raise ValueError(
                f"kernel_size must give one size per layer ({num_layers}), got {kernels}"
            )
        for k in kernels:
            check_int(k, "kernel_size", minimum=1)
            if k % 2 == 0:
                raise ValueError(f"kernel_size must be odd so the output size is exact, got {k}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.final_activation = final_activation
        strides = _split_scale(scale, num_layers)
        channels = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernels[i], strides[i], (kernels[i] - 1) // 2)
            for i in range(num_layers)
        )

    def reset_parameters(self) -> None:
        """Re-initialise every convolution with PyTorch's default initialisation."""
        for conv in self.convs:
            conv.reset_parameters()

    @torch.jit.unused
    def _check(self, images: torch.Tensor) -> None:
        _check_image(images, self.in_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The check is Python-only; skipping it when scripted keeps the module exportable.
        if not torch.jit.is_scripting():
            self._check(images)
        x = images
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if index < last or self.final_activation:
                x = F.relu(x)
        return x

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


_INTERPOLATION_MODES = ("bicubic", "bilinear", "area", "nearest")


def _thumbnail_hw(images: torch.Tensor, scale: int) -> list[int]:
    """``thumbnail_size(images.shape[-2:], scale)`` in integer arithmetic on the shape.

    Unlike :func:`thumbnail_size` it does no ``int()`` conversion, so ``torch.jit.trace``, the
    ONNX exporters and ``torch.export`` record the size as a function of the input's height and
    width instead of freezing the traced size.
    """
    height, width = images.shape[-2], images.shape[-1]
    return [(height + scale - 1) // scale, (width + scale - 1) // scale]


def _interpolate_down(images: torch.Tensor, scale: int, mode: str, antialias: bool) -> torch.Tensor:
    size = _thumbnail_hw(images, scale)
    if mode in ("bicubic", "bilinear"):
        return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=antialias)
    # "area" is adaptive average pooling and "nearest" picks one pixel: no antialias option.
    return F.interpolate(images, size=size, mode=mode)


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


class LearnedResizer(nn.Module):
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
        self.scale = check_int(scale, "scale", minimum=1)
        check_int(channels, "channels", minimum=1)
        check_int(num_blocks, "num_blocks", minimum=0)
        check_int(in_channels, "in_channels", minimum=1)
        check_choice(mode, "mode", _RESIZER_MODES)
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

    @torch.jit.unused
    def _check(self, images: torch.Tensor) -> None:
        _check_image(images, self.in_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The check is Python-only; skipping it when scripted keeps the module exportable.
        if not torch.jit.is_scripting():
            self._check(images)
        size = _thumbnail_hw(images, self.scale)
        resized = _interpolate_down(images, self.scale, self.mode, self.antialias)
        x = self.act(self.head(images))
        x = self.head_bn(self.act(self.pointwise(x)))
        features = F.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias
        )
        x = features
        for block in self.blocks:
            x = block(x)
        x = self.merge_bn(self.merge(x)) + features
        return resized + self.tail(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode!r}, antialias={self.antialias}"


class SpaceToDepthDownsampler(nn.Module):
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
        self.scale = check_int(scale, "scale", minimum=1)
        check_int(out_channels, "out_channels", minimum=1)
        check_int(kernel_size, "kernel_size", minimum=1)
        check_int(in_channels, "in_channels", minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd so the output size is exact, got {kernel_size}"
            )
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

    @torch.jit.unused
    def _check(self, images: torch.Tensor) -> None:
        _check_image(images, self.in_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The check is Python-only; skipping it when scripted keeps the module exportable.
        if not torch.jit.is_scripting():
            self._check(images)
        height, width = images.shape[-2], images.shape[-1]
        pad_bottom = (self.scale - height % self.scale) % self.scale
        pad_right = (self.scale - width % self.scale) % self.scale
        x = F.pad(images, [0, pad_right, 0, pad_bottom])
        return self.mix(F.pixel_unshuffle(x, self.scale))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


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
        check_int(in_channels, "in_channels", minimum=1)
        check_int(scale, "scale", minimum=1)
        if extra_channels is None:
            # Half of a cell's values in all: 21 learned channels at 4x, 3 at 2x (RGB).
            extra_channels = max(1, in_channels * scale * scale // 2 - in_channels)
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


#: The downsampler the library recommends (see docs/quality.md): the bicubic thumbnail plus
#: learned channels of each cell's pixels, read by a stem widened with
#: :func:`learnthumb.widen_input_conv`. The student starts exactly as on bicubic, the bicubic
#: channels cannot die, and it was the one learned module of the quality suite that was
#: never worse than bicubic on a natural-image task. For a model whose stem must stay 3
#: channels, ``"residual"`` is the 3-channel choice.
RECOMMENDED_DOWNSAMPLER = "wide"

Factory = Callable[..., nn.Module]
_REGISTRY: dict[str, Factory] = {}


def register_downsampler(name: str) -> Callable[[Factory], Factory]:
    """Decorator adding a factory ``fn(scale, **kwargs) -> nn.Module`` under ``name``.

    Example:
        >>> @register_downsampler("my_down")
        ... def _my_down(scale, **kwargs):
        ...     return InterpolateDownsampler(scale, mode="area")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"a downsampler named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_downsamplers() -> list[str]:
    """Names accepted by :func:`create_downsampler`, sorted."""
    return sorted(_REGISTRY)


def create_downsampler(name: str, scale: int = 4, **kwargs: object) -> nn.Module:
    """Build a downsampler by name, like ``timm.create_model``.

    Args:
        name: one of :func:`list_downsamplers` (``"thumbdet"``, ``"single_conv"``,
            ``"five_layer"``, ``"residual"``, ``"learned_resizer"``, ``"space_to_depth"``,
            ``"wide"``, ``"bicubic"``, ``"bilinear"``, ``"area"``, ``"nearest"`` and any
            registered later).
        scale: downsampling factor.
        **kwargs: passed to the module's constructor.

    Returns:
        The module, with ``learnthumb_config = {"name": name, "scale": scale, "kwargs":
        kwargs}`` recorded on it so :func:`learnthumb.save_pretrained` can rebuild it.

    Example:
        >>> create_downsampler("thumbdet", scale=2)
        ConvDownsampler(
          scale=2
          (convs): ModuleList(
            (0): Conv2d(3, 12, kernel_size=(5, 5), stride=(2, 2), padding=(2, 2))
            (1): Conv2d(12, 3, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
          )
        )
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown downsampler {name!r}; available: {list_downsamplers()}")
    module = _REGISTRY[name](scale, **kwargs)
    module.learnthumb_config = {"name": name, "scale": scale, "kwargs": dict(kwargs)}
    return module


@register_downsampler("thumbdet")
def _thumbdet(scale: int, **kwargs: object) -> nn.Module:
    return ConvDownsampler(scale, **kwargs)


@register_downsampler("single_conv")
def _single_conv(scale: int, **kwargs: object) -> nn.Module:
    # Table 4, first row: one 5x5 convolution with stride `scale`.
    kwargs.setdefault("kernel_size", 5)
    return ConvDownsampler(scale, num_layers=1, **kwargs)


@register_downsampler("five_layer")
def _five_layer(scale: int, **kwargs: object) -> nn.Module:
    # Table 4, last row: kernels 7, 5, 3, 1, 1.
    kwargs.setdefault("kernel_size", (7, 5, 3, 1, 1))
    return ConvDownsampler(scale, num_layers=5, **kwargs)


@register_downsampler("residual")
def _residual(scale: int, **kwargs: object) -> nn.Module:
    return ResidualDownsampler(scale, **kwargs)


@register_downsampler("learned_resizer")
def _learned_resizer(scale: int, **kwargs: object) -> nn.Module:
    return LearnedResizer(scale, **kwargs)


@register_downsampler("space_to_depth")
def _space_to_depth(scale: int, **kwargs: object) -> nn.Module:
    return SpaceToDepthDownsampler(scale, **kwargs)


@register_downsampler("wide")
def _wide(scale: int, **kwargs: object) -> nn.Module:
    return WideDownsampler(scale, **kwargs)


def _register_interpolation(mode: str) -> None:
    def factory(scale: int, **kwargs: object) -> nn.Module:
        return InterpolateDownsampler(scale, mode=mode, **kwargs)

    register_downsampler(mode)(factory)


for _mode in _INTERPOLATION_MODES:
    _register_interpolation(_mode)
