"""What both converters of :mod:`thumbdet.checkpoints.convert` share: their result
(:class:`ConvertedDetector`), their error (:class:`ConversionError`), and the steps from a
source's settings and weights to a detector configuration, renamed weights and kept classes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from thumbdet.checkpoints._conversion_keys import expected_keys, map_keys, tied_head
from thumbdet.models import DeformableDETR, DetectorConfig, get_config

__all__ = ["ConversionError", "ConvertedDetector", "convert_state", "require"]

#: Every converted config starts from Deformable DETR's standard one; the source overrides
#: each architecture field.
_BASE_PRESET = "paper_r50"


class ConversionError(ValueError):
    """A source checkpoint or model that does not map onto thumbdet's Deformable DETR."""


@dataclass
class ConvertedDetector:
    """Weights and configuration of a converted detector.

    Attributes:
        state_dict: Weights with the keys of :class:`~thumbdet.models.DeformableDETR`.
        config: The detector configuration (``build_model(config)`` fits ``state_dict``).
        category_ids: The category id of each class logit, in order.
        category_names: The name of each class.
        source: What was converted (``"official:<file name>"``, ``"transformers:<name>"``).
    """

    state_dict: dict[str, torch.Tensor]
    config: DetectorConfig
    category_ids: list[int]
    category_names: list[str]
    source: str = ""

    def build(self) -> DeformableDETR:
        """The detector with the converted weights loaded (strictly), in eval mode."""
        model = DeformableDETR(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def _build_config(overrides: dict[str, Any], where: str) -> DetectorConfig:
    try:
        return get_config(_BASE_PRESET, **overrides)
    except (ValueError, TypeError) as error:
        raise ConversionError(f"cannot convert {where}: {error}") from error


def _mapped(
    state: Mapping[str, torch.Tensor],
    rules: Sequence[tuple[str, str]],
    config: DetectorConfig,
    where: str,
    merge_qkv: bool = False,
) -> dict[str, torch.Tensor]:
    """``state`` renamed to thumbdet's keys, or one error listing every key that does not fit."""
    fallback = tied_head if merge_qkv else None  # transformers saves tied heads once
    state_dict, problems = map_keys(state, rules, expected_keys(config), merge_qkv, fallback)
    if problems:
        raise ConversionError(f"cannot convert {where}: " + "; ".join(problems))
    return state_dict


def require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConversionError(f"cannot convert {where}: {message}")


# ---------------------------------------------------------------------------------- categories
def _select_categories(
    state_dict: dict[str, torch.Tensor],
    config: DetectorConfig,
    category_ids: Sequence[int] | None,
    category_names: Sequence[str] | None,
    default_names: Mapping[int, str],
    where: str,
) -> tuple[dict[str, torch.Tensor], DetectorConfig, list[int], list[str]]:
    """Keep the class logits of ``category_ids`` (a logit's index is its category id)."""
    num_logits = config.num_classes
    if category_ids is None:
        ids = list(range(num_logits))
    else:
        ids = [int(value) for value in category_ids]
        bad = [value for value in ids if not 0 <= value < num_logits]
        require(
            bool(ids) and not bad and len(set(ids)) == len(ids),
            where,
            f"category_ids must be distinct ids in [0, {num_logits}) (the source's class "
            f"logits), got {bad or ids}",
        )
    if category_names is None:
        names = [str(default_names.get(value, value)) for value in ids]
    else:
        names = [str(name) for name in category_names]
        require(
            len(names) == len(ids),
            where,
            f"category_names has {len(names)} names for {len(ids)} category ids",
        )
    if ids == list(range(num_logits)):
        return state_dict, config, ids, names
    require(
        not (config.two_stage and not config.with_box_refine),
        where,
        "category_ids cannot select classes of a two-stage model without box refinement "
        "(its proposal head, which ranks by logit 0, is the shared class head)",
    )
    selected = dict(state_dict)
    proposal_head = config.dec_layers if config.two_stage else None
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"class_embed\.(\d+)\.(weight|bias)", key)
        if match is None:
            continue
        # Two-stage proposals rank by logit 0 (objectness): it stays first in their head.
        rows = [0, *ids[1:]] if int(match.group(1)) == proposal_head else ids
        selected[key] = tensor[rows].clone()
    config = get_config(config, num_classes=len(ids))
    return selected, config, ids, names


def convert_state(
    state: Mapping[str, torch.Tensor],
    overrides: dict[str, Any],
    rules: Sequence[tuple[str, str]],
    categories: tuple[Sequence[int] | None, Sequence[str] | None, Mapping[int, str]],
    where: str,
    source: str,
    merge_qkv: bool = False,
) -> ConvertedDetector:
    """The steps both converters share: the detector's configuration from ``overrides``, the
    weights renamed by ``rules``, the class logits of the requested categories.

    Args:
        state: The source's weights.
        overrides: ``DetectorConfig`` fields read from the source's own configuration.
        rules: Key renaming rules (``_conversion_keys``).
        categories: ``(category_ids, category_names, default names by id)``.
        where: The source, for messages.
        source: ``"official:NAME"`` or ``"transformers:NAME"``, recorded with the weights.
        merge_qkv: Merge separate q/k/v projections into packed ones (transformers).
    """
    config = _build_config(overrides, where)
    state_dict = _mapped(state, rules, config, where, merge_qkv=merge_qkv)
    category_ids, category_names, default_names = categories
    state_dict, config, ids, names = _select_categories(
        state_dict, config, category_ids, category_names, default_names, where
    )
    return ConvertedDetector(state_dict, config, ids, names, source)
