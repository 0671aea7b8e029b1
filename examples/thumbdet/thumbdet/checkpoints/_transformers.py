"""Conversion of Hugging Face transformers' ``DeformableDetrForObjectDetection`` (timm ResNet
backbone): the model, a state dict with its config, or a ``save_pretrained`` folder."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from thumbdet.checkpoints._conversion import (
    ConversionError,
    ConvertedDetector,
    convert_state,
    require,
)
from thumbdet.checkpoints._conversion_keys import TRANSFORMERS_RULES
from thumbdet.checkpoints.torch_files import load_torch_file

__all__ = ["convert_transformers"]

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
    require(
        timm_backbone and isinstance(backbone, str) and backbone.startswith("resnet"),
        where,
        f"backbone {backbone_config.get('model_type') or backbone!r}: expected a timm ResNet "
        "(use_timm_backbone=True)",
    )
    levels = int(setting("num_feature_levels", 4))
    require(
        levels >= 3 and out_indices in (None, [2, 3, 4], (2, 3, 4)),
        where,
        f"num_feature_levels={levels}, backbone out_indices={out_indices}: thumbdet's detector "
        "reads C3-C5 (out_indices [2, 3, 4], at least 3 levels)",
    )
    require(not setting("dilation", False), where, "dilation=True (DC5) is not supported")
    for name, value in (("activation_function", "relu"), ("position_embedding_type", "sine")):
        require(setting(name, value) == value, where, f"{name}={setting(name)!r}: only {value!r}")
    for encoder, decoder in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        require(
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
    require(head is not None, where, "no 'class_embed.0.weight' (the class head)")
    overrides = _transformers_overrides(config_dict, int(head.shape[0]), where)
    id2label = {int(key): str(name) for key, name in (config_dict.get("id2label") or {}).items()}
    label = config_dict.get("_name_or_path") or (
        Path(source).name if isinstance(source, (str, Path)) else "model"
    )
    categories = (category_ids, category_names, id2label)
    return convert_state(
        state,
        overrides,
        TRANSFORMERS_RULES,
        categories,
        where,
        f"transformers:{label}",
        merge_qkv=True,
    )
