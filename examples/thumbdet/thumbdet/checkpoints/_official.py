"""Conversion of the official Deformable-DETR checkpoints (fundamentalvision/Deformable-DETR):
a torch file ``{"model": state_dict, "args": argparse.Namespace, ...}``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thumbdet.checkpoints._conversion import (
    ConversionError,
    ConvertedDetector,
    convert_state,
    require,
)
from thumbdet.checkpoints._conversion_keys import OFFICIAL_RULES
from thumbdet.checkpoints.torch_files import load_torch_file

__all__ = ["convert_official"]

# Arguments of the official main.py that are DetectorConfig fields of the same name.
_OFFICIAL_SAME_NAMES = (
    "nheads", "enc_layers", "dec_layers", "dim_feedforward", "dropout", "enc_n_points",
    "dec_n_points", "num_queries", "with_box_refine", "two_stage", "aux_loss", "focal_alpha",
    "cls_loss_coef", "bbox_loss_coef", "giou_loss_coef", "set_cost_class", "set_cost_bbox",
    "set_cost_giou", "lr_linear_proj_mult",
)  # fmt: skip


def _official_overrides(args: Mapping[str, Any], num_classes: int, where: str) -> dict[str, Any]:
    backbone = str(args.get("backbone", "resnet50"))
    require(
        re.fullmatch(r"resnet\d+", backbone) is not None,
        where,
        f"backbone {backbone!r}: expected a torchvision ResNet (resnet50, resnet101, ...)",
    )
    require(not args.get("dilation", False), where, "dilation=True (DC5) is not supported")
    require(
        args.get("position_embedding", "sine") == "sine",
        where,
        f"position_embedding={args.get('position_embedding')!r}: only 'sine' is supported",
    )
    require(not args.get("masks", False), where, "masks=True (segmentation) is not supported")
    levels = int(args.get("num_feature_levels", 4))
    require(
        levels >= 3,
        where,
        f"num_feature_levels={levels}: thumbdet's detector reads C3-C5 (at least 3 levels); "
        "single-scale checkpoints (C5 only) have no place in it",
    )
    overrides: dict[str, Any] = {
        # torchvision's ImageNet weights, named as timm tags them.
        "backbone": f"{backbone}.tv_in1k",
        "num_classes": num_classes,
        "num_feature_levels": levels,
    }
    names = {"hidden_dim": "d_model", **{name: name for name in _OFFICIAL_SAME_NAMES}}
    overrides.update({ours: args[theirs] for theirs, ours in names.items() if theirs in args})
    return overrides


def convert_official(
    source: str | Path | Mapping[str, Any],
    category_ids: Sequence[int] | None = None,
    category_names: Sequence[str] | None = None,
) -> ConvertedDetector:
    """Convert an official Deformable-DETR checkpoint (fundamentalvision/Deformable-DETR).

    Multi-scale checkpoints with or without iterative box refinement and two-stage are
    converted; single-scale (C5 only), DC5 and segmentation checkpoints are refused.

    Args:
        source: The checkpoint file (``{"model": state_dict, "args": Namespace, ...}``, read
            without running code), or that dict already loaded.
        category_ids: Which class logits to keep, by index (the official COCO models have
            91 logits indexed by COCO category id; pass the 80 ids of
            ``instances_val2017.json``, see :func:`read_coco_categories`). ``None`` keeps all
            logits, with ids ``0..K-1``.
        category_names: A name per kept class (default: the ids as text).

    Returns:
        The :class:`ConvertedDetector`.

    Raises:
        ConversionError: An unsupported setting, or keys that do not map (all listed).
        ValueError: The file is not a readable torch file or lacks ``"model"``/``"args"``.
    """
    if not isinstance(source, (str, Path, Mapping)):
        raise TypeError(
            f"source must be a checkpoint path or its loaded dict, got {type(source).__name__}"
        )
    where = str(source) if isinstance(source, (str, Path)) else "the official checkpoint"
    checkpoint = load_torch_file(source) if isinstance(source, (str, Path)) else source
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise ConversionError(
            f"cannot convert {where}: expected an official Deformable-DETR checkpoint "
            "{'model': state_dict, 'args': Namespace, ...}, found no 'model' state dict"
        )
    args = checkpoint.get("args")
    args = vars(args) if hasattr(args, "__dict__") else args
    if not isinstance(args, Mapping):
        raise ConversionError(
            f"cannot convert {where}: no 'args' (the training arguments that describe the "
            "architecture: layers, levels, box refinement, two-stage...)"
        )
    state = checkpoint["model"]
    head = state.get("class_embed.0.weight")
    require(head is not None, where, "no 'class_embed.0.weight' (the class head)")
    overrides = _official_overrides(args, int(head.shape[0]), where)
    label = Path(source).name if isinstance(source, (str, Path)) else "checkpoint"
    categories = (category_ids, category_names, {})
    return convert_state(state, overrides, OFFICIAL_RULES, categories, where, f"official:{label}")
