"""Hungarian matcher: empty targets, optimality against brute force, invariances, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from thumbdet.training.matcher import HungarianMatcher, focal_class_cost, hungarian_match


def _random_outputs(batch: int, queries: int, classes: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(batch, queries, classes, generator=generator),
        "pred_boxes": torch.rand(batch, queries, 4, generator=generator) * 0.5 + 0.25,
    }


def _random_target(count: int, classes: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "labels": torch.randint(0, classes, (count,), generator=generator),
        "boxes": torch.rand(count, 4, generator=generator) * 0.5 + 0.25,
    }


def _cost_matrix(outputs: dict, target: dict, image: int) -> torch.Tensor:
    """Independent per-pair computation of the matching cost (2 focal + 5 L1 - 2 GIoU)."""
    probabilities = outputs["pred_logits"][image].sigmoid()
    boxes = outputs["pred_boxes"][image]
    cost = torch.empty(len(boxes), len(target["labels"]))
    for query, target_index in itertools.product(range(len(boxes)), range(cost.shape[1])):
        p = probabilities[query, target["labels"][target_index]]
        positive = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8)
        negative = 0.75 * p**2 * -torch.log(1 - p + 1e-8)
        l1 = (boxes[query] - target["boxes"][target_index]).abs().sum()
        giou = generalized_box_iou(
            box_convert(boxes[query : query + 1], "cxcywh", "xyxy"),
            box_convert(target["boxes"][target_index : target_index + 1], "cxcywh", "xyxy"),
        )[0, 0]
        cost[query, target_index] = 2 * (positive - negative) + 5 * l1 - 2 * giou
    return cost


@pytest.mark.parametrize(("queries", "count"), [(5, 3), (4, 4), (6, 1)])
def test_matching_is_optimal_against_brute_force(queries, count):
    outputs = _random_outputs(2, queries, 3, seed=queries + count)
    targets = [_random_target(count, 3, seed=1), _random_target(count, 3, seed=2)]
    indices = HungarianMatcher()(outputs, targets)
    for image, (query_index, target_index) in enumerate(indices):
        assert len(query_index) == len(target_index) == count
        assert len(set(query_index.tolist())) == count
        assert sorted(target_index.tolist()) == list(range(count))
        cost = _cost_matrix(outputs, targets[image], image)
        found = cost[query_index, target_index].sum()
        best = min(
            cost[list(chosen), list(range(count))].sum()
            for chosen in itertools.permutations(range(queries), count)
        )
        torch.testing.assert_close(found, best)


def test_more_targets_than_queries_matches_every_query():
    outputs = _random_outputs(1, 3, 2)
    [(query_index, target_index)] = hungarian_match(outputs, [_random_target(5, 2, seed=0)])
    assert sorted(query_index.tolist()) == [0, 1, 2]
    assert len(set(target_index.tolist())) == 3


def test_empty_targets():
    outputs = _random_outputs(3, 4, 2)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    all_empty = hungarian_match(outputs, [empty, empty, empty])
    assert [(len(q), len(t)) for q, t in all_empty] == [(0, 0)] * 3
    mixed = hungarian_match(outputs, [empty, _random_target(2, 2, seed=0), empty])
    assert [len(q) for q, _ in mixed] == [0, 2, 0]
    assert all(q.dtype == torch.int64 and t.dtype == torch.int64 for q, t in mixed)


def test_perfect_prediction_is_matched_to_itself():
    target = _random_target(3, 4, seed=5)
    boxes = torch.rand(1, 6, 4) * 0.1 + 0.45
    logits = torch.full((1, 6, 4), -6.0)
    for query, (label, box) in zip(
        [4, 0, 2], zip(target["labels"], target["boxes"], strict=True), strict=True
    ):
        boxes[0, query] = box
        logits[0, query, label] = 6.0
    ((query_index, target_index),) = hungarian_match(
        {"pred_logits": logits, "pred_boxes": boxes}, [target]
    )
    assignment = dict(zip(target_index.tolist(), query_index.tolist(), strict=True))
    assert assignment == {0: 4, 1: 0, 2: 2}


def test_permuting_targets_permutes_the_assignment():
    outputs = _random_outputs(1, 6, 3, seed=3)
    target = _random_target(4, 3, seed=4)
    order = torch.tensor([2, 0, 3, 1])
    permuted = {"labels": target["labels"][order], "boxes": target["boxes"][order]}
    [(query_a, target_a)] = hungarian_match(outputs, [target])
    [(query_b, target_b)] = hungarian_match(outputs, [permuted])
    original_of_b = order[target_b]
    assert dict(zip(target_a.tolist(), query_a.tolist(), strict=True)) == dict(
        zip(original_of_b.tolist(), query_b.tolist(), strict=True)
    )


def test_focal_class_cost_prefers_confident_correct_class():
    probabilities = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    cost = focal_class_cost(probabilities, torch.tensor([0, 1]))
    assert cost.shape == (2, 2)
    assert cost[0, 0] < cost[1, 0] and cost[1, 1] < cost[0, 1]


def test_bad_inputs_raise():
    outputs = _random_outputs(2, 4, 2)
    with pytest.raises(ValueError, match="targets"):
        hungarian_match(outputs, [_random_target(1, 2, seed=0)])
    bad = {"labels": torch.tensor([0]), "boxes": torch.rand(1, 5)}
    with pytest.raises(ValueError, match="targets\\[1\\]"):
        hungarian_match(outputs, [_random_target(1, 2, seed=0), bad])
    with pytest.raises(ValueError, match="pred_boxes"):
        hungarian_match(
            {"pred_logits": torch.zeros(2, 4, 2), "pred_boxes": torch.zeros(2, 3, 4)}, []
        )
    with pytest.raises(ValueError, match="non-zero"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)


def test_non_finite_cost_gives_a_clear_error():
    # scipy alone says "matrix contains invalid numeric entries".
    outputs = _random_outputs(2, 4, 2)
    outputs["pred_boxes"][1, 0, 0] = float("nan")
    targets = [_random_target(1, 2, seed=0), _random_target(2, 2, seed=1)]
    with pytest.raises(ValueError, match="matching cost: expected finite.*pred_boxes.*learning"):
        hungarian_match(outputs, targets)
