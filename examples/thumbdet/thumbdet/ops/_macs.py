"""MAC count of multi-scale deformable attention, registered for ``learnthumb.count_macs``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch.utils import flop_counter

__all__ = ["ms_deform_attn_macs", "register_mac_formulas", "uncounted_ms_deform_attn"]

_COUNTED: ContextVar[bool] = ContextVar("thumbdet_count_ms_deform_attn_macs", default=True)
_registered_ops: set[str] = set()


def _as_shape(shape_or_tensor: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape_or_tensor, torch.Tensor):
        return tuple(shape_or_tensor.shape)
    return tuple(shape_or_tensor)


def ms_deform_attn_macs(
    value_shape: torch.Tensor | Sequence[int],
    spatial_shapes_shape: torch.Tensor | Sequence[int],
    level_start_index_shape: torch.Tensor | Sequence[int],
    sampling_locations_shape: torch.Tensor | Sequence[int],
    attention_weights_shape: torch.Tensor | Sequence[int],
    *args: object,
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """Multiply-accumulates of one MSDA call: ``N * Lq * M * L * P * D * 5``.

    Each of the N*Lq*M*L*P samples reads D channels at 4 bilinear corners (4 MACs per channel)
    and adds the result into the output with its attention weight (1 MAC per channel). The
    corner weights and index arithmetic (O(N*Lq*M*L*P), independent of D) are not counted.
    Returns 0 inside :func:`uncounted_ms_deform_attn`.

    Receives the operator's arguments (or their shapes), like ``torch.utils.flop_counter``
    formulas.
    """
    del spatial_shapes_shape, level_start_index_shape, attention_weights_shape, args
    del out_shape, kwargs
    if not _COUNTED.get():
        return 0
    batch, _, heads, channels = _as_shape(value_shape)
    _, queries, _, levels, points, _ = _as_shape(sampling_locations_shape)
    return batch * queries * heads * levels * points * channels * 5


@contextmanager
def uncounted_ms_deform_attn() -> Iterator[None]:
    """Within this context ``learnthumb.count_macs`` counts MSDA calls as 0 MACs (e.g. to
    compare with a reference count that leaves deformable attention out)."""
    token = _COUNTED.set(False)
    try:
        yield
    finally:
        _COUNTED.reset(token)


def _flops(*args: object, **kwargs: object) -> int:
    return 2 * ms_deform_attn_macs(*args, **kwargs)


def register_mac_formulas(*ops: torch._ops.OpOverloadPacket) -> None:
    """Register :func:`ms_deform_attn_macs` for ``ops``, once each, so that
    ``learnthumb.count_macs`` (PyTorch's ``FlopCounterMode``) counts them.

    Registered with ``torch.utils.flop_counter`` directly, in the convention of
    ``learnthumb.register_mac_formula`` (FLOPs = 2 x MACs), so that defining the operators does
    not import learnthumb (and SciPy) with ``thumbdet.ops``.
    """
    for op in ops:
        if str(op) in _registered_ops:
            continue
        try:
            flop_counter.register_flop_formula(op)(_flops)
        except RuntimeError as error:  # registered before, e.g. by a reloaded module
            if "duplicate" not in str(error).lower():
                raise
        _registered_ops.add(str(op))
