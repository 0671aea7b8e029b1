"""A detector behind a downsampler: full-size images in, boxes for the full-size image out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learnthumb import downsample_padding_mask, find_input_conv, widen_input_conv
from learnthumb.wrappers import Thumbnailed

__all__ = ["ThumbnailDetector", "widen_stem"]


def widen_stem(detector: nn.Module, downsampler: nn.Module) -> None:
    """Let ``detector`` read a wide thumbnail: its stem takes the extra channels, and trains.

    A no-op for a 3-channel downsampler. The stem's new input weights start at zero
    (:func:`learnthumb.widen_input_conv`), so the detector starts as on the bicubic thumbnail;
    the stem is frozen in Deformable DETR's backbone, so it is unfrozen here, or the extra
    channels would never be read.
    """
    channels = getattr(downsampler, "out_channels", 3)
    if channels <= 3:
        return
    name = find_input_conv(detector)
    widen_input_conv(detector, channels, name=name)
    detector.get_submodule(name).weight.requires_grad_(True)


class ThumbnailDetector(Thumbnailed):
    """Run a DETR-style detector on the thumbnail of a full-size, padded batch.

    Unlike plain :class:`learnthumb.Thumbnailed`, the padding mask is downsampled with the
    image (:func:`learnthumb.downsample_padding_mask`), so the detector sees the thumbnail's
    own valid region. The detector predicts boxes *normalised* to that valid region, which is
    the same fraction of the full-size image: no mapping back is needed, and post-processing
    with each image's original size gives boxes in original image coordinates.

    Args:
        detector: ``detector(images, padding_mask) -> {"pred_logits", "pred_boxes", ...}``.
        downsampler: Module mapping ``(B, 3, H, W)`` to ``(B, C, ceil(H/s), ceil(W/s))``
            (learned or interpolation; ``C > 3`` for a wide thumbnail, whose detector's stem
            was widened with :func:`widen_stem`).
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
