"""COCO box AP with pycocotools on detections in each image's original coordinates."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from thumbdet.files import write_json

__all__ = ["METRIC_NAMES", "coco_evaluate", "detections_to_coco_results", "write_metrics"]

#: Keys of the metrics dict, in the order of ``COCOeval.stats[:6]``.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco_results(
    image_ids: Iterable[int],
    detections: Iterable[Mapping[str, torch.Tensor]],
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """Turn per-image detections into COCO result entries.

    Args:
        image_ids: COCO image id of each detection dict.
        detections: Dicts with ``"scores"`` (N,), ``"labels"`` (N,) contiguous labels and
            ``"boxes"`` (N, 4) absolute (x0, y0, x1, y1) in the original image.
        category_ids: COCO category id of each contiguous label.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.

    Raises:
        ValueError: when a box or score is NaN or infinite: COCOeval would rank such
            detections and report an AP for a broken model.
    """
    results = []
    for image_id, detection in zip(image_ids, detections, strict=True):
        boxes = detection["boxes"].detach().float().cpu()  # (N, 4) xyxy
        for key in ("boxes", "scores"):
            if not bool(torch.isfinite(detection[key]).all()):
                raise ValueError(
                    f"detections of image {image_id}: expected finite {key}, got NaN/inf; "
                    "the model is broken (e.g. training diverged), no AP is computed"
                )
        widths_heights = boxes[:, 2:] - boxes[:, :2]
        xywh = torch.cat([boxes[:, :2], widths_heights], dim=1).tolist()
        scores = detection["scores"].detach().float().cpu().tolist()
        labels = detection["labels"].detach().cpu().tolist()
        for box, score, label in zip(xywh, scores, labels, strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[int(label)]),
                    "bbox": [round(value, 3) for value in box],
                    "score": float(score),
                }
            )
    return results


def coco_evaluate(
    coco_gt: COCO,
    results: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """Box AP of COCO result entries against a ground-truth index (pycocotools ``COCOeval``).

    Args:
        coco_gt: Ground truth, e.g. ``CocoDetection.coco``.
        results: Entries as from :func:`detections_to_coco_results`.
        image_ids: Images to evaluate on (``None``: all images of ``coco_gt``).
        verbose: Let pycocotools print its summary.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in percent; ``-1.0`` where
        pycocotools reports no ground truth (e.g. no small objects). No detections give 0.
    """
    image_ids = sorted(coco_gt.imgs) if image_ids is None else sorted(set(image_ids))
    if not results:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_dt = coco_gt.loadRes([dict(result) for result in results])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats[: len(METRIC_NAMES)], dtype=np.float64)
    return {
        name: (float(value) * 100.0 if value >= 0 else -1.0)
        for name, value in zip(METRIC_NAMES, stats, strict=True)
    }


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write metrics as JSON, keys sorted (parent folders created, atomically); returns the path."""
    return write_json(path, dict(metrics), sort_keys=True)
