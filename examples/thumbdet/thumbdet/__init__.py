"""ThumbDet: Deformable DETR on learned thumbnails, built on ``learnthumb``.

Names are loaded lazily so that ``import thumbdet.ops`` (or the CLI's ``--help``) does not
import the model code, timm or scipy.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "DeformableDETR": "thumbdet.models",
    "DetectorConfig": "thumbdet.models",
    "PRESETS": "thumbdet.models",
    "build_model": "thumbdet.models",
    "get_config": "thumbdet.models",
    "list_presets": "thumbdet.models",
    "HungarianMatcher": "thumbdet.training.matcher",
    "SetCriterion": "thumbdet.training.criterion",
    "build_criterion": "thumbdet.training.criterion",
    "PostProcess": "thumbdet.models.postprocess",
    "postprocess_detections": "thumbdet.models.postprocess",
    "convert_official": "thumbdet.checkpoints.convert",
    "convert_transformers": "thumbdet.checkpoints.convert",
}

__all__ = sorted(_LAZY)  # noqa: PLE0605 (sorted() returns a list)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'thumbdet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
