"""The demo: the paper's Table 2 and Figs. 1, 5, 6 on a generated dataset, on a CPU.

On a fresh machine with no data and no network, :func:`run_demo` (``thumbdet demo [--output
DIR] [--quick]``, settings :class:`~thumbdet.experiments.options.DemoOptions`)

1. generates (once, cached) the synthetic dataset of :mod:`thumbdet.data.synthetic`, whose
   classes differ only in 1-px textures that a 4× bicubic thumbnail averages away;
2. trains the full-size teacher, the 4× bicubic student and the 4× ThumbDet student (learned
   downsampler + distillation from the teacher) with the ``tiny`` preset;
3. evaluates the three with pycocotools, measures parameters, GMACs and images/s, prints a
   table in the form of Table 2 and writes ``DIR/results.json``;
4. draws ``fig1_map_vs_speed.png``, ``fig5_thumbnails.png``, ``fig6_detections.png`` and
   ``dataset_samples.png`` into ``DIR``.

Every phase is resumable: re-running reuses a phase's checkpoint and metrics when its
configuration (and that of the phases it depends on) is unchanged, and continues an
interrupted training run where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thumbdet.checkpoints import load_detector
from thumbdet.experiments.measure import measure_model, use_threads
from thumbdet.experiments.options import DemoOptions
from thumbdet.experiments.phases import evaluate_phase, run_phase
from thumbdet.experiments.recipes import phase_config, prepare_recipe
from thumbdet.experiments.report import format_results_table, make_row, write_results
from thumbdet.thumbnails import load_image
from thumbdet.training.config import TrainConfig

__all__ = ["MODEL_KEYS", "run_demo"]

MODEL_KEYS = ("teacher", "bicubic_4x", "thumbdet_4x")
"""The three models of the demo's table, in its order."""


def _figure_images(data: Any, count: int) -> tuple[list[torch.Tensor], list[dict]]:
    """The first ``count`` val images with at least two objects (or any, if too few)."""
    coco = json.loads(Path(data.val_ann).read_text())
    objects: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        objects.setdefault(annotation["image_id"], []).append(annotation)
    ranked = sorted(coco["images"], key=lambda im: (len(objects.get(im["id"], [])) < 2, im["id"]))
    chosen = ranked[:count]
    images = [load_image(Path(data.val_images) / entry["file_name"]) for entry in chosen]
    return images, [{"objects": objects.get(entry["id"], [])} for entry in chosen]


@torch.no_grad()
def _draw_figures(
    models: dict[str, nn.Module],
    results: dict,
    images: list[torch.Tensor],
    annotations: list[dict],
    output: Path,
) -> list[Path]:
    from learnthumb import InterpolateDownsampler
    from thumbdet.experiments import figures
    from thumbdet.models.postprocess import postprocess_detections

    meta = models["teacher"].checkpoint_meta
    names = list(meta["category_names"])
    by_id = dict(zip(meta["category_ids"], names, strict=True))
    bicubic = InterpolateDownsampler(4)
    written = [figures.plot_map_vs_speed(results, output / "fig1_map_vs_speed.png")]
    thumbnails = {
        "bicubic 4×": [bicubic(image[None])[0] for image in images],
        "learned 4× (ThumbDet)": [
            models["thumbdet_4x"].downsampler(image[None])[0] for image in images
        ],
    }
    written.append(figures.plot_thumbnails(images, thumbnails, output / "fig5_thumbnails.png"))
    titles = {
        "teacher": "Deformable-DETR, full size",
        "bicubic_4x": "Bicubic 4×",
        "thumbdet_4x": "ThumbDet 4× (ours)",
    }
    detections = {}
    for key, model in models.items():
        found = []
        for image in images:
            outputs = model(image[None])
            size = torch.tensor([image.shape[-2:]])
            found.append(postprocess_detections(outputs, size, num_detections=10)[0])
        detections[titles[key]] = found
    written.append(
        figures.plot_detections(images, detections, names, output / "fig6_detections.png")
    )
    written.append(
        figures.plot_dataset_samples(
            images,
            [[a["bbox"] for a in item["objects"]] for item in annotations],
            [[by_id.get(a["category_id"], "?") for a in item["objects"]] for item in annotations],
            thumbnails["bicubic 4×"],
            output / "dataset_samples.png",
        )
    )
    return written


def run_demo(options: DemoOptions | None = None) -> dict:
    """Run the whole demo (see the module docstring) and return ``results.json``'s content.

    Args:
        options: The folder for the phases, figures and ``results.json``, the size (``quick``:
            the same pipeline at toy size, numbers meaningless), the dataset folder, threads
            and progress bars (default: ``DemoOptions()``).
    """
    options = options or DemoOptions()
    with use_threads(options.threads):
        return _run_demo(options)


def _run_demo(options: DemoOptions) -> dict:
    started = time.perf_counter()
    output = options.folder()
    output.mkdir(parents=True, exist_ok=True)
    name, recipe, data = prepare_recipe(options.quick, options.data_dir, options.progress)
    print(f"[demo] dataset: {data.root}", flush=True)
    phase_seconds: dict[str, float] = {}

    def phase(key: str, config: TrainConfig, upstream: str = "") -> tuple[Path, str]:
        epochs = config.schedule.epochs
        print(f"[demo] {key}: training {epochs} epochs ({config.mode})", flush=True)
        tick = time.perf_counter()
        result = run_phase(config, upstream)
        phase_seconds[key] = round(time.perf_counter() - tick, 1)
        return result

    teacher, teacher_fp = phase(
        "teacher", phase_config(recipe, data, output / "teacher", "teacher")
    )
    runs = {"teacher": (teacher, teacher_fp)}
    runs["bicubic_4x"] = phase(
        "bicubic_4x", phase_config(recipe, data, output / "bicubic_4x", "bicubic_4x")
    )
    runs["thumbdet_4x"] = phase(
        "thumbdet_4x",
        phase_config(recipe, data, output / "thumbdet_4x", "thumbdet_4x", teacher=str(teacher)),
        upstream=teacher_fp,
    )
    print("[demo] evaluating and measuring speed", flush=True)
    tick = time.perf_counter()
    images, annotations = _figure_images(data, recipe.figure_images)
    image = images[0][None]  # (1, 3, H, W), the image the speed is measured on
    results: dict[str, Any] = {}
    models: dict[str, nn.Module] = {}
    for key in MODEL_KEYS:
        checkpoint, fingerprint = runs[key]
        metrics = evaluate_phase(checkpoint, fingerprint, data, options.progress)
        models[key] = load_detector(checkpoint)
        speed = measure_model(models[key], image, recipe.latency_repeats)
        teacher_map = results["teacher"]["mAP"] if key != "teacher" else None
        results[key] = make_row(metrics, teacher_map=teacher_map, **speed)
    phase_seconds["evaluate"] = round(time.perf_counter() - tick, 1)
    tick = time.perf_counter()
    _draw_figures(models, results, images, annotations, output)
    phase_seconds["figures"] = round(time.perf_counter() - tick, 1)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["phase_seconds"] = phase_seconds
    results["recipe"] = name
    write_results(results, output / "results.json")
    print(format_results_table(results))
    print(f"[demo] {results['wall_seconds']:.0f} s; results and figures in {output}", flush=True)
    return results
