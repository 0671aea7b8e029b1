"""Training modes: what a run trains, as objects in a small registry.

A :class:`TrainingMode` checks its settings, builds its modules (:class:`TrainingParts`),
says the stage of an epoch, what stays frozen, what its checkpoints record, and computes the
losses of a batch through the ``step`` module it builds: ``step(images, padding_mask,
epoch) -> (outputs, losses)``. The training loop (:mod:`thumbdet.training.engine`) only ever
calls that. Three modes are registered (``teacher``, ``bicubic``, ``thumbdet``);
:func:`register_mode` adds more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from learnthumb import (
    DistillWeights,
    FeatureDistillationLoss,
    LogitDistillationLoss,
    MomentMatchingLoss,
    QueryFilter,
    ThumbnailDistillation,
    TwoStageSchedule,
    create_downsampler,
)
from thumbdet.checkpoints.loading import load_teacher
from thumbdet.models import build_model
from thumbdet.models.thumbnail_detector import ThumbnailDetector, make_downsampler, widen_stem
from thumbdet.training.config import TrainConfig

__all__ = [
    "STUDENT_INITS",
    "TrainingMode",
    "TrainingParts",
    "get_mode",
    "list_modes",
    "register_mode",
]

#: How a distilled student starts (``--student-init``), each with what it means.
STUDENT_INITS = {"random": "random weights (the paper)", "teacher": "the teacher's weights"}
#: Output losses, e.g. ``{"moment": ..., "logit": ...}``, already weighted.
Losses = dict[str, torch.Tensor]


@dataclass
class TrainingParts:
    """The modules of one training run.

    Attributes:
        step: What the loop calls: ``step(images, padding_mask, epoch) -> (outputs, losses)``,
            the detector's outputs (``None`` when the detector does not run, as in stage one
            of ThumbDet) and the mode's own weighted losses (added to the detection loss).
        detector: The (student) detector, saved under ``"model"``.
        downsampler: The student's downsampler, saved under ``"downsampler"`` (None: teacher).
        inference: Full-size images in, detections out: what evaluation runs.
        param_groups: AdamW parameter groups.
        frozen_in_stage2: Parameters kept fixed in stage two (``--freeze-downsampler-stage2``).
    """

    step: nn.Module
    detector: nn.Module
    downsampler: nn.Module | None
    inference: nn.Module
    param_groups: list[dict[str, Any]]
    frozen_in_stage2: list[nn.Parameter] = field(default_factory=list)


class DetectorStep(nn.Module):
    """A detector (or a detector behind a fixed downsampler) trained on the detection loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        images: torch.Tensor,
        padding_mask: torch.Tensor,
        epoch: int,  # noqa: ARG002 (the step interface: DistillationStep uses epoch)
    ) -> tuple[dict[str, Any], Losses]:
        return self.model(images, padding_mask=padding_mask), {}


class DistillationStep(nn.Module):
    """A :class:`learnthumb.ThumbnailDistillation`: the student's outputs and its losses."""

    def __init__(self, distillation: ThumbnailDistillation) -> None:
        super().__init__()
        self.distillation = distillation

    def forward(
        self, images: torch.Tensor, padding_mask: torch.Tensor, epoch: int
    ) -> tuple[dict[str, Any] | None, Losses]:
        _, outputs, losses = self.distillation(images, padding_mask=padding_mask, epoch=epoch)
        return outputs, dict(losses)


