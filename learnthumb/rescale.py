"""Map a model's outputs from thumbnail coordinates back to the full-size image.

A model run on a thumbnail answers in *thumbnail* coordinates; these helpers carry its answers
back to the original image: :func:`rescale_boxes` for detectors, :func:`rescale_keypoints` for
pose models, :func:`upsample_to` for dense logits / heatmaps, and :func:`upsample_padded` for
batches of images of different sizes that were padded (bottom / right) to one tensor.

Coordinates are continuous pixel coordinates: an image of size ``(H, W)`` spans ``[0, W] x
[0, H]`` and pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``. Mapping from a size
``(h, w)`` to ``(H, W)`` multiplies x by ``W / w`` and y by ``H / h``, which is the same grid
mapping that ``F.interpolate(..., align_corners=False)`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from learnthumb._checks import check_choice, check_floating, check_tensor

__all__ = ["BOX_FORMATS", "rescale_boxes", "rescale_keypoints", "upsample_padded", "upsample_to"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
_UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")

SizeLike = Sequence[int] | Tensor


# ----------------------------------------------------------------------------- input checks
def _check_size_pair(size: Any, name: str) -> tuple[int, int]:
    """A ``(H, W)`` pair of positive ints (tuple, list or ``torch.Size``)."""
    if isinstance(size, Tensor) or not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{name} must be a (H, W) pair of positive ints, got {size!r}")
    height, width = size
    # torch.SymInt: sizes read from tensor shapes under torch.compile(dynamic=True).
    if not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in size):
        raise ValueError(f"{name} must be a (H, W) pair of positive ints, got {size!r}")
    if not (height > 0 and width > 0):
        raise ValueError(f"{name} must be a (H, W) pair of positive ints, got {size!r}")
    return height, width


def _sizes_as_tensor(size: SizeLike, name: str, like: Tensor) -> Tensor:
    """``(H, W)`` as a (2,) tensor, or per-image sizes as a (B, 2) tensor, in ``like``'s dtype."""
    if isinstance(size, Tensor):
        if size.dim() not in (1, 2) or size.shape[-1] != 2:
            raise ValueError(
                f"{name} must be a (H, W) pair or a (B, 2) tensor of per-image sizes, "
                f"got a tensor of shape {tuple(size.shape)}"
            )
        if not torch.all(size > 0):
            raise ValueError(f"{name} must hold positive sizes, got {size.tolist()}")
        return size.to(device=like.device, dtype=like.dtype)
    height, width = _check_size_pair(size, name)
    return torch.tensor([height, width], device=like.device, dtype=like.dtype)


def _scale_xy(
    points: Tensor, points_name: str, from_size: SizeLike, to_size: SizeLike
) -> tuple[Tensor, Tensor]:
    """Per-axis factors ``(sx, sy)`` broadcastable against ``points[..., k]``."""
    source = _sizes_as_tensor(from_size, "from_size", points)  # (2,) or (B, 2) as (H, W)
    target = _sizes_as_tensor(to_size, "to_size", points)
    if source.dim() == 2 and target.dim() == 2 and source.shape[0] != target.shape[0]:
        raise ValueError(
            f"from_size has {source.shape[0]} per-image sizes but to_size has {target.shape[0]}"
        )
    factors = target / source  # (2,) or (B, 2), ordered (H, W)
    if factors.dim() == 2:  # per-image sizes: (B, 2) against points of shape (B, ..., k)
        batch = factors.shape[0]
        if points.dim() < 2 or points.shape[0] != batch:
            raise ValueError(
                f"per-image sizes describe {batch} images but {points_name} has shape "
                f"{tuple(points.shape)} (expected (B={batch}, ..., k))"
            )
        factors = factors.reshape(batch, *([1] * (points.dim() - 2)), 2)  # (B, 1.., 2)
    scale_y, scale_x = factors[..., 0], factors[..., 1]
    return scale_x, scale_y


