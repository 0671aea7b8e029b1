"""Detector configuration: one dataclass, named presets, and ``get_config`` for overrides.

``"paper_r50"`` is Deformable DETR's standard configuration (ResNet-50, 6+6 layers, d_model 256,
300 queries, 91 classes), the teacher and student of ThumbDet (Sec. 4.1). ``"tiny"`` is the same
architecture scaled down until a 2-core CPU can train it in minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["PRESETS", "DetectorConfig", "get_config", "list_presets"]


#: ``DetectorConfig`` keys of earlier versions that the training configuration holds instead
#: (``--lr``, ``--weight-decay``, ...); old checkpoints and pretrained folders still carry them.
_NO_LONGER_STORED = ("weight_decay", "clip_max_norm", "lr", "lr_backbone")


@dataclass
class DetectorConfig:
    """Every hyper-parameter of a Deformable-DETR detector and its loss.

    The learning rates are training settings (``thumbdet train --lr``, ``--lr-backbone``);
    the detector only says which of its parameters get ``lr_linear_proj_mult`` times ``lr``.

    Attributes:
        preset: name of the preset the config started from.
        num_classes: number of logits per query (sigmoid classification, no "no-object" logit).
        backbone: timm model name whose ``features_only`` C3–C5 maps feed the transformer.
        backbone_layers: blocks per ResNet stage; ``None`` keeps the timm model's own.
        backbone_channels: base widths of the four ResNet stages; ``None`` keeps timm's.
        backbone_stem_width: width of the ResNet stem; ``None`` keeps timm's.
        pretrained_backbone: load timm's ImageNet weights (needs network access).
        backbone_weights: path of a local backbone state dict (timm/torchvision ResNet keys).
        freeze_backbone_stem: freeze the stem and ``layer1`` like Deformable DETR does.
        d_model: transformer width.
        nheads: attention heads.
        enc_layers: encoder layers.
        dec_layers: decoder layers.
        dim_feedforward: hidden width of the feed-forward blocks.
        dropout: dropout in the transformer.
        num_feature_levels: multi-scale levels; levels beyond C3–C5 are stride-2 convolutions.
        enc_n_points: sampling points per head and level in the encoder.
        dec_n_points: sampling points per head and level in the decoder.
        num_queries: object queries (and two-stage proposals).
        with_box_refine: iterative bounding-box refinement.
        two_stage: two-stage Deformable DETR (proposals from the encoder).
        aux_loss: return the outputs of every decoder layer for auxiliary losses.
        focal_alpha: alpha of the sigmoid focal loss.
        cls_loss_coef: weight of ``loss_ce``.
        bbox_loss_coef: weight of ``loss_bbox`` (L1).
        giou_loss_coef: weight of ``loss_giou``.
        set_cost_class: class cost of the Hungarian matcher.
        set_cost_bbox: L1 cost of the Hungarian matcher.
        set_cost_giou: GIoU cost of the Hungarian matcher.
        lr_linear_proj_mult: factor on ``lr`` for sampling offsets and reference points.
    """

    preset: str = "paper_r50"
    num_classes: int = 91
    # torchvision's ImageNet weights (timm tag tv_in1k), the ones Deformable DETR starts from.
    backbone: str = "resnet50.tv_in1k"
    backbone_layers: tuple[int, ...] | None = None
    backbone_channels: tuple[int, ...] | None = None
    backbone_stem_width: int | None = None
    pretrained_backbone: bool = False
    backbone_weights: str | None = None
    freeze_backbone_stem: bool = True
    d_model: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    num_feature_levels: int = 4
    enc_n_points: int = 4
    dec_n_points: int = 4
    num_queries: int = 300
    with_box_refine: bool = False
    two_stage: bool = False
    aux_loss: bool = True
    focal_alpha: float = 0.25
    cls_loss_coef: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    set_cost_class: float = 2.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    lr_linear_proj_mult: float = 0.1

    def to_dict(self) -> dict:
        """Plain-Python copy (tuples become lists) for JSON logs and checkpoints."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict) -> DetectorConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``.

        Keys that older versions stored and the training configuration holds instead
        (``lr``, ``lr_backbone``, ``weight_decay``, ``clip_max_norm``) are dropped.
        """
        values = {k: v for k, v in values.items() if k not in _NO_LONGER_STORED}
        return cls(**_normalise_overrides(values))


PRESETS: dict[str, DetectorConfig] = {
    "paper_r50": DetectorConfig(preset="paper_r50"),
    "tiny": DetectorConfig(
        preset="tiny",
        backbone="resnet18",
        backbone_layers=(1, 1, 1, 1),
        backbone_channels=(16, 32, 64, 128),
        backbone_stem_width=16,
        d_model=64,
        nheads=4,
        enc_layers=1,
        dec_layers=2,
        dim_feedforward=128,
        dropout=0.0,
        num_queries=30,
    ),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_config` and ``thumbdet.build_model``."""
    return sorted(PRESETS)


_FIELD_NAMES = {field.name for field in dataclasses.fields(DetectorConfig)}
_TUPLE_FIELDS = ("backbone_layers", "backbone_channels")


def _normalise_overrides(values: dict) -> dict:
    unknown = sorted(set(values) - _FIELD_NAMES)
    if unknown:
        raise TypeError(
            f"unknown detector config field(s) {unknown}; expected some of {sorted(_FIELD_NAMES)}"
        )
    values = dict(values)
    for key in _TUPLE_FIELDS:
        if values.get(key) is not None:
            values[key] = tuple(int(v) for v in values[key])
    return values


def get_config(preset: str | DetectorConfig, **overrides) -> DetectorConfig:
    """The config of a named preset with some fields replaced.

    Args:
        preset: a name from :func:`list_presets`, or a config to copy.
        **overrides: any :class:`DetectorConfig` field, e.g. ``num_classes=3``.

    Returns:
        A new, validated :class:`DetectorConfig`.

    Example:
        >>> get_config("tiny", num_classes=3).num_classes
        3
    """
    if isinstance(preset, DetectorConfig):
        base = preset
    elif isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {list_presets()}")
        base = PRESETS[preset]
    else:
        raise TypeError(f"preset must be a str or DetectorConfig, got {type(preset).__name__}")
    config = dataclasses.replace(base, **_normalise_overrides(overrides))
    _validate(config)
    return config


def _validate(config: DetectorConfig) -> None:
    positive = ("num_classes", "d_model", "nheads", "enc_layers", "dec_layers", "num_queries")
    for key in (*positive, "dim_feedforward", "enc_n_points", "dec_n_points"):
        if getattr(config, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(config, key)}")
    if config.d_model % config.nheads:
        raise ValueError(
            f"d_model ({config.d_model}) must be divisible by nheads ({config.nheads})"
        )
    if config.d_model % 32:
        raise ValueError(f"d_model must be a multiple of 32 (GroupNorm(32)), got {config.d_model}")
    if config.num_feature_levels < 3:
        raise ValueError(
            f"num_feature_levels must be >= 3 (C3-C5), got {config.num_feature_levels}"
        )
