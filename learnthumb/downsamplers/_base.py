"""What every downsampler shares: the thumbnail's size, the padding mask, the input check and
the fixed resize."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb._checks import check_floating, check_int, check_ndim


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


def _candidate_scales(size: Sequence[int], thumbnail: Sequence[int]) -> list[int]:
    """Every integer ``s`` with ``ceil(size / s) == thumbnail``, in increasing order.

    For a ``(1, 1)`` thumbnail every ``s >= max(H, W)`` fits and reduces any mask alike (one
    cell holds the whole image): only ``max(H, W)`` is listed.
    """
    bounds = []
    for full, reduced in zip((int(v) for v in size), (int(v) for v in thumbnail), strict=True):
        if reduced < 1:
            return []
        # ceil(full / s) == reduced  <=>  (reduced - 1) * s < full <= reduced * s.
        lowest = -(-full // reduced)
        highest = (full - 1) // (reduced - 1) if reduced > 1 else None
        bounds.append((lowest, highest))
    lowest = max(low for low, _ in bounds)
    highs = [high for _, high in bounds if high is not None]
    highest = min(highs) if highs else lowest
    return list(range(lowest, highest + 1))


def _masks_agree(mask: torch.Tensor, scales: Sequence[int]) -> bool:
    """Whether ``mask`` reduces to the same thumbnail mask at every one of ``scales``."""
    if not bool(mask.any()) or bool(mask.all()):
        return True  # no padding, or nothing but padding, at any scale
    first = downsample_padding_mask(mask, scales[0])
    return all(torch.equal(first, downsample_padding_mask(mask, s)) for s in scales[1:])


def _scales_text(scales: Sequence[int]) -> str:
    return ", ".join(map(str, scales)) if len(scales) <= 3 else f"{scales[0]} to {scales[-1]}"


def _scale_between(
    size: Sequence[int], thumbnail: Sequence[int], mask: torch.Tensor | None = None
) -> int | None:
    """The integer factor ``s`` with ``thumbnail == ceil(size / s)``, or ``None`` if none fits.

    Every such ``s`` is considered. When several fit (small images: 9 -> 3 at ``s`` = 3 or 4)
    they cut the image into different cells, so one is returned only if ``mask`` (the
    padding mask to reduce) gives the same thumbnail mask at all of them.

    Raises:
        ValueError: several scales fit and they reduce ``mask`` (any mask, without one)
            differently.
    """
    scales = _candidate_scales(size, thumbnail)
    if not scales:
        return None
    if len(scales) > 1 and (mask is None or not _masks_agree(mask, scales)):
        raise ValueError(
            f"thumbnail_padding_mask must be given: the thumbnail size {tuple(thumbnail)} is "
            f"ceil((H, W) / s) of {tuple(size)} for several integer scales s "
            f"({_scales_text(scales)}) that reduce the padding mask differently, got none"
        )
    return scales[0]


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


def _thumbnail_padding_mask(
    padding_mask: torch.Tensor, downsampler: nn.Module, thumbnail_shape: Sequence[int]
) -> torch.Tensor:
    """``padding_mask`` reduced to the thumbnail of ``downsampler``: True where a whole cell is.

    The factor is the downsampler's ``scale`` attribute, or else the one that maps the mask's
    size to ``thumbnail_shape`` (``ceil(H / s)``); where several do (small images), they must
    all reduce ``padding_mask`` alike, or a ``ValueError`` asks for a ``scale``. The one place
    where masks are reduced, for :class:`learnthumb.Thumbnailed` and
    :class:`learnthumb.ThumbnailDistillation`.
    """
    scale = getattr(downsampler, "scale", None)
    if scale is None:
        size = tuple(padding_mask.shape[-2:])
        scales = _candidate_scales(size, thumbnail_shape)
        if len(scales) > 1 and not _masks_agree(padding_mask, scales):
            raise ValueError(
                f"{type(downsampler).__name__} has no `scale` attribute and its thumbnail size "
                f"{tuple(thumbnail_shape)} is ceil((H, W) / s) of the images' {size} for "
                f"several integer s ({_scales_text(scales)}) that reduce padding_mask "
                "differently: expected a downsampler with a `scale` attribute, got none"
            )
        scale = scales[0] if scales else None
        if scale is None:
            raise ValueError(
                f"{type(downsampler).__name__} has no `scale` attribute and its thumbnail size "
                f"{tuple(thumbnail_shape)} is not ceil((H, W) / s) of the images' "
                f"{tuple(padding_mask.shape[-2:])} for an integer s: expected a downsampler "
                "with a `scale` attribute, got none"
            )
    return downsample_padding_mask(padding_mask, scale)


def _check_odd_kernel(kernel_size: object) -> None:
    """Raise unless ``kernel_size`` is an odd int >= 1: padding ``k // 2`` keeps sizes exact."""
    check_int(kernel_size, "kernel_size", minimum=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd so the output size is exact, got {kernel_size}")


def _check_image(images: torch.Tensor, channels: int | None, name: str = "images") -> None:
    check_ndim(images, 4, name, "(B, C, H, W)")
    check_floating(images, name)
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (B, {channels}, H, W), "
            f"got shape {tuple(images.shape)}"
        )


class _CheckedDownsampler(nn.Module):
    """Base of the scriptable downsamplers: they check their input in Python only.

    A subclass sets ``in_channels`` and calls :meth:`_check_input` first in ``forward``.
    """

    @torch.jit.unused
    def _check(self, images: torch.Tensor) -> None:
        _check_image(images, self.in_channels)

    def _check_input(self, images: torch.Tensor) -> None:
        # The check is Python-only; skipping it when scripted keeps the module exportable.
        if not torch.jit.is_scripting():
            self._check(images)


_INTERPOLATION_MODES = ("bicubic", "bilinear", "area", "nearest")


def _thumbnail_hw(images: torch.Tensor, scale: int) -> list[int]:
    """``thumbnail_size(images.shape[-2:], scale)`` in integer arithmetic on the shape.

    Unlike :func:`thumbnail_size` it does no ``int()`` conversion, so ``torch.jit.trace``, the
    ONNX exporters and ``torch.export`` record the size as a function of the input's height and
    width instead of freezing the traced size.
    """
    height, width = images.shape[-2], images.shape[-1]
    return [(height + scale - 1) // scale, (width + scale - 1) // scale]


def _resize_smooth(
    images: torch.Tensor, size: list[int], mode: str, antialias: bool
) -> torch.Tensor:
    """Bilinear or bicubic ``F.interpolate`` that also runs in half precision on the CPU.

    PyTorch's CPU kernel of the antialiased resize has no float16 or bfloat16 version; there the
    resize runs in float32 and the result is cast back.
    """
    reduced = images.dtype == torch.float16 or images.dtype == torch.bfloat16
    if antialias and reduced and images.device.type == "cpu":
        resized = F.interpolate(
            images.float(), size=size, mode=mode, align_corners=False, antialias=True
        )
        return resized.to(images.dtype)
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=antialias)


def _interpolate_down(images: torch.Tensor, scale: int, mode: str, antialias: bool) -> torch.Tensor:
    size = _thumbnail_hw(images, scale)
    if mode in ("bicubic", "bilinear"):
        return _resize_smooth(images, size, mode, antialias)
    # "area" is adaptive average pooling and "nearest" picks one pixel: no antialias option.
    return F.interpolate(images, size=size, mode=mode)
