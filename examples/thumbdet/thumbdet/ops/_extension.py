"""Building and loading the compiled MSDA kernels (C++ CPU and CUDA). Placeholder: not built yet."""

from __future__ import annotations

import torch

__all__ = ["compiled_ms_deform_attn", "kernel_available", "require_kernel"]


def kernel_available(device_type: str) -> bool:
    """Whether the compiled kernel for ``device_type`` is built and loadable."""
    del device_type
    return False


def require_kernel(device_type: str) -> None:
    """Raise a RuntimeError saying how to build the kernel when it is not available."""
    raise RuntimeError(
        f"the compiled {device_type} MSDA kernel is not built yet; use backend='pytorch'"
    )


def compiled_ms_deform_attn(*args: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError
