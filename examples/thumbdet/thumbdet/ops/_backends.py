"""Backend selection for multi-scale deformable attention."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from . import _extension
from ._library import pytorch_ms_deform_attn_op
from ._reference import ms_deform_attn_pytorch

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "available_backends",
    "run_ms_deform_attn",
    "traceable_ms_deform_attn",
]

BACKEND_ENV_VAR = "THUMBDET_MSDA_BACKEND"
#: What ``backend=`` and ``THUMBDET_MSDA_BACKEND`` take.
BACKENDS = ("auto", "pytorch", "cpu", "cuda")
_TRACEABLE: ContextVar[bool] = ContextVar("thumbdet_traceable_ms_deform_attn", default=False)


@contextmanager
def traceable_ms_deform_attn() -> Iterator[None]:
    """Within this context every MSDA call runs as plain PyTorch ops, whatever its backend.

    For exporters that cannot translate the ``thumbdet`` operators (``torch.onnx``; note that
    ``torch.onnx.is_in_onnx_export()`` is still False while the dynamo exporter captures the
    graph, so this cannot be detected automatically): inside, calls use
    :func:`ms_deform_attn_pytorch` (``grid_sample`` and friends, ordinary autograd) instead of a
    registered operator. ``learnthumb.count_macs`` does not count MSDA inside this context.

    Example:
        >>> with traceable_ms_deform_attn():
        ...     torch.onnx.export(model, inputs, "model.onnx")  # doctest: +SKIP
    """
    token = _TRACEABLE.set(True)
    try:
        yield
    finally:
        _TRACEABLE.reset(token)


def available_backends() -> list[str]:
    """Names of the backends usable right now: ``"pytorch"`` always, plus ``"cpu"``/``"cuda"``
    when their compiled kernel is built (in the build cache) and loadable. Never compiles."""
    names = ["pytorch"]
    names += [name for name in ("cpu", "cuda") if _extension.kernel_available(name)]
    return names


def _resolve(backend: str, device: torch.device) -> str:
    forced = os.environ.get(BACKEND_ENV_VAR, "").strip()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV_VAR} must be one of {BACKENDS}, got {forced!r}")
        backend = forced
    elif backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return _auto_backend(device.type)
    if backend in ("cpu", "cuda"):
        _extension.require_kernel(backend)
        if device.type != backend:
            raise ValueError(
                f"backend {backend!r} needs tensors on a {backend} device, got {device}"
            )
    return backend


def _auto_backend(device_type: str) -> str:
    """The compiled kernel for ``device_type``, compiled on the first eager call when it is
    missing (one line on stderr; ``"pytorch"`` when that fails or is switched off)."""
    if device_type not in ("cpu", "cuda"):
        return "pytorch"
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        # Looking for a built kernel hashes the sources and loads a library, and building runs
        # a compiler: none of it can be traced (a fullgraph compile would fail on a machine with
        # an empty build cache), so traced code only uses a kernel that an eager call loaded.
        available = _extension.kernel_loaded(device_type)
    else:
        available = _extension.kernel_available(device_type) or _extension.build_on_first_use(
            device_type
        )
    return device_type if available else "pytorch"


def run_ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    backend: str,
) -> torch.Tensor:
    """Run MSDA on checked inputs with the resolved backend."""
    if _TRACEABLE.get():
        return ms_deform_attn_pytorch(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    resolved = _resolve(backend, value.device)
    if resolved == "pytorch":
        return pytorch_ms_deform_attn_op(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return _extension.compiled_ms_deform_attn(
        value.contiguous(),
        spatial_shapes.to(value.device).contiguous(),  # the kernels read them on the device
        level_start_index.to(value.device).contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
