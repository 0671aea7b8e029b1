"""What each training mode trains: teacher, bicubic student, ThumbDet student.

:func:`build_training_parts` turns a :class:`~thumbdet.training.config.TrainConfig` into the module
the engine calls, the detector and downsampler a checkpoint stores, the full-size model used
for evaluation and the optimiser's parameter groups. Everything that can be wrong with the
mode's options (teacher checkpoint, scale, downsampler) raises here, before any training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learnthumb import (
    DistillWeights,
    ThumbnailDistillation,
    TwoStageSchedule,
    create_downsampler,
    thumbnail_size,
)
from thumbdet.checkpoints.format import check_compatible, load_checkpoint
from thumbdet.checkpoints.loading import load_detector, require_entries
from thumbdet.checkpoints.pretrained import from_pretrained, is_pretrained_folder
from thumbdet.models import build_model
from thumbdet.models.thumbnail_detector import ThumbnailDetector, widen_stem
from thumbdet.training.config import TrainConfig

__all__ = [
    "TrainingParts",
    "build_training_parts",
    "checkpoint_meta",
    "load_teacher",
    "make_downsampler",
]


@dataclass
class TrainingParts:
    """The modules of one training run.

    Attributes:
        trained: What the engine calls: the detector (teacher), a
            :class:`~thumbdet.models.thumbnail_detector.ThumbnailDetector` (bicubic) or a
            :class:`learnthumb.ThumbnailDistillation` (thumbdet).
        detector: The (student) detector, saved under ``"model"``.
        downsampler: The student's downsampler, saved under ``"downsampler"`` (None: teacher).
        inference: Full-size images in, detections out: what evaluation runs.
        param_groups: AdamW parameter groups (backbone lr, linear-projection lr, downsampler).
        stage2_frozen: Parameters kept fixed in stage two (``--freeze-downsampler-stage2``).
    """

    trained: nn.Module
    detector: nn.Module
    downsampler: nn.Module | None
    inference: nn.Module
    param_groups: list[dict[str, Any]]
    stage2_frozen: list[nn.Parameter] = field(default_factory=list)


def make_downsampler(name: str, scale: int) -> nn.Module:
    """A registry downsampler, checked to produce exact ``scale`` thumbnails.

    Raises:
        ValueError: Unknown name, or the module cannot make ``ceil(H/s) x ceil(W/s)``
            thumbnails (checked on a probe image).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    try:
        downsampler = create_downsampler(name, scale=scale)
        probe_size = (4 * scale + 1, 4 * scale + 3)
        with torch.no_grad():
            probe = downsampler(torch.rand(1, 3, *probe_size))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"downsampler {name!r} cannot produce scale-{scale} thumbnails: {error}"
        ) from error
    if hasattr(downsampler, "sample"):
        raise ValueError(
            f"downsampler {name!r} warps the image, and thumbdet's detector does not map boxes "
            "back through a warp; use a uniform downsampler"
        )
    expected = thumbnail_size(probe_size, scale)
    # A wide thumbnail (learnthumb.WideDownsampler) has more than 3 channels.
    channels = getattr(downsampler, "out_channels", 3)
    if tuple(probe.shape) != (1, channels, *expected) or channels < 3:
        raise ValueError(
            f"downsampler {name!r} cannot produce scale-{scale} thumbnails: a "
            f"{probe_size} image gave shape {tuple(probe.shape[-2:])}, expected {expected}"
        )
    return downsampler


def checkpoint_meta(
    config: TrainConfig, category_ids: list[int], category_names: list[str]
) -> dict[str, Any]:
    """What a checkpoint records to refuse incompatible resumes and teachers."""
    student = config.mode != "teacher"
    downsampler = {"bicubic": "bicubic", "thumbdet": config.downsampler}.get(config.mode)
    return {
        "preset": config.preset,
        "num_classes": len(category_ids),
        "mode": config.mode,
        "scale": config.scale if student else None,
        "downsampler": downsampler,
        "category_ids": list(category_ids),
        "category_names": list(category_names),
    }


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


def build_training_parts(
    config: TrainConfig, category_ids: list[int], model_overrides: dict[str, Any]
) -> TrainingParts:
    """Build the modules of ``config.mode``.

    Args:
        config: The run's configuration.
        category_ids: COCO category ids of the training set (one class each).
        model_overrides: Keyword overrides of ``build_model`` (``num_classes``, backbone
            weights, ...).

    Returns:
        The :class:`TrainingParts` of the mode.
    """
    if config.mode == "teacher":
        detector = build_model(config.preset, **model_overrides)
        groups = detector.param_groups(config.lr, config.lr_backbone)
        return TrainingParts(detector, detector, None, detector, groups)
    if config.mode == "bicubic":
        detector = build_model(config.preset, **model_overrides)
        # From the registry, so that the student's pretrained folder records it.
        downsampler = create_downsampler("bicubic", config.scale)
        student = ThumbnailDetector(detector, downsampler, config.scale)
        groups = detector.param_groups(config.lr, config.lr_backbone)
        return TrainingParts(student, detector, downsampler, student, groups)

    downsampler = make_downsampler(config.downsampler, config.scale)
    if config.stage1 and getattr(downsampler, "out_channels", 3) > 3:
        raise ValueError(
            f"downsampler {config.downsampler!r} keeps its image channels fixed, so a "
            "moment-only stage one has nothing to train: add --one-stage"
        )
    teacher = load_teacher(config.teacher, config.preset, category_ids)
    student = build_model(config.preset, **model_overrides)
    if config.student_init == "teacher":
        student.load_state_dict(teacher.state_dict())
    widen_stem(student, downsampler)
    weights = DistillWeights(
        moment=config.gamma if config.moment else 0.0,
        logit=config.alpha if config.logit else 0.0,
        feature=config.beta if config.feature else 0.0,
        lam=config.lam,
        temperature=config.temperature,
        threshold=config.threshold,
    )
    distillation = ThumbnailDistillation(
        downsampler,
        teacher,
        student,
        features="backbone_features",  # C3-C5 of the ResNet (Eq. 8)
        logits="pred_logits",  # last decoder layer (Sec. 4.1)
        weights=weights,
        schedule=TwoStageSchedule(config.stage1),
        logit_activation="sigmoid",  # Deformable DETR classifies with a sigmoid focal loss
        logit_pairing=config.logit_pairing,
        mask_argument="padding_mask",
        scale=config.scale,
    )
    groups = student.param_groups(config.lr, config.lr_backbone)
    groups.append({"params": list(downsampler.parameters()), "lr": config.lr})
    groups = [group for group in groups if group["params"]]
    frozen = list(downsampler.parameters()) if config.freeze_downsampler_stage2 else []
    inference = ThumbnailDetector(student, downsampler, config.scale)
    return TrainingParts(distillation, student, downsampler, inference, groups, frozen)
