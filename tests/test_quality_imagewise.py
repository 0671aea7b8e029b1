"""Per-image statistics of the quality suite: each metric recomputed on resampled test images."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from benchmarks.quality.data import Dataset, build_dataset
from benchmarks.quality.imagewise import ImageStats, detection_stats
from benchmarks.quality.stats import (
    combined_difference,
    image_interval,
    image_resamples,
    paired_difference,
    resampled_scores,
)
from benchmarks.quality.tasks import task_spec


def _coco_ap(images: list[tuple[list, list]]) -> tuple[float, object]:
    """pycocotools' AP@[.5:.95] of ``[(boxes, detections)]``, image ids 0..N-1 in order."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, detections = [], []
    for image_id, (boxes, found) in enumerate(images):
        for x, y, w, h in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": 1, "bbox": [x, y, w, h], "area": w * h})  # fmt: skip
        for x, y, w, h, score in found:
            detections.append(
                {"image_id": image_id, "category_id": 1, "bbox": [x, y, w, h], "score": score}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": [{"id": i, "width": 128, "height": 128} for i in range(len(images))],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "coin"}],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        stats = detection_stats(evaluation, len(images))
        evaluation.accumulate()
        evaluation.summarize()
    return 100.0 * evaluation.stats[0], stats


def _random_detection_images(count: int, seed: int) -> list[tuple[list, list]]:
    """Boxes, and detections near some of them plus false alarms, with distinct scores."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        boxes = [[*rng.uniform(0, 80, 2), *rng.uniform(8, 40, 2)] for _ in range(index % 4)]
        # Most boxes found, more or less well placed, and a few false alarms.
        found = [[*(np.asarray(box) + rng.normal(0, 3, 4)), rng.random()]
                 for box in boxes if rng.random() < 0.8]  # fmt: skip
        found += [[*rng.uniform(0, 80, 2), *rng.uniform(8, 40, 2), rng.random()]
                  for _ in range(rng.integers(0, 3))]  # fmt: skip
        images.append(([list(map(float, b)) for b in boxes], [list(map(float, d)) for d in found]))
    return images


def test_box_ap_from_image_stats_is_pycocotools_ap_also_on_a_resample():
    images = _random_detection_images(30, seed=0)
    reference, stats = _coco_ap(images)
    assert 5.0 < reference < 95.0  # neither trivial nor hopeless
    assert stats.score() == pytest.approx(reference, abs=1e-9)
    # A resample (images drawn twice, others left out) equals pycocotools on those copies.
    counts = np.random.default_rng(1).multinomial(30, np.full(30, 1 / 30))
    assert counts.max() >= 2 and (counts == 0).any()
    copies = [images[i] for i in np.repeat(np.arange(30), counts)]
    assert stats.score(counts) == pytest.approx(_coco_ap(copies)[0], abs=1e-9)


def test_box_ap_of_images_without_any_box_is_undefined():
    _, stats = _coco_ap([([], [[1.0, 1.0, 5.0, 5.0, 0.9]]), ([], [])])
    assert math.isnan(stats.score())
    _, only_false_alarms = _coco_ap([([[1.0, 1.0, 5.0, 5.0]], []), ([], [[50, 50, 5, 5, 0.9]])])
    assert only_false_alarms.score() == 0.0
    assert only_false_alarms.score(np.array([1, 0])) == 0.0  # the box, and nothing found


def _subset(data: Dataset, index: np.ndarray) -> Dataset:
    if isinstance(data.targets, list):
        return Dataset(data.images[index], [data.targets[i] for i in index])
    return Dataset(data.images[index], data.targets[index])


@pytest.mark.parametrize(
    ("task", "channels"), [("classify", 12), ("segment", 2), ("keypoints", 4), ("detect", 5)]
)
def test_every_task_rescores_a_resample_as_its_metric_scores_the_copies(task, channels):
    spec = task_spec(task)
    data = build_dataset(task, "test", 12, spec.image_size)
    shape = (12, channels) if task == "classify" else (12, channels, 16, 16)
    outputs = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if task == "detect":  # some confident peaks, so that AP is not zero
        outputs[:, 0] += 3 * torch.rand(12, 16, 16, generator=torch.Generator().manual_seed(1))
    stats = spec.image_stats(outputs, data)
    assert stats.metric == spec.metric and stats.num_images == 12
    assert stats.score() == pytest.approx(spec.evaluate(outputs, data)[spec.metric], abs=1e-9)
    counts = np.array([0, 1, 2, 3, 0, 1, 1, 0, 2, 1, 0, 1])
    index = np.repeat(np.arange(12), counts)
    expected = spec.evaluate(outputs[index], _subset(data, index))[spec.metric]
    assert stats.score(counts) == pytest.approx(expected, abs=1e-9)
    again = ImageStats.from_json(stats.to_json())  # a run's JSON record keeps them exactly
    assert again.score(counts) == stats.score(counts)
    with pytest.raises(ValueError, match="counts must hold one count per image"):
        stats.score(np.ones(5, dtype=np.int64))


def test_image_resamples_draw_every_image_count_with_replacement():
    counts = image_resamples(50, resamples=200, seed=3)
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    assert np.array_equal(counts, image_resamples(50, resamples=200, seed=3))
    assert 0.3 < (counts == 0).mean() < 0.45  # about (1 - 1/n)^n = 36.4% left out
    with pytest.raises(ValueError, match="num_images and resamples must be at least 1"):
        image_resamples(0)


def _accuracy_stats(correct: list[int]) -> ImageStats:
    return ImageStats("accuracy", len(correct), {"correct": np.asarray(correct)})


def test_image_interval_is_paired_over_images():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 400)
    counts = image_resamples(400, resamples=500)
    same = resampled_scores([_accuracy_stats(base)], counts)
    identical = image_interval(same, same)
    assert identical["low"] == identical["high"] == identical["std"] == 0.0
    # An arm right on 10% more of the same images: the paired difference is exactly that
    # share, give or take the resampling of those images; unpaired it would swing far wider.
    better = base.copy()
    better[np.flatnonzero(base == 0)[:40]] = 1
    interval = image_interval(resampled_scores([_accuracy_stats(better)], counts), same)
    assert 6.0 < interval["low"] < 10.0 < interval["high"] < 14.0
    assert interval["std"] < 2.0 and interval["resamples"] == 500
    with pytest.raises(ValueError, match="must share the resamples"):
        image_interval(same, same[:10])


def test_combined_difference_adds_the_images_error_to_the_seeds_error():
    seeds = paired_difference([1.2, 1.0, 1.1, 0.9, 1.3], [0.0] * 5)
    assert seeds["verdict"] == "better"
    no_image_error = combined_difference(seeds, {"std": 0.0})
    assert no_image_error["low"] == pytest.approx(seeds["low"])
    assert no_image_error["verdict"] == "better"
    noisy = combined_difference(seeds, {"std": 1.0})  # images alone: about +-1.96
    half = noisy["high"] - noisy["mean"]
    assert half == pytest.approx(math.hypot(seeds["high"] - seeds["mean"], 1.959964), rel=1e-5)
    assert noisy["verdict"] == "tie" and noisy["mean"] == seeds["mean"]
    one_seed = combined_difference(paired_difference([1.0], [0.0]), {"std": 0.1})
    assert one_seed["verdict"] == "tie" and math.isnan(one_seed["low"])
