"""COCO-format data: dataset, Deformable DETR transforms and padded batching."""

from thumbdet.data.coco import CocoDetection
from thumbdet.data.coco_annotations import load_coco_annotations
from thumbdet.data.collate import DetectionCollator, collate_detection, pad_images
from thumbdet.data.transforms import (
    AUGMENTATIONS,
    DEFAULT_MAX_SIZE,
    DEFAULT_SHORT_SIDES,
    make_transforms,
    resized_size,
)

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_SHORT_SIDES",
    "CocoDetection",
    "DetectionCollator",
    "collate_detection",
    "load_coco_annotations",
    "make_transforms",
    "pad_images",
    "resized_size",
]
