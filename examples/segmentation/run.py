"""Learned 4x thumbnails for semantic segmentation: teacher vs bicubic student vs learned student.

    python -m examples.segmentation.run [--output DIR] [--quick]   # from the repository root

Generates the dataset (PNG images and masks) under ``DIR/data``, trains a full-resolution
teacher, a student on anti-aliased bicubic 4x thumbnails and a student on learned 4x
thumbnails (ConvDownsampler: moment matching, then task + moment + feature distillation from
the teacher), and scores all three by mIoU at the ORIGINAL resolution: logits are upsampled
with ``upsample_to`` before the argmax. Prints a table, writes ``DIR/results.json`` and
``DIR/figure.png`` (image | bicubic thumbnail | learned thumbnail | masks).
"""

from __future__ import annotations

import matplotlib.cm
import torch
import torch.nn.functional as F

from examples._common.experiment import Task, run_comparison
from examples.segmentation.shapes_dataset import CLASSES, load_split, write_dataset
from learnthumb import upsample_to


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the original resolution: logits (B, K, h, w), masks (B, H, W)."""
    return F.cross_entropy(upsample_to(logits, masks.shape[-2:]), masks)


def predicted_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels (N, H, W) at the original size: upsample the logits, then argmax."""
    return torch.cat([upsample_to(chunk, size).argmax(1) for chunk in logits.split(32)])


def segmentation_scores(logits: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """mIoU (first) and per-class IoU at the masks' resolution, from logits at any resolution."""
    num_classes = len(CLASSES)
    labels = predicted_labels(logits, masks.shape[-2:])  # (N, H, W)
    confusion = torch.bincount(
        masks.flatten() * num_classes + labels.flatten(), minlength=num_classes**2
    ).reshape(num_classes, num_classes)  # (true, predicted)
    intersection = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - intersection
    iou = (intersection / union.clamp(min=1)).tolist()
    return {
        "mIoU": sum(iou) / num_classes,
        **{f"IoU {c}": v for c, v in zip(CLASSES, iou, strict=True)},
    }


def colorize(labels: torch.Tensor):
    """Label map (H, W) -> (H, W, 3) colours (tab10)."""
    return matplotlib.cm.tab10(labels.numpy() / 10.0)[..., :3]


def main() -> None:
    run = run_comparison(
        __doc__.splitlines()[0],
        "runs/segmentation",
        write_dataset,
        load_split,
        lambda _size: Task(len(CLASSES), segmentation_loss, segmentation_scores),
    )
    size = run.experiment.size
    predicted = [predicted_labels(logits, size) for logits in run.predictions()]
    run.report(
        [[colorize(labels) for labels in column] for column in [run.shown_targets, *predicted]]
    )


if __name__ == "__main__":
    main()
