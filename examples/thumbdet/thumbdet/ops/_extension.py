"""Loading the compiled MSDA kernels and saying whether they can run here.

Two variants exist: ``cpu`` (C++ only) and ``cuda`` (C++ plus CUDA). Both register the same
``thumbdet::ms_deform_attn`` operators, so a process loads at most one of them. This module owns
which variant is loaded, loading one from the build cache, whether a kernel is available, and
when to build one (:func:`require_kernel`, :func:`build_on_first_use`); compiling is
:mod:`._build`'s. Nothing here runs at import time; the ``auto`` backend compiles on first use
(:func:`build_on_first_use`).
"""

from __future__ import annotations

import os
import sys

import torch

from ._build import (
    build_extension,
    build_root,
    cuda_toolkit_usable,
    default_build_dir,
    library_name,
)

__all__ = [
    "AUTO_BUILD_ENV_VAR",
    "auto_build_enabled",
    "build_on_first_use",
    "compiled_ms_deform_attn",
    "kernel_available",
    "kernel_loaded",
    "loaded_variant",
    "require_kernel",
]

#: ``0`` (or ``false``/``no``/``off``) stops the ``auto`` backend from compiling on first use.
AUTO_BUILD_ENV_VAR = "THUMBDET_MSDA_AUTO_BUILD"
_BUILD_HINT = (
    "Build it ahead of time with `python -m thumbdet.ops.build` (`--variant cuda` for the CUDA "
    "kernel; needs a C++ compiler, ninja and, for CUDA, nvcc with CUDA_HOME set), "
    "or use backend='pytorch'."
)

_loaded: dict[str, str | None] = {"variant": None}
_failed_loads: set[str] = set()
_failed_auto_builds: set[str] = set()  # device types whose first-use build failed here


def loaded_variant() -> str | None:
    """``"cpu"`` or ``"cuda"`` when a compiled variant is loaded in this process, else None."""
    return _loaded["variant"]


def _on_loaded(variant: str) -> None:
    """Record ``variant`` as loaded and register the compiled op (called after every load)."""
    from . import _library

    _loaded["variant"] = variant
    _library.register_compiled_op()


def _try_load_cached() -> str | None:
    """Load an already built variant from the cache (never compiles)."""
    if _loaded["variant"] is not None:
        return _loaded["variant"]
    order = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu", "cuda"]
    for variant in order:
        if variant == "cuda" and torch.version.cuda is None:
            continue
        library = default_build_dir(variant) / f"{library_name(variant)}.so"
        if not library.exists() or str(library) in _failed_loads:
            continue
        try:
            torch.ops.load_library(str(library))
        except OSError:
            _failed_loads.add(str(library))
            continue
        _on_loaded(variant)
        return variant
    return None


def kernel_loaded(device_type: str) -> bool:
    """Whether a compiled kernel for ``device_type`` is loaded in this process (no file access;
    safe inside traced code)."""
    variant = _loaded["variant"]
    return variant is not None if device_type == "cpu" else variant == "cuda"


def kernel_available(device_type: str) -> bool:
    """Whether the compiled kernel for ``device_type`` is loaded or built in the cache."""
    if device_type == "cuda" and not torch.cuda.is_available():
        return False
    variant = _try_load_cached()
    if device_type == "cpu":
        return variant is not None
    return variant == "cuda"


def require_kernel(device_type: str) -> None:
    """Make the kernel for ``device_type`` usable, compiling it on first use (cached).

    Raises:
        RuntimeError: when it cannot be built or loaded; the message says how to build it.
    """
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"device_type must be 'cpu' or 'cuda', got {device_type!r}")
    if kernel_available(device_type):
        return
    if device_type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"backend 'cuda' needs a visible CUDA GPU. {_BUILD_HINT}")
    if _loaded["variant"] is not None:  # the cpu variant is loaded but cuda was asked for
        raise RuntimeError(
            "the CPU-only MSDA extension is loaded in this process, so the CUDA kernel cannot "
            f"be added to it. {_BUILD_HINT}"
        )
    variant = "cuda" if torch.cuda.is_available() and cuda_toolkit_usable() else "cpu"
    if device_type == "cuda" and variant != "cuda":
        raise RuntimeError(f"no CUDA toolkit (nvcc) found to build the CUDA kernel. {_BUILD_HINT}")
    try:
        build_extension(variant)
    except Exception as error:  # compiler missing, compile error, ...
        message = str(error).strip().splitlines()
        tail = "\n".join(message[-15:])
        raise RuntimeError(
            f"could not build the {variant} MSDA extension:\n{tail}\n{_BUILD_HINT}"
        ) from error


def auto_build_enabled() -> bool:
    """Whether the ``auto`` backend may compile a missing kernel (``THUMBDET_MSDA_AUTO_BUILD``)."""
    setting = os.environ.get(AUTO_BUILD_ENV_VAR, "1").strip().lower()
    return setting not in ("0", "false", "no", "off")


def build_on_first_use(device_type: str) -> bool:
    """Build and load the kernel for ``device_type`` for the ``auto`` backend; never raises.

    Prints one line on stderr before compiling (the build is cached, so this happens once per
    machine and torch version), and one line if the build fails; then, and when
    ``THUMBDET_MSDA_AUTO_BUILD=0``, returns False and the caller uses the PyTorch path. A failed
    build is not retried in the same process.

    Returns:
        True when the kernel for ``device_type`` is loaded.
    """
    if device_type in _failed_auto_builds or not auto_build_enabled():
        return False
    if kernel_available(device_type):
        return True
    # The same choice as require_kernel: with a GPU and nvcc the CUDA variant (it holds both).
    variant = "cuda" if torch.cuda.is_available() and cuda_toolkit_usable() else "cpu"
    kind = "CUDA" if variant == "cuda" else "C++"
    print(
        f"thumbdet: compiling the {kind} multi-scale deformable attention kernel once "
        f"(under a minute; cached in {build_root()}; {AUTO_BUILD_ENV_VAR}=0 skips it)",
        file=sys.stderr,
        flush=True,
    )
    try:
        require_kernel(device_type)
    except Exception as error:  # no compiler, no ninja, no nvcc, a compile error, ...
        _failed_auto_builds.add(device_type)
        cause = error.__cause__ or error
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(cause).__name__)[:200]
        print(
            f"thumbdet: could not build the {kind} MSDA kernel ({reason}); using the PyTorch "
            "path (`python -m thumbdet.ops.build --verbose` shows the compiler output)",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


def compiled_ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Call the loaded ``thumbdet::ms_deform_attn`` operator (inputs contiguous, int64)."""
    return torch.ops.thumbdet.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
