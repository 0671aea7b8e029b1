"""Pure-PyTorch multi-scale deformable attention, built on ``grid_sample``.

This is the reference every compiled kernel is tested against and the fallback that runs on any
device. It trusts its inputs: the public entry point checks them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_pytorch"]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (Eq. 3 of the paper) with differentiable PyTorch ops.

    Bilinear sampling uses zero padding and ``align_corners=False``: a normalised location
    ``x`` in [0, 1] reads pixel ``x * W - 0.5``.

    Args:
        value: per-head values of every pixel of every level, levels concatenated.
        spatial_shapes: (H, W) of each level.
        level_start_index: offset of each level in the S axis of ``value`` (unused here: the
            levels are split by their areas; kept for the common signature).
        sampling_locations: normalised (x, y) sampling points.
        attention_weights: weight of each sampling point.

    Shape:
        - value: (N, S, M, D)
        - spatial_shapes: (L, 2)
        - level_start_index: (L,)
        - sampling_locations: (N, Lq, M, L, P, 2)
        - attention_weights: (N, Lq, M, L, P)
        - Returns: (N, Lq, M * D)

    Returns:
        The attention output, heads concatenated along the channel axis.
    """
    del level_start_index
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    level_shapes = [(int(height), int(width)) for height, width in spatial_shapes.tolist()]
    value_per_level = value.split([height * width for height, width in level_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled_per_level = []
    for level, (height, width) in enumerate(level_shapes):
        value_map = (
            value_per_level[level]  # (N, H*W, M, D)
            .flatten(2)  # (N, H*W, M*D)
            .transpose(1, 2)  # (N, M*D, H*W)
            .reshape(batch * heads, channels, height, width)  # (N*M, D, H, W)
        )
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        sampled = F.grid_sample(
            value_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (N*M, D, Lq, P)
        sampled_per_level.append(sampled)
    sampled = torch.stack(sampled_per_level, dim=-2).flatten(-2)  # (N*M, D, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(
        batch * heads, 1, queries, levels * points
    )  # (N*M, 1, Lq, L*P)
    output = (sampled * weights).sum(-1)  # (N*M, D, Lq)
    output = output.view(batch, heads * channels, queries)  # (N, M*D, Lq)
    return output.transpose(1, 2).contiguous()  # (N, Lq, M*D)