# ---------------------------------------------------------------------------- boxes & points
def rescale_boxes(
    boxes: Tensor,
    from_size: SizeLike,
    to_size: SizeLike,
    *,
    box_format: str = "xyxy",
    normalized: bool = False,
) -> Tensor:
    """Map boxes predicted on an image of ``from_size`` to an image of ``to_size``.

    Typically ``from_size`` is the thumbnail's size and ``to_size`` the original image's; swap
    them to bring ground-truth boxes down to the thumbnail for training. All three formats keep
    x-like entries in even positions and y-like entries in odd ones, so each is scaled per axis.

    Args:
        boxes: absolute pixel boxes in ``box_format``.
        from_size: ``(H, W)`` of the image the boxes refer to, or a ``(B, 2)`` tensor of
            per-image sizes when ``boxes`` is batched as ``(B, N, 4)``.
        to_size: ``(H, W)`` of the target image, or a ``(B, 2)`` tensor.
        box_format: ``"xyxy"``, ``"xywh"`` (top-left corner, width, height) or ``"cxcywh"``.
        normalized: boxes already in ``[0, 1]`` relative coordinates are size independent
            and returned unchanged.

    Shape:
        - boxes: :math:`(*, 4)`; with per-image sizes :math:`(B, *, 4)`.
        - output: same as ``boxes``.

    Returns:
        The rescaled boxes (a new tensor unless ``normalized``).

    Example:
        >>> boxes = torch.tensor([[2.0, 4.0, 10.0, 12.0]])
        >>> rescale_boxes(boxes, from_size=(25, 50), to_size=(100, 200))
        tensor([[ 8., 16., 40., 48.]])
    """
    check_tensor(boxes, "boxes")
    check_floating(boxes, "boxes")
    check_choice(box_format, "box_format", BOX_FORMATS)
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (*, 4), got {tuple(boxes.shape)}")
    if normalized:
        return boxes
    scale_x, scale_y = _scale_xy(boxes, "boxes", from_size, to_size)
    factors = torch.stack([scale_x, scale_y, scale_x, scale_y], dim=-1)  # (.., 4)
    return boxes * factors


def rescale_keypoints(keypoints: Tensor, from_size: SizeLike, to_size: SizeLike) -> Tensor:
    """Map ``(x, y)`` keypoints from an image of ``from_size`` to an image of ``to_size``.

    A third entry (visibility or score) is carried over unchanged.

    Args:
        keypoints: absolute pixel coordinates ``(x, y)`` or ``(x, y, visibility)``.
        from_size: ``(H, W)`` the keypoints refer to, or a ``(B, 2)`` tensor of per-image
            sizes when ``keypoints`` is batched as ``(B, *, 2|3)``.
        to_size: ``(H, W)`` of the target image, or a ``(B, 2)`` tensor.

    Shape:
        - keypoints: :math:`(*, 2)` or :math:`(*, 3)`.
        - output: same as ``keypoints``.

    Returns:
        The rescaled keypoints (a new tensor).

    Example:
        >>> rescale_keypoints(torch.tensor([[1.5, 2.5, 1.0]]), (16, 16), (64, 64))
        tensor([[ 6., 10.,  1.]])
    """
    check_tensor(keypoints, "keypoints")
    check_floating(keypoints, "keypoints")
    if keypoints.dim() == 0 or keypoints.shape[-1] not in (2, 3):
        raise ValueError(
            "keypoints must have shape (*, 2) for (x, y) or (*, 3) for (x, y, visibility), "
            f"got {tuple(keypoints.shape)}"
        )
    scale_x, scale_y = _scale_xy(keypoints, "keypoints", from_size, to_size)
    factors = [scale_x, scale_y]
    if keypoints.shape[-1] == 3:
        factors.append(torch.ones_like(scale_x))
    return keypoints * torch.stack(factors, dim=-1)  # (.., 2|3)


# ------------------------------------------------------------------------ dense predictions
def _check_maps(maps: Any, mode: str) -> None:
    check_tensor(maps, "maps")
    if maps.dim() != 4:
        raise ValueError(
            f"maps (logits or heatmaps) must have shape (B, C, h, w), got {tuple(maps.shape)}"
        )
    check_floating(maps, "maps")
    check_choice(mode, "mode", _UPSAMPLE_MODES)


