"""One evaluation pass: COCO box AP of a model on a data loader, across processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from thumbdet.distributed import all_gather_objects, unwrap
from thumbdet.evaluation.coco import coco_evaluate, detections_to_coco_results

__all__ = ["evaluate"]

Batch = tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data_loader: Iterable[Batch],
    postprocess: Callable[[dict[str, Any], torch.Tensor], list[dict[str, torch.Tensor]]],
    dataset: Any,
    device: torch.device,
    verbose: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    """COCO box AP of ``model`` on ``data_loader``, boxes mapped to each original image size.

    Under ``torchrun`` each process predicts its shard; the detections are gathered and every
    process returns the same metrics.

    Args:
        model: ``model(images, padding_mask) -> outputs``: a detector, or a student that takes
            full-size images (:class:`thumbdet.models.thumbnail_detector.ThumbnailDetector`).
        data_loader: Yields ``(images, padding_mask, targets)``; targets carry ``image_id``
            and ``orig_size``.
        postprocess: ``postprocess(outputs, target_sizes (B, 2) as (h, w))`` -> per image
            ``{"scores", "labels", "boxes"}`` with absolute (x0, y0, x1, y1) boxes.
        dataset: The :class:`thumbdet.data.CocoDetection` (ground truth and category ids).
        device: Device of the model.
        verbose: Let pycocotools print its summary table.
        show_progress: Show a tqdm bar.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in percent.
    """
    model = unwrap(model)
    model.eval()
    results_by_image: dict[int, list[dict[str, Any]]] = {}
    for images, padding_mask, targets in tqdm(
        data_loader, desc="eval", disable=not show_progress, leave=False, dynamic_ncols=True
    ):
        outputs = model(images.to(device), padding_mask.to(device))
        original_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)  # (B, 2)
        detections = postprocess(outputs, original_sizes)
        for target, detection in zip(targets, detections, strict=True):
            image_id = int(target["image_id"])
            # A distributed sampler repeats images to even out the shards: keep one copy.
            results_by_image.setdefault(
                image_id,
                detections_to_coco_results([image_id], [detection], dataset.category_ids),
            )
    merged: dict[int, list[dict[str, Any]]] = {}
    for process_results in all_gather_objects(results_by_image):
        for image_id, image_results in process_results.items():
            merged.setdefault(image_id, image_results)
    results = [result for image_id in sorted(merged) for result in merged[image_id]]
    return coco_evaluate(dataset.coco, results, image_ids=sorted(merged), verbose=verbose)
