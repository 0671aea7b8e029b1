"""Models, losses and metrics of the quality suite's tasks, at the original resolution.

Every model takes images in ``[0, 1]`` (a thumbnail or the full image) and normalises them
itself, so a student sees its thumbnail in the same value range as the teacher sees the image.
Losses and metrics never look at the thumbnail's size: predictions are mapped back to the
original pixel grid (boxes and keypoints in original pixels, masks upsampled to the original
size), so every arm is scored on the same targets.

- ``classify``: timm ``test_efficientnet`` (0.1 M parameters), accuracy in %.
- ``detect``: a CenterNet-style detector (heatmap, sub-cell offset, log size) on the examples'
  ``DensePredictionNet`` (no torchvision detector converges in a few CPU minutes from random
  weights, and none can be downloaded); COCO box AP (pycocotools, AP@[.5:.95], in %).
- ``segment``: ``DensePredictionNet`` logits upsampled to the image; mean IoU of coin and
  background, in %.
- ``keypoints``: ``DensePredictionNet`` heatmaps trained with a cross-entropy against a
  Gaussian around each keypoint (4 pixels, or one cell of a coarser map) and decoded with a
  local soft-argmax; PCK at 5% of the image side (6.4 pixels), in %; the mean error in pixels
  is reported too.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.quality.data import Dataset
from benchmarks.quality.imagewise import ImageStats, detection_stats
from examples._common.models import DensePredictionNet
from learnthumb import IMAGENET_MEAN, IMAGENET_STD, normalize_image_channels

__all__ = ["TASKS", "TaskSpec", "task_spec"]


class Classifier(nn.Module):
    """A timm classifier that normalises its ``[0, 1]`` input itself."""

    def __init__(self, num_classes: int, name: str = "test_efficientnet") -> None:
        super().__init__()
        self.net = timm.create_model(name, pretrained=False, num_classes=num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_names(self) -> list[str]:
        """The stages distilled by feature distillation."""
        return ["net.blocks.1", "net.blocks.3"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(normalize_image_channels(images, self.mean, self.std))  # (B, num_classes)


# ----------------------------------------------------------------------------- classification


def _classify_loss(output: torch.Tensor, targets: torch.Tensor, size: int) -> torch.Tensor:  # noqa: ARG001 (the TaskSpec.loss signature)
    return F.cross_entropy(output, targets)


def _classify_stats(outputs: torch.Tensor, data: Dataset) -> ImageStats:
    correct = (outputs.argmax(dim=1) == data.targets).numpy().astype(np.int64)
    return ImageStats("accuracy", len(correct), {"correct": correct})


def _classify_measure(outputs: torch.Tensor, data: Dataset) -> tuple[dict, ImageStats]:
    stats = _classify_stats(outputs, data)
    return {"accuracy": stats.score()}, stats


# -------------------------------------------------------------------------------- detection

_SIZE_UNIT = 32.0  # box sides are regressed as log(side / 32 px): targets near 0


class CenterNet(DensePredictionNet):
    """Heatmap, sub-cell offset and log size per cell (CenterNet) on ``DensePredictionNet``.

    The heatmap's bias starts at the logit of 0.1, CenterNet's prior: the focal loss then
    starts near its working range instead of at hundreds.
    """

    def __init__(self) -> None:
        super().__init__(5)
        with torch.no_grad():
            self.predict.bias[0] = math.log(0.1 / 0.9)


def _centernet_targets(
    boxes: list[torch.Tensor], grid: tuple[int, int], size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian centre heatmaps ``(B, h, w)``, regression targets ``(B, 4, h, w)``, mask."""
    height, width = grid
    stride_y, stride_x = size / height, size / width
    heat = torch.zeros(len(boxes), height, width)
    regression = torch.zeros(len(boxes), 4, height, width)
    has_object = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    ys = torch.arange(height).view(-1, 1).float()
    xs = torch.arange(width).view(1, -1).float()
    for b, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes.tolist():
            cx, cy = (x0 + x1) / 2 / stride_x, (y0 + y1) / 2 / stride_y  # in cells
            i, j = min(int(cy), height - 1), min(int(cx), width - 1)
            sigma = max(((x1 - x0) / stride_x + (y1 - y0) / stride_y) / 12, 0.5)
            gauss = torch.exp(-((xs - j) ** 2 + (ys - i) ** 2) / (2 * sigma**2))
            heat[b] = torch.maximum(heat[b], gauss)
            regression[b, :, i, j] = torch.tensor(
                [
                    cx - j,
                    cy - i,
                    math.log(max(x1 - x0, 1.0) / _SIZE_UNIT),
                    math.log(max(y1 - y0, 1.0) / _SIZE_UNIT),
                ]
            )
            has_object[b, i, j] = True
    return heat, regression, has_object


