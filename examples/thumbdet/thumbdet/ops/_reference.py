"""Pure-PyTorch multi-scale deformable attention, built on ``grid_sample``.

This is the reference every compiled kernel is tested against and the fallback that runs on any
device. It trusts its inputs: the public entry point checks them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "ms_deform_attn_pytorch",
    "ms_deform_attn_pytorch_backward",
    "ms_deform_attn_pytorch_with_samples",
]


def _level_shapes(spatial_shapes: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(height), int(width)) for height, width in spatial_shapes.tolist()]


def _maps_and_grids(
    value: torch.Tensor, sampling_locations: torch.Tensor, level_shapes: list[tuple[int, int]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per level: the value map (N*M, D, H, W) and the grid_sample grid (N*M, Lq, P, 2)."""
    batch, _, heads, channels = value.shape
    value_per_level = value.split([height * width for height, width in level_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    maps_and_grids = []
    for level, (height, width) in enumerate(level_shapes):
        value_map = (
            value_per_level[level]  # (N, H*W, M, D)
            .flatten(2)  # (N, H*W, M*D)
            .transpose(1, 2)  # (N, M*D, H*W)
            .reshape(batch * heads, channels, height, width)  # (N*M, D, H, W)
        )
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        maps_and_grids.append((value_map, grid))
    return maps_and_grids


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention (Eq. 3 of the paper) with differentiable PyTorch ops.

    Bilinear sampling uses zero padding and ``align_corners=False``: a normalised location
    ``x`` in [0, 1] reads pixel ``x * W - 0.5``. The arguments, their shapes and the output
    are those of :func:`thumbdet.ops.deformable_attention.ms_deform_attn`, the public entry
    that dispatches here; ``level_start_index`` is unused (the levels are split by their
    areas) and kept for the common signature.

    Returns:
        The attention output :math:`(N, L_q, M \\cdot D)`, heads concatenated along channels.
    """
    del level_start_index
    output, _ = ms_deform_attn_pytorch_with_samples(
        value, spatial_shapes, sampling_locations, attention_weights
    )
    return output


def ms_deform_attn_pytorch_with_samples(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ms_deform_attn_pytorch` that also returns the bilinear samples, which the
    backward needs for the attention-weight gradient.

    Shape:
        - Returns: (N, Lq, M * D) and samples (N*M, D, Lq, L*P)
    """
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    level_shapes = _level_shapes(spatial_shapes)
    sampled_per_level = []
    for value_map, grid in _maps_and_grids(value, sampling_locations, level_shapes):
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
    return output.transpose(1, 2).contiguous(), sampled  # (N, Lq, M*D)


def ms_deform_attn_pytorch_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    sampled: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`ms_deform_attn_pytorch` with respect to value, sampling_locations and
    attention_weights, from ``aten.grid_sampler_2d_backward``.

    Args:
        sampled: the samples of :func:`ms_deform_attn_pytorch_with_samples`; recomputed when
            None. The other arguments are those of the forward.

    Shape:
        - grad_output: (N, Lq, M * D)
        - sampled: (N*M, D, Lq, L*P)
        - Returns: (N, S, M, D), (N, Lq, M, L, P, 2), (N, Lq, M, L, P)
    """
    del level_start_index
    batch, pixels, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    level_shapes = _level_shapes(spatial_shapes)
    grad = (
        grad_output.view(batch, queries, heads, channels)  # (N, Lq, M, D)
        .permute(0, 2, 3, 1)  # (N, M, D, Lq)
        .reshape(batch * heads, channels, queries, 1)  # (N*M, D, Lq, 1)
    )
    if sampled is None:
        _, sampled = ms_deform_attn_pytorch_with_samples(
            value, spatial_shapes, sampling_locations, attention_weights
        )  # (N*M, D, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(
        batch * heads, 1, queries, levels * points
    )  # (N*M, 1, Lq, L*P)
    # All levels at once: one contiguous multiply each instead of one strided one per level.
    grad_weights = (grad * sampled).sum(1)  # (N*M, Lq, L*P)
    grad_samples = grad * weights  # (N*M, D, Lq, L*P)
    grad_maps, grad_grids = [], []
    for level, (value_map, grid) in enumerate(
        _maps_and_grids(value, sampling_locations, level_shapes)
    ):
        grad_sampled = grad_samples[..., level * points : (level + 1) * points]  # (N*M, D, Lq, P)
        # interpolation_mode 0 = bilinear, padding_mode 0 = zeros
        grad_map, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
            grad_sampled, value_map, grid, 0, 0, False, [True, True]
        )
        grad_maps.append(grad_map.reshape(batch, heads * channels, -1))  # (N, M*D, H*W)
        grad_grids.append(grad_grid)  # (N*M, Lq, P, 2)
    grad_value = (
        torch.cat(grad_maps, dim=-1)  # (N, M*D, S)
        .transpose(1, 2)  # (N, S, M*D)
        .reshape(batch, pixels, heads, channels)  # (N, S, M, D)
    )
    # grid = 2 * location - 1, so d/d(location) = 2 * d/d(grid)
    grad_locations = 2 * torch.stack(grad_grids, dim=2)  # (N*M, Lq, L, P, 2)
    grad_locations = (
        grad_locations.view(batch, heads, queries, levels, points, 2)  # (N, M, Lq, L, P, 2)
        .transpose(1, 2)  # (N, Lq, M, L, P, 2)
        .contiguous()
    )
    grad_attention = (
        grad_weights.view(batch, heads, queries, levels, points)  # (N, M, Lq, L, P)
        .transpose(1, 2)  # (N, Lq, M, L, P)
        .contiguous()
    )
    return grad_value, grad_locations, grad_attention
