"""A timm backbone with a light FPN-style head: dense logits or heatmaps at stride 2."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from learnthumb import IMAGENET_MEAN, IMAGENET_STD, normalize_image_channels


class DensePredictionNet(nn.Module):
    """timm ``features_only`` backbone (strides 2, 4, 8) + top-down FPN head.

    Images in ``[0, 1]`` are normalised *inside* the model, after any downsampler, so a
    thumbnail stays an image in the same value range as its original (see
    docs/concepts.md, section 1: the thumbnail must stay an image).

    Args:
        num_outputs: classes (segmentation logits) or keypoints (heatmaps).
        backbone: a timm model name; random weights (no download).
        head_channels: channels of the FPN head.

    Shape:
        - images: :math:`(B, 3, H, W)` in ``[0, 1]``.
        - output: :math:`(B, num\\_outputs, \\lceil H/2 \\rceil, \\lceil W/2 \\rceil)`.
    """

    def __init__(
        self, num_outputs: int, backbone: str = "test_efficientnet", head_channels: int = 32
    ) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            backbone, pretrained=False, features_only=True, out_indices=(0, 1, 2)
        )
        channels = self.backbone.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, head_channels, 1) for c in channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(head_channels, head_channels, 3, padding=1),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
        )
        self.predict = nn.Conv2d(head_channels, num_outputs, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_names(self) -> list[str]:
        """Names of the backbone stages (for :class:`learnthumb.FeatureTap`)."""
        return ["backbone." + name for name in self.backbone.feature_info.module_name()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        normalised = normalize_image_channels(images, self.mean, self.std)
        features = self.backbone(normalised)  # [(B, C_l, H/2^l, W/2^l)]
        merged = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            merged = lateral(feature) + F.interpolate(
                merged, size=feature.shape[-2:], mode="nearest"
            )
        return self.predict(self.smooth(merged))  # (B, num_outputs, H/2, W/2)