def _detect_loss(output: torch.Tensor, targets: list[torch.Tensor], size: int) -> torch.Tensor:
    heat, regression, has_object = _centernet_targets(targets, output.shape[-2:], size)
    prob = output[:, 0].sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = heat == 1.0
    # CenterNet's penalty-reduced focal loss.
    pos_loss = -(torch.log(prob) * (1 - prob) ** 2)[positive].sum()
    neg_loss = -(torch.log(1 - prob) * prob**2 * (1 - heat) ** 4)[~positive].sum()
    focal = (pos_loss + neg_loss) / positive.sum().clamp(min=1)
    mask = has_object[:, None].expand_as(regression)
    reg = F.l1_loss(output[:, 1:5][mask], regression[mask]) if mask.any() else output.sum() * 0
    return focal + reg


def _decode_boxes(output: torch.Tensor, size: int, top_k: int = 20) -> list[torch.Tensor]:
    """``(n, 5)`` per image: x0, y0, x1, y1 in original pixels, score."""
    height, width = output.shape[-2:]
    stride_y, stride_x = size / height, size / width
    prob = output[:, 0].sigmoid()
    peaks = prob * (F.max_pool2d(prob[:, None], 3, 1, 1)[:, 0] == prob)
    results = []
    for b in range(output.shape[0]):
        scores, index = peaks[b].flatten().topk(min(top_k, height * width))
        i, j = index // width, index % width
        reg = output[b, 1:5][:, i, j]  # (4, k)
        cx = (j + reg[0]) * stride_x
        cy = (i + reg[1]) * stride_y
        w, h = _SIZE_UNIT * reg[2:4].clamp(max=math.log(2 * size / _SIZE_UNIT)).exp()
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores], dim=1)
        results.append(boxes)
    return results


def _coco_evaluation(outputs: torch.Tensor, data: Dataset):
    """pycocotools' ``COCOeval`` of the decoded boxes, after ``evaluate()``; images 0..N-1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    size = data.images.shape[-1]
    images, annotations, detections = [], [], []
    for image_id, (boxes, predicted) in enumerate(
        zip(data.targets, _decode_boxes(outputs, size), strict=True)
    ):
        images.append({"id": image_id, "width": size, "height": size})
        for x0, y0, x1, y1 in boxes.tolist():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        for x0, y0, x1, y1, score in predicted.tolist():
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "coin"}],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
    return evaluation


def _detect_measure(outputs: torch.Tensor, data: Dataset) -> tuple[dict, ImageStats]:
    evaluation = _coco_evaluation(outputs, data)
    stats = detection_stats(evaluation, len(data.targets))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.accumulate()
        evaluation.summarize()
    metrics = {"box_ap": 100.0 * evaluation.stats[0], "box_ap50": 100.0 * evaluation.stats[1]}
    return metrics, stats


# ----------------------------------------------------------------------------- segmentation


def _segment_loss(output: torch.Tensor, targets: torch.Tensor, size: int) -> torch.Tensor:  # noqa: ARG001 (the TaskSpec.loss signature)
    logits = F.interpolate(output, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, targets)


def _segment_stats(outputs: torch.Tensor, data: Dataset) -> ImageStats:
    """Intersection and union of background (0) and coin (1), per image: ``(N, 2)`` each."""
    truth = data.targets
    predicted = torch.cat(
        [
            F.interpolate(
                chunk, size=truth.shape[-2:], mode="bilinear", align_corners=False
            ).argmax(dim=1)
            for chunk in outputs.split(64)
        ]
    )
    labels = torch.arange(2).view(1, 2, 1, 1)
    is_predicted, is_true = predicted[:, None] == labels, truth[:, None] == labels  # (N, 2, H, W)
    arrays = {
        "intersection": (is_predicted & is_true).sum(dim=(2, 3)).numpy(),
        "union": (is_predicted | is_true).sum(dim=(2, 3)).numpy(),
    }
    return ImageStats("miou", len(truth), arrays)


def _segment_measure(outputs: torch.Tensor, data: Dataset) -> tuple[dict, ImageStats]:
    stats = _segment_stats(outputs, data)
    coin = stats.arrays["intersection"][:, 1].sum() / max(stats.arrays["union"][:, 1].sum(), 1)
    return {"miou": stats.score(), "coin_iou": 100.0 * float(coin)}, stats


# -------------------------------------------------------------------------------- keypoints


_KEYPOINT_SIGMA_PX = 4.0  # spread of the target distribution, in original pixels


def _cell_centres(length: int, size: int) -> torch.Tensor:
    return (torch.arange(length, dtype=torch.float32) + 0.5) * (size / length)


def _soft_argmax(output: torch.Tensor, size: int, radius: int | None = 2) -> torch.Tensor:
    """(x, y) of each heatmap in original pixels: ``(B, K, 2)``.

    The softmax-weighted mean of the cell centres within ``radius`` cells of the most likely
    cell (``None``: over the whole map), so far-away probability mass cannot pull the estimate.
    """
    batch, keypoints, height, width = output.shape
    logits = output.float().flatten(2)  # (B, K, h*w)
    if radius is not None:
        peak = logits.argmax(dim=-1)  # (B, K)
        rows = torch.arange(height).repeat_interleave(width)  # (h*w,)
        cols = torch.arange(width).repeat(height)
        near = ((rows - (peak // width)[..., None]).abs() <= radius) & (
            (cols - (peak % width)[..., None]).abs() <= radius
        )  # (B, K, h*w)
        logits = logits.masked_fill(~near, float("-inf"))
    prob = logits.softmax(dim=-1).view(batch, keypoints, height, width)
    x = (prob.sum(dim=2) * _cell_centres(width, size)).sum(dim=-1)
    y = (prob.sum(dim=3) * _cell_centres(height, size)).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def _keypoints_loss(output: torch.Tensor, targets: torch.Tensor, size: int) -> torch.Tensor:
    """Cross-entropy of each heatmap's softmax against a Gaussian around its keypoint."""
    height, width = output.shape[-2:]
    xs, ys = _cell_centres(width, size), _cell_centres(height, size)
    # A spread of at least one cell, so that a coarse map's target is not a single cell.
    sigma = max(_KEYPOINT_SIGMA_PX, size / min(height, width))
    dx = (xs.view(1, 1, 1, -1) - targets[..., 0, None, None]) ** 2  # (B, K, 1, w)
    dy = (ys.view(1, 1, -1, 1) - targets[..., 1, None, None]) ** 2  # (B, K, h, 1)
    target = (-(dx + dy) / (2 * sigma**2)).flatten(2).softmax(dim=-1)  # (B, K, h*w)
    log_prob = output.float().flatten(2).log_softmax(dim=-1)
    return -(target * log_prob).sum(dim=-1).mean()


