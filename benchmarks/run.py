"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only NAME ...]``.

``--quick`` runs every benchmark at small sizes with few repeats (a few minutes on a 2-core
CPU; for checking that everything works, not for figures). Without it, the full run writes
the figures quoted in ``benchmarks/README.md`` (about 15 minutes on a 2-core CPU; see there).
Results go to ``benchmarks/results/<machine>/<name>.json`` unless ``--output-dir`` is given.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import bench_breakdown, bench_fastpaths, bench_inference, bench_training
from benchmarks.plot import plot_inference

# name -> run(*, quick, presets, device, output_dir) -> path of the JSON written
BENCHMARKS: dict[str, Callable[..., Path]] = {
    "inference": bench_inference.run,
    "breakdown": bench_breakdown.run,
    "fastpaths": bench_fastpaths.run,
    "training": bench_training.run,
    "fastpaths_compile": functools.partial(bench_fastpaths.run, compile_model=True),
}
# Run by default; fastpaths_compile only with --compile (CPU compilation takes minutes).
DEFAULT_ORDER = ("inference", "breakdown", "fastpaths", "training")


def auto_threads() -> int:
    """CPUs left idle by the other work on the machine (1-minute load average), at least 1.

    On an oversubscribed machine several OpenMP threads wait on each other at every barrier
    and a call can become 10x slower than with one thread; one thread is then the honest
    choice.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, (usable or 1) - round(os.getloadavg()[0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), default=None, help="run only these"
    )
    parser.add_argument(
        "--presets", nargs="+", choices=("paper_r50", "tiny"), default=["paper_r50", "tiny"]
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--threads",
        default=None,
        help="torch.set_num_threads: a number, or 'auto' = the CPUs not already busy by the "
        "1-minute load average (at least 1); default: torch's choice",
    )
    parser.add_argument("--compile", action="store_true", help="also run fastpaths_compile")
    parser.add_argument("--output-dir", default=None, help="instead of benchmarks/results")
    args = parser.parse_args(argv)

    if args.threads is not None:
        threads = auto_threads() if args.threads == "auto" else int(args.threads)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # memory probes inherit it
        print(f"[benchmarks] {threads} torch thread(s), load average {os.getloadavg()}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    names = list(args.only) if args.only else list(DEFAULT_ORDER)
    if args.compile and "fastpaths_compile" not in names:
        names.append("fastpaths_compile")
    started = time.perf_counter()
    failures = []
    for name in names:
        tick = time.perf_counter()
        print(f"[benchmarks] {name} ({'quick' if args.quick else 'full'}, {device})", flush=True)
        try:
            path = BENCHMARKS[name](
                quick=args.quick,
                presets=tuple(args.presets),
                device=device,
                output_dir=args.output_dir,
            )
        except Exception as error:  # report and go on with the other benchmarks
            failures.append(name)
            print(f"[benchmarks] {name} FAILED: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        print(f"[benchmarks] {name}: {time.perf_counter() - tick:.0f} s -> {path}", flush=True)
        if name == "inference":
            figure = plot_inference(json.loads(path.read_text()), path.with_suffix(".png"))
            print(f"[benchmarks] plot -> {figure}", flush=True)
    print(f"[benchmarks] done in {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
