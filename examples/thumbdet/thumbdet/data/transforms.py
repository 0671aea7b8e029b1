"""Deformable DETR's detection transforms on PIL images with box targets.

Boxes travel as absolute (x0, y0, x1, y1) through flip, resize and crop and are turned into
normalised (cx, cy, w, h) by :class:`ToTensor` at the end. Images end as float tensors in
[0, 1]: ImageNet normalisation happens inside the detector, after any downsampler.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_SHORT_SIDES",
    "Compose",
    "RandomHorizontalFlip",
    "RandomResize",
    "RandomSelect",
    "RandomSizeCrop",
    "ToTensor",
    "make_transforms",
    "resized_size",
]

Target = dict[str, Any]
Transform = Callable[[Any, Target], tuple[Any, Target]]

#: Deformable DETR's multi-scale training sizes (short side) and longest side.
DEFAULT_SHORT_SIDES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
DEFAULT_MAX_SIZE = 1333
_REFERENCE_SHORT_SIDE = 800  # the crop branch below is stated for this short side

#: Training augmentations of :func:`make_transforms`, each with what it does.
AUGMENTATIONS = {
    "deformable_detr": "flip + multi-scale resize + random crop",
    "flip": "flip + multi-scale resize, no crop",
    "hflip": "flip only, no resizing",
    "none": "resize as for evaluation",
}


def resized_size(width: int, height: int, short_side: int, max_size: int | None) -> tuple[int, int]:
    """Output ``(height, width)`` when the short side becomes ``short_side``, long <= max_size.

    Args:
        width: Input width.
        height: Input height.
        short_side: Target length of the shorter side.
        max_size: Upper bound of the longer side (``None``: no bound).

    Returns:
        ``(new_height, new_width)``, keeping the aspect ratio.
    """
    if max_size is not None:
        short, long = float(min(width, height)), float(max(width, height))
        if long / short * short_side > max_size:
            short_side = round(max_size * short / long)
    if width < height:
        new_width = short_side
        new_height = int(short_side * height / width)
    else:
        new_height = short_side
        new_width = int(short_side * width / height)
    if max_size is not None:
        new_height, new_width = min(new_height, max_size), min(new_width, max_size)
    return max(new_height, 1), max(new_width, 1)


def _resize(
    image: Image.Image, target: Target, size: tuple[int, int]
) -> tuple[Image.Image, Target]:
    new_height, new_width = size
    width, height = image.size
    image = image.resize((new_width, new_height), Image.BILINEAR)
    target = dict(target)
    ratio = torch.tensor([new_width / width, new_height / height] * 2)
    target["boxes"] = target["boxes"] * ratio
    target["size"] = torch.tensor([new_height, new_width], dtype=torch.int64)
    return image, target


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: Target) -> tuple[Any, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class RandomHorizontalFlip:
    """Mirror the image and its boxes with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        if random.random() >= self.p:
            return image, target
        width = image.size[0]
        target = dict(target)
        boxes = target["boxes"]  # (N, 4) x0 y0 x1 y1
        target["boxes"] = torch.stack(
            [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
        )
        return image.transpose(Image.FLIP_LEFT_RIGHT), target


class RandomResize:
    """Resize so that the short side is one of ``short_sides`` (at random), long <= max_size."""

    def __init__(self, short_sides: Sequence[int], max_size: int | None = None) -> None:
        if not short_sides:
            raise ValueError("short_sides must not be empty")
        self.short_sides = [int(side) for side in short_sides]
        self.max_size = max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        short_side = random.choice(self.short_sides)
        size = resized_size(image.size[0], image.size[1], short_side, self.max_size)
        return _resize(image, target, size)


class RandomSizeCrop:
    """Crop a random region with sides in ``[min_size, max_size]``; boxes clipped, empty dropped."""

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = int(min_size), int(max_size)

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        width, height = image.size
        crop_width = random.randint(min(self.min_size, width), min(width, self.max_size))
        crop_height = random.randint(min(self.min_size, height), min(height, self.max_size))
        left = random.randint(0, width - crop_width)
        top = random.randint(0, height - crop_height)
        target = dict(target)
        boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, crop_width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, crop_height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target["boxes"], target["labels"] = boxes[keep], target["labels"][keep]
        target["size"] = torch.tensor([crop_height, crop_width], dtype=torch.int64)
        image = image.crop((left, top, left + crop_width, top + crop_height))
        return image, target


class RandomSelect:
    """Apply ``first`` with probability ``p``, else ``second``."""

    def __init__(self, first: Transform, second: Transform, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, image: Any, target: Target) -> tuple[Any, Target]:
        if random.random() < self.p:
            return self.first(image, target)
        return self.second(image, target)


class ToTensor:
    """PIL image -> float tensor ``(3, H, W)`` in [0, 1]; boxes -> normalised (cx, cy, w, h)."""

    def __call__(self, image: Image.Image, target: Target) -> tuple[torch.Tensor, Target]:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        height, width = tensor.shape[-2:]
        target = dict(target)
        boxes = target["boxes"]  # (N, 4) x0 y0 x1 y1, absolute
        center = (boxes[:, :2] + boxes[:, 2:]) / 2
        extent = boxes[:, 2:] - boxes[:, :2]
        normaliser = torch.tensor([width, height, width, height], dtype=torch.float32)
        target["boxes"] = torch.cat([center, extent], dim=1) / normaliser  # (N, 4) cxcywh
        target["size"] = torch.tensor([height, width], dtype=torch.int64)
        return tensor, target


def make_transforms(
    split: str,
    short_sides: Sequence[int] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    augmentation: str = "deformable_detr",
) -> Compose:
    """Deformable DETR's train or val transforms, optionally at another scale.

    Train (``augmentation="deformable_detr"``): random flip, then either a multi-scale resize
    or (p = 0.5) resize to {400, 500, 600}, random crop of 384-600 and a multi-scale resize.
    With custom ``short_sides`` (small datasets) the crop branch keeps Deformable DETR's
    proportions relative to a short side of 800. ``"flip"``: random flip and multi-scale
    resize only (no crop), for data whose classes live in pixel-level detail that extra
    resampling would destroy. ``"hflip"``: random flip only, no resizing at all (images
    already at their training size, as the demo's generated ones). ``"none"``: like val.
    Val: resize the short side to the largest of ``short_sides``.

    Args:
        split: ``"train"`` or ``"val"``.
        short_sides: Short sides for multi-scale resizing (``None``: 480, 512, ..., 800).
        max_size: Longest side after resizing.
        augmentation: one of :data:`AUGMENTATIONS` (train split only).

    Returns:
        A callable ``(PIL image, target) -> (image tensor (3, H, W) in [0, 1], target)``.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(
            f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {augmentation!r}"
        )
    sides = [int(side) for side in (short_sides or DEFAULT_SHORT_SIDES)]
    if split == "val" or (split == "train" and augmentation == "none"):
        return Compose([RandomResize([max(sides)], max_size=max_size), ToTensor()])
    if split != "train":
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if augmentation == "hflip":
        return Compose([RandomHorizontalFlip(), ToTensor()])
    if augmentation == "flip":
        return Compose([RandomHorizontalFlip(), RandomResize(sides, max_size=max_size), ToTensor()])
    ratio = max(sides) / _REFERENCE_SHORT_SIDE
    crop_resize = [max(1, round(side * ratio)) for side in (400, 500, 600)]
    crop_min, crop_max = max(1, round(384 * ratio)), max(1, round(600 * ratio))
    return Compose(
        [
            RandomHorizontalFlip(),
            RandomSelect(
                RandomResize(sides, max_size=max_size),
                Compose(
                    [
                        RandomResize(crop_resize),
                        RandomSizeCrop(crop_min, crop_max),
                        RandomResize(sides, max_size=max_size),
                    ]
                ),
            ),
            ToTensor(),
        ]
    )
