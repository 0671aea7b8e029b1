"""Compose a downsampler, a frozen teacher and a student into ThumbDet's training objective."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from learnthumb._checks import check_bool_mask, check_floating, check_ndim
from learnthumb.downsamplers import downsample_padding_mask
from learnthumb.losses.feature import FeatureDistillationLoss
from learnthumb.losses.logit import logit_distillation_loss
from learnthumb.losses.moment import moment_matching_loss
from learnthumb.query_filter import query_filter
from learnthumb.schedule import DistillWeights, TwoStageSchedule
from learnthumb.taps import FeatureTap

__all__ = ["DistillationOutput", "ThumbnailDistillation"]

OutputSelector = str | Callable[[Any], Any]


class DistillationOutput(NamedTuple):
    """What :class:`ThumbnailDistillation` returns.

    Attributes:
        thumbnail: the downsampler's output, :math:`(B, C, h, w)`.
        student_output: the student's output on the thumbnail; ``None`` in stage one.
        losses: weighted loss terms by name (``"moment"``, ``"feature"``, ``"logit"``); add
            the task loss computed from ``student_output`` and sum them to train.
    """

    thumbnail: torch.Tensor
    student_output: Any
    losses: dict[str, torch.Tensor]


def _select(output: Any, selector: OutputSelector, what: str) -> Any:
    if callable(selector):
        return selector(output)
    if not isinstance(output, Mapping):
        raise TypeError(
            f"{what}={selector!r} is a key, but the model returned {type(output).__name__}, "
            "not a dict; pass a callable instead"
        )
    if selector not in output:
        raise KeyError(f"{what}={selector!r} is not among the model's outputs {sorted(output)}")
    return output[selector]


class ThumbnailDistillation(nn.Module):
    """ThumbDet's training objective for any teacher/student pair (Eq. (10), Algorithm 2).

    The downsampler turns the full-size images into thumbnails; the student sees the
    thumbnails, the frozen teacher the full images. Losses (each weighted by
    :class:`DistillWeights`, switched off by a zero weight):

    - ``"moment"``: moment matching between images and thumbnails (Eq. (5)), padding excluded;
    - ``"feature"``: feature distillation (Eq. (8)) between student and teacher maps, taken
      from named submodules (``feature_layers``) or from the model outputs (``features``);
    - ``"logit"``: logit distillation (Eq. (7)) over the queries kept by the Query Filter
      (Algorithm 1), when ``logits`` says where the class logits are.

    In stage one of ``schedule`` only ``"moment"`` is computed and neither network runs. The
    teacher is frozen for good: eval mode, ``requires_grad=False``, run under ``no_grad``.

    Args:
        downsampler: the thumbnail module (its ``scale`` attribute is used for masks).
        teacher: the full-resolution model; frozen here.
        student: the model that sees thumbnails.
        feature_layers: submodule names tapped in both models, or a mapping
            ``{student_name: teacher_name}`` for different architectures.
        features: alternatively, a key of (or a callable on) the models' outputs giving a
            list of feature maps, e.g. ``"backbone_features"``.
        logits: a key of (or callable on) the models' outputs giving class logits
            :math:`(B, N, C)`; ``None`` disables logit distillation.
        weights: loss weights and hyper-parameters (paper defaults).
        schedule: two-stage schedule; ``None`` means always stage two.
        feature_loss: a configured :class:`FeatureDistillationLoss` (e.g. with adapters);
            defaults to bilinear alignment without adapters.
        logit_activation: ``"sigmoid"`` for focal-loss detectors, ``"softmax"`` otherwise.
        background_index: with softmax, the no-object class ignored by the Query Filter.
        logit_pairing: ``"index"`` or ``"hungarian"`` (see
            :func:`~learnthumb.logit_distillation_loss`).
        use_query_filter: distil only the queries kept by the Query Filter (the paper);
            ``False`` distils every query (an ablation, and the official code's behaviour).
        mask_argument: keyword through which both models take a padding mask (e.g.
            ``"padding_mask"``); the student gets the mask reduced to the thumbnail size.
        moment_statistic: ``"std"`` (Eq. (5)) or ``"var"`` (official code).
        scale: downsampling factor, when the downsampler has no ``scale`` attribute.

    Shape:
        - images: :math:`(B, C, H, W)`; padding_mask: :math:`(B, H, W)`, True = padded.

    Example:
        >>> import timm
        >>> from learnthumb import ConvDownsampler
        >>> teacher = timm.create_model("resnet18", num_classes=5)
        >>> student = timm.create_model("resnet18", num_classes=5)
        >>> distill = ThumbnailDistillation(
        ...     ConvDownsampler(4), teacher, student, feature_layers=["layer3", "layer4"]
        ... )
        >>> thumbnail, logits, losses = distill(torch.rand(2, 3, 64, 64))
        >>> sorted(losses)
        ['feature', 'moment']
    """

    def __init__(
        self,
        downsampler: nn.Module,
        teacher: nn.Module,
        student: nn.Module,
        *,
        feature_layers: Sequence[str] | Mapping[str, str] = (),
        features: OutputSelector | None = None,
        logits: OutputSelector | None = None,
        weights: DistillWeights | None = None,
        schedule: TwoStageSchedule | None = None,
        feature_loss: FeatureDistillationLoss | None = None,
        logit_activation: str = "softmax",
        background_index: int | None = None,
        logit_pairing: str = "index",
        use_query_filter: bool = True,
        mask_argument: str | None = None,
        moment_statistic: str = "std",
        scale: int | None = None,
    ) -> None:
        super().__init__()
        for name, module in (("downsampler", downsampler), ("teacher", teacher)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        if teacher is student:
            raise ValueError("teacher and student must be distinct modules (the teacher is frozen)")
        weights = DistillWeights() if weights is None else weights
        if not isinstance(weights, DistillWeights):
            raise TypeError(f"weights must be a DistillWeights, got {type(weights).__name__}")
        if schedule is not None and schedule.stage1_epochs > 0 and weights.moment == 0:
            raise ValueError(
                "stage one trains the downsampler on the moment loss alone: "
                "weights.moment must be > 0 when schedule.stage1_epochs > 0"
            )
        if feature_layers and features is not None:
            raise ValueError("give feature_layers or features, not both")
        self.scale = scale if scale is not None else getattr(downsampler, "scale", None)
        if mask_argument is not None and self.scale is None:
            raise ValueError("the downsampler has no `scale` attribute: pass scale=")
        self.downsampler = downsampler
        self.teacher = teacher
        self.student = student
        self.weights = weights
        self.schedule = schedule
        self.features = features
        self.logits = logits
        self.logit_activation = logit_activation
        self.background_index = background_index
        self.logit_pairing = logit_pairing
        self.use_query_filter = use_query_filter
        self.mask_argument = mask_argument
        self.moment_statistic = moment_statistic
        self.feature_loss = feature_loss if feature_loss is not None else FeatureDistillationLoss()

        if isinstance(feature_layers, Mapping):
            student_layers, teacher_layers = list(feature_layers), list(feature_layers.values())
        else:
            student_layers = teacher_layers = list(feature_layers)
        self._student_tap = FeatureTap(student, student_layers) if student_layers else None
        self._teacher_tap = FeatureTap(teacher, teacher_layers) if teacher_layers else None

        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> ThumbnailDistillation:
        """Set train/eval mode for everything but the teacher, which stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the downsampler, the student and the feature adapters."""
        for module in (self.downsampler, self.student, self.feature_loss):
            yield from (p for p in module.parameters() if p.requires_grad)

    def stage(self, epoch: int | None) -> int:
        """The training stage at ``epoch`` (2 without a schedule or an epoch)."""
        if self.schedule is None or epoch is None:
            return 2
        return self.schedule.stage(epoch)

    def _model_features(self, output: Any, tap: FeatureTap | None) -> list[torch.Tensor] | None:
        if tap is not None:
            values = tap.values()
            tap.clear()
            return values
        if self.features is not None:
            return list(_select(output, self.features, "features"))
        return None

    def forward(
        self,
        images: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        epoch: int | None = None,
    ) -> DistillationOutput:
        check_ndim(images, 4, "images", "(B, C, H, W)")
        check_floating(images, "images")
        if padding_mask is not None:
            check_bool_mask(padding_mask, "padding_mask", (images.shape[0], *images.shape[-2:]))
        weights = self.weights
        thumbnail = self.downsampler(images)
        thumbnail_mask = (
            downsample_padding_mask(padding_mask, self.scale)
            if padding_mask is not None and self.scale is not None
            else None
        )
        losses: dict[str, torch.Tensor] = {}
        stage = self.stage(epoch)
        if weights.moment > 0 or stage == 1:
            losses["moment"] = weights.moment * moment_matching_loss(
                images,
                thumbnail,
                weights.lam,
                statistic=self.moment_statistic,
                original_padding_mask=padding_mask,
                thumbnail_padding_mask=thumbnail_mask,
            )
        if stage == 1:
            return DistillationOutput(thumbnail, None, losses)

        teacher_kwargs: dict[str, Any] = {}
        student_kwargs: dict[str, Any] = {}
        if self.mask_argument is not None and padding_mask is not None:
            teacher_kwargs[self.mask_argument] = padding_mask
            student_kwargs[self.mask_argument] = thumbnail_mask
        need_teacher = (weights.feature > 0 and self._has_features) or (
            weights.logit > 0 and self.logits is not None
        )
        teacher_output = None
        if need_teacher:
            with torch.no_grad():
                teacher_output = self.teacher(images, **teacher_kwargs)
        student_output = self.student(thumbnail, **student_kwargs)

        if weights.feature > 0 and self._has_features:
            student_maps = self._model_features(student_output, self._student_tap)
            teacher_maps = self._model_features(teacher_output, self._teacher_tap)
            losses["feature"] = weights.feature * self.feature_loss(
                student_maps, teacher_maps, padding_mask
            )
        elif self._student_tap is not None:
            self._student_tap.clear()
        if weights.logit > 0 and self.logits is not None:
            teacher_logits = _select(teacher_output, self.logits, "logits")
            student_logits = _select(student_output, self.logits, "logits")
            keep = (
                query_filter(
                    teacher_logits, weights.threshold, self.logit_activation, self.background_index
                )
                if self.use_query_filter
                else None
            )
            losses["logit"] = weights.logit * logit_distillation_loss(
                student_logits,
                teacher_logits,
                temperature=weights.temperature,
                keep=keep,
                activation=self.logit_activation,
                pairing=self.logit_pairing,
            )
        return DistillationOutput(thumbnail, student_output, losses)

    @property
    def _has_features(self) -> bool:
        return self._student_tap is not None or self.features is not None
