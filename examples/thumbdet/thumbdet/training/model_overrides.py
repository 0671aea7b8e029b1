"""``thumbdet train --model KEY=VALUE``: typed overrides of the detector preset's fields."""

from __future__ import annotations

import typing
from typing import Any

from thumbdet.settings import coerce

__all__ = [
    "MODEL_KEYS_SET_ELSEWHERE",
    "check_model_overrides",
    "model_keys",
    "parse_model_overrides",
]


#: Keys that ``--model`` refuses, and what sets them instead: ``DetectorConfig`` fields with
#: their own flag or source, and the learning rates that earlier versions kept there.
MODEL_KEYS_SET_ELSEWHERE = {
    "preset": "--preset",
    "num_classes": "the training data's categories",
    "pretrained_backbone": "--pretrained-backbone",
    "backbone_weights": "--backbone-weights",
    "lr": "--lr",
    "lr_backbone": "--lr-backbone",
}


def _detector_fields() -> dict[str, Any]:
    """``DetectorConfig`` field name -> its type (imported here: the CLI's help stays fast)."""
    from thumbdet.models.presets import DetectorConfig

    return typing.get_type_hints(DetectorConfig)


def model_keys() -> list[str]:
    """The ``DetectorConfig`` fields ``thumbdet train --model KEY=VALUE`` sets."""
    return sorted(set(_detector_fields()) - set(MODEL_KEYS_SET_ELSEWHERE))


def check_model_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides of ``DetectorConfig`` fields, each converted to its field's type.

    Raises:
        ValueError: one line naming the key: unknown (listing the valid ones), set by another
            flag, or a value of the wrong type.
    """
    if not overrides:
        return {}
    fields = _detector_fields()
    checked = {}
    for key, value in overrides.items():
        if key in MODEL_KEYS_SET_ELSEWHERE:
            raise ValueError(f"--model {key}: set by {MODEL_KEYS_SET_ELSEWHERE[key]}")
        if key not in fields:
            raise ValueError(f"--model {key}: unknown key; valid keys: {', '.join(model_keys())}")
        checked[key] = coerce(f"--model {key}", value, fields[key])
    return checked


def parse_model_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["num_queries=12", "with_box_refine=true"]`` -> ``{"num_queries": 12, ...}``, typed and
    checked by :func:`check_model_overrides`; a later item wins over an earlier one.

    Example:
        >>> parse_model_overrides(["num_queries=12", "with_box_refine=true"])
        {'num_queries': 12, 'with_box_refine': True}
    """
    overrides = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--model {item}: expected KEY=VALUE, e.g. num_queries=100")
        overrides[key.strip()] = value
    return check_model_overrides(overrides)
