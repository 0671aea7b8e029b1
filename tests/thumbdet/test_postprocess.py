"""PostProcess: top-k over sigmoid scores, boxes in absolute xyxy pixels."""

from __future__ import annotations

import pytest
import torch

import thumbdet


def test_top_scores_labels_and_absolute_boxes():
    logits = torch.full((2, 4, 3), -5.0)
    logits[0, 2, 1] = 4.0  # best detection of image 0: query 2, class 1
    logits[0, 0, 2] = 2.0
    logits[1, 3, 0] = 3.0
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]]).repeat(2, 4, 1)
    boxes[0, 2] = torch.tensor([0.25, 0.5, 0.5, 1.0])
    sizes = torch.tensor([[100, 200], [50, 80]])  # (height, width)
    results = thumbdet.PostProcess(num_detections=2)(
        {"pred_logits": logits, "pred_boxes": boxes}, sizes
    )
    assert len(results) == 2
    first = results[0]
    assert first["scores"].shape == (2,) and first["boxes"].shape == (2, 4)
    assert first["labels"].tolist() == [1, 2]
    torch.testing.assert_close(first["scores"][0], torch.sigmoid(torch.tensor(4.0)))
    torch.testing.assert_close(first["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert torch.all(first["scores"][:-1] >= first["scores"][1:])
    second = results[1]
    assert second["labels"][0] == 0
    torch.testing.assert_close(second["boxes"][0], torch.tensor([32.0, 15.0, 48.0, 35.0]))


def test_num_detections_is_capped_by_queries_times_classes():
    outputs = {"pred_logits": torch.randn(1, 2, 3), "pred_boxes": torch.rand(1, 2, 4)}
    results = thumbdet.PostProcess(100)(outputs, torch.tensor([[10, 10]]))
    assert results[0]["scores"].shape == (6,)


def test_bad_inputs_raise():
    outputs = {"pred_logits": torch.randn(2, 2, 3), "pred_boxes": torch.rand(2, 2, 4)}
    with pytest.raises(ValueError, match="target_sizes"):
        thumbdet.PostProcess()(outputs, torch.tensor([[10, 10]]))
    with pytest.raises(ValueError, match="num_detections"):
        thumbdet.PostProcess(0)


@pytest.mark.parametrize("key", ["pred_logits", "pred_boxes"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_outputs_are_refused(key, value):
    # NaN logits still rank: a broken model once scored AP 10.94 instead of an error.
    outputs = {"pred_logits": torch.randn(2, 5, 3), "pred_boxes": torch.rand(2, 5, 4)}
    outputs[key][1, 2, 0] = value
    with pytest.raises(ValueError, match=f"{key}: expected finite values, got 1 NaN/inf"):
        thumbdet.PostProcess()(outputs, torch.tensor([[10, 10], [20, 20]]))
