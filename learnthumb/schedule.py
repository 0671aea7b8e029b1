"""The two-stage training schedule of ThumbDet (Algorithm 2)."""

from __future__ import annotations

from dataclasses import dataclass

from learnthumb._checks import check_in_open_interval, check_positive

__all__ = ["DistillWeights", "TwoStageSchedule"]


class TwoStageSchedule:
    """Stage one trains only the downsampler (moment matching); stage two trains everything.

    Args:
        stage1_epochs: epochs of stage one (5 in the paper). 0 gives one-stage training.

    Example:
        >>> schedule = TwoStageSchedule(stage1_epochs=5)
        >>> [schedule.stage(e) for e in (0, 4, 5, 50)]
        [1, 1, 2, 2]
    """

    def __init__(self, stage1_epochs: int = 5) -> None:
        if isinstance(stage1_epochs, bool) or not isinstance(stage1_epochs, int):
            raise TypeError(f"stage1_epochs must be an int, got {stage1_epochs!r}")
        if stage1_epochs < 0:
            raise ValueError(f"stage1_epochs must be >= 0, got {stage1_epochs}")
        self.stage1_epochs = stage1_epochs

    def stage(self, epoch: int) -> int:
        """1 during the first ``stage1_epochs`` epochs (counting from 0), else 2."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        return 1 if epoch < self.stage1_epochs else 2

    def __repr__(self) -> str:
        return f"TwoStageSchedule(stage1_epochs={self.stage1_epochs})"


@dataclass(frozen=True)
class DistillWeights:
    """Loss weights and hyper-parameters of ThumbDet (Sec. 4.1 of the paper).

    Attributes:
        moment: ``gamma``, weight of the moment-matching loss (1).
        logit: ``alpha``, weight of the logit distillation (0.5).
        feature: ``beta``, weight of the feature distillation (0.1).
        lam: ``lambda`` inside the moment-matching loss (0.1).
        temperature: ``T`` of the logit distillation (1).
        threshold: probability threshold of the Query Filter (0.5).

    A weight of 0 switches its term off (it is then not computed at all).
    """

    moment: float = 1.0
    logit: float = 0.5
    feature: float = 0.1
    lam: float = 0.1
    temperature: float = 1.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("moment", "logit", "feature", "lam"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"DistillWeights.{name} must be a number >= 0, got {value!r}")
        check_positive(self.temperature, "DistillWeights.temperature")
        check_in_open_interval(self.threshold, "DistillWeights.threshold")
