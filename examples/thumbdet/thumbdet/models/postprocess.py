"""Turn detector outputs into scored boxes in image pixels (Deformable DETR's PostProcess)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_convert

__all__ = ["PostProcess", "postprocess_detections"]


@torch.no_grad()
def postprocess_detections(
    outputs: dict[str, torch.Tensor], target_sizes: torch.Tensor, num_detections: int = 100
) -> list[dict[str, torch.Tensor]]:
    """Top-k (query, class) pairs by sigmoid score, boxes scaled to absolute xyxy.

    One query may appear with several classes, as in Deformable DETR's evaluation.

    Args:
        outputs: ``"pred_logits"`` and ``"pred_boxes"`` (normalised cx, cy, w, h).
        target_sizes: (height, width) in pixels of the image each box should be expressed in
            (usually the original image size).
        num_detections: detections kept per image (at most ``Q * K``).

    Shape:
        - pred_logits: :math:`(B, Q, K)`; pred_boxes: :math:`(B, Q, 4)`.
        - target_sizes: :math:`(B, 2)`.

    Returns:
        One dict per image: ``"scores"`` :math:`(k,)`, ``"labels"`` :math:`(k,)` int64 and
        ``"boxes"`` :math:`(k, 4)` as (x0, y0, x1, y1) pixels, scores descending.

    Raises:
        ValueError: for a wrong shape, or outputs with a NaN or an infinity (a broken model has
            no detections, so evaluation reports an error rather than an AP).
    """
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    if logits.dim() != 3 or boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(
            "outputs must hold pred_logits (B, Q, K) and pred_boxes (B, Q, 4), got "
            f"{tuple(logits.shape)} and {tuple(boxes.shape)}"
        )
    for name, tensor in (("pred_logits", logits), ("pred_boxes", boxes)):
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            # Scores of NaN logits still rank and score against the ground truth, which once
            # gave a broken model AP 10.94: refuse instead of reporting a meaningless number.
            raise ValueError(
                f"{name}: expected finite values, got {int((~finite).sum())} NaN/inf of "
                f"{finite.numel()}; the model is broken (e.g. training diverged), no detections"
            )
    batch, _, num_classes = logits.shape
    target_sizes = torch.as_tensor(target_sizes, device=logits.device)
    if target_sizes.shape != (batch, 2):
        raise ValueError(
            f"target_sizes must have shape (B, 2) = ({batch}, 2), got {tuple(target_sizes.shape)}"
        )
    probabilities = logits.float().sigmoid().flatten(1)  # (B, Q*K)
    k = min(num_detections, probabilities.shape[1])
    scores, flat_index = torch.topk(probabilities, k, dim=1)  # (B, k)
    query_index = torch.div(flat_index, num_classes, rounding_mode="floor")  # (B, k)
    labels = flat_index % num_classes  # (B, k)
    boxes_xyxy = box_convert(boxes.float(), "cxcywh", "xyxy")  # (B, Q, 4)
    boxes_xyxy = torch.gather(boxes_xyxy, 1, query_index.unsqueeze(-1).expand(-1, -1, 4))
    height, width = target_sizes.float().unbind(1)
    scale = torch.stack([width, height, width, height], 1)  # (B, 4)
    boxes_xyxy = boxes_xyxy * scale[:, None, :]  # (B, k, 4)
    return [
        {"scores": s, "labels": label, "boxes": b}
        for s, label, b in zip(scores, labels, boxes_xyxy, strict=True)
    ]


class PostProcess(nn.Module):
    """Module form of :func:`postprocess_detections`.

    Args:
        num_detections: detections kept per image (100 for COCO evaluation).

    Example:
        >>> outputs = {"pred_logits": torch.randn(2, 10, 3), "pred_boxes": torch.rand(2, 10, 4)}
        >>> results = PostProcess(5)(outputs, torch.tensor([[480, 640], [600, 800]]))
        >>> results[0]["boxes"].shape
        torch.Size([5, 4])
    """

    def __init__(self, num_detections: int = 100) -> None:
        super().__init__()
        if num_detections < 1:
            raise ValueError(f"num_detections must be >= 1, got {num_detections}")
        self.num_detections = num_detections

    def forward(
        self, outputs: dict[str, torch.Tensor], target_sizes: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """See :func:`postprocess_detections`."""
        return postprocess_detections(outputs, target_sizes, self.num_detections)
