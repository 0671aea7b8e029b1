"""Building and loading the compiled MSDA kernels (C++ CPU kernel, optionally CUDA).

Two variants exist: ``cpu`` (C++ only) and ``cuda`` (C++ plus CUDA). Both register the same
``thumbdet::ms_deform_attn`` operators, so a process loads at most one of them. Builds are cached
in ``$THUMBDET_BUILD_DIR`` (default ``~/.cache/thumbdet``), in a folder named after a hash of the
sources, torch version and flags, so an edited source or a new torch rebuilds. Nothing here runs
at import time; the ``auto`` backend compiles on first use (:func:`build_on_first_use`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

__all__ = [
    "AUTO_BUILD_ENV_VAR",
    "BUILD_DIR_ENV_VAR",
    "auto_build_enabled",
    "build_extension",
    "build_on_first_use",
    "compiled_ms_deform_attn",
    "kernel_available",
    "kernel_loaded",
    "loaded_variant",
    "require_kernel",
]

BUILD_DIR_ENV_VAR = "THUMBDET_BUILD_DIR"
#: ``0`` (or ``false``/``no``/``off``) stops the ``auto`` backend from compiling on first use.
AUTO_BUILD_ENV_VAR = "THUMBDET_MSDA_AUTO_BUILD"
_SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
_CPU_SOURCES = ("ms_deform_attn.cpp", "cpu/ms_deform_attn_cpu.cpp")
_CUDA_SOURCES = ("cuda/ms_deform_attn_cuda.cu",)
_HEADERS = ("ms_deform_attn.h",)
_DEFAULT_CUDA_ARCHS = "8.0;9.0"  # used when no GPU is visible to detect one from
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


def _is_cuda_toolkit(path: str | Path) -> bool:
    root = Path(path)
    return (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime_api.h").exists()


def find_cuda_home() -> str | None:
    """The CUDA toolkit to build with, or None.

    Tries ``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda`` and the toolkit of the ``nvcc`` on
    the PATH, and takes the first that has both ``bin/nvcc`` and the runtime headers: the
    ``nvcc`` on the PATH may be a wrapper script in ``/usr/local/bin``, whose parent is no
    toolkit, and a ``CUDA_HOME`` derived from it would break the build.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for candidate in candidates:
        if candidate and _is_cuda_toolkit(candidate):
            return candidate
    return None