class TrainingMode:
    """What one ``--mode`` trains. Subclasses set :attr:`name` and implement :meth:`build`.

    Attributes:
        name: The ``--mode`` value.
        summary: What the mode trains, in a few words (``thumbdet train --help``).
        needs_teacher: The mode distils from ``--teacher``.
        has_unused_parameters: Some steps leave parameters without gradients (stage one), so
            ``DistributedDataParallel`` must look for them.
    """

    name = ""
    summary = ""
    needs_teacher = False
    has_unused_parameters = False

    def check(self, config: TrainConfig) -> None:
        """Refuse settings the mode cannot train with (one line naming the flag)."""
        if config.distill.student_init == "teacher" and not self.needs_teacher:
            raise ValueError(
                f"--student-init teacher needs a mode with a --teacher "
                f"({', '.join(m for m in list_modes() if get_mode(m).needs_teacher)}), "
                f"got --mode {self.name}"
            )

    def thumbnail_scale(self, config: TrainConfig) -> int | None:
        """The scale of the detector's thumbnails (``None``: full-size images)."""
        return config.scale

    def downsampler_name(self, config: TrainConfig) -> str | None:
        """The registry name of the downsampler in front of the detector (``None``: none)."""
        raise NotImplementedError

    def build(
        self, config: TrainConfig, category_ids: list[int], model_overrides: dict[str, Any]
    ) -> TrainingParts:
        """The run's modules (``model_overrides``: ``build_model`` keywords)."""
        raise NotImplementedError

    def stage(self, config: TrainConfig, epoch: int) -> int:  # noqa: ARG002 (the mode interface: a two-stage mode uses both)
        """The stage (1 or 2) of ``epoch``; one-stage modes are always in stage 2."""
        return 2

    def frozen(self, parts: TrainingParts, stage: int) -> list[nn.Parameter]:
        """Parameters whose gradients are dropped in ``stage``."""
        return parts.frozen_in_stage2 if stage == 2 else []

    def checkpoint_meta(
        self, config: TrainConfig, category_ids: list[int], category_names: list[str]
    ) -> dict[str, Any]:
        """What a checkpoint records to refuse incompatible resumes and teachers."""
        return {
            "preset": config.detector.preset,
            "num_classes": len(category_ids),
            "mode": self.name,
            "scale": self.thumbnail_scale(config),
            "downsampler": self.downsampler_name(config),
            "category_ids": list(category_ids),
            "category_names": list(category_names),
        }


_MODES: dict[str, TrainingMode] = {}


def register_mode(mode: TrainingMode) -> TrainingMode:
    """Add a mode to the registry (``--mode mode.name``).

    Raises:
        ValueError: a mode of that name is registered already.
    """
    if not mode.name or mode.name in _MODES:
        raise ValueError(f"mode: expected a new, non-empty name, got {mode.name!r}")
    _MODES[mode.name] = mode
    return mode


def get_mode(name: str) -> TrainingMode:
    """The registered mode called ``name``.

    Raises:
        ValueError: an unknown name (one line, listing the registered ones).
    """
    if name not in _MODES:
        raise ValueError(f"--mode: expected one of {', '.join(_MODES)}, got {name!r}")
    return _MODES[name]


def list_modes() -> list[str]:
    """Names of the registered modes, in registration order."""
    return list(_MODES)


class FixedThumbnailMode(TrainingMode):
    """A detector trained on the detection loss alone, behind the fixed downsampler of
    :meth:`downsampler_name` (none: full-size images)."""

    def build(
        self,
        config: TrainConfig,
        category_ids: list[int],  # noqa: ARG002 (the mode interface)
        model_overrides: dict[str, Any],
    ) -> TrainingParts:
        detector = build_model(config.detector.preset, **model_overrides)
        groups = detector.param_groups(config.optim.lr, config.optim.lr_backbone)
        name = self.downsampler_name(config)
        if name is None:
            return TrainingParts(DetectorStep(detector), detector, None, detector, groups)
        # From the registry, so that the student's pretrained folder records it.
        student = ThumbnailDetector(detector, create_downsampler(name, config.scale))
        return TrainingParts(DetectorStep(student), detector, student.downsampler, student, groups)


class TeacherMode(FixedThumbnailMode):
    """Deformable DETR on full-size images: the teacher."""

    name = "teacher"
    summary = "full-size images"

    def thumbnail_scale(self, config: TrainConfig) -> int | None:  # noqa: ARG002 (the mode interface)
        return None

    def downsampler_name(self, config: TrainConfig) -> str | None:  # noqa: ARG002 (the mode interface)
        return None


class BicubicMode(FixedThumbnailMode):
    """The same detector on fixed bicubic thumbnails (the paper's "Bicubic" row)."""

    name = "bicubic"
    summary = "bicubic thumbnails"

    def downsampler_name(self, config: TrainConfig) -> str | None:  # noqa: ARG002 (the mode interface)
        return "bicubic"


