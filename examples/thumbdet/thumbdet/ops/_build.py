"""Compiling the MSDA kernels: the CUDA toolkit, the build cache and :func:`build_extension`.

Owns everything a build needs: finding a usable CUDA toolkit (:func:`find_cuda_home`,
:func:`cuda_toolkit_usable`), the sources of each variant, the compiler flags and the cached build
folders. Builds are cached in ``$THUMBDET_BUILD_DIR`` (default ``~/.cache/thumbdet``), in a folder
named after a hash of the sources, torch version and flags, so an edited source or a new torch
rebuilds. Loading a built variant and deciding when to build are :mod:`._extension`'s.
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
    "BUILD_DIR_ENV_VAR",
    "build_extension",
    "build_root",
    "cuda_toolkit_usable",
    "default_build_dir",
    "find_cuda_home",
    "library_name",
]

BUILD_DIR_ENV_VAR = "THUMBDET_BUILD_DIR"
_SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
_CPU_SOURCES = ("ms_deform_attn.cpp", "cpu/ms_deform_attn_cpu.cpp")
_CUDA_SOURCES = ("cuda/ms_deform_attn_cuda.cu",)
_HEADERS = ("ms_deform_attn.h",)
_DEFAULT_CUDA_ARCHS = "8.0;9.0"  # used when no GPU is visible to detect one from


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


def build_root() -> Path:
    """The build cache: ``$THUMBDET_BUILD_DIR``, else ``thumbdet`` in ``$XDG_CACHE_HOME`` or
    ``~/.cache``."""
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
        build_root()
        / f"ms_deform_attn_{variant}_{_build_digest(variant, optimization, cuda_archs)}"
    )


def library_name(variant: str) -> str:
    """Name of the shared library of ``variant`` (``"cpu"`` or ``"cuda"``), without ``.so``."""
    return f"thumbdet_ms_deform_attn_{variant}"


def default_build_dir(variant: str) -> Path:
    """The cache folder of ``variant`` built with the default flags (where loading looks)."""
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
    from . import _extension  # imports this module: here, not at the top

    loaded = _extension.loaded_variant()
    if loaded not in (None, variant):
        raise RuntimeError(
            f"the {loaded} MSDA variant is already loaded in this process; "
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
            name=library_name(variant),
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
    _extension._on_loaded(variant)
    return build_dir / f"{library_name(variant)}.so"
