"""ResNet backbone from timm returning C3–C5 with frozen batch-norm, as in Deformable DETR."""

from __future__ import annotations

import os

import timm
import torch
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch import nn

__all__ = ["Backbone", "downsample_mask"]

# Stages that stay trainable; the stem and layer1 are frozen like Deformable DETR's backbone.
_TRAINABLE_STAGES = ("layer2", "layer3", "layer4")


def downsample_mask(padding_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a padding mask to a feature map's size, as DETR does.

    Args:
        padding_mask: True where the image is padding.
        size: ``(H_l, W_l)`` of the feature map.

    Shape:
        - padding_mask: :math:`(B, H, W)` bool.
        - Output: :math:`(B, H_l, W_l)` bool.
    """
    # (B, H, W) -> (1, B, H, W) so that interpolate treats the batch as channels
    return F.interpolate(padding_mask[None].float(), size=size).to(torch.bool)[0]


class Backbone(nn.Module):
    """timm ResNet ``features_only`` at strides 8, 16, 32 with frozen batch-norm.

    Args:
        name: timm model name (a ResNet).
        layers: blocks per stage, or ``None`` for the timm default.
        channels: base widths of the four stages, or ``None`` for the timm default.
        stem_width: stem width, or ``None`` for the timm default.
        pretrained: load timm's ImageNet weights (downloaded unless ``weights_path`` is given).
        weights_path: load this local state dict (timm or torchvision ResNet keys).
        freeze_stem: freeze the stem and ``layer1`` parameters.

    Attributes:
        num_channels: channels of C3, C4, C5.
        strides: strides of C3, C4, C5 (8, 16, 32).
    """

    def __init__(
        self,
        name: str = "resnet50",
        layers: tuple[int, ...] | None = None,
        channels: tuple[int, ...] | None = None,
        stem_width: int | None = None,
        pretrained: bool = False,
        weights_path: str | None = None,
        freeze_stem: bool = True,
    ) -> None:
        super().__init__()
        architecture = {}
        if layers is not None:
            architecture["layers"] = tuple(layers)
        if channels is not None:
            architecture["channels"] = tuple(channels)
        if stem_width is not None:
            architecture["stem_width"] = stem_width
        # A local weights file wins over a download (it is what offline machines pass).
        download = pretrained and weights_path is None
        if download and architecture:
            raise ValueError(
                "pretrained_backbone=True needs the timm architecture unchanged; got "
                f"overrides {sorted(architecture)} for {name!r}"
            )
        body = _create_timm_features(name, download, architecture)
        if weights_path is not None:
            _load_backbone_weights(body, weights_path)
        # Deformable DETR trains with FrozenBatchNorm2d: statistics and affine are buffers.
        self.body = freeze_batch_norm_2d(body)
        if freeze_stem:
            for parameter_name, parameter in self.body.named_parameters():
                if not parameter_name.startswith(_TRAINABLE_STAGES):
                    parameter.requires_grad_(False)
        self.num_channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """C3, C4, C5 feature maps.

        Shape:
            - images: :math:`(B, 3, H, W)`, already normalised.
            - Output: list of :math:`(B, C_l, \\lceil H / s_l \\rceil, \\lceil W / s_l \\rceil)`.
        """
        return list(self.body(images))


def _create_timm_features(name: str, pretrained: bool, architecture: dict) -> nn.Module:
    try:
        return timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=(2, 3, 4), **architecture
        )
    except Exception as error:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not load timm's pretrained weights for {name!r} ({type(error).__name__}: "
            f"{error}). Without network access, download them elsewhere and pass "
            "backbone_weights=PATH (CLI: --backbone-weights PATH)."
        ) from error


def _load_backbone_weights(body: nn.Module, weights_path: str) -> None:
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"backbone_weights file not found: {weights_path!r}")
    from thumbdet.checkpoints.torch_files import load_torch_file  # here: no import cycle

    checkpoint = load_torch_file(weights_path)  # weights_only + allow-list: runs no code
    state_dict = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    if not isinstance(state_dict, dict):
        raise TypeError(f"{weights_path!r} does not hold a state dict")
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    # The classifier (fc) of an ImageNet checkpoint has no place in a features_only model.
    incompatible = body.load_state_dict(state_dict, strict=False)
    if incompatible.missing_keys:
        raise ValueError(
            f"backbone_weights {weights_path!r} lacks {len(incompatible.missing_keys)} keys of the "
            f"backbone, e.g. {incompatible.missing_keys[:3]}"
        )
