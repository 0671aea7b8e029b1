"""Deformable-DETR model parts: backbone, position encoding, transformer, detector, presets."""

from .backbone import Backbone
from .deformable_detr import MLP, DeformableDETR, build_model
from .deformable_transformer import DeformableTransformer
from .position_encoding import PositionEmbeddingSine, sine_position_embedding
from .presets import PRESETS, DetectorConfig, get_config, list_presets

__all__ = [
    "MLP",
    "PRESETS",
    "Backbone",
    "DeformableDETR",
    "DeformableTransformer",
    "DetectorConfig",
    "PositionEmbeddingSine",
    "build_model",
    "get_config",
    "list_presets",
    "sine_position_embedding",
]
