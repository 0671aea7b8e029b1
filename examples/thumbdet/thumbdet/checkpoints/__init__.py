"""Checkpoints: the safe file format (:mod:`.format`), detectors rebuilt from checkpoints
(:mod:`.loading`), pretrained folders (:mod:`.pretrained`) and converters of other
Deformable-DETR checkpoints (:mod:`.convert`, imported on demand)."""

from thumbdet.checkpoints.format import (
    CHECKPOINT_NAME,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from thumbdet.checkpoints.loading import load_detector, require_entries
from thumbdet.checkpoints.pretrained import (
    PRETRAINED_DIR,
    from_pretrained,
    is_pretrained_folder,
    load_pretrained_config,
    save_pretrained,
)

__all__ = [
    "CHECKPOINT_NAME",
    "PRETRAINED_DIR",
    "CorruptCheckpointError",
    "IncompatibleCheckpointError",
    "UnsafeCheckpointError",
    "check_compatible",
    "from_pretrained",
    "is_pretrained_folder",
    "load_checkpoint",
    "load_detector",
    "load_pretrained_config",
    "require_entries",
    "save_checkpoint",
    "save_pretrained",
]
