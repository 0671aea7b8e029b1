"""Deformable transformer: flattens the levels, encodes them, decodes object queries.

Single-stage queries come from a learned embedding (split into positional part and content
part); the two-stage variant picks the top-scoring encoder proposals as queries instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from thumbdet.ops import MSDeformAttn

from .presets import DetectorConfig
from .transformer_layers import (
    DeformableDecoder,
    DeformableDecoderLayer,
    DeformableEncoder,
    DeformableEncoderLayer,
    FlatLevels,
    LayerSpec,
)

__all__ = ["DeformableTransformer", "TransformerOutput", "valid_ratio"]


def valid_ratio(padding_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of each feature map's width and height that is not padding.

    Shape:
        - padding_mask: :math:`(N, H, W)` bool, True = padding.
        - Output: :math:`(N, 2)` as (w, h).
    """
    _, height, width = padding_mask.shape
    valid_height = torch.sum(~padding_mask[:, :, 0], 1)  # (N,)
    valid_width = torch.sum(~padding_mask[:, 0, :], 1)  # (N,)
    return torch.stack([valid_width.float() / width, valid_height.float() / height], -1)


@dataclass
class TransformerOutput:
    """What :class:`DeformableTransformer` returns.

    Attributes:
        hidden_states: decoder outputs of every layer, (D, N, Q, C).
        init_reference: reference points of the first layer, (N, Q, 2) or (N, Q, 4).
        inter_references: references handed on by every layer, (D, N, Q, 2 or 4).
        enc_outputs_class: two-stage proposal logits (N, S, K), else None.
        enc_outputs_coord_unact: two-stage proposal boxes before sigmoid (N, S, 4), else None.
    """

    hidden_states: torch.Tensor
    init_reference: torch.Tensor
    inter_references: torch.Tensor
    enc_outputs_class: torch.Tensor | None = None
    enc_outputs_coord_unact: torch.Tensor | None = None


