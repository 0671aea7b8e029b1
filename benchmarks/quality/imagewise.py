"""Each task's metric from per-image statistics, recomputable on any resample of the test images.

The suite's intervals over training seeds hold the test images fixed: another set of images
drawn the same way would give other numbers. To measure that, every run keeps a few numbers per
test image (:class:`ImageStats`) from which its metric is recomputed exactly for any multiset of
those images, given as a count per image; :mod:`benchmarks.quality.stats` resamples them.

- ``accuracy``: whether each image is classified right;
- ``pck``: how many of an image's keypoints fall within the threshold, and how many it has;
- ``miou``: each image's intersection and union per class (the metric sums them over images);
- ``box_ap``: each image's detections (score; matched or ignored at which IoU thresholds) and
  its count of ground-truth boxes: what pycocotools' ``accumulate`` builds its
  precision-recall curves from. Recomputed on every image once, it equals pycocotools'
  AP@[.5:.95]; an image drawn twice counts as two images with the same detections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["METRICS", "ImageStats", "detection_stats"]

#: pycocotools' 101 recall thresholds of its interpolated precision.
_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def _accuracy(arrays: dict[str, np.ndarray], counts: np.ndarray) -> float:
    return 100.0 * float(counts @ arrays["correct"]) / float(counts.sum())


def _pck(arrays: dict[str, np.ndarray], counts: np.ndarray) -> float:
    return 100.0 * float(counts @ arrays["hits"]) / float(counts @ arrays["keypoints"])


def _miou(arrays: dict[str, np.ndarray], counts: np.ndarray) -> float:
    intersection = counts @ arrays["intersection"]  # (classes,)
    union = counts @ arrays["union"]
    return 100.0 * float(np.mean(intersection / np.maximum(union, 1)))


def _box_ap(arrays: dict[str, np.ndarray], counts: np.ndarray) -> float:
    """pycocotools' ``accumulate`` for one category, all areas, with image weights."""
    ground_truth = float(counts @ arrays["gt"])
    if ground_truth == 0:
        return float("nan")  # pycocotools reports -1: AP is undefined without any box
    # pycocotools sorts the detections of all images, concatenated in image order, by score
    # with a stable sort; an image drawn k times adds k identical detections at once.
    order = np.argsort(-arrays["score"], kind="mergesort")
    if len(order) == 0:
        return 0.0
    weight = counts[arrays["image"][order]][:, None].astype(np.float64)  # (D, 1)
    matched, ignored = arrays["matched"][order], arrays["ignored"][order]  # (D, T)
    true_positives = np.cumsum(weight * (matched & ~ignored), axis=0)
    false_positives = np.cumsum(weight * (~matched & ~ignored), axis=0)
    recall = true_positives / ground_truth
    precision = true_positives / (true_positives + false_positives + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1], axis=0)[::-1]  # envelope from the right
    per_threshold = []
    for t in range(recall.shape[1]):
        index = np.searchsorted(recall[:, t], _RECALL_THRESHOLDS, side="left")
        reached = index < len(order)
        values = np.where(reached, precision[np.minimum(index, len(order) - 1), t], 0.0)
        per_threshold.append(values.mean())
    return 100.0 * float(np.mean(per_threshold))


#: metric name -> ``score(arrays, counts)``, the metric of the images weighted by ``counts``.
METRICS: dict[str, Callable[[dict[str, np.ndarray], np.ndarray], float]] = {
    "accuracy": _accuracy,
    "pck": _pck,
    "miou": _miou,
    "box_ap": _box_ap,
}


@dataclass(frozen=True)
class ImageStats:
    """The per-image statistics of one run's metric on its test images.

    Attributes:
        metric: a key of :data:`METRICS`.
        num_images: number of test images.
        arrays: the statistics, one row per image (``image`` maps a detection to its image).
    """

    metric: str
    num_images: int
    arrays: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")

    def score(self, counts: np.ndarray | None = None) -> float:
        """The metric on the images drawn ``counts[i]`` times each (default: each once)."""
        if counts is None:
            counts = np.ones(self.num_images, dtype=np.int64)
        if counts.shape != (self.num_images,):
            raise ValueError(
                f"counts must hold one count per image ({self.num_images}), got {counts.shape}"
            )
        return METRICS[self.metric](self.arrays, counts)

    def to_json(self) -> dict:
        """Plain lists, for a run's JSON record (a boolean matrix as one bit mask per row)."""
        return {
            "metric": self.metric,
            "num_images": self.num_images,
            "arrays": {key: _encode(value) for key, value in self.arrays.items()},
        }

    @classmethod
    def from_json(cls, value: dict) -> ImageStats:
        """Inverse of :meth:`to_json`."""
        arrays = {key: _decode(item) for key, item in value["arrays"].items()}
        return cls(value["metric"], int(value["num_images"]), arrays)


def _encode(array: np.ndarray) -> dict:
    if array.dtype == bool and array.ndim == 2:  # (rows, bits): a detection's IoU thresholds
        bits = array.shape[1]
        masks = (array.astype(np.int64) << np.arange(bits)).sum(axis=1)
        return {"dtype": "bits", "bits": bits, "values": masks.tolist()}
    return {"dtype": array.dtype.str, "values": array.tolist()}


def _decode(item: dict) -> np.ndarray:
    if item["dtype"] == "bits":
        masks = np.asarray(item["values"], dtype=np.int64).reshape(-1, 1)
        return (masks >> np.arange(item["bits"])) & 1 == 1
    return np.asarray(item["values"], dtype=np.dtype(item["dtype"]))


def detection_stats(evaluation, num_images: int) -> ImageStats:
    """The ``box_ap`` statistics of a pycocotools ``COCOeval`` after ``evaluate()``.

    Args:
        evaluation: a ``COCOeval`` of one category whose image ids are ``0 .. num_images - 1``.
        num_images: number of images.
    """
    params = evaluation.params
    if len(params.catIds) != 1 or list(params.imgIds) != list(range(num_images)):
        raise ValueError("evaluation must cover one category and the images 0 .. num_images - 1")
    max_detections = params.maxDets[-1]
    thresholds = len(params.iouThrs)
    image, score, matched, ignored = [], [], [], []
    ground_truth = np.zeros(num_images, dtype=np.int64)
    # evalImgs is ordered by category, area range, image: the first num_images are area "all".
    for index, entry in enumerate(evaluation.evalImgs[:num_images]):
        if entry is None:  # neither a box nor a detection
            continue
        ground_truth[index] = int(np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0))
        kept = len(entry["dtScores"][:max_detections])
        image += [index] * kept
        score += list(entry["dtScores"][:max_detections])
        matched.append(np.asarray(entry["dtMatches"])[:, :kept].T > 0)
        ignored.append(np.asarray(entry["dtIgnore"], dtype=bool)[:, :kept].T)
    empty = np.zeros((0, thresholds), dtype=bool)
    arrays = {
        "image": np.asarray(image, dtype=np.int64),
        "score": np.asarray(score, dtype=np.float64),
        "matched": np.concatenate(matched) if matched else empty,
        "ignored": np.concatenate(ignored) if ignored else empty,
        "gt": ground_truth,
    }
    return ImageStats("box_ap", num_images, arrays)
