"""The CUDA MSDA extension compiles (runs wherever nvcc and a CUDA torch exist, GPU or not)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from thumbdet.ops import _build, _extension

CHECK_KERNELS = """
import torch
torch.ops.load_library({library!r})
for op in ("thumbdet::ms_deform_attn", "thumbdet::ms_deform_attn_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), (op, key)
print("kernels registered")
"""


@pytest.mark.build
@pytest.mark.skipif(not _build.cuda_toolkit_usable(), reason="needs nvcc and a CUDA-enabled torch")
def test_cuda_extension_compiles(tmp_path):
    # A fresh process per step: a process holds one variant of the thumbdet operators, and
    # the CUDA build must not replace the CPU kernel this test session may have loaded.
    # One architecture and -O2 keep the compile short for CI (about a minute on 2 cores).
    build = [
        sys.executable,
        "-m",
        "thumbdet.ops.build",
        "--variant=cuda",
        "--cuda-archs=9.0",
        "--optimization=-O2",
        f"--build-dir={tmp_path}",
    ]
    environment = {**os.environ, "CUDA_HOME": _build.find_cuda_home() or ""}
    result = subprocess.run(
        build, capture_output=True, text=True, env=environment, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    library = tmp_path / "thumbdet_ms_deform_attn_cuda.so"
    assert library.exists()
    check = CHECK_KERNELS.format(library=str(library))
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "kernels registered" in result.stdout


@pytest.mark.build
def test_cpu_extension_builds_and_loads():
    if torch.cuda.is_available():
        pytest.skip("with a GPU the lazy build makes the CUDA variant (tested on the GPU)")
    _extension.require_kernel("cpu")
    assert _extension.loaded_variant() in ("cpu", "cuda")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("thumbdet::ms_deform_attn", "CPU")
