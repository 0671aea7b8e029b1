"""COCO AP with pycocotools, and ``engine.evaluate`` mapping boxes to original image sizes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from learnthumb import InterpolateDownsampler, downsample_padding_mask
from tests.thumbdet.helpers import write_tiny_coco
from thumbdet.data import CocoDetection, DetectionCollator, make_transforms
from thumbdet.evaluation import evaluate
from thumbdet.evaluation.coco import (
    METRIC_NAMES,
    coco_evaluate,
    detections_to_coco_results,
    write_metrics,
)
from thumbdet.models.postprocess import PostProcess
from thumbdet.models.thumbnail_detector import ThumbnailDetector


@pytest.fixture
def dataset(tmp_path):
    images_dir, annotation_file = write_tiny_coco(tmp_path, num_images=5, size=(64, 80))
    return CocoDetection(images_dir, annotation_file, make_transforms("val", [32], 1000))


def _ground_truth_results(dataset, shift=0.0):
    results = []
    for annotation in dataset.coco.dataset["annotations"]:
        x, y, w, h = annotation["bbox"]
        results.append(
            {
                "image_id": annotation["image_id"],
                "category_id": annotation["category_id"],
                "bbox": [x + shift, y, w, h],
                "score": 0.9,
            }
        )
    return results


def test_perfect_detections_give_ap_100(dataset):
    metrics = coco_evaluate(dataset.coco, _ground_truth_results(dataset))
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["AP"] == pytest.approx(100.0)
    assert metrics["AP50"] == pytest.approx(100.0)
    assert metrics["AP75"] == pytest.approx(100.0)


def test_displaced_detections_lose_ap(dataset):
    metrics = coco_evaluate(dataset.coco, _ground_truth_results(dataset, shift=200.0))
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0


def test_no_detections_give_zero(dataset):
    assert coco_evaluate(dataset.coco, []) == dict.fromkeys(METRIC_NAMES, 0.0)


def test_pycocotools_is_silent_unless_verbose(dataset, capsys):
    coco_evaluate(dataset.coco, _ground_truth_results(dataset))
    assert capsys.readouterr().out == ""
    coco_evaluate(dataset.coco, _ground_truth_results(dataset), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_detections_to_coco_results_maps_labels_and_boxes():
    detection = {
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([1]),
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
    }
    (result,) = detections_to_coco_results([42], [detection], category_ids=[3, 7])
    assert result == {
        "image_id": 42,
        "category_id": 7,
        "bbox": [10.0, 20.0, 20.0, 40.0],
        "score": 0.5,
    }


def test_write_metrics(tmp_path):
    path = write_metrics({"AP": 1.5}, tmp_path / "a" / "m.json")
    assert json.loads(path.read_text()) == {"AP": 1.5}


class _Replay(nn.Module):
    """Returns prepared outputs batch after batch (a detector that is always right)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, images, padding_mask=None):  # noqa: ARG002 (the detector interface)
        return self.outputs.pop(0)


def test_evaluate_maps_normalised_boxes_to_original_size(dataset):
    loader = DataLoader(dataset, batch_size=2, collate_fn=DetectionCollator(4))
    outputs = []
    num_classes, queries = dataset.num_classes, 4
    for images, _, targets in loader:
        # the val transform halves the images: boxes must be scaled back up to score 100
        assert images.shape[-2] < int(targets[0]["orig_size"][0])
        logits = torch.full((len(targets), queries, num_classes), -10.0)
        boxes = torch.full((len(targets), queries, 4), 0.5)
        for index, target in enumerate(targets):
            count = len(target["labels"])
            logits[index, torch.arange(count), target["labels"]] = 10.0
            boxes[index, :count] = target["boxes"]
        outputs.append({"pred_logits": logits, "pred_boxes": boxes})
    metrics = evaluate(
        _Replay(outputs), loader, PostProcess(), dataset, torch.device("cpu"), show_progress=False
    )
    assert metrics["AP"] == pytest.approx(100.0, abs=0.5)
    assert metrics["AP75"] == pytest.approx(100.0, abs=0.5)


class _Recorder(nn.Module):
    def forward(self, images, padding_mask=None):
        self.seen = (images, padding_mask)
        return {"pred_boxes": torch.full((images.shape[0], 1, 4), 0.5)}


def test_thumbnail_detector_gives_the_detector_the_thumbnail_and_its_mask():
    recorder = _Recorder()
    student = ThumbnailDetector(recorder, InterpolateDownsampler(4))
    images = torch.rand(2, 3, 36, 44)
    mask = torch.zeros(2, 36, 44, dtype=torch.bool)
    mask[1, 20:] = True
    outputs = student(images, mask)
    thumbnail, thumbnail_mask = recorder.seen
    assert thumbnail.shape == (2, 3, 9, 11)
    assert torch.equal(thumbnail_mask, downsample_padding_mask(mask, 4))
    assert thumbnail_mask[1, 5:].all() and not thumbnail_mask[1, :5].any()
    assert outputs["pred_boxes"].shape == (2, 1, 4)
    student(images)
    assert recorder.seen[1] is None


def test_non_finite_detections_are_refused():
    detection = {
        "scores": torch.tensor([0.5, float("nan")]),
        "labels": torch.tensor([0, 0]),
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 2.0, 2.0]]),
    }
    with pytest.raises(ValueError, match="image 7: expected finite scores, got NaN/inf"):
        detections_to_coco_results([7], [detection], [1])


def test_evaluate_refuses_a_model_with_non_finite_outputs(dataset):
    loader = DataLoader(dataset, batch_size=2, collate_fn=DetectionCollator(4))
    nan = {
        "pred_logits": torch.full((2, 4, dataset.num_classes), float("nan")),
        "pred_boxes": torch.full((2, 4, 4), float("nan")),
    }
    with pytest.raises(ValueError, match="expected finite values"):
        evaluate(
            _Replay([nan] * 3), loader, PostProcess(), dataset, torch.device("cpu"),
            show_progress=False,
        )  # fmt: skip
