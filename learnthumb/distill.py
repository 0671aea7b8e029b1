"""Compose a downsampler, a frozen teacher and a student into ThumbDet's training objective."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from learnthumb._checks import (
    check_bool_mask,
    check_finite,
    check_floating,
    check_keyword_name,
    check_ndim,
)
from learnthumb.downsamplers._base import _thumbnail_padding_mask
from learnthumb.health import (
    ThumbnailHealthReport,
    ThumbnailHealthWarning,
    _report,
    constant_channel_fraction,
)
from learnthumb.losses.feature import FeatureDistillationLoss
from learnthumb.losses.logit import LogitDistillationLoss
from learnthumb.losses.moment import MomentMatchingLoss
from learnthumb.query_filter import QueryFilter
from learnthumb.schedule import DistillWeights, Safeguards, TwoStageSchedule
from learnthumb.taps import FeatureTap
from learnthumb.wrappers import _warps

__all__ = ["DistillationOutput", "ThumbnailDistillation"]

OutputSelector = str | Callable[[Any], Any]

# A channel this constant over a batch is dead or saturated (see learnthumb.health).
_HEALTH_THRESHOLD = 0.95


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
            f"not a dict; pass a callable instead (e.g. {what}=lambda output: output for a "
            "model that returns its logits)"
        )
    if selector not in output:
        raise KeyError(f"{what}={selector!r} is not among the model's outputs {sorted(output)}")
    return output[selector]


def _default(value: Any, kind: type, name: str) -> Any:
    """``value``, or ``kind()`` for ``None``; a ``TypeError`` naming ``name`` otherwise."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise TypeError(
            f"{name} must be a {kind.__name__} or None, got {type(value).__name__} ({value!r})"
        )
    return value


def _resolve_query_filter(
    query_filter: QueryFilter | bool | None, logit_loss: LogitDistillationLoss
) -> QueryFilter | None:
    """The filter module ``ThumbnailDistillation`` runs, or ``None`` for no filter."""
    if query_filter is None or query_filter is True:
        return QueryFilter(activation=logit_loss.activation)
    if query_filter is False:
        return None
    if not isinstance(query_filter, QueryFilter):
        raise TypeError(
            "query_filter must be a QueryFilter, a bool or None, got "
            f"{type(query_filter).__name__} ({query_filter!r})"
        )
    if query_filter.activation != logit_loss.activation:
        raise ValueError(
            f"query_filter must use the logit loss's activation: expected "
            f"{logit_loss.activation!r}, got {query_filter.activation!r}"
        )
    return query_filter


