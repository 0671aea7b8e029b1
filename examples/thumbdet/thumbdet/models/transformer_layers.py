"""Encoder and decoder stacks of Deformable DETR (post-norm, ReLU feed-forward)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from thumbdet.ops import MSDeformAttn

__all__ = [
    "DeformableDecoder",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "FlatLevels",
    "LayerSpec",
    "inverse_sigmoid",
]


def inverse_sigmoid(probability: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Logit of a probability, clamped away from 0 and 1 by ``eps``."""
    probability = probability.clamp(min=0, max=1)
    return torch.log(probability.clamp(min=eps) / (1 - probability).clamp(min=eps))


def _with_pos(tensor: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return tensor if pos is None else tensor + pos


class FlatLevels(NamedTuple):
    """How the feature levels were flattened into one sequence of S = sum of H*W tokens.

    Attributes:
        shapes: :math:`(L, 2)` int64 (H, W) of each level, on the tokens' device.
        start_index: :math:`(L,)` int64 offset of each level along S.
        valid_ratios: :math:`(N, L, 2)` fraction (w, h) of each level that is not padding.
        padding_mask: :math:`(N, S)` bool, True on padding, or None.
        level_shapes: ``shapes`` as Python ints, which spares a device sync and a
            ``torch.compile`` graph break.
    """

    shapes: torch.Tensor
    start_index: torch.Tensor
    valid_ratios: torch.Tensor
    padding_mask: torch.Tensor | None
    level_shapes: list[tuple[int, int]]


@dataclass(frozen=True)
class LayerSpec:
    """The sizes that the encoder and decoder layers share (their sampling points differ).

    Args:
        d_model: token width C.
        dim_feedforward: hidden width of the feed-forward block.
        dropout: dropout probability.
        n_levels: feature levels L.
        n_heads: attention heads.
    """

    d_model: int = 256
    dim_feedforward: int = 1024
    dropout: float = 0.1
    n_levels: int = 4
    n_heads: int = 8


class _FeedForward(nn.Module):
    """Linear-ReLU-Linear with a residual and post LayerNorm."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.linear1 = nn.Linear(spec.d_model, spec.dim_feedforward)
        self.activation = nn.ReLU()
        self.dropout1 = nn.Dropout(spec.dropout)
        self.linear2 = nn.Linear(spec.dim_feedforward, spec.d_model)
        self.dropout2 = nn.Dropout(spec.dropout)
        self.norm = nn.LayerNorm(spec.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout1(self.activation(self.linear1(tokens)))
        return self.norm(tokens + self.dropout2(self.linear2(hidden)))


def _deformable_attention(spec: LayerSpec, n_points: int) -> MSDeformAttn:
    return MSDeformAttn(spec.d_model, spec.n_levels, spec.n_heads, n_points)


class DeformableEncoderLayer(nn.Module):
    """Multi-scale deformable self-attention over all levels, then a feed-forward block.

    Args:
        spec: the layer's sizes.
        n_points: sampling points per head and level.
    """

    def __init__(self, spec: LayerSpec, n_points: int) -> None:
        super().__init__()
        self.self_attn = _deformable_attention(spec, n_points)
        self.dropout = nn.Dropout(spec.dropout)
        self.norm = nn.LayerNorm(spec.d_model)
        self.ffn = _FeedForward(spec)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        levels: FlatLevels,
    ) -> torch.Tensor:
        """Shape: src, pos (N, S, C); reference_points (N, S, L, 2); output (N, S, C)."""
        attended = self.self_attn(
            _with_pos(src, pos), reference_points, src, levels.shapes, levels.start_index,
            levels.padding_mask,
        )  # fmt: skip
        src = self.norm(src + self.dropout(attended))
        return self.ffn(src)


class DeformableEncoder(nn.Module):
    """A stack of :class:`DeformableEncoderLayer` with one reference point per pixel."""

    def __init__(self, layer: DeformableEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers

    @staticmethod
    def reference_points(
        spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor
    ) -> torch.Tensor:
        """Pixel centres of every level, normalised by the valid extent of each image.

        Shape:
            - valid_ratios: :math:`(N, L, 2)` valid fraction (w, h) of each level.
            - Output: :math:`(N, S, L, 2)` (x, y) of each pixel as seen from every level.
        """
        device = valid_ratios.device
        per_level = []
        for level, (height, width) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
                torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
                indexing="ij",
            )  # (H, W) each
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)  # (N, HW)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)  # (N, HW)
            per_level.append(torch.stack((ref_x, ref_y), -1))  # (N, HW, 2)
        reference = torch.cat(per_level, 1)  # (N, S, 2)
        return reference[:, :, None] * valid_ratios[:, None]  # (N, S, L, 2)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, levels: FlatLevels) -> torch.Tensor:
        """Shape: src, pos (N, S, C); output memory (N, S, C)."""
        reference_points = self.reference_points(levels.level_shapes, levels.valid_ratios)
        output = src
        for layer in self.layers:
            output = layer(output, pos, reference_points, levels)
        return output


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, multi-scale deformable cross-attention, feed-forward.

    Args:
        spec: the layer's sizes.
        n_points: sampling points per head and level of the cross-attention.
    """

    def __init__(self, spec: LayerSpec, n_points: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            spec.d_model, spec.n_heads, dropout=spec.dropout, batch_first=True
        )
        self.dropout_self = nn.Dropout(spec.dropout)
        self.norm_self = nn.LayerNorm(spec.d_model)
        self.cross_attn = _deformable_attention(spec, n_points)
        self.dropout_cross = nn.Dropout(spec.dropout)
        self.norm_cross = nn.LayerNorm(spec.d_model)
        self.ffn = _FeedForward(spec)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        levels: FlatLevels,
    ) -> torch.Tensor:
        """Shape: tgt, query_pos (N, Q, C); reference_points (N, Q, L, 2 or 4);
        memory (N, S, C), laid out as ``levels`` says; output (N, Q, C)."""
        query_key = _with_pos(tgt, query_pos)
        attended = self.self_attn(query_key, query_key, tgt, need_weights=False)[0]
        tgt = self.norm_self(tgt + self.dropout_self(attended))
        attended = self.cross_attn(
            _with_pos(tgt, query_pos), reference_points, memory, levels.shapes,
            levels.start_index, levels.padding_mask,
        )  # fmt: skip
        tgt = self.norm_cross(tgt + self.dropout_cross(attended))
        return self.ffn(tgt)


