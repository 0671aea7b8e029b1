"""Question 4: which fast paths help? Each is an option of ``thumbdet.fastpath.InferenceOptions``.

Every configuration runs the same unchanged model (a fresh instance per configuration), batch
1, forward only; configurations are timed round-robin after warm-up, so ratios are fair. For
each: median latency, speed-up over the ``inference_mode`` float32 baseline, and the largest
absolute difference of the class logits from the baseline's (what a fast path costs in
accuracy). ``torch.compile`` is optional (``--compile``); its compile time (the first call) is
reported separately, and it writes ``fastpaths_compile.json`` instead (compiling takes minutes
on a CPU). ``amp_backbone`` autocasts only the convolutional backbone. CUDA-only paths
(fp16/bf16 autocast on GPU, CUDA graphs, compile with ``reduce-overhead``) are listed as
skipped when no GPU is used.

    python -m benchmarks.bench_fastpaths [--quick] [--compile] [--device cuda]
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._harness import (
    benchmark_main,
    benchmark_parser,
    describe_environment,
    synchronize,
    time_interleaved,
    write_result,
)

NAME = "fastpaths"

# Subjects: (preset, variant, scale) -> size per mode (full, quick) and (warm-up, repeats).
SUBJECTS = {
    ("paper_r50", "thumbdet", 4): {False: ((800, 1333), 1, 5), True: ((256, 416), 1, 2)},
    ("tiny", "teacher", 1): {False: ((128, 128), 3, 20), True: ((128, 128), 1, 5)},
}
# The paper teacher is slow on a CPU: only the baseline and the most promising paths.
TEACHER_SUBJECT = ("paper_r50", "teacher", 1)
TEACHER_SETTINGS = {False: ((800, 1333), 1, 2), True: ((256, 416), 0, 1)}
TEACHER_CONFIGS = ("inference_mode", "channels_last+amp", "channels_last+amp_backbone")


def configurations(device: torch.device, compile_model: bool) -> dict[str, dict[str, Any]]:
    """Name -> ``InferenceOptions`` fields of every configuration that can run on ``device``."""
    from thumbdet.ops import available_backends

    configs: dict[str, dict[str, Any]] = {
        "inference_mode": {},
        "no_grad": {"grad_mode": "no_grad"},
        "channels_last": {"channels_last": True},
        "amp": {"amp": True},
        "amp_backbone": {"amp": True, "amp_scope": "backbone"},
        "channels_last+amp": {"channels_last": True, "amp": True},
        "channels_last+amp_backbone": {
            "channels_last": True,
            "amp": True,
            "amp_scope": "backbone",
        },
        "msda_pytorch": {"msda_backend": "pytorch"},
    }
    compiled_backend = device.type  # "cpu" or "cuda": the compiled MSDA kernel of the device
    if compiled_backend in available_backends():
        configs[f"msda_{compiled_backend}"] = {"msda_backend": compiled_backend}
    if device.type == "cuda":
        configs["amp_bf16"] = {"amp": True, "amp_dtype": "bfloat16"}
        configs["cuda_graph"] = {"cuda_graph": True}
        configs["cuda_graph+amp"] = {"cuda_graph": True, "amp": True}
    if compile_model:  # compiling takes minutes on a CPU: a separate, optional run
        configs = {"inference_mode": {}, "compile": {"compile": True}}
        configs["compile+channels_last+amp_backbone"] = {
            "compile": True,
            "channels_last": True,
            "amp": True,
            "amp_scope": "backbone",
        }
        if device.type == "cuda":
            configs["compile_reduce_overhead"] = {
                "compile": True,
                "compile_mode": "reduce-overhead",
            }
    return configs


def skipped_configurations(device: torch.device, compile_model: bool) -> dict[str, str]:
    """Fast paths not measured here, and why."""
    from thumbdet.ops import available_backends

    skipped = {}
    if device.type != "cuda":
        reason = "needs a CUDA GPU; none was used for this run"
        for name in ("amp_fp16 (CUDA)", "amp_bf16 (CUDA)", "cuda_graph", "cuda_graph+amp"):
            skipped[name] = reason
        skipped["compile_reduce_overhead"] = reason
    if device.type not in available_backends():
        skipped[f"msda_{device.type}"] = (
            "compiled MSDA kernel not built (python -m thumbdet.ops.build)"
        )
    if not compile_model:
        skipped["compile"] = "minutes of compilation on a CPU: measured by --compile separately"
    return skipped


def _logits(outputs: Any) -> torch.Tensor:
    # Not the boxes: with random weights the box head starts at zero (Deformable DETR's init),
    # so boxes do not depend on the image; class logits do.
    return outputs["pred_logits"].float()


def benchmark_subject(
    subject: tuple[str, str, int],
    size: tuple[int, int],
    warmup: int,
    repeats: int,
    configs: dict[str, dict[str, Any]],
    device: torch.device,
) -> dict[str, Any]:
    """Time every configuration on one model; report speed-ups and output differences."""
    from thumbdet.fastpath import (
        InferenceOptions,
        build_inference_model,
        make_runner,
        prepare_model,
    )

    preset, variant, scale = subject
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    runners, first_call_s, errors, outputs = {}, {}, {}, {}
    for name, fields in configs.items():
        torch.manual_seed(0)  # the same weights in every configuration
        options = InferenceOptions(**fields)
        try:
            model = prepare_model(build_inference_model(preset, variant, scale), options, device)
            runner = make_runner(model, images, options)
            synchronize(device)
            start = time.perf_counter()
            outputs[name] = _logits(runner()).clone()  # compiles / captures when asked to
            synchronize(device)
            first_call_s[name] = time.perf_counter() - start
            runners[name] = runner
        except Exception as error:  # a fast path that fails here is a result, not a crash
            errors[name] = f"{type(error).__name__}: {str(error)[:300]}"
    timings = time_interleaved(runners, warmup=warmup, repeats=repeats, device=device)
    baseline = timings.get("inference_mode")
    rows = {}
    for name, timing in timings.items():
        rows[name] = {
            "options": configs[name],
            "latency_ms": timing.median_s * 1e3,
            "iqr_ms": timing.iqr_s * 1e3,
            "images_per_s": timing.per_second(1),
            "speedup_vs_inference_mode": baseline.median_s / timing.median_s if baseline else None,
            "first_call_s": first_call_s[name],
            "max_abs_diff_logits_vs_baseline": (
                float((outputs[name] - outputs["inference_mode"]).abs().max())
                if "inference_mode" in outputs
                else None
            ),
            "timing": timing.to_dict(),
        }
    return {
        "preset": preset,
        "case": variant if variant == "teacher" else f"{variant}-{scale}x",
        "input_size": list(size),
        "batch": 1,
        "rows": rows,
        "errors": errors,
    }


def student_speedups(subjects: list[dict[str, Any]]) -> dict[str, float]:
    """Paper teacher latency / paper 4x student latency, per configuration both ran with
    (the two were timed in separate round-robin groups, one after the other)."""
    by_case = {(s["preset"], s["case"]): s["rows"] for s in subjects}
    teacher = by_case.get(("paper_r50", "teacher"))
    student = by_case.get(("paper_r50", "thumbdet-4x"))
    if not teacher or not student:
        return {}
    return {
        name: teacher[name]["latency_ms"] / student[name]["latency_ms"]
        for name in teacher
        if name in student
    }


def run(
    *,
    quick: bool = False,
    compile_model: bool = False,
    device: str = "cpu",
    output_dir: Path | str | None = None,
    presets: tuple[str, ...] = ("paper_r50", "tiny"),
) -> Path:
    """Run the fast-path benchmark and write ``fastpaths.json``; returns its path."""
    torch_device = torch.device(device)
    if compile_model:  # first_call_s must be a cold compilation, not a cache hit
        os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    environment = describe_environment(torch_device)
    environment["inductor_caches_disabled"] = os.environ.get("TORCHINDUCTOR_FORCE_DISABLE_CACHES")
    configs = configurations(torch_device, compile_model)
    subjects = []
    for subject, settings in SUBJECTS.items():
        if subject[0] in presets:
            size, warmup, repeats = settings[quick]
            subjects.append(
                benchmark_subject(subject, size, warmup, repeats, configs, torch_device)
            )
    if TEACHER_SUBJECT[0] in presets and not compile_model:
        size, warmup, repeats = TEACHER_SETTINGS[quick]
        teacher_configs = {name: configs[name] for name in TEACHER_CONFIGS}
        subjects.append(
            benchmark_subject(TEACHER_SUBJECT, size, warmup, repeats, teacher_configs, torch_device)
        )
    method = (
        "forward only, batch 1, random weights; configurations timed round-robin (median, IQR) "
        "after warm-up; 'amp' = autocast to bfloat16 on CPU, float16 on CUDA; first_call_s "
        "includes compilation / graph capture"
    )
    return write_result(
        NAME + ("_compile" if compile_model else ""),
        {
            "quick": quick,
            "method": method,
            "subjects": subjects,
            "student_4x_speedup_over_teacher": student_speedups(subjects),
            "skipped": skipped_configurations(torch_device, compile_model),
        },
        device=torch_device,
        output_dir=output_dir,
        environment=environment,
    )


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], ("paper_r50", "tiny"))
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    benchmark_main(run, parser, argv, compile_model=lambda args: args.compile)


if __name__ == "__main__":
    main()
