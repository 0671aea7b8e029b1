"""The two-stage training schedule of ThumbDet (Algorithm 2), the loss weights and safeguards."""

from __future__ import annotations

import math
from dataclasses import dataclass

from learnthumb._checks import check_int

__all__ = ["DistillWeights", "Safeguards", "TwoStageSchedule"]


class TwoStageSchedule:
    """Stage one trains only the downsampler (moment matching); stage two trains everything.

    The length of stage one is counted in epochs (the paper: 5) or in optimiser steps, which
    suits iteration-based training loops and short fine-tuning runs. Give at most one of the
    two a non-zero value; with neither, the paper's 5 epochs. A length of 0 gives one-stage
    training.

    Args:
        stage1_epochs: epochs of stage one.
        stage1_steps: optimiser steps of stage one (the global step count, from 0).

    Raises:
        ValueError: when both lengths are non-zero, or one is negative.

    Example:
        >>> schedule = TwoStageSchedule(stage1_epochs=5)
        >>> [schedule.stage(e) for e in (0, 4, 5, 50)]
        [1, 1, 2, 2]
        >>> steps = TwoStageSchedule(stage1_steps=200)
        >>> [steps.stage(step=s) for s in (0, 199, 200)]
        [1, 1, 2]
        >>> steps.stage(epoch=3, step=10)  # a step schedule ignores the epoch
        1
        >>> steps
        TwoStageSchedule(stage1_steps=200)
    """

    def __init__(self, stage1_epochs: int | None = None, stage1_steps: int | None = None) -> None:
        for name, value in (("stage1_epochs", stage1_epochs), ("stage1_steps", stage1_steps)):
            if value is not None:
                check_int(value, name, minimum=0)
        if stage1_epochs and stage1_steps:
            raise ValueError(
                "give stage one a length in epochs or in steps, not both: got "
                f"stage1_epochs={stage1_epochs} and stage1_steps={stage1_steps}"
            )
        if stage1_epochs is None and stage1_steps is None:
            stage1_epochs = 5  # the paper
        self.stage1_epochs = stage1_epochs or 0
        self.stage1_steps = stage1_steps or 0
        # Counted in steps only when asked for steps (and not in epochs) explicitly.
        self.unit = "step" if stage1_steps is not None and not stage1_epochs else "epoch"

    @property
    def stage1_length(self) -> int:
        """Length of stage one in :attr:`unit` (``"epoch"`` or ``"step"``); 0: one stage."""
        return self.stage1_steps if self.unit == "step" else self.stage1_epochs

    def stage(self, epoch: int | None = None, step: int | None = None) -> int:
        """The stage (1 or 2) at ``epoch`` or ``step``, both counted from 0.

        An epoch schedule needs ``epoch``, a step schedule ``step``; the other counter may be
        given too and is then ignored. A one-stage schedule (length 0) needs neither.

        Raises:
            ValueError: when the counter the schedule needs is missing or negative.
        """
        for name, value in (("epoch", epoch), ("step", step)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.stage1_length == 0:
            return 2
        counter = step if self.unit == "step" else epoch
        if counter is None:
            raise ValueError(f"{self!r} counts {self.unit}s: expected {self.unit}=, got None")
        return 1 if counter < self.stage1_length else 2

    def __repr__(self) -> str:
        return f"TwoStageSchedule(stage1_{self.unit}s={self.stage1_length})"


@dataclass(frozen=True)
class DistillWeights:
    """Loss weights of ThumbDet's objective, Eq. (10) (Sec. 4.1 of the paper).

    The losses' own hyper-parameters live in their modules: ``lambda`` in
    :class:`~learnthumb.MomentMatchingLoss`, the temperature in
    :class:`~learnthumb.LogitDistillationLoss`, the threshold in
    :class:`~learnthumb.QueryFilter`.

    Attributes:
        moment: ``gamma``, weight of the moment-matching loss (1).
        logit: ``alpha``, weight of the logit distillation (0.5).
        feature: ``beta``, weight of the feature distillation (0.1).

    A weight of 0 switches its term off (it is then not computed at all).

    Example:
        >>> DistillWeights(logit=0.0)
        DistillWeights(moment=1.0, logit=0.0, feature=0.1)
    """

    moment: float = 1.0
    logit: float = 0.5
    feature: float = 0.1

    def __post_init__(self) -> None:
        for name in ("moment", "logit", "feature"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(
                    f"DistillWeights.{name} must be a finite number >= 0, got {value!r}"
                )


@dataclass(frozen=True)
class Safeguards:
    """The checks :class:`~learnthumb.ThumbnailDistillation` runs so a broken run fails early.

    Attributes:
        check_finite: raise ``FloatingPointError`` on non-finite images, thumbnail or loss
            terms, before an optimiser step spreads a NaN into every weight.
        check_health: in training mode, warn once with a
            :class:`~learnthumb.ThumbnailHealthWarning` when a thumbnail channel stays at least
            95% constant over the batch for ``health_patience`` consecutive calls.
        health_patience: consecutive training-mode calls a channel must be constant for
            before ``check_health`` warns (1: at once). A freshly initialised
            ``ConvDownsampler`` often starts with such a channel that moment matching revives
            within a few dozen steps; one still dead after 100 steps rarely recovers.
        min_stage1_steps: warn when stage one ends after fewer optimiser steps (training-mode
            ``forward`` calls; with gradient accumulation, count micro-batches); 0 disables.
            The paper finds training everything from an untrained downsampler worse than
            bicubic (its Table 5).

    Example:
        >>> Safeguards(min_stage1_steps=0)
        Safeguards(check_finite=True, check_health=True, health_patience=100, min_stage1_steps=0)
    """

    check_finite: bool = True
    check_health: bool = True
    health_patience: int = 100
    min_stage1_steps: int = 100

    def __post_init__(self) -> None:
        for name in ("check_finite", "check_health"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(
                    f"Safeguards.{name} must be a bool, got {type(value).__name__} ({value!r})"
                )
        check_int(self.health_patience, "Safeguards.health_patience", minimum=1)
        check_int(self.min_stage1_steps, "Safeguards.min_stage1_steps", minimum=0)
