"""A detector behind a downsampler: full-size images in, boxes for the full-size image out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learnthumb import downsample_padding_mask
from learnthumb.wrappers import Thumbnailed

__all__ = ["ThumbnailDetector"]


class ThumbnailDetector(Thumbnailed):
    """Run a DETR-style detector on the thumbnail of a full-size, padded batch.

    Unlike plain :class:`learnthumb.Thumbnailed`, the padding mask is downsampled with the
    image (:func:`learnthumb.downsample_padding_mask`), so the detector sees the thumbnail's
    own valid region. The detector predicts boxes *normalised* to that valid region, which is
    the same fraction of the full-size image: no mapping back is needed, and post-processing
    with each image's original size gives boxes in original image coordinates.

    Args:
        detector: ``detector(images, padding_mask) -> {"pred_logits", "pred_boxes", ...}``.
        downsampler: Module mapping ``(B, 3, H, W)`` to ``(B, 3, ceil(H/s), ceil(W/s))``
            (learned or interpolation).
        scale: The downsampler's factor ``s``.

    Shape:
        - images: :math:`(B, 3, H, W)` in [0, 1].
        - padding_mask: :math:`(B, H, W)` bool, True = padded, or ``None``.
        - output: the detector's dict (boxes normalised cx, cy, w, h).

    Example:
        >>> from learnthumb import InterpolateDownsampler
        >>> student = ThumbnailDetector(build_model("tiny"), InterpolateDownsampler(4), 4)
        >>> outputs = student(torch.rand(1, 3, 64, 80))  # doctest: +SKIP
    """

    def __init__(self, detector: nn.Module, downsampler: nn.Module, scale: int) -> None:
        super().__init__(detector, downsampler)
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive int, got {scale!r}")
        self.scale = scale

    @property
    def detector(self) -> nn.Module:
        """The detector that runs on the thumbnail."""
        return self.model

    def forward(  # type: ignore[override]
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> dict[str, Any]:
        thumbnail = self.thumbnail(images)  # (B, 3, ceil(H/s), ceil(W/s))
        thumbnail_mask = None
        if padding_mask is not None:
            thumbnail_mask = downsample_padding_mask(padding_mask, self.scale)
        return self.model(thumbnail, thumbnail_mask)
