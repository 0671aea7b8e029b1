"""Input validation for multi-scale deformable attention, done once at the public boundary."""

from __future__ import annotations

import torch

__all__ = ["check_ms_deform_attn_inputs"]


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _require_rank(name: str, tensor: torch.Tensor, rank: int, layout: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have shape {layout} ({rank} dims), got {_shape(tensor)}")


def check_ms_deform_attn_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument when the MSDA inputs disagree.

    Checks ranks, dtypes, devices and that every size shared between arguments (N, M, Lq, L, P)
    matches. Outside ``torch.compile`` it also checks that the level areas add up to S and that
    ``level_start_index`` is their exclusive cumulative sum (this reads ``spatial_shapes``, a
    small host sync).
    """
    names = ("value", "spatial_shapes", "level_start_index", "sampling_locations")
    tensors = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    for name, tensor in zip((*names, "attention_weights"), tensors, strict=True):
        _require_tensor(name, tensor)

    _require_rank("value", value, 4, "(N, S, M, D)")
    _require_rank("spatial_shapes", spatial_shapes, 2, "(L, 2)")
    _require_rank("level_start_index", level_start_index, 1, "(L,)")
    _require_rank("sampling_locations", sampling_locations, 6, "(N, Lq, M, L, P, 2)")
    _require_rank("attention_weights", attention_weights, 5, "(N, Lq, M, L, P)")

    for name, tensor in (
        ("spatial_shapes", spatial_shapes),
        ("level_start_index", level_start_index),
    ):
        if tensor.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an int64 tensor, got dtype {tensor.dtype}")
    for name, tensor in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got dtype {tensor.dtype}")
        if tensor.dtype != value.dtype:
            raise TypeError(
                f"{name} must have the dtype of value ({value.dtype}), got {tensor.dtype}"
            )
        if tensor.device != value.device:
            raise ValueError(
                f"{name} must be on the device of value ({value.device}), got {tensor.device}"
            )

    batch, total_pixels, heads, _ = value.shape
    levels = spatial_shapes.shape[0]
    _, queries, _, _, points, _ = sampling_locations.shape
    expected_locations = (batch, queries, heads, levels, points, 2)
    if tuple(sampling_locations.shape) != expected_locations:
        raise ValueError(
            "sampling_locations must have shape (N, Lq, M, L, P, 2) = "
            f"{expected_locations} (N, M from value, L from spatial_shapes), "
            f"got {_shape(sampling_locations)}"
        )
    if spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must have shape (L, 2), got {_shape(spatial_shapes)}")
    if tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"level_start_index must have shape (L,) = ({levels},), got {_shape(level_start_index)}"
        )
    expected_weights = (batch, queries, heads, levels, points)
    if tuple(attention_weights.shape) != expected_weights:
        raise ValueError(
            f"attention_weights must have shape (N, Lq, M, L, P) = {expected_weights}, "
            f"got {_shape(attention_weights)}"
        )

    if torch.compiler.is_compiling():
        return  # the area checks below read tensor values, which a traced graph cannot do
    shapes = spatial_shapes.tolist()
    if any(height <= 0 or width <= 0 for height, width in shapes):
        raise ValueError(f"spatial_shapes must hold positive (H, W) pairs, got {shapes}")
    areas = [height * width for height, width in shapes]
    if sum(areas) != total_pixels:
        raise ValueError(
            f"the level areas H*W of spatial_shapes must add up to S = value.shape[1] = "
            f"{total_pixels}, got areas {areas} (sum {sum(areas)})"
        )
    starts = [sum(areas[:level]) for level in range(levels)]
    if level_start_index.tolist() != starts:
        raise ValueError(
            f"level_start_index must be the exclusive cumulative sum of the level areas {starts}, "
            f"got {level_start_index.tolist()}"
        )
