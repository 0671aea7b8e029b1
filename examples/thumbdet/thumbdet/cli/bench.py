"""Time detector inference, with optional fast paths.

Random weights (or --checkpoint) on random images: median and IQR latency and images/s. For
the full benchmark suite see `python -m benchmarks.run` in the repository.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from thumbdet.cli.command import Command
from thumbdet.inference_options import InferenceOptions
from thumbdet.settings import setting

__all__ = ["COMMAND", "BenchOptions"]


def _variants() -> list[str]:
    from thumbdet.training.modes import list_modes

    return list_modes()


@dataclass
class BenchOptions:
    """Settings of ``thumbdet bench``."""

    preset: str = setting("tiny", "detector preset (tiny, paper_r50)")
    variant: str = setting("teacher", "full-size teacher or a student", choices=_variants)
    scale: int = setting(4, "thumbnail factor of students")
    checkpoint: str | None = setting(None, "time a trained checkpoint instead")
    image_size: tuple[int, int] | None = setting(
        None,
        "full-size input (default: 800 1333 for paper_r50, 128 128 for tiny)",
        metavar=("H", "W"),
    )
    batch_size: int = setting(1, "images per call")
    device: str | None = setting(None, "cpu or cuda (default: cuda if available)")
    fast_paths: InferenceOptions = dataclasses.field(default_factory=InferenceOptions)
    warmup: int = setting(2, "untimed calls first")
    repeats: int = setting(10, "timed calls")
    json: str | None = setting(None, "also write the result to this JSON file")


def _measure(options: BenchOptions) -> dict[str, Any]:
    """Build, prepare, warm up and time the configuration of ``options``."""
    import torch

    from learnthumb import measure_latency
    from thumbdet.fastpath import DEFAULT_SIZES, build_inference_model, make_runner, prepare_model
    from thumbdet.models.postprocess import PostProcess

    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fast_paths = options.fast_paths
    if options.checkpoint is not None:
        from thumbdet.checkpoints import load_detector

        model = load_detector(options.checkpoint, device)
        preset, variant = model.checkpoint_meta["preset"], model.checkpoint_meta["mode"]
    else:
        preset, variant = options.preset, options.variant
        model = build_inference_model(preset, variant, options.scale)
    height, width = options.image_size or DEFAULT_SIZES.get(preset, (800, 1333))
    model = prepare_model(model, fast_paths, device)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(options.batch_size, 3, height, width, generator=generator).to(device)
    runner = make_runner(model, images, fast_paths, PostProcess())

    def timed_call() -> None:
        runner()
        if device.type == "cuda":  # measure_latency cannot see the device of a closure
            torch.cuda.synchronize(device)

    stats = measure_latency(timed_call, warmup=options.warmup, repeats=options.repeats)
    return {
        "preset": preset,
        "variant": variant,
        "image_size": [height, width],
        "batch_size": options.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "options": fast_paths.to_dict(),
        "median_s": stats.median,
        "iqr_s": stats.iqr,
        "repeats": stats.repeats,
        "images_per_s": options.batch_size / stats.median,
    }


def _run(options: BenchOptions) -> int:
    """Body of ``thumbdet bench``: time, print (and save) one configuration."""
    result = _measure(options)
    height, width = result["image_size"]
    print(
        f"{result['variant']} {result['preset']} {height}x{width} batch {result['batch_size']} "
        f"on {result['device']}: {result['median_s'] * 1e3:.1f} ms "
        f"(IQR {result['iqr_s'] * 1e3:.1f} ms, {result['repeats']} runs), "
        f"{result['images_per_s']:.2f} images/s"
    )
    if options.json:
        from thumbdet.files import write_json

        write_json(options.json, result)
    return 0


COMMAND = Command("bench", __doc__, BenchOptions, _run)
