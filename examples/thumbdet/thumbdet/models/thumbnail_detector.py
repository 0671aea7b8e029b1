"""A detector behind a downsampler: full-size images in, boxes for the full-size image out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learnthumb import (
    Thumbnailed,
    create_downsampler,
    find_input_conv,
    thumbnail_size,
    widen_input_conv,
)

__all__ = ["ThumbnailDetector", "make_downsampler", "widen_stem"]


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
    """A DETR-style detector behind a downsampler: full-size images in, boxes out.

    :class:`learnthumb.Thumbnailed` with ``mask_argument="padding_mask"``: the padding mask is
    reduced with the image, so the detector sees the thumbnail's own valid region. It
    predicts boxes *normalised* to that region, which is the same fraction of the full-size
    image: post-processing with each image's original size gives original coordinates.

    Args:
        detector: ``detector(images, padding_mask=...) -> {"pred_logits", "pred_boxes", ...}``.
        downsampler: Module mapping ``(B, 3, H, W)`` to ``(B, C, ceil(H/s), ceil(W/s))``
            (``C > 3`` for a wide thumbnail, whose detector's stem was widened with
            :func:`widen_stem`).

    Shape:
        - images: :math:`(B, 3, H, W)` in [0, 1].
        - padding_mask: :math:`(B, H, W)` bool, True = padded, or ``None``.
        - output: the detector's dict (boxes normalised cx, cy, w, h).

    Example:
        >>> from learnthumb import InterpolateDownsampler
        >>> student = ThumbnailDetector(build_model("tiny"), InterpolateDownsampler(4))
        >>> outputs = student(torch.rand(1, 3, 64, 80))  # doctest: +SKIP
    """

    def __init__(self, detector: nn.Module, downsampler: nn.Module) -> None:
        super().__init__(detector, downsampler, mask_argument="padding_mask")

    @property
    def detector(self) -> nn.Module:
        """The detector that runs on the thumbnail."""
        return self.model

    @property
    def scale(self) -> int:
        """The downsampler's factor."""
        return self.downsampler.scale

    def forward(  # type: ignore[override]
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> dict[str, Any]:
        # The detectors' convention, detector(images, padding_mask), by position too.
        return super().forward(images, padding_mask=padding_mask)


def make_downsampler(name: str, scale: int) -> nn.Module:
    """A registry downsampler, checked to produce exact ``scale`` thumbnails.

    Raises:
        ValueError: Unknown name, or the module cannot make ``ceil(H/s) x ceil(W/s)``
            thumbnails (checked on a probe image), or it warps the image.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    try:
        downsampler = create_downsampler(name, scale=scale)
        probe_size = (4 * scale + 1, 4 * scale + 3)
        with torch.no_grad():
            probe = downsampler(torch.rand(1, 3, *probe_size))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"downsampler {name!r} cannot produce scale-{scale} thumbnails: {error}"
        ) from error
    if hasattr(downsampler, "sample"):
        raise ValueError(
            f"downsampler {name!r} warps the image, and thumbdet's detector does not map boxes "
            "back through a warp; use a uniform downsampler"
        )
    expected = thumbnail_size(probe_size, scale)
    # A wide thumbnail (learnthumb.WideDownsampler) has more than 3 channels.
    channels = getattr(downsampler, "out_channels", 3)
    if tuple(probe.shape) != (1, channels, *expected) or channels < 3:
        raise ValueError(
            f"downsampler {name!r} cannot produce scale-{scale} thumbnails: a "
            f"{probe_size} image gave shape {tuple(probe.shape[-2:])}, expected {expected}"
        )
    return downsampler