class DeformableDecoder(nn.Module):
    """A stack of :class:`DeformableDecoderLayer` returning every layer's output.

    With ``bbox_heads`` (iterative box refinement) each layer refines the reference boxes
    that the next layer samples around; the refined references are detached, as in
    Deformable DETR.
    """

    def __init__(self, layer: DeformableDecoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        levels: FlatLevels,
        bbox_heads: nn.ModuleList | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run all layers over the encoder's ``memory``, laid out as ``levels`` says.

        Shape:
            - tgt, query_pos: :math:`(N, Q, C)`.
            - reference_points: :math:`(N, Q, 2)` points or :math:`(N, Q, 4)` boxes in [0, 1].
            - memory: :math:`(N, S, C)`.
            - Output: hidden states :math:`(D, N, Q, C)` and the reference points each layer
              handed on :math:`(D, N, Q, 2 \\text{ or } 4)`.
        """
        output = tgt
        valid_ratios = levels.valid_ratios  # (N, L, 2)
        hidden_states, references = [], []
        for layer_index, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ratios = torch.cat([valid_ratios, valid_ratios], -1)  # (N, L, 4)
            else:
                ratios = valid_ratios  # (N, L, 2)
            reference_input = reference_points[:, :, None] * ratios[:, None]  # (N, Q, L, 2|4)
            output = layer(output, query_pos, reference_input, memory, levels)
            if bbox_heads is not None:
                delta = bbox_heads[layer_index](output)  # (N, Q, 4)
                if reference_points.shape[-1] == 4:
                    refined = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    centre = delta[..., :2] + inverse_sigmoid(reference_points)
                    refined = torch.cat([centre, delta[..., 2:]], -1).sigmoid()
                reference_points = refined.detach()
            hidden_states.append(output)
            references.append(reference_points)
        return torch.stack(hidden_states), torch.stack(references)
