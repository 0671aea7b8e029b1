"""Training configuration: every setting of ``thumbdet train``, declared once.

:class:`TrainConfig` nests one settings class per concern (:mod:`.groups`: data, model,
optimisation, schedule, distillation). Each field carries its help, allowed values and range
(:func:`thumbdet.settings.setting`); ``thumbdet train``'s flags and its ``--config`` files are
generated from them (:mod:`thumbdet.cli.flags`), and each run stores the configuration as
``config.json`` and in its checkpoint. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from thumbdet.settings import check_ranges, coerce, flatten, from_leaves, leaves, setting
from thumbdet.training.groups import (
    DataSettings,
    DistillSettings,
    ModelSettings,
    OptimSettings,
    ScheduleSettings,
)
from thumbdet.training.model_overrides import check_model_overrides
from thumbdet.validation import check_device, check_short_sides

__all__ = [
    "DataSettings",
    "DistillSettings",
    "ModelSettings",
    "OptimSettings",
    "ScheduleSettings",
    "TrainConfig",
]


def _modes() -> dict[str, str]:
    from thumbdet.training.modes import get_mode, list_modes

    return {name: get_mode(name).summary for name in list_modes()}


#: ``TrainConfig`` keys of thumbdet 0.1.0 checkpoints and config files, and their new names.
_RENAMED = {
    "gamma": "moment_weight",
    "alpha": "logit_weight",
    "beta": "feature_weight",
    "model": "model_overrides",
}
_WEIGHT_SWITCHES = {"moment": "moment_weight", "logit": "logit_weight", "feature": "feature_weight"}


@dataclass
class TrainConfig:
    """Every setting of a training run; serialisable to JSON and stored in each checkpoint.

    Defaults follow Deformable DETR and Sec. 4.1 of ThumbDet (AdamW, lr 2e-4, backbone lr 2e-5,
    weight decay 1e-4, step decay x0.1, gradient clipping 0.1, short side 480-800, max 1333).
    The settings of each group are documented by their ``help`` (``thumbdet train --help``).

    Example:
        >>> config = TrainConfig.from_dict({"mode": "bicubic", "lr": 1e-3, "epochs": 3})
        >>> config.optim.lr, config.schedule.epochs, config.mode
        (0.001, 3, 'bicubic')
        >>> config.replace(lr=5e-4).optim.lr
        0.0005
    """

    mode: str = setting("teacher", "what to train", choices=_modes)
    scale: int = setting(4, "thumbnail scale of the students (2 or 4)", minimum=1)
    output: str = setting(
        "runs/thumbdet", "folder for checkpoint.pth, log.jsonl and config.json", resumable=True
    )
    resume: bool = setting(False, "continue from OUTPUT/checkpoint.pth exactly", resumable=True)
    device: str | None = setting(
        None, "cpu, cuda or cuda:N (default: cuda if available)", resumable=True
    )
    seed: int = setting(42, "seed of every random number generator", minimum=0)
    data: DataSettings = field(default_factory=DataSettings)
    detector: ModelSettings = field(default_factory=ModelSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag for an inconsistent configuration."""
        from thumbdet.training.modes import get_mode

        check_ranges(self)
        data = self.data
        if not data.train_images or not data.train_ann:
            raise ValueError("--train-images and --train-ann are required (or --coco-root)")
        if (data.val_images is None) != (data.val_ann is None):
            raise ValueError("--val-images and --val-ann must be given together")
        check_short_sides(data.short_side, data.max_size)
        check_device(self.device)
        get_mode(self.mode).check(self)
        self._check_model()

    def _check_model(self) -> None:
        """The preset exists and the overrides give a valid detector (``d_model % nheads``...)."""
        from thumbdet.models import get_config

        check_model_overrides(self.detector.model_overrides)
        try:
            get_config(self.detector.preset, **self.detector.model_overrides)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"--preset {self.detector.preset} with --model overrides: {error}"
            ) from None

    # ------------------------------------------------------------------ conversions
    def flat(self) -> dict[str, Any]:
        """``{setting name: value}`` over every group (names are unique)."""
        return {leaf.name: leaf.value_in(self) for leaf in leaves(type(self))}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with settings changed by name, whatever their group.

        Raises:
            ValueError: an unknown setting name.
        """
        changed = flatten(type(self), changes, "TrainConfig.replace")
        return from_leaves(type(self), {**self.flat(), **changed})

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready nested dict (``config.json``)."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The configuration as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def upgrade(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A flat mapping of thumbdet 0.1.0's names in today's (other keys unchanged).

        Checkpoints stored ``gamma``/``alpha``/``beta`` with ``moment``/``logit``/``feature``
        switches, ``one_stage`` and ``model_overrides``; ``--config`` files used the flags'
        names: ``no_moment``/``no_logit``/``no_feature``, ``one_stage`` and ``model``.
        """
        values = dict(values)
        for old, new in _RENAMED.items():
            if old in values:
                values[new] = values.pop(old)
        for switch, weight in _WEIGHT_SWITCHES.items():
            if values.pop(switch, True) is False:
                values[weight] = 0.0
            if values.pop(f"no_{switch}", False) is True:
                values[weight] = 0.0
        if values.pop("one_stage", False) is True:
            values["stage1_epochs"] = 0
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A configuration from :meth:`to_dict` output, a flat mapping of setting names, or a
        thumbdet 0.1.0 configuration (see :meth:`upgrade`); missing settings take defaults.

        Raises:
            ValueError: an unknown key (one line, listing the valid ones) or a value of the
                wrong type.
        """
        flat = flatten(cls, cls.upgrade(values), "TrainConfig")
        kinds = {leaf.name: leaf.kind for leaf in leaves(cls)}
        typed = {
            name: value if value is None else _typed(name, value, kinds[name])
            for name, value in flat.items()
        }
        return from_leaves(cls, typed)


def _typed(name: str, value: Any, kind: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    return coerce(name, value, kind)
