"""PyTorch operator registration for MSDA: autograd and fake (meta) kernels.

Every backend runs through a registered operator, so ``torch.compile`` treats it as one node and
``learnthumb.count_macs`` sees it:

- ``thumbdet::ms_deform_attn`` / ``thumbdet::ms_deform_attn_backward``: defined by the compiled
  extension (``csrc/ms_deform_attn.cpp``) with CPU and CUDA kernels; their autograd and fake
  implementations are registered here once the extension is loaded.
- ``thumbdet::ms_deform_attn_pytorch`` / ``thumbdet::ms_deform_attn_pytorch_backward``: the
  pure-PyTorch path as a Python custom op, with an explicit backward built on
  ``aten.grid_sampler_2d_backward``. The forward op also returns the bilinear samples so the
  backward does not recompute them (the memory autograd would keep anyway).
"""

from __future__ import annotations

import torch

from ._macs import register_mac_formulas
from ._reference import ms_deform_attn_pytorch_backward, ms_deform_attn_pytorch_with_samples

__all__ = ["pytorch_ms_deform_attn_op", "register_compiled_op"]


@torch.library.custom_op("thumbdet::ms_deform_attn_pytorch", mutates_args=())
def _pytorch_forward_op(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    # Also returns the samples (N*M, D, Lq, L*P), saved for the backward as autograd would.
    del level_start_index
    return ms_deform_attn_pytorch_with_samples(
        value, spatial_shapes, sampling_locations, attention_weights
    )


@torch.library.custom_op("thumbdet::ms_deform_attn_pytorch_backward", mutates_args=())
def _pytorch_backward_op(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    sampled: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ms_deform_attn_pytorch_backward(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        sampled,
    )


# Registered with the operator, not on each call: a first call inside torch.compile would
# otherwise break the graph.
register_mac_formulas(torch.ops.thumbdet.ms_deform_attn_pytorch)


def pytorch_ms_deform_attn_op(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The pure-PyTorch MSDA through its operator; shapes as :func:`thumbdet.ops.ms_deform_attn`."""
    output, _ = _pytorch_forward_op(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return output


def _fake_pytorch_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    output = value.new_empty((batch, queries, heads * channels))
    return output, value.new_empty((batch * heads, channels, queries, levels * points))


def _setup_pytorch_context(ctx, inputs: tuple[torch.Tensor, ...], output) -> None:
    ctx.save_for_backward(*inputs, output[1])
    ctx.mark_non_differentiable(output[1])


def _pytorch_backward(ctx, grad_output: torch.Tensor, grad_sampled: torch.Tensor | None):
    del grad_sampled  # the samples are an internal output, not differentiable
    value, spatial_shapes, level_start_index, locations, weights, sampled = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = _pytorch_backward_op(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        locations,
        weights,
        sampled,
    )
    return grad_value, None, None, grad_locations, grad_weights


def _fake_pytorch_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    sampled: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _fake_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def _fake_forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    batch, _, heads, channels = value.shape
    queries = sampling_locations.shape[1]
    return value.new_empty((batch, queries, heads * channels))


def _fake_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.empty_like(value),
        torch.empty_like(sampling_locations),
        torch.empty_like(attention_weights),
    )


def _setup_context(ctx, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _make_backward(backward_op):
    def backward(ctx, grad_output: torch.Tensor):
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = backward_op(
            grad_output.contiguous(), value, spatial_shapes, level_start_index, locations, weights
        )
        return grad_value, None, None, grad_locations, grad_weights

    return backward


_pytorch_forward_op.register_fake(_fake_pytorch_forward)
_pytorch_backward_op.register_fake(_fake_pytorch_backward)
_pytorch_forward_op.register_autograd(_pytorch_backward, setup_context=_setup_pytorch_context)

_compiled_registered = {"done": False}


def register_compiled_op() -> None:
    """Register autograd, fake kernels and the MAC formula of the compiled operators.

    Called once, right after the extension library is loaded.
    """
    if _compiled_registered["done"]:
        return
    torch.library.register_fake("thumbdet::ms_deform_attn", _fake_forward)
    torch.library.register_fake("thumbdet::ms_deform_attn_backward", _fake_backward)
    torch.library.register_autograd(
        "thumbdet::ms_deform_attn",
        _make_backward(torch.ops.thumbdet.ms_deform_attn_backward),
        setup_context=_setup_context,
    )
    register_mac_formulas(torch.ops.thumbdet.ms_deform_attn)
    _compiled_registered["done"] = True
