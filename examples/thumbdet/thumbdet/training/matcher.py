"""Hungarian matching of predictions to ground truth, with Deformable DETR's focal class cost."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher", "check_targets", "focal_class_cost", "hungarian_match"]


def focal_class_cost(
    probabilities: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal-loss difference between "is ``label``" and "is not ``label``", per pair.

    Args:
        probabilities: sigmoid class probabilities of the predictions.
        labels: class index of each target.
        alpha: focal-loss alpha.
        gamma: focal-loss gamma.

    Shape:
        - probabilities: :math:`(P, K)`; labels: :math:`(T,)`.
        - Output: :math:`(P, T)`.
    """
    negative = (1 - alpha) * probabilities**gamma * -(1 - probabilities + 1e-8).log()
    positive = alpha * (1 - probabilities) ** gamma * -(probabilities + 1e-8).log()
    return positive[:, labels] - negative[:, labels]


def check_targets(targets: list[dict[str, torch.Tensor]], batch: int) -> None:
    """Raise ``ValueError`` unless ``targets`` holds ``batch`` dicts of labels (T,) and boxes
    (T, 4)."""
    if len(targets) != batch:
        raise ValueError(f"targets must hold {batch} dicts (one per image), got {len(targets)}")
    for index, target in enumerate(targets):
        if "labels" not in target or "boxes" not in target:
            raise ValueError(f"targets[{index}] needs 'labels' and 'boxes', got {sorted(target)}")
        labels, boxes = target["labels"], target["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"targets[{index}] must have labels (T,) and boxes (T, 4), got "
                f"{tuple(labels.shape)} and {tuple(boxes.shape)}"
            )


@torch.no_grad()
def hungarian_match(
    outputs: dict[str, torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    cost_class: float = 2.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    focal_alpha: float = 0.25,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One-to-one assignment of queries to targets minimising the DETR matching cost.

    The cost is ``cost_class * focal + cost_bbox * L1(cxcywh) - cost_giou * GIoU``.

    Args:
        outputs: ``"pred_logits"`` and ``"pred_boxes"`` (normalised cx, cy, w, h).
        targets: one dict per image with ``"labels"`` (int64) and ``"boxes"`` (normalised
            cx, cy, w, h); an image may have no targets.
        cost_class: weight of the focal class cost.
        cost_bbox: weight of the L1 box cost.
        cost_giou: weight of the negative generalised IoU.
        focal_alpha: alpha of the focal class cost.

    Shape:
        - pred_logits: :math:`(B, Q, K)`; pred_boxes: :math:`(B, Q, 4)`.
        - targets[b]["labels"]: :math:`(T_b,)`; targets[b]["boxes"]: :math:`(T_b, 4)`.

    Returns:
        One ``(query_indices, target_indices)`` pair of int64 CPU tensors per image, each of
        length ``min(Q, T_b)``, query indices ascending.

    Raises:
        ValueError: for malformed inputs, or when the cost holds a NaN or an infinity (naming
            the non-finite predictions).
    """
    logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]
    if logits.dim() != 3 or pred_boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(
            "outputs must hold pred_logits (B, Q, K) and pred_boxes (B, Q, 4), got "
            f"{tuple(logits.shape)} and {tuple(pred_boxes.shape)}"
        )
    batch, queries = logits.shape[:2]
    check_targets(targets, batch)
    sizes = [len(target["boxes"]) for target in targets]
    empty = torch.empty(0, dtype=torch.int64)
    if sum(sizes) == 0:
        return [(empty, empty) for _ in targets]

    probabilities = logits.flatten(0, 1).float().sigmoid()  # (B*Q, K)
    flat_boxes = pred_boxes.flatten(0, 1).float()  # (B*Q, 4)
    target_labels = torch.cat([target["labels"] for target in targets]).to(logits.device)
    target_boxes = torch.cat([target["boxes"] for target in targets]).to(flat_boxes)
    cost = (
        cost_class * focal_class_cost(probabilities, target_labels, alpha=focal_alpha)
        + cost_bbox * torch.cdist(flat_boxes, target_boxes, p=1)
        - cost_giou
        * generalized_box_iou(
            box_convert(flat_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        )
    )  # (B*Q, T)
    cost = cost.view(batch, queries, -1).cpu()  # (B, Q, T)
    if not bool(torch.isfinite(cost).all()):
        # scipy would only say "matrix contains invalid numeric entries".
        bad = [
            name
            for name, tensor in (("pred_logits", logits), ("pred_boxes", pred_boxes))
            if not bool(torch.isfinite(tensor).all())
        ]
        raise ValueError(
            "matching cost: expected finite values, got NaN/inf "
            f"(from non-finite {' and '.join(bad) or 'target boxes'}); the model diverged, "
            "likely cause: learning rate too high or a non-finite input"
        )

    indices = []
    for image, block in enumerate(cost.split(sizes, -1)):
        query_index, target_index = linear_sum_assignment(block[image].numpy())
        indices.append(
            (torch.as_tensor(query_index, dtype=torch.int64),
             torch.as_tensor(target_index, dtype=torch.int64))
        )  # fmt: skip
    return indices


class HungarianMatcher(nn.Module):
    """Module form of :func:`hungarian_match` holding the cost weights.

    Args:
        cost_class: weight of the focal class cost (2 in Deformable DETR).
        cost_bbox: weight of the L1 box cost (5).
        cost_giou: weight of the negative generalised IoU (2).
        focal_alpha: alpha of the focal class cost (0.25).

    Example:
        >>> matcher = HungarianMatcher()
        >>> outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_boxes": torch.rand(1, 3, 4)}
        >>> target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
        >>> [len(q) for q, t in matcher(outputs, [target])]
        [1]
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("at least one of cost_class, cost_bbox, cost_giou must be non-zero")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """See :func:`hungarian_match`."""
        return hungarian_match(
            outputs, targets, self.cost_class, self.cost_bbox, self.cost_giou, self.focal_alpha
        )