class ThumbnailDistillation(nn.Module):
    """ThumbDet's training objective for any teacher/student pair (Eq. (10), Algorithm 2).

    The downsampler turns the full-size images into thumbnails; the student sees the
    thumbnails, the frozen teacher the full images. Losses (each weighted by
    :class:`DistillWeights`, switched off by a zero weight), each computed by a configured
    loss module:

    - ``"moment"``: ``moment_loss`` (:class:`MomentMatchingLoss`, Eq. (5)) between images and
      thumbnails, padding excluded (on a wide thumbnail, :class:`learnthumb.WideDownsampler`,
      its first ``C`` channels);
    - ``"feature"``: ``feature_loss`` (:class:`FeatureDistillationLoss`, Eq. (8)) between
      student and teacher maps, taken from named submodules (``feature_layers``) or from the
      model outputs (``features``);
    - ``"logit"``: ``logit_loss`` (:class:`LogitDistillationLoss`, Eq. (7)) when ``logits``
      says where the class logits are: a detector's :math:`(B, N, C)` queries, those kept by
      the ``query_filter`` (:class:`QueryFilter`, Algorithm 1), or a classifier's
      :math:`(B, C)` logits (one "query" per image).

    In stage one of ``schedule`` only ``"moment"`` is computed and neither network runs. The
    teacher is frozen for good: eval mode, ``requires_grad=False``, run under ``no_grad``.

    :class:`Safeguards`, each switchable, make a broken run fail loudly and early:

    - ``check_finite``: non-finite images, thumbnail or loss terms raise a
      ``FloatingPointError`` naming them, before an optimiser step spreads a NaN into every
      weight;
    - with a schedule, a training-mode ``forward`` that gets neither ``epoch`` nor ``step``
      warns (once) and runs stage two, as without a schedule;
    - stage one shorter than ``min_stage1_steps`` optimiser steps warns (once) when stage two
      begins: the paper finds training everything from an untrained downsampler worse than
      bicubic (its Table 5);
    - ``check_health``: in training mode, a thumbnail channel that stays at least 95% constant
      over the batch (a dead ReLU, a saturated channel) for ``health_patience`` consecutive
      calls warns (once) with a :class:`~learnthumb.ThumbnailHealthWarning` (see
      :func:`~learnthumb.check_thumbnail_health`).

    Args:
        downsampler: the thumbnail module; its ``scale`` attribute reduces padding masks
            (without one, the factor between image and thumbnail sizes).
        teacher: the full-resolution model; frozen here.
        student: the model that sees thumbnails.
        feature_layers: submodule names tapped in both models, or a mapping
            ``{student_name: teacher_name}`` for different architectures. The tapped maps
            reach ``feature_loss`` as lists in this order or, when it has a ``mapping``, as
            dicts ``{layer_name: map}`` of each model's layers.
        features: alternatively, a key of (or a callable on) the models' outputs giving
            their feature maps, e.g. ``"backbone_features"``: a list or tuple, a dict or a
            single tensor, passed to ``feature_loss`` as is.
        logits: a key of (or callable on) the models' outputs giving class logits,
            :math:`(B, N, C)` or :math:`(B, C)`; for a classifier that returns its logits,
            ``lambda output: output``. ``None`` disables logit distillation.
        weights: the loss weights ``gamma``, ``alpha``, ``beta`` (paper defaults).
        schedule: two-stage schedule, in epochs or steps; ``None`` means always stage two.
        moment_loss: a configured :class:`MomentMatchingLoss` (``lam``, ``statistic``);
            defaults to the paper's ``lam=0.1`` on standard deviations.
        feature_loss: a configured :class:`FeatureDistillationLoss` (e.g. with adapters);
            defaults to bilinear alignment without adapters.
        logit_loss: a configured :class:`LogitDistillationLoss` (``temperature``,
            ``activation``: ``"sigmoid"`` for focal-loss detectors such as Deformable-DETR,
            ``"softmax"`` otherwise; ``pairing``); defaults to ``T=1``, softmax, by index.
        query_filter: which teacher queries are distilled. ``None`` (default): a
            :class:`QueryFilter` with the logit loss's activation for :math:`(B, N, C)` query
            logits (the paper), none for a classifier's :math:`(B, C)`. ``True``: that filter
            for both (on :math:`(B, C)` it keeps the images whose teacher is confident).
            ``False``: every query (an ablation, and the official code's behaviour). A
            configured :class:`QueryFilter` (``threshold``, ``background_index``) is used for
            both; its activation must be the logit loss's.
        mask_argument: keyword through which both models take a padding mask (e.g.
            ``"padding_mask"``); the student gets the mask reduced to the thumbnail, as
            :class:`~learnthumb.Thumbnailed` does.
        safeguards: the checks above (:class:`Safeguards`); defaults to all on, with
            ``health_patience=100`` and ``min_stage1_steps=100``.

    Raises:
        TypeError: when a module or setting has the wrong type.
        ValueError: when the query filter's activation is not the logit loss's, or the
            schedule has a stage one without a moment weight.

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

        A classifier's :math:`(B, C)` logits, with a schedule counted in optimiser steps and a
        softer logit loss:

        >>> from learnthumb import LogitDistillationLoss, Safeguards, TwoStageSchedule
        >>> distill = ThumbnailDistillation(
        ...     ConvDownsampler(4),
        ...     teacher,
        ...     student,
        ...     logits=lambda output: output,  # timm models return their logits
        ...     schedule=TwoStageSchedule(stage1_steps=1000),
        ...     logit_loss=LogitDistillationLoss(temperature=2.0),
        ...     safeguards=Safeguards(check_health=False),
        ... ).eval()
        >>> sorted(distill(torch.rand(2, 3, 64, 64), step=1000).losses)
        ['logit', 'moment']
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
        moment_loss: MomentMatchingLoss | None = None,
        feature_loss: FeatureDistillationLoss | None = None,
        logit_loss: LogitDistillationLoss | None = None,
        query_filter: QueryFilter | bool | None = None,
        mask_argument: str | None = None,
        safeguards: Safeguards | None = None,
    ) -> None:
        super().__init__()
        for name, module in (
            ("downsampler", downsampler),
            ("teacher", teacher),
            ("student", student),
        ):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        if teacher is student:
            raise ValueError("teacher and student must be distinct modules (the teacher is frozen)")
        self.downsampler = downsampler
        self.teacher = teacher
        self.student = student
        self.weights = _default(weights, DistillWeights, "weights")
        self.moment_loss = _default(moment_loss, MomentMatchingLoss, "moment_loss")
        self.feature_loss = _default(feature_loss, FeatureDistillationLoss, "feature_loss")
        self.logit_loss = _default(logit_loss, LogitDistillationLoss, "logit_loss")
        self.safeguards = _default(safeguards, Safeguards, "safeguards")
        if schedule is not None and not isinstance(schedule, TwoStageSchedule):
            raise TypeError(
                f"schedule must be a TwoStageSchedule or None, got {type(schedule).__name__}"
            )
        if schedule is not None and schedule.stage1_length > 0 and self.weights.moment == 0:
            raise ValueError(
                "stage one trains the downsampler on the moment loss alone: "
                f"weights.moment must be > 0 with {schedule!r}"
            )
        self.schedule = schedule
        if self.moment_loss.reduction == "none":
            raise ValueError(
                "moment_loss must reduce the batch to a scalar: expected reduction 'mean' or "
                "'sum', got 'none'"
            )
        if feature_layers and features is not None:
            raise ValueError("give feature_layers or features, not both")
        self.features = features
        self.logits = logits
        self.mask_argument = check_keyword_name(mask_argument, "mask_argument")
        self.query_filter = _resolve_query_filter(query_filter, self.logit_loss)
        # None (automatic): the Query Filter is a tool for set predictors' (B, N, C) queries.
        self._filter_classifier_logits = query_filter is not None

        if isinstance(feature_layers, Mapping):
            student_layers, teacher_layers = list(feature_layers), list(feature_layers.values())
        else:
            student_layers = teacher_layers = list(feature_layers)
        self._student_tap = FeatureTap(student, student_layers) if student_layers else None
        self._teacher_tap = FeatureTap(teacher, teacher_layers) if teacher_layers else None

        # Bookkeeping of the warnings (plain attributes: not part of the state dict).
        self._stage1_steps_seen = 0
        self._stage2_started = False
        self._warned: set[str] = set()
        self._constant_streak: list[int] = []  # per thumbnail channel

        self.teacher.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> ThumbnailDistillation:
        """Set train/eval mode for everything but the teacher, which stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the downsampler, the student and the loss modules (feature adapters)."""
        for module in (self.downsampler, self.student, self.feature_loss, self.logit_loss):
            yield from (p for p in module.parameters() if p.requires_grad)

    def remove_taps(self) -> None:
        """Remove the ``feature_layers`` hooks from both models, e.g. before the teacher serves
        another student; the ``"feature"`` term of ``feature_layers`` is off afterwards."""
        for tap in (self._student_tap, self._teacher_tap):
            if tap is not None:
                tap.remove()
        self._student_tap = self._teacher_tap = None

    def stage(self, epoch: int | None = None, step: int | None = None) -> int:
        """The training stage at ``epoch`` or ``step`` (see :meth:`TwoStageSchedule.stage`).

        2 without a schedule, and when neither counter is given (``forward`` then warns).
        """
        if self.schedule is None or (epoch is None and step is None):
            return 2
        return self.schedule.stage(epoch, step)

    def _model_features(self, output: Any, tap: FeatureTap | None) -> Any:
        """A model's feature maps in a form :class:`FeatureDistillationLoss` takes.

        A tap gives a list in ``feature_layers`` order, or a dict by layer name for a loss
        with a ``mapping`` (which pairs names); ``features`` selects whatever the model
        returns (list, tuple, dict or one tensor) and passes it through unchanged.
        """
        if tap is not None:
            values = tap.values()
            tap.clear()
            if self.feature_loss.mapping is not None:
                return dict(zip(tap.names, values, strict=True))
            return values
        if self.features is not None:
            return _select(output, self.features, "features")
        return None

    def forward(
        self,
        images: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        epoch: int | None = None,
        step: int | None = None,
    ) -> DistillationOutput:
        """Thumbnail, student output and weighted losses of one batch.

        Args:
            images: full-size images.
            padding_mask: bool, True = padded. Reduced to the thumbnail for the student and
                the moment loss as :class:`~learnthumb.Thumbnailed` does: through the warp of
                a warping downsampler (one with ``sample``), uniformly otherwise.
            epoch: the epoch, from 0, for an epoch schedule.
            step: the global optimiser step, from 0, for a step schedule.

        Shape:
            - images: :math:`(B, C, H, W)`; padding_mask: :math:`(B, H, W)`

        Returns:
            A :class:`DistillationOutput`.

        Raises:
            FloatingPointError: with ``check_finite``, on non-finite images, thumbnail or
                loss terms.
        """
        check_ndim(images, 4, "images", "(B, C, H, W)")
        check_floating(images, "images")
        if images.shape[0] == 0:  # the moments of no image are 0/0
            raise ValueError("images: expected a non-empty batch, got B=0")
        if padding_mask is not None:
            check_bool_mask(padding_mask, "padding_mask", (images.shape[0], *images.shape[-2:]))
        if self.safeguards.check_finite:
            check_finite(images, "images")
        stage = self.stage(epoch, step)
        if self.training:
            self._track_stage(stage, epoch, step)
        weights = self.weights
        thumbnail_mask = None  # (B, h, w)
        if padding_mask is not None and _warps(self.downsampler):
            # A warping downsampler's thumbnail mask comes from its warp, of the same call.
            thumbnail, warp = self.downsampler.sample(images)
            thumbnail_mask = warp.padding_mask_to_thumbnail(padding_mask)
        else:
            thumbnail = self.downsampler(images)
            if padding_mask is not None:
                thumbnail_mask = _thumbnail_padding_mask(
                    padding_mask, self.downsampler, thumbnail.shape[-2:]
                )
        losses: dict[str, torch.Tensor] = {}
        if weights.moment > 0 or stage == 1:
            losses["moment"] = weights.moment * self.moment_loss(
                images,
                # A wide thumbnail's first channels are the image-like ones.
                thumbnail[:, : images.shape[1]],
                padding_mask,
                thumbnail_mask,
            )
        if stage == 1:
            self._check_outputs(thumbnail, thumbnail_mask, losses)
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
        else:
            # The teacher may have run for its logits: drop what its tap kept, a batch at full
            # resolution, as well as the student's.
            for tap in (self._student_tap, self._teacher_tap):
                if tap is not None:
                    tap.clear()
        if weights.logit > 0 and self.logits is not None:
            teacher_logits = _select(teacher_output, self.logits, "logits")
            student_logits = _select(student_output, self.logits, "logits")
            losses["logit"] = weights.logit * self._logit_loss(student_logits, teacher_logits)
        self._check_outputs(thumbnail, thumbnail_mask, losses)
        return DistillationOutput(thumbnail, student_output, losses)

    def _logit_loss(self, student_logits: Any, teacher_logits: Any) -> torch.Tensor:
        check_ndim(teacher_logits, (3, 2), "teacher logits", "(B, N, C) or (B, C)")
        check_ndim(student_logits, (3, 2), "student logits", "(B, N, C) or (B, C)")
        use_filter = self.query_filter is not None and (
            teacher_logits.dim() == 3 or self._filter_classifier_logits
        )
        keep = None
        if use_filter:
            queries = teacher_logits if teacher_logits.dim() == 3 else teacher_logits[:, None]
            keep = self.query_filter(queries)  # (B, N)
            keep = keep if teacher_logits.dim() == 3 else keep[:, 0]  # (B,) for a classifier
        return self.logit_loss(student_logits, teacher_logits, keep)

    def _warn_once(self, key: str, message: str, category: type[Warning] = UserWarning) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(message, category, stacklevel=2)

    def _track_stage(self, stage: int, epoch: int | None, step: int | None) -> None:
        """Training-mode bookkeeping of the schedule: count stage one, warn on misuse."""
        schedule = self.schedule
        if schedule is None or schedule.stage1_length == 0:
            return
        if epoch is None and step is None:
            self._warn_once(
                "no_counter",
                f"ThumbnailDistillation has {schedule!r} but forward got neither epoch= nor "
                f"step=: running stage two, so stage one never happens. Pass "
                f"forward(images, {schedule.unit}=...)",
            )
            return
        if stage == 1:
            self._stage1_steps_seen += 1
            return
        if self._stage2_started:
            return
        self._stage2_started = True
        # A step schedule knows its length; an epoch schedule's is what this instance saw
        # (0 after resuming in stage two: nothing to judge then).
        length = schedule.stage1_steps if schedule.unit == "step" else self._stage1_steps_seen
        minimum = self.safeguards.min_stage1_steps
        if 0 < length < minimum:
            self._warn_once(
                "short_stage1",
                f"stage one of {schedule!r} ended after {length} optimiser step(s), fewer than "
                f"min_stage1_steps={minimum}: the downsampler may not make image-like "
                "thumbnails yet, and training everything from an untrained downsampler can end "
                "worse than bicubic (Table 5 of ThumbDet). Lengthen stage one (e.g. "
                "TwoStageSchedule(stage1_steps=...)) or pass "
                "safeguards=Safeguards(min_stage1_steps=0)",
            )

    def _check_outputs(
        self,
        thumbnail: torch.Tensor,
        thumbnail_mask: torch.Tensor | None,
        losses: dict[str, torch.Tensor],
    ) -> None:
        """Finite thumbnail and losses, healthy thumbnail channels: one device-to-host copy."""
        safeguards = self.safeguards
        check_health = self.training and safeguards.check_health and "health" not in self._warned
        if not (safeguards.check_finite or check_health):
            return
        with torch.no_grad():
            parts = []
            if safeguards.check_finite:
                finite = [thumbnail, *losses.values()]
                parts.append(torch.stack([torch.isfinite(t).all() for t in finite]).float())
            if check_health:
                parts.append(constant_channel_fraction(thumbnail, thumbnail_mask))  # (C,)
            host = torch.cat(parts).tolist()
        if safeguards.check_finite:
            finite_flags, host = host[: 1 + len(losses)], host[1 + len(losses) :]
            if not finite_flags[0]:
                raise FloatingPointError(
                    "the thumbnail has non-finite values although the images are finite: the "
                    "downsampler's weights are probably NaN/Inf already (an earlier step "
                    "diverged: lower the learning rate, clip gradients)"
                )
            bad = [name for name, ok in zip(losses, finite_flags[1:], strict=True) if not ok]
            if bad:
                values = ", ".join(f"{name}={losses[name].detach().sum().item()}" for name in bad)
                raise FloatingPointError(
                    f"non-finite loss term(s) {values} with finite images and thumbnail: a "
                    "model output overflowed (e.g. under float16 autocast) or the student "
                    "diverged; an optimiser step now would turn every weight into NaN"
                )
        if check_health:
            flagged = _report(host, _HEALTH_THRESHOLD).constant_channels
            if len(self._constant_streak) != len(host):
                self._constant_streak = [0] * len(host)
            self._constant_streak = [
                streak + 1 if channel in flagged else 0
                for channel, streak in enumerate(self._constant_streak)
            ]
            patience = safeguards.health_patience
            dead = [c for c, n in enumerate(self._constant_streak) if n >= patience]
            if dead:
                report = ThumbnailHealthReport(host, _HEALTH_THRESHOLD, dead)
                self._warn_once(
                    "health",
                    f"ThumbnailDistillation: for {patience} consecutive training "
                    f"steps, {report.message}",
                    ThumbnailHealthWarning,
                )

    @property
    def _has_features(self) -> bool:
        return self._student_tap is not None or self.features is not None