class DeformableTransformer(nn.Module):
    """Encoder + decoder of Deformable DETR.

    Args:
        config: the detector's settings; this reads ``d_model``, ``nheads``,
            ``dim_feedforward``, ``dropout``, ``num_feature_levels`` (the sizes every layer
            shares), ``enc_layers``/``dec_layers`` (depths), ``enc_n_points``/``dec_n_points``
            (sampling points per head and level), ``two_stage`` (queries picked from encoder
            proposals) and ``num_queries`` (how many proposals become queries).
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        spec = LayerSpec(
            config.d_model,
            config.dim_feedforward,
            config.dropout,
            config.num_feature_levels,
            config.nheads,
        )
        d_model = self.d_model = spec.d_model
        self.two_stage = config.two_stage
        self.two_stage_num_proposals = config.num_queries
        encoder_layer = DeformableEncoderLayer(spec, config.enc_n_points)
        self.encoder = DeformableEncoder(encoder_layer, config.enc_layers)
        decoder_layer = DeformableDecoderLayer(spec, config.dec_n_points)
        self.decoder = DeformableDecoder(decoder_layer, config.dec_layers)
        self.level_embed = nn.Parameter(torch.empty(spec.n_levels, d_model))
        if self.two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
            self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        else:
            self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier for every matrix, then MSDA's own init, as in Deformable DETR."""
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    def proposal_pos_embed(self, proposals: torch.Tensor) -> torch.Tensor:
        """Sine embedding of unactivated proposal boxes: (N, Q, 4) -> (N, Q, 2C)."""
        num_pos_feats = self.d_model // 2
        dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
        dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
        proposals = proposals.sigmoid() * (2 * math.pi)
        pos = proposals[:, :, :, None] / dim_t  # (N, Q, 4, F)
        # (N, Q, 4, F/2, 2) -> (N, Q, 4F)
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(2)

    def encoder_proposals(
        self,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One box proposal per memory token (its pixel, size 0.05·2^level), two-stage only.

        Shape:
            - memory: :math:`(N, S, C)`; memory_padding_mask: :math:`(N, S)`.
            - Output: projected memory :math:`(N, S, C)` and unactivated proposals
              :math:`(N, S, 4)` (inf where padded or near the border).
        """
        batch = memory.shape[0]
        proposals, start = [], 0
        for level, (height, width) in enumerate(spatial_shapes):
            mask = memory_padding_mask[:, start : start + height * width].view(batch, height, width)
            valid_height = torch.sum(~mask[:, :, 0], 1)  # (N,)
            valid_width = torch.sum(~mask[:, 0, :], 1)  # (N,)
            grid_y, grid_x = torch.meshgrid(
                torch.linspace(0, height - 1, height, dtype=torch.float32, device=memory.device),
                torch.linspace(0, width - 1, width, dtype=torch.float32, device=memory.device),
                indexing="ij",
            )
            grid = torch.stack([grid_x, grid_y], -1)  # (H, W, 2)
            scale = torch.stack([valid_width, valid_height], 1).view(batch, 1, 1, 2)
            grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) / scale  # (N, H, W, 2)
            size = torch.ones_like(grid) * 0.05 * (2.0**level)
            proposals.append(torch.cat((grid, size), -1).view(batch, -1, 4))  # (N, HW, 4)
            start += height * width
        proposals = torch.cat(proposals, 1)  # (N, S, 4)
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)  # (N, S, 1)
        proposals = torch.log(proposals / (1 - proposals))
        invalid = memory_padding_mask.unsqueeze(-1) | ~valid
        proposals = proposals.masked_fill(invalid, float("inf"))
        output_memory = memory.masked_fill(invalid, 0.0)
        return self.enc_output_norm(self.enc_output(output_memory)), proposals

    def forward(
        self,
        srcs: list[torch.Tensor],
        masks: list[torch.Tensor],
        pos_embeds: list[torch.Tensor],
        query_embed: torch.Tensor | None = None,
        class_heads: nn.ModuleList | None = None,
        bbox_heads: nn.ModuleList | None = None,
        refine_boxes: bool = False,
    ) -> TransformerOutput:
        """Encode the levels and decode the queries.

        Args:
            srcs: projected feature maps, one per level.
            masks: padding masks, one per level.
            pos_embeds: position encodings, one per level.
            query_embed: learned queries (positional and content halves); single-stage only.
            class_heads: per-layer class heads; the extra last one scores two-stage proposals.
            bbox_heads: per-layer box heads; used for refinement and two-stage proposals.
            refine_boxes: iterative box refinement with ``bbox_heads``.

        Shape:
            - srcs[l], pos_embeds[l]: :math:`(N, C, H_l, W_l)`; masks[l]: :math:`(N, H_l, W_l)`.
            - query_embed: :math:`(Q, 2C)`.
        """
        spatial_shapes = [(src.shape[2], src.shape[3]) for src in srcs]
        src_flatten = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)  # (N, S, C)
        mask_flatten = torch.cat([mask.flatten(1) for mask in masks], 1)  # (N, S)
        pos_flatten = torch.cat(
            [
                pos.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1)
                for level, pos in enumerate(pos_embeds)
            ],
            1,
        )  # (N, S, C)
        shapes_tensor = torch.as_tensor(spatial_shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat(
            (shapes_tensor.new_zeros((1,)), shapes_tensor.prod(1).cumsum(0)[:-1])
        )  # (L,)
        valid_ratios = torch.stack([valid_ratio(mask) for mask in masks], 1)  # (N, L, 2)
        levels = FlatLevels(
            shapes_tensor, level_start_index, valid_ratios, mask_flatten, spatial_shapes
        )
        memory = self.encoder(src_flatten, pos_flatten, levels)  # (N, S, C)

        batch, _, channels = memory.shape
        enc_outputs_class = enc_outputs_coord_unact = None
        if self.two_stage:
            output_memory, proposals = self.encoder_proposals(memory, mask_flatten, spatial_shapes)
            last = self.decoder.num_layers
            enc_outputs_class = class_heads[last](output_memory)  # (N, S, K)
            enc_outputs_coord_unact = bbox_heads[last](output_memory) + proposals  # (N, S, 4)
            top = torch.topk(enc_outputs_class[..., 0], self.two_stage_num_proposals, dim=1)[1]
            top_coords = torch.gather(
                enc_outputs_coord_unact, 1, top.unsqueeze(-1).expand(-1, -1, 4)
            ).detach()  # (N, Q, 4)
            reference_points = top_coords.sigmoid()
            pos_trans = self.pos_trans_norm(self.pos_trans(self.proposal_pos_embed(top_coords)))
            query_pos, tgt = torch.split(pos_trans, channels, dim=2)  # (N, Q, C) each
        else:
            # repeat (a copy, not a view): views of a parameter made under no_grad still say
            # requires_grad=True, which breaks FlopCounterMode's module tracking.
            queries = query_embed.unsqueeze(0).repeat(batch, 1, 1)  # (N, Q, 2C)
            query_pos, tgt = torch.split(queries, channels, dim=2)  # (N, Q, C) each
            reference_points = self.reference_points(query_pos).sigmoid()  # (N, Q, 2)

        hidden_states, inter_references = self.decoder(
            tgt, query_pos, reference_points, memory, levels, bbox_heads if refine_boxes else None
        )
        return TransformerOutput(
            hidden_states, reference_points, inter_references, enc_outputs_class,
            enc_outputs_coord_unact,
        )  # fmt: skip
