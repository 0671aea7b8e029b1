"""Deformable-DETR weights of other code bases in thumbdet's format.

Two sources are read:

- the official code (fundamentalvision/Deformable-DETR): a torch file ``{"model":
  state_dict, "args": argparse.Namespace, ...}``, read with :func:`~thumbdet.checkpoints.format.
  load_torch_file` (``weights_only=True``, nothing in it can run code);
- Hugging Face transformers' ``DeformableDetrForObjectDetection`` with a timm ResNet backbone:
  the model itself, a state dict with its config, or a folder written by ``save_pretrained``
  (``config.json`` + ``model.safetensors``); transformers need not be installed for folders.

Both keep Deformable DETR's architecture, so converting renames keys (and, for transformers,
merges the decoder's separate q/k/v projections into ``nn.MultiheadAttention``'s
``in_proj``) and reads the :class:`~thumbdet.models.DetectorConfig` from the source's
arguments (the rename rules are in :mod:`thumbdet.checkpoints._conversion_keys`). Whatever has
no place in
our model, or is missing from the source, is refused with one :class:`ConversionError` listing
the keys. :func:`save_converted` writes a teacher
checkpoint that ``thumbdet eval --checkpoint`` and ``thumbdet train --teacher`` read.

Example:
    >>> converted = convert_official("r50_deformable_detr-checkpoint.pth")  # doctest: +SKIP
    >>> save_converted(converted, "teachers/coco")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thumbdet.checkpoints._conversion_keys import (
    OFFICIAL_RULES,
    TRANSFORMERS_RULES,
    expected_keys,
    map_keys,
    tied_head,
)
from thumbdet.checkpoints.format import CHECKPOINT_NAME, load_torch_file, save_checkpoint
from thumbdet.models import DeformableDETR, DetectorConfig, get_config
from thumbdet.training.config import TrainConfig

__all__ = [
    "ConversionError",
    "ConvertedDetector",
    "convert_official",
    "convert_transformers",
    "read_coco_categories",
    "save_converted",
]

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


# ---------------------------------------------------------------------------------- config
# Arguments of the official main.py that are DetectorConfig fields of the same name.
_OFFICIAL_SAME_NAMES = (
    "nheads", "enc_layers", "dec_layers", "dim_feedforward", "dropout", "enc_n_points",
    "dec_n_points", "num_queries", "with_box_refine", "two_stage", "aux_loss", "focal_alpha",
    "cls_loss_coef", "bbox_loss_coef", "giou_loss_coef", "set_cost_class", "set_cost_bbox",
    "set_cost_giou", "lr", "lr_backbone", "lr_linear_proj_mult", "weight_decay", "clip_max_norm",
)  # fmt: skip

# DeformableDetrConfig field -> DetectorConfig field (the encoder's value stands for both
# stacks; the decoder's is checked equal).
_TRANSFORMERS_NAMES = {
    "d_model": "d_model",
    "encoder_attention_heads": "nheads",
    "encoder_layers": "enc_layers",
    "decoder_layers": "dec_layers",
    "encoder_ffn_dim": "dim_feedforward",
    "dropout": "dropout",
    "encoder_n_points": "enc_n_points",
    "decoder_n_points": "dec_n_points",
    "with_box_refine": "with_box_refine",
    "focal_alpha": "focal_alpha",
    "bbox_loss_coefficient": "bbox_loss_coef",
    "giou_loss_coefficient": "giou_loss_coef",
    "class_cost": "set_cost_class",
    "bbox_cost": "set_cost_bbox",
    "giou_cost": "set_cost_giou",
}


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


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConversionError(f"cannot convert {where}: {message}")


def _official_overrides(args: Mapping[str, Any], num_classes: int, where: str) -> dict[str, Any]:
    backbone = str(args.get("backbone", "resnet50"))
    _require(
        re.fullmatch(r"resnet\d+", backbone) is not None,
        where,
        f"backbone {backbone!r}: expected a torchvision ResNet (resnet50, resnet101, ...)",
    )
    _require(not args.get("dilation", False), where, "dilation=True (DC5) is not supported")
    _require(
        args.get("position_embedding", "sine") == "sine",
        where,
        f"position_embedding={args.get('position_embedding')!r}: only 'sine' is supported",
    )
    _require(not args.get("masks", False), where, "masks=True (segmentation) is not supported")
    levels = int(args.get("num_feature_levels", 4))
    _require(
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


def _transformers_overrides(
    config: Mapping[str, Any], num_classes: int, where: str
) -> dict[str, Any]:
    def setting(name: str, default: Any = None) -> Any:
        return config.get(name, default)

    backbone_config = setting("backbone_config") or {}
    if backbone_config:
        timm_backbone = backbone_config.get("model_type") == "timm_backbone"
        backbone = backbone_config.get("backbone")
        out_indices = backbone_config.get("out_indices")
    else:  # transformers 4: use_timm_backbone + backbone
        timm_backbone = bool(setting("use_timm_backbone", True))
        backbone = setting("backbone", "resnet50")
        out_indices = None
    _require(
        timm_backbone and isinstance(backbone, str) and backbone.startswith("resnet"),
        where,
        f"backbone {backbone_config.get('model_type') or backbone!r}: expected a timm ResNet "
        "(use_timm_backbone=True)",
    )
    levels = int(setting("num_feature_levels", 4))
    _require(
        levels >= 3 and out_indices in (None, [2, 3, 4], (2, 3, 4)),
        where,
        f"num_feature_levels={levels}, backbone out_indices={out_indices}: thumbdet's detector "
        "reads C3-C5 (out_indices [2, 3, 4], at least 3 levels)",
    )
    _require(not setting("dilation", False), where, "dilation=True (DC5) is not supported")
    for name, value in (("activation_function", "relu"), ("position_embedding_type", "sine")):
        _require(setting(name, value) == value, where, f"{name}={setting(name)!r}: only {value!r}")
    for encoder, decoder in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        _require(
            setting(encoder) == setting(decoder),
            where,
            f"{encoder}={setting(encoder)} differs from {decoder}={setting(decoder)}; "
            "thumbdet's detector has one value for both",
        )
    two_stage = bool(setting("two_stage", False))
    queries = "two_stage_num_proposals" if two_stage else "num_queries"
    overrides: dict[str, Any] = {
        "backbone": backbone,
        "num_classes": num_classes,
        "num_feature_levels": levels,
        "two_stage": two_stage,
        "num_queries": int(setting(queries, 300)),
    }
    overrides.update(
        {ours: config[theirs] for theirs, ours in _TRANSFORMERS_NAMES.items() if theirs in config}
    )
    return overrides


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
        _require(
            bool(ids) and not bad and len(set(ids)) == len(ids),
            where,
            f"category_ids must be distinct ids in [0, {num_logits}) (the source's class "
            f"logits), got {bad or ids}",
        )
    if category_names is None:
        names = [str(default_names.get(value, value)) for value in ids]
    else:
        names = [str(name) for name in category_names]
        _require(
            len(names) == len(ids),
            where,
            f"category_names has {len(names)} names for {len(ids)} category ids",
        )
    if ids == list(range(num_logits)):
        return state_dict, config, ids, names
    _require(
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


def read_coco_categories(annotation_file: str | Path) -> tuple[list[int], list[str]]:
    """Category ids (increasing, as :class:`thumbdet.data.CocoDetection` orders them) and names.

    Args:
        annotation_file: A COCO-format annotation file, e.g. ``instances_val2017.json``.

    Raises:
        ValueError: The file holds no ``categories`` list with ``id`` entries.
    """
    path = Path(annotation_file)
    try:
        categories = json.loads(path.read_text())["categories"]
        by_id = {int(entry["id"]): str(entry.get("name", entry["id"])) for entry in categories}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: expected a COCO annotation file with a 'categories' list of "
            f"{{'id', 'name'}} entries ({type(error).__name__}: {error})"
        ) from error
    if not by_id:
        raise ValueError(f"{path}: its 'categories' list is empty")
    ids = sorted(by_id)
    return ids, [by_id[value] for value in ids]


# ---------------------------------------------------------------------------------- official
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
    _require(head is not None, where, "no 'class_embed.0.weight' (the class head)")
    config = _build_config(_official_overrides(args, int(head.shape[0]), where), where)
    state_dict = _mapped(state, OFFICIAL_RULES, config, where)
    state_dict, config, ids, names = _select_categories(
        state_dict, config, category_ids, category_names, {}, where
    )
    label = Path(source).name if isinstance(source, (str, Path)) else "checkpoint"
    return ConvertedDetector(state_dict, config, ids, names, f"official:{label}")


# ---------------------------------------------------------------------------------- transformers
def _read_pretrained_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"cannot convert {folder}: no config.json (save_pretrained output)")
    config = json.loads(config_file.read_text())
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors")), config
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(str(folder / name)))
        return state, config
    if (folder / "pytorch_model.bin").is_file():
        return load_torch_file(folder / "pytorch_model.bin"), config
    raise ConversionError(
        f"cannot convert {folder}: no model.safetensors, model.safetensors.index.json or "
        "pytorch_model.bin"
    )


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(
        f"config must be a dict or a transformers DeformableDetrConfig, got {type(config).__name__}"
    )


def convert_transformers(
    source: Any,
    config: Any = None,
    category_ids: Sequence[int] | None = None,
    category_names: Sequence[str] | None = None,
) -> ConvertedDetector:
    """Convert Hugging Face transformers' ``DeformableDetrForObjectDetection``.

    The backbone must be timm's (``use_timm_backbone=True``, transformers' default); weights
    named by transformers 4 and 5 are both read.

    Args:
        source: The model, a folder written by its ``save_pretrained`` (``config.json`` and
            ``model.safetensors``; transformers need not be installed), or its state dict
            (then ``config`` is required).
        config: The model's config (``DeformableDetrConfig`` or its ``to_dict()``), for a
            state dict ``source``.
        category_ids: Which class logits to keep, by index (default: all, ids ``0..K-1``).
        category_names: A name per kept class (default: the config's ``id2label``).

    Returns:
        The :class:`ConvertedDetector`.

    Raises:
        ConversionError: An unsupported setting, or keys that do not map (all listed).
        TypeError: ``source`` or ``config`` of another type.
    """
    if isinstance(source, (str, Path)):
        where = str(source)
        if not Path(source).is_dir():
            raise ConversionError(
                f"cannot convert {where}: expected a folder written by save_pretrained"
            )
        state, config_dict = _read_pretrained_folder(Path(source))
    elif isinstance(source, torch.nn.Module):
        where = f"the {type(source).__name__}"
        if not hasattr(source, "config"):
            raise TypeError(f"source must be a transformers model with a .config, got {where}")
        state, config_dict = source.state_dict(), _config_dict(source.config)
    elif isinstance(source, Mapping):
        where = "the transformers state dict"
        if config is None:
            raise TypeError("config is required when source is a state dict")
        state, config_dict = dict(source), _config_dict(config)
    else:
        raise TypeError(
            "source must be a DeformableDetrForObjectDetection, a save_pretrained folder or a "
            f"state dict, got {type(source).__name__}"
        )
    head = state.get("class_embed.0.weight", state.get("model.decoder.class_embed.0.weight"))
    _require(head is not None, where, "no 'class_embed.0.weight' (the class head)")
    detector_config = _build_config(
        _transformers_overrides(config_dict, int(head.shape[0]), where), where
    )
    state_dict = _mapped(state, TRANSFORMERS_RULES, detector_config, where, merge_qkv=True)
    id2label = {int(key): str(name) for key, name in (config_dict.get("id2label") or {}).items()}
    state_dict, detector_config, ids, names = _select_categories(
        state_dict, detector_config, category_ids, category_names, id2label, where
    )
    label = config_dict.get("_name_or_path") or (
        Path(source).name if isinstance(source, (str, Path)) else "model"
    )
    return ConvertedDetector(state_dict, detector_config, ids, names, f"transformers:{label}")


# ---------------------------------------------------------------------------------- writing
def save_converted(converted: ConvertedDetector, output: str | Path) -> Path:
    """Write a converted detector as a thumbdet teacher checkpoint ``output/checkpoint.pth``.

    The file is the format ``thumbdet train`` writes (safetensors with SHA-256 checksums):
    ``thumbdet eval --checkpoint output`` evaluates it and ``thumbdet train --mode thumbdet
    --preset paper_r50 --teacher output`` distils from it. The weights are loaded strictly
    into the detector before anything is written.

    Args:
        converted: From :func:`convert_official` or :func:`convert_transformers`.
        output: Folder to write into (created when missing).

    Returns:
        The checkpoint file.
    """
    if not isinstance(converted, ConvertedDetector):
        raise TypeError(f"converted must be a ConvertedDetector, got {type(converted).__name__}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output must be a folder, got the file {output}")
    converted.build()  # strict load: refuses before writing anything
    config = converted.config
    train_config = TrainConfig(preset=config.preset, output=str(output), mode="teacher")
    meta = {
        "preset": config.preset,
        "num_classes": config.num_classes,
        "mode": "teacher",
        "scale": None,
        "downsampler": None,
        "category_ids": list(converted.category_ids),
        "category_names": list(converted.category_names),
        "converted_from": converted.source,
    }
    state = {
        "model": converted.state_dict,
        "downsampler": None,
        "config": train_config.to_dict(),
        "model_config": config.to_dict(),
        "meta": meta,
    }
    return save_checkpoint(state, output / CHECKPOINT_NAME)
