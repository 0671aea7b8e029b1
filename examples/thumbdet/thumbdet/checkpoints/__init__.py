"""Checkpoints: the safe file format (:mod:`.format`), torch files read without running code
(:mod:`.torch_files`), the generators' state (:mod:`.rng`), refusal of checkpoints that do not
fit a run (:mod:`.compat`), detectors rebuilt from checkpoints (:mod:`.loading`), pretrained
folders (:mod:`.pretrained`) and converters of other Deformable-DETR checkpoints
(:mod:`.convert`, imported on demand)."""

from thumbdet.checkpoints.compat import IncompatibleCheckpointError, check_compatible
from thumbdet.checkpoints.format import (
    CHECKPOINT_NAME,
    CorruptCheckpointError,
    load_checkpoint,
    remove_interrupted_saves,
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
from thumbdet.checkpoints.rng import capture_rng_state, restore_rng_state
from thumbdet.checkpoints.torch_files import (
    ALLOWED_PICKLE_GLOBALS,
    UnsafeCheckpointError,
    load_torch_file,
)

__all__ = [
    "ALLOWED_PICKLE_GLOBALS",
    "CHECKPOINT_NAME",
    "PRETRAINED_DIR",
    "CorruptCheckpointError",
    "IncompatibleCheckpointError",
    "UnsafeCheckpointError",
    "capture_rng_state",
    "check_compatible",
    "from_pretrained",
    "is_pretrained_folder",
    "load_checkpoint",
    "load_detector",
    "load_pretrained_config",
    "load_torch_file",
    "remove_interrupted_saves",
    "require_entries",
    "restore_rng_state",
    "save_checkpoint",
    "save_pretrained",
]
