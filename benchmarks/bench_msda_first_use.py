"""First use of the MSDA ``auto`` backend on a fresh machine (issue 13) -> JSON.

What a fresh install pays: a new Python process with an empty build cache
(``THUMBDET_BUILD_DIR`` a new temporary folder) times its first two ``auto`` calls. The first
compiles the C++ kernel (one line on stderr) and runs it; the second runs the cached kernel. The
same process with ``THUMBDET_MSDA_AUTO_BUILD=0`` gives the first call without a build, so the
build cost is the difference. Then, in this process and with that build, the steady-state
speed of the PyTorch path and of the kernel on the thumbnail encoder shape of
``bench_ms_deform_attn`` (forward, and forward+backward), and their ratio, measured in the same
run with ``benchmarks/_harness.time_function`` (median of individually timed calls after
warm-up). Run from the repository root::

    python -m benchmarks.bench_msda_first_use

Results: ``benchmarks/results/<machine>/msda_first_use.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks._harness import REPO_ROOT, write_result
from benchmarks.bench_ms_deform_attn import SHAPES, bench_backend, make_inputs

# Run in the fresh process: the wall time of the import and of the first two ``auto`` calls.
_CHILD = """
import json, sys, time
start = time.perf_counter()
import torch
from benchmarks.bench_ms_deform_attn import SHAPES, make_inputs
from thumbdet.ops import ms_deform_attn
from thumbdet.ops import _extension
imported = time.perf_counter() - start
inputs = make_inputs(SHAPES[sys.argv[1]], torch.float32, "cpu")
calls = []
for _ in range(2):
    start = time.perf_counter()
    with torch.no_grad():
        ms_deform_attn(*inputs, backend="auto")
    calls.append(time.perf_counter() - start)
print(json.dumps({"import_s": imported, "calls_s": calls, "loaded": _extension.loaded_variant()}))
"""


def first_use(shape: str, build_dir: str, auto_build: bool) -> dict:
    """Time the first two ``auto`` calls in a fresh process whose build cache is ``build_dir``."""
    environment = {
        **os.environ,
        "THUMBDET_BUILD_DIR": build_dir,
        "THUMBDET_MSDA_AUTO_BUILD": "1" if auto_build else "0",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    environment.pop("THUMBDET_MSDA_BACKEND", None)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, shape],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=1800,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["process_s"] = time.perf_counter() - start
    # The temporary build folder is this machine's path: not part of the result.
    stderr = result.stderr.replace(build_dir, "<a temporary folder>")
    measured["stderr_lines"] = stderr.strip().splitlines()
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="thumbnail")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per timed function")
    parser.add_argument("--output-dir", default=None, help="instead of benchmarks/results")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="thumbdet-first-use-") as build_dir:
        without_build = first_use(args.shape, build_dir, auto_build=False)
        with_build = first_use(args.shape, build_dir, auto_build=True)
        build_s = with_build["calls_s"][0] - without_build["calls_s"][0]
        print(f"first call without a build (PyTorch path): {without_build['calls_s'][0]:.2f} s")
        print(
            f"first call with the build: {with_build['calls_s'][0]:.1f} s (build ~{build_s:.1f} s)"
        )
        print(f"second call: {with_build['calls_s'][1]:.3f} s, kernel: {with_build['loaded']}")
        print("stderr:", *with_build["stderr_lines"], sep="\n  ")

        # Steady state in this process, with the kernel the fresh process built.
        os.environ["THUMBDET_BUILD_DIR"] = build_dir
        inputs = make_inputs(SHAPES[args.shape], torch.float32, "cpu")
        rows = {}
        for backend in ("pytorch", "cpu"):
            rows[backend] = bench_backend(
                backend, inputs, "cpu", args.warmup, args.repeats, args.max_seconds
            )
    ratios = {
        key: round(rows["pytorch"][key]["median_s"] / rows["cpu"][key]["median_s"], 2)
        for key in ("forward", "forward_backward")
    }
    for key, ratio in ratios.items():
        print(
            f"{key}: pytorch {1e3 * rows['pytorch'][key]['median_s']:.1f} ms, "
            f"cpu {1e3 * rows['cpu'][key]['median_s']:.1f} ms, kernel {ratio}x faster"
        )
    results = {
        "method": "fresh processes with an empty build cache (first two auto calls, wall time); "
        "steady state: median of individually timed calls after warm-up (benchmarks/_harness)",
        "settings": {
            "shape": args.shape,
            "level_shapes": SHAPES[args.shape],
            "warmup": args.warmup,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
        },
        "first_use": {
            "auto_build_off": without_build,
            "auto_build_on": with_build,
            "build_s": round(build_s, 2),
        },
        "steady_state": rows,
        "speedup_kernel_vs_pytorch": ratios,
    }
    path = write_result("msda_first_use", results, output_dir=args.output_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
