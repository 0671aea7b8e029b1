"""Shared benchmark machinery: timing, peak memory, the machine's description, JSON results.

Method (every script uses it): ``warmup`` untimed calls, then ``repeats`` individually timed
calls (``time.perf_counter``; on CUDA the device is synchronised before each clock read), and
the median with its inter-quartile range (IQR), computed by
``learnthumb.LatencyStats.from_times`` (the estimator of ``learnthumb.measure_latency`` too). This
is the estimator of ``torch.utils.benchmark`` (``Measurement.median`` / ``.iqr``), computed per
call because one call of a full-size detector on a CPU takes seconds. A time budget
(``max_seconds``) may stop the repeats early; the JSON then says how many calls were actually
timed.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` around one call; on CPU the peak
resident set size of a *separate* process that builds the model and runs one call
(:func:`peak_rss_in_subprocess`, via ``python -m benchmarks._memory_probe``), so the
allocations of earlier benchmarks in this process do not count.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from learnthumb.metrics import LatencyStats, _check_counts

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "Timing",
    "benchmark_main",
    "benchmark_parser",
    "cpu_model",
    "describe_environment",
    "git_commit",
    "machine_name",
    "peak_cuda_memory",
    "peak_rss_in_subprocess",
    "result_path",
    "run_presets",
    "synchronize",
    "time_function",
    "time_interleaved",
    "write_atomically",
    "write_result",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


@dataclass
class Timing:
    """Wall-clock seconds of one call over repeated runs.

    Attributes:
        median_s: median time of one call.
        iqr_s: inter-quartile range (0 with fewer than 2 repeats).
        min_s: fastest call.
        mean_s: mean time.
        repeats: calls actually timed (fewer than asked when ``budget_limited``).
        warmup: untimed calls before timing.
        budget_limited: True when ``max_seconds`` stopped the repeats early.
        times_s: every timed call, in order.
    """

    median_s: float
    iqr_s: float
    min_s: float
    mean_s: float
    repeats: int
    warmup: int
    budget_limited: bool = False
    times_s: list[float] = field(default_factory=list)

    def per_second(self, items: int) -> float:
        """Throughput: ``items`` processed per call divided by the median time."""
        return items / self.median_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA only; CPU work is synchronous)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summarise(times: list[float], warmup: int, budget_limited: bool) -> Timing:
    # learnthumb's estimator, so the library's measure_latency and the benchmarks agree.
    stats = LatencyStats.from_times(times)
    return Timing(
        median_s=stats.median,
        iqr_s=stats.iqr,
        min_s=stats.minimum,
        mean_s=stats.mean,
        repeats=stats.repeats,
        warmup=warmup,
        budget_limited=budget_limited,
        times_s=list(times),
    )


def time_function(
    function: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 10,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
) -> Timing:
    """Median and IQR of ``function()`` after a warm-up.

    Args:
        function: the zero-argument call to time (wrap inputs in a closure).
        warmup: untimed calls first (>= 0).
        repeats: timed calls (>= 1).
        device: synchronised before each clock read when it is a CUDA device.
        max_seconds: stop timing once this many seconds were spent on timed calls (at least
            one call is always timed); ``None`` for no limit.

    Returns:
        :class:`Timing` in seconds.
    """
    _check_counts(warmup, repeats)
    for _ in range(warmup):
        function()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    budget_limited = False
    for index in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if max_seconds is not None and spent >= max_seconds and index + 1 < repeats:
            budget_limited = True
            break
    return _summarise(times, warmup, budget_limited)


def time_interleaved(
    functions: dict[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
) -> dict[str, Timing]:
    """Time several calls round-robin: repeat ``r`` times each function once, in turn.

    On a machine shared with other work the load drifts; interleaving spreads that drift over
    all the functions compared, so their *ratios* (speed-ups) stay fair.

    Args:
        functions: name -> zero-argument call.
        warmup: untimed rounds first.
        repeats: timed rounds (>= 1).
        device: synchronised before each clock read when it is a CUDA device.
        max_seconds: stop after the round in which the timed total passed this many seconds.

    Returns:
        name -> :class:`Timing` (all with the same number of repeats).
    """
    _check_counts(warmup, repeats)
    for _ in range(warmup):
        for function in functions.values():
            function()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in functions}
    spent = 0.0
    budget_limited = False
    for round_index in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            synchronize(device)
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            spent += elapsed
        if max_seconds is not None and spent >= max_seconds and round_index + 1 < repeats:
            budget_limited = True
            break
    return {name: _summarise(values, warmup, budget_limited) for name, values in times.items()}


def peak_cuda_memory(function: Callable[[], Any], device: torch.device | str) -> dict[str, int]:
    """Peak CUDA memory allocated by tensors during one ``function()`` call.

    Returns:
        ``{"peak_bytes": max_memory_allocated, "baseline_bytes": memory_allocated before,
        "call_bytes": the difference}``.
    """
    device = torch.device(device)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    function()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "peak_bytes": int(peak),
        "baseline_bytes": int(baseline),
        "call_bytes": int(peak - baseline),
    }


def peak_rss_in_subprocess(
    builder: str, arguments: dict[str, Any], *, threads: int | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Peak resident set size of one call, measured in a fresh Python process.

    The child imports ``builder`` (``"package.module:function"``), calls it with
    ``**arguments`` to get a zero-argument callable (building the model happens here), notes
    its resident memory, resets the kernel's high-water mark, runs the callable once and
    reads the high-water mark again.

    Args:
        builder: ``"module:function"`` returning the callable to measure.
        arguments: JSON-serialisable keyword arguments of the builder.
        threads: ``torch.set_num_threads`` in the child (default: this process's count).
        timeout: seconds before the child is killed.

    Returns:
        ``{"peak_rss_bytes", "baseline_rss_bytes", "call_rss_bytes", "method"}``: the peak
        of the whole process (Python, torch, weights and the call), the resident memory just
        before the call, and the difference (what the call itself added).
    """
    request = {
        "builder": builder,
        "arguments": arguments,
        "threads": threads if threads is not None else torch.get_num_threads(),
    }
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")])
    )
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks._memory_probe"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=environment,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"memory probe of {builder} failed (exit {completed.returncode}): "
            f"{completed.stderr.strip()[-2000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_name(device: torch.device | str = "cpu") -> str:
    """Folder name of the results of this machine: ``cpu-2core`` or ``gpu-<gpu model>``."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return f"gpu-{slug.removeprefix('nvidia-')}"
    return f"cpu-{_usable_cpus()}core"


def git_commit() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": whether tracked files differ from it}``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": bool(status)}


def describe_environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a reader needs to trust or reproduce a number: machine, software, load, date."""
    device = torch.device(device)
    try:
        load_average = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load_average = None
    try:
        from thumbdet.ops import available_backends

        msda_backends = available_backends()
    except Exception as error:  # a benchmark must still describe its machine
        msda_backends = f"unavailable ({type(error).__name__})"
    description = {
        "machine": machine_name(device),
        "device": str(device),
        "cpu_model": cpu_model(),
        "usable_cpus": _usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15min": load_average,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "msda_backends": msda_backends,
        "msda_backend_env": os.environ.get("THUMBDET_MSDA_BACKEND"),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **git_commit(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        description["gpu_name"] = properties.name
        description["gpu_memory_bytes"] = int(properties.total_memory)
        description["cudnn_version"] = torch.backends.cudnn.version()
    return description


def result_path(name: str, machine: str, output_dir: Path | str | None = None) -> Path:
    """``<output_dir or benchmarks/results>/<machine>/<name>.json``."""
    root = Path(output_dir) if output_dir is not None else RESULTS_DIR
    return root / machine / f"{name}.json"


def write_result(
    name: str,
    results: dict[str, Any],
    *,
    device: torch.device | str = "cpu",
    output_dir: Path | str | None = None,
    environment: dict[str, Any] | None = None,
) -> Path:
    """Write ``{"benchmark": name, "environment": ..., **results}`` as JSON; return the path.

    Args:
        name: benchmark name, the file's stem.
        results: JSON-serialisable results (method, settings, rows, notes).
        device: the device measured (chooses the machine folder).
        output_dir: root folder instead of ``benchmarks/results``.
        environment: the description to store; default: :func:`describe_environment` now.
    """
    environment = environment if environment is not None else describe_environment(device)
    path = result_path(name, environment["machine"], output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(environment)
    try:  # the load before the run is in the description; this is the load at its end
        environment["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        environment["load_average_at_end"] = None
    payload = {"benchmark": name, "environment": environment, **results}
    text = json.dumps(payload, indent=2, sort_keys=False) + "\n"
    return write_atomically(path, lambda temporary: temporary.write_text(text))


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary)``, then move the temporary file over ``path``.

    A reader, or a run interrupted mid-write, never sees half a file; the temporary file sits
    in the same folder (so the move stays on one file system) and is named by the process id
    (so parallel writers stay apart). Parent folders are created. Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def benchmark_parser(description: str, presets: Sequence[str]) -> argparse.ArgumentParser:
    """The options every benchmark script takes: --quick, --presets, --device, --output-dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--presets", nargs="+", choices=list(presets), default=list(presets))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-dir", default=None, help="instead of benchmarks/results")
    return parser


def benchmark_main(
    run: Callable[..., Path],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    **extra: Callable[[argparse.Namespace], Any],
) -> None:
    """A benchmark script's command line: parse ``argv``, call ``run``, print the JSON's path.

    Args:
        run: the script's ``run(*, quick, presets, device, output_dir, ...)``.
        parser: :func:`benchmark_parser`'s parser, with any options of the script added.
        argv: the arguments (default: ``sys.argv[1:]``).
        **extra: further keywords of ``run``, each computed from the parsed options.
    """
    args = parser.parse_args(argv)
    path = run(
        quick=args.quick,
        presets=tuple(args.presets),
        device=args.device,
        output_dir=args.output_dir,
        **{keyword: value(args) for keyword, value in extra.items()},
    )
    print(f"wrote {path}")


def run_presets(
    name: str,
    measure: Callable[[str, torch.device], dict[str, Any]],
    method: str,
    *,
    quick: bool,
    presets: Sequence[str],
    device: torch.device | str,
    output_dir: Path | str | None,
) -> Path:
    """Describe the machine, measure every preset, write ``name.json``; return its path.

    The machine is described (load average included) before the first measurement, so the
    JSON records the load the benchmark started under.

    Args:
        name: benchmark name, the file's stem.
        measure: ``measure(preset, device)`` -> that preset's JSON-serialisable results.
        method: one sentence on how the numbers were measured.
        quick: whether this is a ``--quick`` run (recorded).
        presets: the presets to measure, in order.
        device: the device to measure on.
        output_dir: root folder instead of ``benchmarks/results``.

    Returns:
        The path of the JSON ``{"benchmark", "environment", "quick", "method", "presets"}``.
    """
    device = torch.device(device)
    environment = describe_environment(device)
    results = {preset: measure(preset, device) for preset in presets}
    return write_result(
        name,
        {"quick": quick, "method": method, "presets": results},
        device=device,
        output_dir=output_dir,
        environment=environment,
    )