@functools.cache
def _nvcc_release(cuda_home: str) -> str | None:
    """CUDA release of ``cuda_home/bin/nvcc`` (e.g. ``"13.0"``), or None if it cannot say."""
    try:
        banner = subprocess.run(
            [str(Path(cuda_home) / "bin" / "nvcc"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", banner)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def cuda_toolkit_usable() -> bool:
    """Whether a CUDA variant can be compiled here: a CUDA-enabled torch plus a toolkit whose
    nvcc has the same major CUDA version (a different major cannot build for this torch)."""
    cuda_home = find_cuda_home()
    if torch.version.cuda is None or cuda_home is None:
        return False
    release = _nvcc_release(cuda_home)
    return release is not None and release.split(".")[0] == torch.version.cuda.split(".")[0]


def _sources(variant: str) -> list[Path]:
    names = _CPU_SOURCES + (_CUDA_SOURCES if variant == "cuda" else ())
    return [_SOURCE_DIR / name for name in names]


def _build_root() -> Path:
    configured = os.environ.get(BUILD_DIR_ENV_VAR)
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "thumbdet"


def _build_flags(optimization: str) -> dict[str, list[str]]:
    # -fopenmp: at::parallel_for is inlined from ATen headers and is serial without it.
    return {
        "extra_cflags": [optimization, "-fopenmp"],
        "extra_ldflags": ["-fopenmp"],
        "extra_cuda_cflags": [optimization],
    }


@functools.cache
def _build_digest(variant: str, optimization: str, cuda_archs: str | None) -> str:
    # Cached: hashing the sources on every call of the op would cost more than the op on
    # small inputs, and the sources do not change under a running process.
    digest = hashlib.sha256()
    for path in _sources(variant) + [_SOURCE_DIR / name for name in _HEADERS]:
        digest.update(path.read_bytes())
    digest.update(
        f"{torch.__version__}|{sys.version_info[:2]}|{optimization}|{cuda_archs}".encode()
    )
    return digest.hexdigest()[:16]


def _build_dir(variant: str, optimization: str, cuda_archs: str | None) -> Path:
    return (
        _build_root()
        / f"ms_deform_attn_{variant}_{_build_digest(variant, optimization, cuda_archs)}"
    )


def _library_name(variant: str) -> str:
    return f"thumbdet_ms_deform_attn_{variant}"


def _default_build_dir(variant: str) -> Path:
    archs = _default_cuda_archs() if variant == "cuda" else None
    return _build_dir(variant, "-O3", archs)


def _default_cuda_archs() -> str:
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or (
        "" if torch.cuda.is_available() else _DEFAULT_CUDA_ARCHS
    )


def build_extension(
    variant: str,
    *,
    build_dir: Path | None = None,
    optimization: str = "-O3",
    cuda_archs: str | None = None,
    verbose: bool = False,
) -> Path:
    """Compile one variant with ``torch.utils.cpp_extension.load``, load it, return its path.

    Args:
        variant: ``"cpu"`` (C++ only) or ``"cuda"`` (C++ and CUDA).
        build_dir: where to build; default the hashed cache folder.
        optimization: host and device optimisation flag.
        cuda_archs: ``TORCH_CUDA_ARCH_LIST`` for the CUDA variant; default the environment's,
            else the visible GPU's, else ``"8.0;9.0"`` so a GPU-less machine still compiles.
        verbose: print the compiler commands.

    Returns:
        Path of the built shared library.
    """
    if variant not in ("cpu", "cuda"):
        raise ValueError(f"variant must be 'cpu' or 'cuda', got {variant!r}")
    if variant == "cuda":
        cuda_home = find_cuda_home()
        if not cuda_toolkit_usable():
            release = _nvcc_release(cuda_home) if cuda_home else None
            raise RuntimeError(
                "the CUDA MSDA kernel needs a CUDA-enabled torch and an nvcc of the same major "
                f"CUDA version (set CUDA_HOME); torch.version.cuda={torch.version.cuda}, "
                f"toolkit={cuda_home}, nvcc release={release}"
            )
        cuda_archs = cuda_archs or _default_cuda_archs()
    if _loaded["variant"] not in (None, variant):
        raise RuntimeError(
            f"the {_loaded['variant']} MSDA variant is already loaded in this process; "
            f"build the {variant} variant in a fresh process (`python -m thumbdet.ops.build`)"
        )
    cuda_home = find_cuda_home()
    if cuda_home and os.environ.get("CUDA_HOME") != cuda_home:
        # cpp_extension reads CUDA_HOME when first imported; an unset or wrong one (no headers)
        # is replaced by the toolkit found above, for this build.
        os.environ["CUDA_HOME"] = cuda_home
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    if variant == "cpu":
        # Its import warns that no CUDA runtime is found when no GPU is visible: noise for a
        # C++-only build, and the lazy build promises one line on stderr.
        logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension  # slow import, only when building
    finally:
        logger.setLevel(level)

    if cuda_home:
        cpp_extension.CUDA_HOME = cuda_home
    build_dir = build_dir or _build_dir(variant, optimization, cuda_archs)
    build_dir.mkdir(parents=True, exist_ok=True)
    previous_archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if cuda_archs:
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_archs
    try:
        cpp_extension.load(
            name=_library_name(variant),
            sources=[str(path) for path in _sources(variant)],
            build_directory=str(build_dir),
            with_cuda=variant == "cuda",
            is_python_module=False,
            verbose=verbose,
            **_build_flags(optimization),
        )
    finally:
        if cuda_archs:
            if previous_archs is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = previous_archs
    _on_loaded(variant)
    return build_dir / f"{_library_name(variant)}.so"


def _on_loaded(variant: str) -> None:
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
        library = _default_build_dir(variant) / f"{_library_name(variant)}.so"
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
        f"(under a minute; cached in {_build_root()}; {AUTO_BUILD_ENV_VAR}=0 skips it)",
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
