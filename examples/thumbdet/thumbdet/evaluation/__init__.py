"""Evaluation: pycocotools AP (:mod:`.coco`), the evaluation pass (:mod:`.loop`) and the
evaluation of a checkpoint or pretrained folder (:mod:`.checkpoint`)."""

from thumbdet.evaluation.checkpoint import evaluate_checkpoint
from thumbdet.evaluation.coco import coco_evaluate, detections_to_coco_results, write_metrics
from thumbdet.evaluation.loop import evaluate

__all__ = [
    "coco_evaluate",
    "detections_to_coco_results",
    "evaluate",
    "evaluate_checkpoint",
    "write_metrics",
]
