"""Multi-scale deformable attention: the ``ms_deform_attn`` function and ``MSDeformAttn`` module.

Zhu et al., "Deformable DETR" (ICLR 2021); Eq. (3) of the ThumbDet paper.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._backends import run_ms_deform_attn
from ._checks import check_ms_deform_attn_inputs

__all__ = ["MSDeformAttn", "ms_deform_attn"]


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention core: bilinear sampling plus a weighted sum.

    For each query, head, level and point, the value map of that head and level is sampled
    bilinearly at ``sampling_locations`` (normalised (x, y) in [0, 1]; zero padding outside the
    map; ``align_corners=False``, i.e. location ``x`` reads pixel ``x * W - 0.5``) and the samples
    are summed with ``attention_weights``.

    Args:
        value: per-head values of all levels, flattened row-major and concatenated.
        spatial_shapes: int64 (H, W) of each level.
        level_start_index: int64 offset of each level along S.
        sampling_locations: normalised (x, y) sampling points.
        attention_weights: weight of each sampling point (usually softmax over L*P).
        backend: ``"auto"`` (the compiled kernel for the device, compiled on the first eager
            call if missing; PyTorch if that fails or ``THUMBDET_MSDA_AUTO_BUILD=0``),
            ``"pytorch"``, ``"cpu"`` or ``"cuda"``. The environment variable
            ``THUMBDET_MSDA_BACKEND`` overrides it.

    Shape:
        - value: (N, S, M, D) with S = sum of H*W over levels
        - spatial_shapes: (L, 2)
        - level_start_index: (L,)
        - sampling_locations: (N, Lq, M, L, P, 2)
        - attention_weights: (N, Lq, M, L, P)
        - Returns: (N, Lq, M * D)

    Returns:
        The attended values, heads concatenated along the channel axis.

    Raises:
        TypeError, ValueError: when the inputs disagree (the message names the argument).
        RuntimeError: when a compiled backend is asked for but cannot be built or loaded.

    Example:
        >>> value = torch.randn(1, 5 * 5 + 3 * 3, 2, 8)
        >>> shapes = torch.tensor([[5, 5], [3, 3]])
        >>> starts = torch.tensor([0, 25])
        >>> locations = torch.rand(1, 7, 2, 2, 4, 2)
        >>> weights = torch.rand(1, 7, 2, 2, 4).softmax(-1)
        >>> ms_deform_attn(value, shapes, starts, locations, weights, backend="pytorch").shape
        torch.Size([1, 7, 16])
    """
    check_ms_deform_attn_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return run_ms_deform_attn(
        value,
        spatial_shapes.long(),
        level_start_index.long(),
        sampling_locations,
        attention_weights,
        backend=backend,
    )


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module of Deformable DETR.

    Each query predicts ``n_points`` sampling offsets per head and level around its reference
    point, and softmax-normalised attention weights over the ``n_levels * n_points`` samples.

    Args:
        d_model: channel count C of queries and values; must be divisible by ``n_heads``.
        n_levels: number of feature levels L.
        n_heads: number of attention heads M.
        n_points: sampling points P per head and level.
        backend: MSDA backend, see :func:`ms_deform_attn`.

    Shape:
        - query: (N, Lq, C)
        - reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1], or (N, Lq, L, 4)
          normalised boxes (cx, cy, w, h)
        - input_flatten: (N, S, C)
        - input_spatial_shapes: (L, 2) int64 (H, W)
        - input_level_start_index: (L,) int64
        - input_padding_mask: (N, S) bool, True marks padding, or None
        - Returns: (N, Lq, C)

    Example:
        >>> attention = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
        >>> shapes = torch.tensor([[6, 6], [3, 3]])
        >>> starts = torch.tensor([0, 36])
        >>> memory = torch.randn(2, 45, 32)
        >>> reference_points = torch.rand(2, 10, 2, 2)
        >>> attention(torch.randn(2, 10, 32), reference_points, memory, shapes, starts).shape
        torch.Size([2, 10, 32])
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as Deformable DETR: offsets start on a ring of directions, one per head,
        at distance 1, 2, ..., P pixels; uniform attention; xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (M, 2)
        # Scale each direction so its larger coordinate is 1: the first point lands on a
        # neighbouring pixel (the 8-neighbourhood for 8 heads).
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        point_scale = torch.arange(1, self.n_points + 1, dtype=torch.float32)  # (P,)
        offsets = directions[:, None, None, :] * point_scale[None, None, :, None]  # (M, 1, P, 2)
        offsets = offsets.expand(self.n_heads, self.n_levels, self.n_points, 2)  # (M, L, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(offsets.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    _reset_parameters = reset_parameters  # the name used by Deformable DETR code

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check_inputs(query, reference_points, input_flatten, input_padding_mask)
        batch, queries, _ = query.shape
        _, total_pixels, _ = input_flatten.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)  # (N, S, C)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, total_pixels, heads, self.d_model // heads)  # (N, S, M, D)

        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by (W, H) to normalise.
            size_xy = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            locations = (
                reference_points[:, :, None, :, None, :]  # (N, Lq, 1, L, 1, 2)
                + offsets / size_xy[None, None, None, :, None, :]
            )  # (N, Lq, M, L, P, 2)
        else:
            # Offsets are fractions of half the box size, shared out over the P points.
            centers = reference_points[:, :, None, :, None, :2]  # (N, Lq, 1, L, 1, 2)
            sizes = reference_points[:, :, None, :, None, 2:]  # (N, Lq, 1, L, 1, 2)
            locations = centers + offsets / points * sizes * 0.5  # (N, Lq, M, L, P, 2)

        # Under autocast the value projection is 16-bit while the locations and softmax weights
        # are float32; rounding locations to 16 bits would move points by up to a pixel on large
        # maps, so MSDA runs in the promoted dtype instead.
        dtype = torch.promote_types(
            torch.promote_types(value.dtype, locations.dtype), weights.dtype
        )
        output = ms_deform_attn(
            value.to(dtype),
            input_spatial_shapes,
            input_level_start_index,
            locations.to(dtype),
            weights.to(dtype),
            backend=self.backend,
        )  # (N, Lq, C)
        return self.output_proj(output)

    def _check_inputs(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_padding_mask: torch.Tensor | None,
    ) -> None:
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"query must have shape (N, Lq, {self.d_model}), got {tuple(query.shape)}"
            )
        batch, queries, _ = query.shape
        if input_flatten.dim() != 3 or input_flatten.shape[::2] != (batch, self.d_model):
            raise ValueError(
                f"input_flatten must have shape ({batch}, S, {self.d_model}), "
                f"got {tuple(input_flatten.shape)}"
            )
        expected = (batch, queries, self.n_levels)
        if (
            reference_points.dim() != 4
            or tuple(reference_points.shape[:3]) != expected
            or reference_points.shape[-1] not in (2, 4)
        ):
            raise ValueError(
                f"reference_points must have shape (N, Lq, L, 2) or (N, Lq, L, 4) with "
                f"(N, Lq, L) = {expected}, got {tuple(reference_points.shape)}"
            )
        if input_padding_mask is not None:
            if input_padding_mask.dtype != torch.bool:
                raise TypeError(
                    f"input_padding_mask must be a bool tensor, got {input_padding_mask.dtype}"
                )
            if tuple(input_padding_mask.shape) != tuple(input_flatten.shape[:2]):
                raise ValueError(
                    f"input_padding_mask must have shape (N, S) = "
                    f"{tuple(input_flatten.shape[:2])}, got {tuple(input_padding_mask.shape)}"
                )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}, backend={self.backend!r}"
        )
