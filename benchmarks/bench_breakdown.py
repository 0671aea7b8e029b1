"""Question 2: where does the time go? Per-stage time of the teacher and the 4x student.

Stages are timed with forward pre/post hooks on the submodules (the clock is read, after a CUDA
synchronisation on GPUs, when a stage starts and ends): ``downsampler``, ``backbone``,
``input_proj+pos`` (input projections and sine position encodings of every level),
``encoder``, ``decoder``; ``other`` is the rest of the detector's forward (normalisation,
masks, flattening, the class/box heads); ``postprocess`` is timed after it. Each stage's median
over the repeats is reported with its share of the median end-to-end time. An optional
``torch.profiler`` table lists the operators that take the most time.

    python -m benchmarks.bench_breakdown [--quick] [--presets paper_r50] [--profile]
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks._harness import (
    benchmark_main,
    benchmark_parser,
    run_presets,
    synchronize,
)

NAME = "breakdown"
PRESETS = ("paper_r50", "tiny")
# (variant, scale, fast-path options): the teacher, the 4x student, and the 4x student with
# channels-last (NHWC) convolutions, the fast path that speeds up the full-size downsampler.
CASES = (("teacher", 1, {}), ("thumbdet", 4, {}), ("thumbdet", 4, {"channels_last": True}))
STAGES = ("downsampler", "backbone", "input_proj+pos", "encoder", "decoder", "other", "postprocess")
# preset, quick -> (input size, warm-up calls, timed calls)
SETTINGS = {
    ("paper_r50", False): ((800, 1333), 1, 3),
    ("paper_r50", True): ((256, 416), 1, 2),
    ("tiny", False): ((128, 128), 3, 20),
    ("tiny", True): ((128, 128), 1, 5),
}


class StageTimer:
    """Accumulate wall-clock time spent inside named submodules during forward calls.

    Args:
        stages: stage name -> the modules whose forward calls count for it (disjoint).
        device: synchronised at each clock read when it is a CUDA device.
    """

    def __init__(self, stages: dict[str, list[nn.Module]], device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[int, float] = {}
        self._handles = []
        for name, modules in stages.items():
            for module in modules:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook()))
                self._handles.append(module.register_forward_hook(self._post_hook(name)))

    def _pre_hook(self):
        def hook(module: nn.Module, _inputs: Any) -> None:
            synchronize(self.device)
            self._started[id(module)] = time.perf_counter()

        return hook

    def _post_hook(self, name: str):
        def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - self._started.pop(id(module))

        return hook

    def reset(self) -> None:
        self.seconds.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def model_stages(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The timed submodules of a Deformable-DETR teacher or a ``ThumbnailDetector`` student."""
    stages: dict[str, list[nn.Module]] = {}
    detector = model
    if hasattr(model, "downsampler") and hasattr(model, "detector"):
        stages["downsampler"] = [model.downsampler]
        detector = model.detector
    stages["backbone"] = [detector.backbone]
    stages["input_proj+pos"] = [*detector.input_proj, detector.position_embedding]
    stages["encoder"] = [detector.transformer.encoder]
    stages["decoder"] = [detector.transformer.decoder]
    return stages


def _profile_top_ops(call, rows: int = 15) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        call()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events) or 1
    return [
        {
            "op": event.key,
            "calls": event.count,
            "self_cpu_ms": event.self_cpu_time_total / 1e3,
            "self_cpu_share": event.self_cpu_time_total / total,
        }
        for event in events[:rows]
    ]


def breakdown_case(
    preset: str,
    variant: str,
    scale: int,
    options: dict[str, Any],
    quick: bool,
    device: torch.device,
    profile: bool,
) -> dict[str, Any]:
    """Median per-stage time of one case at batch 1 (``options``: ``InferenceOptions`` fields)."""
    from thumbdet.fastpath import InferenceOptions, build_inference_model, prepare_model
    from thumbdet.models.postprocess import PostProcess

    size, warmup, repeats = SETTINGS[(preset, quick)]
    torch.manual_seed(0)
    inference_options = InferenceOptions(**options)
    model = prepare_model(build_inference_model(preset, variant, scale), inference_options, device)
    images = torch.rand(1, 3, *size, device=device)
    if inference_options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target_sizes = torch.tensor([size], device=device)  # (1, 2)
    postprocess = PostProcess()
    timer = StageTimer(model_stages(model), device)
    samples: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            timer.reset()
            synchronize(device)
            start = time.perf_counter()
            outputs = model(images)
            synchronize(device)
            forward_done = time.perf_counter()
            postprocess(outputs, target_sizes)
            synchronize(device)
            end = time.perf_counter()
            if index < warmup:
                continue
            stage_seconds = dict(timer.seconds)
            stage_seconds["other"] = (forward_done - start) - sum(stage_seconds.values())
            stage_seconds["postprocess"] = end - forward_done
            for stage, seconds in stage_seconds.items():
                samples[stage].append(seconds)
            totals.append(end - start)
    timer.remove()
    total = statistics.median(totals)
    stages = {
        stage: {
            "median_ms": statistics.median(samples[stage]) * 1e3,
            "share": statistics.median(samples[stage]) / total,
        }
        for stage in STAGES
        if stage in samples
    }
    result = {
        "case": (variant if variant == "teacher" else f"{variant}-{scale}x")
        + "".join(f"+{key}" for key, value in options.items() if value),
        "options": options,
        "input_size": list(size),
        "batch": 1,
        "warmup": warmup,
        "repeats": repeats,
        "total_ms": total * 1e3,
        "stages": stages,
    }
    if profile:
        with torch.inference_mode():
            result["top_ops"] = _profile_top_ops(lambda: postprocess(model(images), target_sizes))
    return result


def run(
    *,
    quick: bool = False,
    presets: tuple[str, ...] = PRESETS,
    device: str = "cpu",
    output_dir: Path | str | None = None,
    profile: bool = True,
) -> Path:
    """Run the breakdown and write ``breakdown.json``; returns its path."""

    def measure(preset: str, torch_device: torch.device) -> dict[str, Any]:
        cases = [
            breakdown_case(preset, variant, scale, options, quick, torch_device, profile)
            for variant, scale, options in CASES
        ]
        targets = {}
        for case in cases[1:]:
            share = case["stages"].get("downsampler", {}).get("share")
            targets[f"downsampler_share_of_{case['case']}"] = {
                "measured": share,
                "target": "<= 0.02",
                "met": share is not None and share <= 0.02,
            }
        return {"cases": cases, "targets": targets}

    method = (
        "forward pre/post hooks read the clock around each stage (CUDA synchronised); medians "
        "over timed batch-1 calls under torch.inference_mode; 'other' = forward minus stages"
    )
    return run_presets(
        NAME, measure, method, quick=quick, presets=presets, device=device, output_dir=output_dir
    )


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], PRESETS)
    parser.add_argument("--no-profile", action="store_true", help="skip the operator table")
    benchmark_main(run, parser, argv, profile=lambda args: not args.no_profile)


if __name__ == "__main__":
    main()
