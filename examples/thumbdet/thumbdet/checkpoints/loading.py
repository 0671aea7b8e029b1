"""Detectors from training checkpoints and pretrained folders: :func:`load_detector`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from learnthumb import create_downsampler
from thumbdet.checkpoints.compat import check_compatible
from thumbdet.checkpoints.format import load_checkpoint
from thumbdet.checkpoints.pretrained import from_pretrained, is_pretrained_folder
from thumbdet.models import DetectorConfig, build_model
from thumbdet.models.thumbnail_detector import ThumbnailDetector, widen_stem

__all__ = ["load_detector", "load_teacher", "require_entries"]


#: Entries of a training checkpoint that inference needs, and the ``meta`` keys it reads.
_REQUIRED_ENTRIES = ("model", "model_config", "meta", "config")
_REQUIRED_META = ("mode", "scale", "downsampler", "category_ids")


def require_entries(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint without the entries :func:`load_detector` reads (one line)."""
    missing = [key for key in _REQUIRED_ENTRIES if key not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} is not a complete thumbdet checkpoint: missing {missing} (expected "
            f"{list(_REQUIRED_ENTRIES)}, as written by thumbdet train)"
        )
    meta = checkpoint["meta"]
    if not isinstance(meta, dict) or any(key not in meta for key in _REQUIRED_META):
        found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(
            f"{path} is not a complete thumbdet checkpoint: 'meta' has {found}, expected the "
            f"keys {list(_REQUIRED_META)}"
        )
    if not isinstance(checkpoint["model_config"], dict):
        raise ValueError(
            f"{path} is not a complete thumbdet checkpoint: 'model_config' is "
            f"{type(checkpoint['model_config']).__name__}, expected a dict"
        )


def load_detector(
    checkpoint: str | Path | dict[str, Any], device: str | torch.device = "cpu"
) -> nn.Module:
    """The model for inference from a training checkpoint or a pretrained folder, in eval mode.

    It takes *full-size* images in [0, 1] and a padding mask (``model(images,
    padding_mask=None)``) in every mode: a teacher is the detector itself, a bicubic or
    ThumbDet student is a :class:`~thumbdet.models.thumbnail_detector.ThumbnailDetector` (its
    downsampler, then the detector; ``.downsampler`` and ``.detector`` attributes). Boxes are
    normalised, so post-processing with each image's original size gives original coordinates.
    The checkpoint's ``"meta"`` (mode, scale, category ids and names) is attached as
    ``model.checkpoint_meta``.

    Args:
        checkpoint: Path of a checkpoint written by :func:`thumbdet.training.trainer.train` (file
            or run
            folder), the loaded dict, or a folder written by
            :func:`thumbdet.checkpoints.save_pretrained` (one holding ``model.safetensors``).
        device: Device to put the model on.

    Example:
        >>> model = load_detector("runs/thumbdet4/checkpoint.pth")  # doctest: +SKIP
        >>> outputs = model(torch.rand(1, 3, 128, 128))  # doctest: +SKIP
    """
    if not isinstance(checkpoint, dict) and is_pretrained_folder(checkpoint):
        return from_pretrained(checkpoint, device=device)
    source = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint, training_state=False)
    require_entries(checkpoint, source)
    meta = checkpoint["meta"]
    # The weights come from the checkpoint: never download or read backbone weights again.
    model_config = DetectorConfig.from_dict(
        dict(checkpoint["model_config"], pretrained_backbone=False, backbone_weights=None)
    )
    detector = build_model(model_config)
    downsampler = None
    if meta["downsampler"] is not None:  # a student
        downsampler = create_downsampler(meta["downsampler"], scale=meta["scale"])
        widen_stem(detector, downsampler)  # a wide thumbnail's student has a wider stem
    detector.load_state_dict(checkpoint["model"])
    model: nn.Module = detector
    if downsampler is not None:
        if checkpoint.get("downsampler") is not None:
            downsampler.load_state_dict(checkpoint["downsampler"])
        model = ThumbnailDetector(detector, downsampler)
    model.checkpoint_meta = dict(meta)
    return model.to(device).eval()


def load_teacher(path: str | Path, preset: str, category_ids: list[int]) -> nn.Module:
    """A frozen teacher detector from a ``--mode teacher`` checkpoint or a pretrained folder.

    Args:
        path: A checkpoint (file or run folder) or a folder written by
            :func:`thumbdet.checkpoints.save_pretrained` (``OUTPUT/pretrained`` of a run).
        preset: The run's detector preset.
        category_ids: The run's category ids.

    Raises:
        IncompatibleCheckpointError: Not a teacher, or another preset, class count or
            category set than this run.
    """
    if is_pretrained_folder(path):
        teacher = from_pretrained(path)
        checkpoint: dict[str, Any] = {"meta": teacher.checkpoint_meta}
    else:
        checkpoint = load_checkpoint(path, training_state=False)
        require_entries(checkpoint, path)
        teacher = None
    check_compatible(
        checkpoint,
        path,
        "teacher",
        mode="teacher",
        preset=preset,
        num_classes=len(category_ids),
        category_ids=list(category_ids),
    )
    if teacher is None:
        teacher = load_detector(checkpoint)
    teacher.requires_grad_(False)
    return teacher