def _interpolate(maps: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(maps, size=size, mode=mode, align_corners=False)
    return F.interpolate(maps, size=size, mode=mode)


def upsample_to(maps: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize thumbnail-level logits or heatmaps to the original image's size.

    Upsample *logits* (before softmax / argmax), not labels: interpolating scores and then
    taking the argmax gives smooth, sub-cell accurate boundaries.

    Args:
        maps: segmentation logits or keypoint heatmaps predicted on the thumbnail.
        size: ``(H, W)`` of the original image.
        mode: ``"bilinear"`` (default), ``"bicubic"``, ``"nearest"``, ``"nearest-exact"`` or
            ``"area"``; ``align_corners=False`` always, matching the downsamplers' grid.

    Shape:
        - maps: :math:`(B, C, h, w)`.
        - output: :math:`(B, C, H, W)`.

    Returns:
        The resized maps.

    Example:
        >>> upsample_to(torch.zeros(2, 5, 16, 16), (64, 64)).shape
        torch.Size([2, 5, 64, 64])
    """
    _check_maps(maps, mode)
    return _interpolate(maps, _check_size_pair(size, "size"), mode)


def upsample_padded(
    maps: Tensor,
    image_sizes: Sequence[Sequence[int]] | Tensor,
    padded_size: Sequence[int],
    mode: str = "bilinear",
) -> list[Tensor]:
    """Upsample the maps of a padded batch and crop each image's valid region.

    Images of different sizes are commonly padded at the bottom / right into one
    ``padded_size`` tensor before the downsampler. Each map is resized to ``padded_size`` (so
    the pixel grid of every image is preserved exactly) and then cropped to that image's own
    size; predictions on padding never leak into the result.

    Args:
        maps: logits or heatmaps predicted on the thumbnails of the padded batch.
        image_sizes: ``(H_i, W_i)`` of every image before padding, a sequence of B pairs or a
            ``(B, 2)`` integer tensor.
        padded_size: ``(H, W)`` of the padded batch fed to the downsampler.
        mode: as in :func:`upsample_to`.

    Shape:
        - maps: :math:`(B, C, h, w)`.
        - output: a list of B tensors of shape :math:`(C, H_i, W_i)`.

    Returns:
        One map per image, at that image's original size.

    Example:
        >>> maps = torch.zeros(2, 3, 8, 8)
        >>> [m.shape for m in upsample_padded(maps, [(32, 20), (17, 32)], (32, 32))]
        [torch.Size([3, 32, 20]), torch.Size([3, 17, 32])]
    """
    _check_maps(maps, mode)
    padded_height, padded_width = _check_size_pair(padded_size, "padded_size")
    if isinstance(image_sizes, Tensor):
        if image_sizes.dim() != 2 or image_sizes.shape[-1] != 2:
            raise ValueError(f"image_sizes must have shape (B, 2), got {tuple(image_sizes.shape)}")
        pairs = [tuple(int(v) for v in row) for row in image_sizes.tolist()]
    else:
        pairs = [_check_size_pair(tuple(pair), "image_sizes[i]") for pair in image_sizes]
    if len(pairs) != maps.shape[0]:
        raise ValueError(
            f"image_sizes holds {len(pairs)} sizes but maps has batch size {maps.shape[0]} "
            f"(maps shape {tuple(maps.shape)})"
        )
    for index, (height, width) in enumerate(pairs):
        if not (0 < height <= padded_height and 0 < width <= padded_width):
            raise ValueError(
                f"image_sizes[{index}] = {(height, width)} does not fit in padded_size "
                f"{(padded_height, padded_width)}"
            )
    _check_common_stride(tuple(maps.shape[-2:]), (padded_height, padded_width))
    full = _interpolate(maps, (padded_height, padded_width), mode)  # (B, C, H, W)
    return [full[index, :, :height, :width] for index, (height, width) in enumerate(pairs)]


def _stride_interval(image: int, output: int) -> tuple[float, float]:
    """Real strides ``s`` for which ``image`` pixels give ``output`` cells (floor or ceil)."""
    return image / (output + 1), (image / (output - 1) if output > 1 else float("inf"))


def _check_common_stride(map_size: tuple[int, int], padded_size: tuple[int, int]) -> None:
    """Catch maps that cannot come from ``padded_size`` (e.g. H and W swapped)."""
    low_y, high_y = _stride_interval(padded_size[0], map_size[0])
    low_x, high_x = _stride_interval(padded_size[1], map_size[1])
    if max(low_y, low_x) >= min(high_y, high_x):
        raise ValueError(
            f"maps of spatial size {map_size} do not match padded_size {padded_size}: the "
            f"implied strides differ ({padded_size[0] / map_size[0]:.2f} along H, "
            f"{padded_size[1] / map_size[1]:.2f} along W); padded_size is (H, W) of the batch "
            "fed to the downsampler"
        )