class ThumbDetMode(TrainingMode):
    """A learned downsampler and a student distilled from a frozen teacher (Algorithm 2)."""

    name = "thumbdet"
    summary = "learned thumbnails distilled from --teacher"
    needs_teacher = True
    has_unused_parameters = True  # stage one never runs the student

    def check(self, config: TrainConfig) -> None:
        super().check(config)
        if not config.distill.teacher:
            raise ValueError("--mode thumbdet needs --teacher CKPT (a trained teacher checkpoint)")

    def downsampler_name(self, config: TrainConfig) -> str | None:
        return config.distill.downsampler

    def stage(self, config: TrainConfig, epoch: int) -> int:
        return _schedule(config).stage(epoch)

    def build(
        self, config: TrainConfig, category_ids: list[int], model_overrides: dict[str, Any]
    ) -> TrainingParts:
        distill, schedule = config.distill, config.schedule
        downsampler = make_downsampler(distill.downsampler, config.scale)
        if schedule.stage1_epochs and getattr(downsampler, "out_channels", 3) > 3:
            raise ValueError(
                f"downsampler {distill.downsampler!r} keeps its image channels fixed, so a "
                "moment-only stage one has nothing to train: add --one-stage"
            )
        teacher = load_teacher(distill.teacher, config.detector.preset, category_ids)
        student = build_model(config.detector.preset, **model_overrides)
        _check_teacher_fits(teacher, student, config)
        if distill.student_init == "teacher":
            student.load_state_dict(teacher.state_dict())
        widen_stem(student, downsampler)
        activation = "sigmoid"  # Deformable DETR classifies with a sigmoid focal loss
        distillation = ThumbnailDistillation(
            downsampler,
            teacher,
            student,
            features="backbone_features",  # C3-C5 of the ResNet (Eq. 8)
            logits="pred_logits",  # last decoder layer (Sec. 4.1)
            weights=DistillWeights(
                moment=distill.moment_weight,
                logit=distill.logit_weight,
                feature=distill.feature_weight,
            ),
            schedule=_schedule(config),
            moment_loss=MomentMatchingLoss(lam=distill.lam),
            feature_loss=FeatureDistillationLoss(),
            logit_loss=LogitDistillationLoss(
                distill.temperature, activation=activation, pairing=distill.logit_pairing
            ),
            query_filter=QueryFilter(distill.threshold, activation=activation),
            mask_argument="padding_mask",
        )
        optim = config.optim
        groups = student.param_groups(optim.lr, optim.lr_backbone)
        groups.append({"params": list(downsampler.parameters()), "lr": optim.lr})
        groups = [group for group in groups if group["params"]]
        frozen = list(downsampler.parameters()) if schedule.freeze_downsampler_stage2 else []
        inference = ThumbnailDetector(student, downsampler)
        step = DistillationStep(distillation)
        return TrainingParts(step, student, downsampler, inference, groups, frozen)


def _architecture_differences(teacher: nn.Module, student: nn.Module) -> str:
    """``"num_queries: teacher 5, student 7; ..."`` over the detector settings that differ."""
    ignored = {"preset", "pretrained_backbone", "backbone_weights"}
    teacher_config, student_config = teacher.config.to_dict(), student.config.to_dict()
    return "; ".join(
        f"{key}: teacher {value}, student {student_config[key]}"
        for key, value in teacher_config.items()
        if key not in ignored and student_config[key] != value
    )


def _check_teacher_fits(teacher: nn.Module, student: nn.Module, config: TrainConfig) -> None:
    """Refuse, before any step, a student that the distillation or its start cannot pair with
    the teacher (one line naming what differs)."""
    distill = config.distill
    if distill.student_init == "teacher":
        shapes = {key: value.shape for key, value in student.state_dict().items()}
        if shapes != {key: value.shape for key, value in teacher.state_dict().items()}:
            raise ValueError(
                "--student-init teacher: expected a student of the teacher's architecture, got "
                f"{_architecture_differences(teacher, student)} (set --model like the teacher)"
            )
    if distill.logit_pairing == "index" and distill.logit_weight > 0:
        ours, theirs = student.config.num_queries, teacher.config.num_queries
        if ours != theirs:
            raise ValueError(
                f"--model num_queries: expected the teacher's {theirs} with --logit-pairing "
                f"index (or use --logit-pairing hungarian), got {ours}"
            )
    if distill.feature_weight > 0:
        ours, theirs = student.backbone.num_channels, teacher.backbone.num_channels
        if ours != theirs:
            raise ValueError(
                f"--feature-weight {distill.feature_weight:g}: expected a student backbone with "
                f"the teacher's feature channels {theirs}, got {ours} (set --model like the "
                "teacher, or --no-feature)"
            )


def _schedule(config: TrainConfig) -> TwoStageSchedule:
    """The two stages of Algorithm 2 in epochs: what the distillation and the loop both follow."""
    return TwoStageSchedule(config.schedule.stage1_epochs)


for _mode in (TeacherMode(), BicubicMode(), ThumbDetMode()):
    register_mode(_mode)
