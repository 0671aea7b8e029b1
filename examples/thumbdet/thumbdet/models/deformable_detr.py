"""Deformable DETR detector: backbone, input projections, deformable transformer, heads."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb import IMAGENET_MEAN, IMAGENET_STD, normalize_image_channels

from .backbone import Backbone, downsample_mask
from .deformable_transformer import DeformableTransformer
from .position_encoding import PositionEmbeddingSine
from .presets import DetectorConfig, get_config
from .transformer_layers import inverse_sigmoid

__all__ = ["MLP", "DeformableDETR", "build_model"]

# Parameter-name keywords of Deformable DETR's optimiser groups (main.py of the official code).
_BACKBONE_KEYWORDS = ("backbone.",)
_LINEAR_PROJ_KEYWORDS = ("reference_points", "sampling_offsets")


class MLP(nn.Module):
    """Linear layers with ReLU between them (the box head: 3 layers)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out)
            for n_in, n_out in zip([input_dim, *widths], [*widths, output_dim], strict=True)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            tokens = layer(tokens)
            if index < len(self.layers) - 1:
                tokens = F.relu(tokens)
        return tokens


class DeformableDETR(nn.Module):
    """Deformable DETR (Zhu et al., ICLR 2021), the detector of ThumbDet (Sec. 3.2).

    Images enter in [0, 1]; ImageNet normalisation happens inside, so a learned downsampler
    can sit in front of the detector. Build it with :func:`build_model`.

    Args:
        config: every hyper-parameter; see :class:`~thumbdet.models.presets.DetectorConfig`.
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        d_model = config.d_model
        self.backbone = Backbone(
            config.backbone,
            layers=config.backbone_layers,
            channels=config.backbone_channels,
            stem_width=config.backbone_stem_width,
            pretrained=config.pretrained_backbone,
            weights_path=config.backbone_weights,
            freeze_stem=config.freeze_backbone_stem,
        )
        self.position_embedding = PositionEmbeddingSine(d_model // 2, normalize=True)
        self.transformer = DeformableTransformer(config)
        self.input_proj = nn.ModuleList(self._input_projections(config))
        if not config.two_stage:
            self.query_embed = nn.Embedding(config.num_queries, d_model * 2)
        # The two-stage variant adds one more head pair, scoring encoder proposals.
        num_heads = config.dec_layers + 1 if config.two_stage else config.dec_layers
        class_head = nn.Linear(d_model, config.num_classes)
        bbox_head = MLP(d_model, d_model, 4, 3)
        if config.with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(num_heads))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_head) for _ in range(num_heads))
        else:
            # One head shared by all decoder layers, as in the official code.
            self.class_embed = nn.ModuleList([class_head] * num_heads)
            self.bbox_embed = nn.ModuleList([bbox_head] * num_heads)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.reset_parameters()

    def _input_projections(self, config: DetectorConfig) -> list[nn.Module]:
        projections = [
            nn.Sequential(nn.Conv2d(channels, config.d_model, 1), nn.GroupNorm(32, config.d_model))
            for channels in self.backbone.num_channels
        ]
        in_channels = self.backbone.num_channels[-1]
        for _ in range(config.num_feature_levels - len(projections)):
            projections.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, config.d_model, 3, stride=2, padding=1),
                    nn.GroupNorm(32, config.d_model),
                )
            )
            in_channels = config.d_model
        return projections

    def reset_parameters(self) -> None:
        """Heads and projections as in Deformable DETR (class prior 0.01, zero box deltas)."""
        bias_value = -math.log((1 - 0.01) / 0.01)
        for class_head in self.class_embed:
            nn.init.constant_(class_head.bias, bias_value)
        for bbox_head in self.bbox_embed:
            nn.init.zeros_(bbox_head.layers[-1].weight)
            nn.init.zeros_(bbox_head.layers[-1].bias)
        # First boxes start small (sigmoid(-2) ~ 0.12) unless two-stage proposals give sizes;
        # without box refinement the head is shared, so this reaches every layer.
        if not self.config.two_stage:
            with torch.no_grad():
                self.bbox_embed[0].layers[-1].bias[2:] = -2.0
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.zeros_(projection[0].bias)

    def param_groups(self, lr: float, lr_backbone: float) -> list[dict]:
        """AdamW parameter groups of Deformable DETR.

        Backbone parameters get ``lr_backbone``; sampling offsets and reference-point
        projections get ``lr * config.lr_linear_proj_mult``; the rest gets ``lr``. Frozen
        parameters are left out.

        Args:
            lr: base learning rate (``thumbdet train --lr``).
            lr_backbone: backbone learning rate (``--lr-backbone``).
        """
        main, backbone, linear_proj = [], [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            if name.startswith(_BACKBONE_KEYWORDS):
                backbone.append(parameter)
            elif any(keyword in name for keyword in _LINEAR_PROJ_KEYWORDS):
                linear_proj.append(parameter)
            else:
                main.append(parameter)
        groups = [
            {"params": main, "lr": lr},
            {"params": backbone, "lr": lr_backbone},
            {"params": linear_proj, "lr": lr * self.config.lr_linear_proj_mult},
        ]
        return [group for group in groups if group["params"]]

    def forward(
        self, images: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> dict[str, object]:
        """Detect objects.

        Args:
            images: RGB images with values in [0, 1] (normalised inside).
            padding_mask: True where a pixel is batch padding; ``None`` = no padding.

        Shape:
            - images: :math:`(B, 3, H, W)`, or :math:`(B, 3 + E, H, W)` for a wide thumbnail
              whose backbone stem takes the ``E`` extra channels.
            - padding_mask: :math:`(B, H, W)` bool.

        Returns:
            Dict with ``"pred_logits"`` :math:`(B, Q, K)`, ``"pred_boxes"`` :math:`(B, Q, 4)`
            normalised (cx, cy, w, h), ``"aux_outputs"`` (a list of such dicts for the first
            D - 1 decoder layers, when ``config.aux_loss``), ``"backbone_features"`` (C3–C5,
            :math:`(B, C_l, H_l, W_l)`), and for two-stage ``"enc_outputs"``.
        """
        padding_mask = _check_inputs(images, padding_mask)
        # A wide thumbnail's learned channels pass unnormalised.
        normalised = normalize_image_channels(images, self.pixel_mean, self.pixel_std)
        # Padding is zero after normalisation, as in the official code: pad content is ignored.
        normalised = normalised.masked_fill(padding_mask[:, None], 0.0)
        features = self.backbone(normalised)

        srcs, masks, pos_embeds = [], [], []
        for level, projection in enumerate(self.input_proj):
            if level < len(features):
                src = projection(features[level])
            elif level == len(features):
                src = projection(features[-1])
            else:
                src = projection(srcs[-1])
            mask = downsample_mask(padding_mask, src.shape[-2:])
            srcs.append(src)
            masks.append(mask)
            pos_embeds.append(self.position_embedding(mask).to(src.dtype))

        query_embed = None if self.config.two_stage else self.query_embed.weight
        result = self.transformer(
            srcs, masks, pos_embeds, query_embed, self.class_embed, self.bbox_embed,
            refine_boxes=self.config.with_box_refine,
        )  # fmt: skip

        layer_outputs = []
        for layer in range(result.hidden_states.shape[0]):
            reference = result.init_reference if layer == 0 else result.inter_references[layer - 1]
            reference = inverse_sigmoid(reference)
            hidden = result.hidden_states[layer]  # (B, Q, C)
            logits = self.class_embed[layer](hidden)  # (B, Q, K)
            delta = self.bbox_embed[layer](hidden)  # (B, Q, 4)
            if reference.shape[-1] == 4:
                boxes = (delta + reference).sigmoid()
            else:
                boxes = torch.cat([delta[..., :2] + reference, delta[..., 2:]], -1).sigmoid()
            layer_outputs.append({"pred_logits": logits, "pred_boxes": boxes})

        outputs: dict[str, object] = dict(layer_outputs[-1])
        outputs["aux_outputs"] = layer_outputs[:-1] if self.config.aux_loss else []
        outputs["backbone_features"] = features
        if self.config.two_stage:
            outputs["enc_outputs"] = {
                "pred_logits": result.enc_outputs_class,
                "pred_boxes": result.enc_outputs_coord_unact.sigmoid(),
            }
        return outputs


def _check_inputs(images: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {type(images)}")
    if images.dim() != 4 or images.shape[1] < 3:
        # More than 3 channels: a wide thumbnail (learnthumb.WideDownsampler) for a backbone
        # whose stem was widened with learnthumb.widen_input_conv.
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    batch, _, height, width = images.shape
    if padding_mask is None:
        return torch.zeros((batch, height, width), dtype=torch.bool, device=images.device)
    if padding_mask.dtype != torch.bool:
        raise TypeError(f"padding_mask must be a bool tensor, got {padding_mask.dtype}")
    if tuple(padding_mask.shape) != (batch, height, width):
        raise ValueError(
            f"padding_mask must have shape (B, H, W) = {(batch, height, width)}, "
            f"got {tuple(padding_mask.shape)}"
        )
    return padding_mask


def build_model(preset: str | DetectorConfig = "paper_r50", **overrides) -> DeformableDETR:
    """Build a Deformable-DETR detector from a preset.

    Args:
        preset: ``"paper_r50"`` (Deformable DETR's standard config), ``"tiny"``, or a config.
        **overrides: any :class:`~thumbdet.models.presets.DetectorConfig` field.

    Returns:
        The detector, with ``model.config`` holding the resolved config.

    Example:
        >>> model = build_model("tiny", num_classes=3).eval()
        >>> out = model(torch.rand(1, 3, 64, 96))
        >>> out["pred_logits"].shape[-1], out["pred_boxes"].shape[-1]
        (3, 4)
    """
    return DeformableDETR(get_config(preset, **overrides))