def _keypoints_measure(outputs: torch.Tensor, data: Dataset) -> tuple[dict, ImageStats]:
    size = data.images.shape[-1]
    error = (_soft_argmax(outputs, size) - data.targets).norm(dim=-1)  # (N, K) pixels
    hits = (error <= 0.05 * size).sum(dim=1).numpy()
    keypoints = np.full(len(error), error.shape[1], dtype=np.int64)
    stats = ImageStats("pck", len(error), {"hits": hits, "keypoints": keypoints})
    return {"pck": stats.score(), "mean_error_px": error.mean().item()}, stats


# ------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TaskSpec:
    """Everything the suite needs to train and score one task.

    Attributes:
        name: the task's name.
        metric: the key of the headline metric (higher is better).
        image_size: side of the images, in pixels.
        train_count, test_count: number of images per split.
        batch_size: mini-batch size of every arm.
        make_model: builds a fresh (randomly initialised) model.
        loss: ``loss(output, targets, image_size)``, targets at the original resolution.
        measure: ``measure(outputs, test_data)``: the metrics (a dict with ``metric`` among
            its keys) and the per-image statistics from which ``metric`` is recomputed on a
            resample of the test images, computed together (see :meth:`evaluate`,
            :meth:`image_stats`).
        logits: how to find the class logits for logit distillation, or ``None``.
        revision: bumped whenever the task's data, model, loss or metric change, so that
            runs kept in the suite's ``--work-dir`` from an earlier definition are not reused.
    """

    name: str
    metric: str
    image_size: int
    train_count: int
    test_count: int
    batch_size: int
    make_model: Callable[[], nn.Module]
    loss: Callable[[torch.Tensor, object, int], torch.Tensor]
    measure: Callable[[torch.Tensor, Dataset], tuple[dict[str, float], ImageStats]]
    logits: Callable[[torch.Tensor], torch.Tensor] | None = None
    revision: int = 1

    def evaluate(self, outputs: torch.Tensor, data: Dataset) -> dict[str, float]:
        """The metrics of ``outputs`` on ``data``."""
        return self.measure(outputs, data)[0]

    def image_stats(self, outputs: torch.Tensor, data: Dataset) -> ImageStats:
        """The per-image statistics of the headline metric."""
        return self.measure(outputs, data)[1]

    @property
    def key(self) -> str:
        """The task's name, with its revision after the first."""
        return self.name if self.revision == 1 else f"{self.name}@{self.revision}"


def _identity(output: torch.Tensor) -> torch.Tensor:
    return output


TASKS: dict[str, TaskSpec] = {
    "classify": TaskSpec(
        "classify", "accuracy", 64, 2400, 1200, 32,
        lambda: Classifier(12), _classify_loss, _classify_measure, _identity,
    ),
    "mechanism": TaskSpec(
        "mechanism", "accuracy", 64, 2400, 1200, 32,
        lambda: Classifier(2), _classify_loss, _classify_measure, _identity,
    ),
    "detect": TaskSpec(
        "detect", "box_ap", 128, 1200, 300, 16,
        CenterNet, _detect_loss, _detect_measure,
    ),
    "segment": TaskSpec(
        "segment", "miou", 128, 1200, 300, 16,
        lambda: DensePredictionNet(2), _segment_loss, _segment_measure,
    ),
    "keypoints": TaskSpec(
        "keypoints", "pck", 128, 1200, 300, 16,
        lambda: DensePredictionNet(4), _keypoints_loss, _keypoints_measure,
        revision=2,
    ),
}  # fmt: skip


def task_spec(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]
