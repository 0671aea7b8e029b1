"""SetCriterion: loss values, empty targets, auxiliary suffixes, gradients, normalisation."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

import thumbdet
from thumbdet.training.criterion import num_target_boxes, weighted_loss

CLASSES = 3


def _outputs(batch: int, queries: int, aux_layers: int = 0, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)

    def layer() -> dict:
        return {
            "pred_logits": torch.randn(batch, queries, CLASSES, generator=generator)
            .requires_grad_(),
            "pred_boxes": (torch.rand(batch, queries, 4, generator=generator) * 0.4 + 0.3)
            .requires_grad_(),
        }  # fmt: skip

    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(aux_layers)]
    return outputs


def _empty() -> dict:
    return {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}


def _target(labels: list[int], boxes: list[list[float]]) -> dict:
    return {"labels": torch.tensor(labels), "boxes": torch.tensor(boxes)}


def test_weight_dict_and_keys_follow_reference_naming():
    criterion = thumbdet.build_criterion("paper_r50")
    expected = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    for layer in range(5):
        expected.update({f"{name}_{layer}": w for name, w in list(expected.items())[:3]})
    assert criterion.weight_dict == expected
    outputs = _outputs(2, 10, aux_layers=5)
    losses = criterion(outputs, [_target([1], [[0.5, 0.5, 0.2, 0.2]]), _empty()])
    assert set(losses) == set(expected)
    assert all(value.dim() == 0 and torch.isfinite(value) for value in losses.values())


def test_empty_targets_give_finite_losses_and_gradients():
    criterion = thumbdet.build_criterion("tiny", num_classes=CLASSES)
    outputs = _outputs(2, 6, aux_layers=1)
    losses = criterion(outputs, [_empty(), _empty()])
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    assert losses["loss_ce"] > 0
    weighted_loss(losses, criterion.weight_dict).backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all()
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_gradients_reach_logits_and_boxes_of_every_layer():
    criterion = thumbdet.build_criterion("tiny", num_classes=CLASSES)
    outputs = _outputs(2, 6, aux_layers=1)
    targets = [_target([0, 2], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]), _empty()]
    weighted_loss(criterion(outputs, targets), criterion.weight_dict).backward()
    for layer in [outputs, *outputs["aux_outputs"]]:
        assert layer["pred_logits"].grad.abs().sum() > 0
        assert layer["pred_boxes"].grad.abs().sum() > 0


def test_loss_values_match_a_direct_computation():
    criterion = thumbdet.build_criterion("tiny", num_classes=CLASSES, aux_loss=False)
    logits = torch.full((1, 3, CLASSES), -4.0)
    logits[0, 1, 2] = 3.0
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.4, 0.4], [0.8, 0.8, 0.1, 0.1]]])
    target = _target([2], [[0.5, 0.5, 0.2, 0.4]])
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, [target])
    one_hot = torch.zeros_like(logits)
    one_hot[0, 1, 2] = 1.0
    expected_ce = sigmoid_focal_loss(logits, one_hot, alpha=0.25, gamma=2.0).sum()
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    torch.testing.assert_close(losses["loss_bbox"], torch.tensor(0.2))
    # xyxy (0.3, 0.3, 0.7, 0.7) vs (0.4, 0.3, 0.6, 0.7): IoU 0.5, hull = union, so GIoU = 0.5.
    torch.testing.assert_close(losses["loss_giou"], torch.tensor(0.5))


def test_perfect_predictions_have_zero_box_losses():
    criterion = thumbdet.build_criterion("tiny", num_classes=CLASSES, aux_loss=False)
    target = _target([0, 1], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    boxes = torch.tensor([[[0.5, 0.5, 0.1, 0.1], *target["boxes"].tolist()]])
    logits = torch.full((1, 3, CLASSES), -8.0)
    logits[0, 1, 0] = logits[0, 2, 1] = 8.0
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, [target])
    assert losses["loss_bbox"] < 1e-6 and losses["loss_giou"] < 1e-6
    assert losses["loss_ce"] < 1e-3


def test_losses_are_normalised_by_the_number_of_boxes():
    criterion = thumbdet.build_criterion("tiny", num_classes=CLASSES, aux_loss=False)
    outputs = _outputs(1, 8)
    target = _target([0, 1], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    single = criterion(outputs, [target])
    doubled = {
        key: torch.cat([value, value]) for key, value in outputs.items() if key != "aux_outputs"
    }
    double = criterion(doubled, [target, target])
    for name in ("loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(single[name], double[name])
    assert num_target_boxes([target, _empty()], torch.device("cpu")) == 2
    assert num_target_boxes([_empty()], torch.device("cpu")) == 1  # clamped, never 0


def test_bad_targets_raise():
    criterion = thumbdet.build_criterion("tiny", num_classes=CLASSES)
    outputs = _outputs(1, 4)
    with pytest.raises(ValueError, match="labels"):
        criterion(outputs, [_target([CLASSES], [[0.5, 0.5, 0.1, 0.1]])])
    with pytest.raises(ValueError, match="targets"):
        criterion(outputs, [_empty(), _empty()])
