"""Batching of variable-size detection images: pad to the batch maximum with a padding mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["DetectionCollator", "collate_detection", "pad_images"]


def pad_images(
    images: Sequence[torch.Tensor], size_divisibility: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad images to a common size (bottom and right) and return the padding mask.

    Args:
        images: Tensors ``(C, H_i, W_i)`` with the same ``C`` and dtype.
        size_divisibility: The padded height and width are rounded up to a multiple of this
            (use the thumbnail scale so that downsampling the batch is exact).

    Shape:
        - Output images: :math:`(B, C, H, W)` with ``H = ceil(max H_i / d) * d``, same for W.
        - Output mask: :math:`(B, H, W)`, bool, True where padded.

    Returns:
        ``(images, padding_mask)``; padded pixels are 0.
    """
    if not images:
        raise ValueError("images must not be empty")
    if size_divisibility < 1:
        raise ValueError(f"size_divisibility must be >= 1, got {size_divisibility}")
    for index, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != images[0].shape[0]:
            raise ValueError(
                f"images[{index}] must have shape (C, H, W) with C={images[0].shape[0]}, "
                f"got {tuple(image.shape)}"
            )
    max_height = max(image.shape[1] for image in images)
    max_width = max(image.shape[2] for image in images)
    height = -(-max_height // size_divisibility) * size_divisibility
    width = -(-max_width // size_divisibility) * size_divisibility
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))  # (B, C, H, W)
    padding_mask = torch.ones((len(images), height, width), dtype=torch.bool)  # (B, H, W)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
        padding_mask[index, : image.shape[1], : image.shape[2]] = False
    return batch, padding_mask


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]], size_divisibility: int = 1
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Collate ``(image, target)`` pairs into padded images, a padding mask and a target list.

    Args:
        batch: Items of :class:`thumbdet.data.CocoDetection` after ``ToTensor``.
        size_divisibility: See :func:`pad_images`.

    Returns:
        ``(images (B, 3, H, W), padding_mask (B, H, W) bool True=padded, targets)``.
    """
    images, targets = zip(*batch, strict=True)
    padded, padding_mask = pad_images(list(images), size_divisibility)
    return padded, padding_mask, list(targets)


class DetectionCollator:
    """Picklable ``collate_fn`` for data loader workers; see :func:`collate_detection`.

    Args:
        size_divisibility: See :func:`pad_images`.
    """

    def __init__(self, size_divisibility: int = 1) -> None:
        self.size_divisibility = size_divisibility

    def __call__(
        self, batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
        return collate_detection(batch, self.size_divisibility)
