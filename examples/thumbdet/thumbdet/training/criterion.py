"""Set prediction loss of Deformable DETR: Hungarian matching, sigmoid focal loss, L1 + GIoU."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from thumbdet.models.presets import DetectorConfig, get_config
from thumbdet.training.matcher import HungarianMatcher, check_targets

__all__ = ["SetCriterion", "build_criterion", "num_target_boxes", "set_losses", "weighted_loss"]

Targets = list[dict[str, torch.Tensor]]
Indices = list[tuple[torch.Tensor, torch.Tensor]]


def num_target_boxes(targets: Targets, device: torch.device) -> torch.Tensor:
    """Average number of target boxes per process (at least 1), the loss normaliser.

    Summed over all ranks and divided by the world size when torch.distributed is running,
    so every rank divides by the same number.
    """
    count = torch.as_tensor(
        float(sum(len(target["labels"]) for target in targets)), dtype=torch.float, device=device
    )
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1)


def _matched(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    batch_index = torch.cat([torch.full_like(query, i) for i, (query, _) in enumerate(indices)])
    query_index = torch.cat([query for query, _ in indices])
    return batch_index, query_index


def set_losses(
    outputs: dict[str, torch.Tensor],
    targets: Targets,
    indices: Indices,
    num_boxes: torch.Tensor,
    focal_alpha: float = 0.25,
) -> dict[str, torch.Tensor]:
    """Classification and box losses of one decoder layer, given a matching.

    ``loss_ce`` is the sigmoid focal loss (gamma 2) summed over queries and classes,
    ``loss_bbox`` the L1 distance of matched (cx, cy, w, h) boxes, ``loss_giou`` one minus
    their generalised IoU; all three are divided by ``num_boxes``.

    Args:
        outputs: ``"pred_logits"`` :math:`(B, Q, K)` and ``"pred_boxes"`` :math:`(B, Q, 4)`.
        targets: per-image ``"labels"`` :math:`(T_b,)` and ``"boxes"`` :math:`(T_b, 4)`.
        indices: per-image ``(query_indices, target_indices)`` from the matcher.
        num_boxes: normaliser, see :func:`num_target_boxes`.
        focal_alpha: alpha of the focal loss.

    Returns:
        ``{"loss_ce", "loss_bbox", "loss_giou"}``, unweighted scalars.
    """
    logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]
    batch_index, query_index = _matched(indices)
    batch_index, query_index = batch_index.to(logits.device), query_index.to(logits.device)
    target_indices = [target_index for _, target_index in indices]
    matched_labels = torch.cat(
        [target["labels"][index] for target, index in zip(targets, target_indices, strict=True)]
    ).to(logits.device)  # (M,)
    target_classes = torch.zeros_like(logits)  # (B, Q, K) one-hot; unmatched queries stay 0
    target_classes[batch_index, query_index, matched_labels] = 1.0
    loss_ce = sigmoid_focal_loss(logits, target_classes, alpha=focal_alpha, gamma=2.0).sum()

    matched_boxes = pred_boxes[batch_index, query_index]  # (M, 4)
    target_boxes = torch.cat(
        [target["boxes"][index] for target, index in zip(targets, target_indices, strict=True)]
    ).to(matched_boxes)  # (M, 4)
    loss_bbox = F.l1_loss(matched_boxes, target_boxes, reduction="sum")
    giou = torch.diag(
        generalized_box_iou(
            box_convert(matched_boxes, "cxcywh", "xyxy"),
            box_convert(target_boxes, "cxcywh", "xyxy"),
        )
    )  # (M,)
    loss_giou = (1 - giou).sum()
    return {
        "loss_ce": loss_ce / num_boxes,
        "loss_bbox": loss_bbox / num_boxes,
        "loss_giou": loss_giou / num_boxes,
    }


class SetCriterion(nn.Module):
    """Deformable DETR's loss over the final layer, auxiliary layers and two-stage proposals.

    Auxiliary decoder layers add the same losses with suffix ``_0`` … ``_{D-2}``; the
    two-stage proposals add them with suffix ``_enc`` against class-agnostic targets.
    ``weight_dict`` maps every loss key to its coefficient; the total training loss is
    ``sum(weight_dict[k] * losses[k] for k in losses)``.

    Args:
        num_classes: logits per query K.
        matcher: the Hungarian matcher.
        weight_dict: loss coefficients, including the suffixed keys.
        focal_alpha: alpha of the focal loss.

    Example:
        >>> criterion = build_criterion("tiny", num_classes=3)
        >>> outputs = {"pred_logits": torch.zeros(1, 5, 3), "pred_boxes": torch.rand(1, 5, 4)}
        >>> target = {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}
        >>> sorted(criterion(outputs, [target]))
        ['loss_bbox', 'loss_ce', 'loss_giou']
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        focal_alpha: float = 0.25,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha = focal_alpha

    def forward(self, outputs: dict[str, object], targets: Targets) -> dict[str, torch.Tensor]:
        """Compute all losses.

        Args:
            outputs: the detector's dict (``pred_logits``, ``pred_boxes``, optional
                ``aux_outputs`` and ``enc_outputs``; other keys are ignored).
            targets: one dict per image with ``"labels"`` (int64 in ``[0, K)``) and
                ``"boxes"`` (normalised cx, cy, w, h); images without objects are fine.

        Returns:
            Unweighted scalar losses keyed like ``weight_dict``.
        """
        logits = outputs["pred_logits"]
        check_targets(targets, logits.shape[0])
        for index, target in enumerate(targets):
            labels = target["labels"]
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"targets[{index}]['labels'] must lie in [0, {self.num_classes}), got "
                    f"values in [{int(labels.min())}, {int(labels.max())}]"
                )
        num_boxes = num_target_boxes(targets, logits.device)

        losses = self._layer_losses(outputs, targets, num_boxes, suffix="")
        for layer, aux_outputs in enumerate(outputs.get("aux_outputs") or []):
            losses.update(self._layer_losses(aux_outputs, targets, num_boxes, suffix=f"_{layer}"))
        if "enc_outputs" in outputs:
            # Proposals are class-agnostic: every object is class 0.
            binary_targets = [
                {"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets
            ]
            losses.update(
                self._layer_losses(outputs["enc_outputs"], binary_targets, num_boxes, "_enc")
            )
        return losses

    def _layer_losses(
        self, outputs: dict, targets: Targets, num_boxes: torch.Tensor, suffix: str
    ) -> dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        losses = set_losses(outputs, targets, indices, num_boxes, self.focal_alpha)
        return {name + suffix: value for name, value in losses.items()}


def weighted_loss(losses: dict[str, torch.Tensor], weight_dict: dict[str, float]) -> torch.Tensor:
    """``sum(losses[name] * weight_dict[name])`` over the losses that have a weight, in the
    order of ``losses`` (the one place the detection loss is summed)."""
    return sum(losses[name] * weight_dict[name] for name in losses if name in weight_dict)


def build_criterion(preset: str | DetectorConfig = "paper_r50", **overrides) -> SetCriterion:
    """Deformable DETR's criterion for a preset (coefficients 2, 5, 2; costs 2, 5, 2).

    Args:
        preset: preset name or a :class:`~thumbdet.models.presets.DetectorConfig`
            (e.g. ``model.config``).
        **overrides: config fields, e.g. ``num_classes=3``.

    Returns:
        A :class:`SetCriterion` with ``.weight_dict`` covering ``_0`` … ``_{D-2}`` auxiliary
        keys (when ``aux_loss``) and ``_enc`` keys (when ``two_stage``).
    """
    config = get_config(preset, **overrides)
    matcher = HungarianMatcher(
        cost_class=config.set_cost_class,
        cost_bbox=config.set_cost_bbox,
        cost_giou=config.set_cost_giou,
        focal_alpha=config.focal_alpha,
    )
    base = {
        "loss_ce": config.cls_loss_coef,
        "loss_bbox": config.bbox_loss_coef,
        "loss_giou": config.giou_loss_coef,
    }
    suffixes = [""]
    if config.aux_loss:
        suffixes += [f"_{layer}" for layer in range(config.dec_layers - 1)]
    if config.two_stage:
        suffixes.append("_enc")
    weight_dict = {name + suffix: weight for suffix in suffixes for name, weight in base.items()}
    return SetCriterion(config.num_classes, matcher, weight_dict, config.focal_alpha)
