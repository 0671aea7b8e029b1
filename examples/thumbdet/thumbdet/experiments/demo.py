"""``thumbdet demo``: the paper's Table 2 and Figs. 1, 5, 6 on a generated dataset, on a CPU.

On a fresh machine with no data and no network, ``thumbdet demo [--output DIR] [--quick]``

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

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learnthumb import count_macs, measure_latency
from thumbdet.checkpoints import CHECKPOINT_NAME, load_detector
from thumbdet.data.synthetic import SyntheticSpec, generate_synthetic_dataset
from thumbdet.data.transforms import Compose, RandomHorizontalFlip, ToTensor
from thumbdet.evaluation import evaluate_checkpoint
from thumbdet.thumbnails import load_image
from thumbdet.training.config import TrainConfig
from thumbdet.training.trainer import Trainer

__all__ = [
    "RECIPES",
    "DemoRecipe",
    "add_parser",
    "measure_model",
    "phase_config",
    "run_demo",
    "run_phase",
    "use_threads",
]

MODEL_KEYS = ("teacher", "bicubic_4x", "thumbdet_4x")


@dataclass(frozen=True)
class DemoRecipe:
    """Everything the demo trains with; chosen by measuring on a 2-core CPU (docs/results.md).

    Args:
        data: the synthetic dataset.
        model_overrides: ``build_model("tiny", **model_overrides)``.
        teacher_epochs: epochs of the full-size teacher.
        student_epochs: epochs of each student (for ThumbDet including stage one).
        stage1_epochs: ThumbDet's stage one (downsampler alone, on the moment loss).
        batch_size: images per step.
        lr: AdamW learning rate of transformer, heads and downsampler.
        lr_backbone: learning rate of the backbone (trained from scratch here).
        lr_drop: the learning rate is multiplied by 0.1 after this many epochs.
        student_init: ``"random"`` (the paper) or ``"teacher"``.
        figure_images: val images shown in Figs. 5 and 6.
        latency_repeats: timed runs per model for images/s.
    """

    data: SyntheticSpec
    model_overrides: dict[str, Any] = field(default_factory=dict)
    teacher_epochs: int = 30
    student_epochs: int = 30
    stage1_epochs: int = 2
    batch_size: int = 8
    lr: float = 2e-4
    lr_backbone: float = 2e-4
    lr_drop: int = 25
    student_init: str = "random"
    figure_images: int = 4
    latency_repeats: int = 20


RECIPES: dict[str, DemoRecipe] = {
    "full": DemoRecipe(
        data=SyntheticSpec(image_size=128, num_train=512, num_val=128),
        model_overrides={"num_queries": 12, "with_box_refine": True},
        teacher_epochs=30,
        student_epochs=30,
        stage1_epochs=2,
        batch_size=8,
        lr=1e-3,
        lr_backbone=1e-3,
        lr_drop=24,
    ),
    "quick": DemoRecipe(
        data=SyntheticSpec(image_size=64, num_train=16, num_val=8, seed=1),
        model_overrides={"num_queries": 10, "dec_layers": 1},
        teacher_epochs=1,
        student_epochs=2,
        stage1_epochs=1,
        batch_size=8,
        lr=1e-3,
        lr_backbone=1e-3,
        lr_drop=100,
        figure_images=2,
        latency_repeats=2,
    ),
}
"""``full`` is what ``thumbdet demo`` runs; ``quick`` the same pipeline at toy size."""


def phase_config(
    recipe: DemoRecipe, data: Any, output: Path, mode: str, **changes: Any
) -> TrainConfig:
    """The ``TrainConfig`` of one demo phase (``mode`` teacher, bicubic or thumbdet).

    Args:
        recipe: the demo recipe.
        data: a :class:`~thumbdet.data.synthetic.SyntheticDataset`.
        output: the phase's folder.
        mode: the training mode.
        **changes: any other ``TrainConfig`` field (``teacher=``, ``logit=False``...).
    """
    size = recipe.data.image_size
    epochs = recipe.teacher_epochs if mode == "teacher" else recipe.student_epochs
    config = TrainConfig(
        preset="tiny",
        train_images=str(data.train_images),
        train_ann=str(data.train_ann),
        output=str(output),
        epochs=epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        lr_backbone=recipe.lr_backbone,
        lr_drop=recipe.lr_drop,
        num_workers=0,  # PNGs of 128 px decode in microseconds; workers only cost on 2 cores
        short_side=[size],
        max_size=size,
        device="cpu",
        eval_every=0,  # no val data in training: each phase is evaluated once, at the end
        mode=mode,
        scale=4,
        downsampler="thumbdet",
        stage1_epochs=recipe.stage1_epochs,
        model_overrides=dict(recipe.model_overrides),
    )
    if mode == "thumbdet":
        config.student_init = recipe.student_init
    return dataclasses.replace(config, **changes)


def _fingerprint(config: TrainConfig, upstream: str) -> str:
    values = config.to_dict()
    # Options that do not change the trained weights.
    for volatile in ("resume", "output", "device", "num_workers", "eval_every"):
        values.pop(volatile, None)
    text = json.dumps(values, sort_keys=True) + upstream
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    temporary.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_phase(config: TrainConfig, upstream: str = "") -> tuple[Path, str]:
    """Train one phase, or reuse/resume it when ``config`` (and ``upstream``) match.

    Training uses random flips only: Deformable DETR's multi-scale resize and crop resample
    the image, which turns the 1-px textures that *are* the classes of the synthetic data into
    other textures.

    Args:
        config: the run; ``config.output`` is the phase folder.
        upstream: fingerprint of the phases this one depends on (the teacher of a student),
            so that a retrained teacher retrains its students.

    Returns:
        ``(checkpoint, fingerprint)``.
    """
    output = Path(config.output)
    fingerprint = _fingerprint(config, upstream)
    marker = output / "phase.json"
    checkpoint = output / CHECKPOINT_NAME
    state = _read_json(marker) or {}
    owner = state.get("pid")
    if not state.get("complete") and owner not in (None, os.getpid()) and _alive(owner):
        raise RuntimeError(f"{output} is being trained by process {owner}; wait for it to finish")
    same = state.get("fingerprint") == fingerprint and checkpoint.exists()
    if same and state.get("complete"):
        return checkpoint, fingerprint
    if not same:  # another configuration trained here: start again
        for name in (CHECKPOINT_NAME, "log.jsonl", "config.json", "metrics.json"):
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(marker, {"fingerprint": fingerprint, "complete": False, "pid": os.getpid()})
    trainer = Trainer(dataclasses.replace(config, resume=same))
    trainer.train_set.transforms = Compose([RandomHorizontalFlip(), ToTensor()])
    try:
        trainer.fit()
    finally:
        trainer.close()
    _write_json(marker, {"fingerprint": fingerprint, "complete": True})
    return checkpoint, fingerprint


def evaluate_phase(
    checkpoint: Path, fingerprint: str, data: Any, progress: bool = True
) -> dict[str, float]:
    """COCO AP of a phase's checkpoint on the val set, cached in ``metrics.json``."""
    cache = checkpoint.parent / "metrics.json"
    cached = _read_json(cache)
    if cached is not None and cached.get("fingerprint") == fingerprint:
        return cached["metrics"]
    size = data.spec.image_size
    metrics = evaluate_checkpoint(
        checkpoint,
        data.val_images,
        data.val_ann,
        batch_size=16,
        short_side=[size],
        max_size=size,
        device="cpu",
        show_progress=progress,
    )
    _write_json(cache, {"fingerprint": fingerprint, "metrics": metrics})
    return metrics


def measure_model(model: nn.Module, image: torch.Tensor, repeats: int) -> dict[str, float]:
    """Parameters, GMACs and images/s of a model on one full-size image.

    Args:
        model: full-size images in (a teacher, or a student with its downsampler).
        image: ``(1, 3, H, W)``.
        repeats: timed runs (median taken) after 3 warm-up runs.
    """
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, image)
    latency = measure_latency(model, image, warmup=3, repeats=repeats)
    return {"params": params, "gmacs": macs / 1e9, "images_per_s": 1.0 / latency.median}


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
    models: dict[str, nn.Module], results: dict, data: Any, recipe: DemoRecipe, output: Path
) -> list[Path]:
    from learnthumb import InterpolateDownsampler
    from thumbdet.experiments import figures
    from thumbdet.models.postprocess import postprocess_detections

    images, annotations = _figure_images(data, recipe.figure_images)
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


def run_demo(
    output: str | os.PathLike = "thumbdet-demo",
    quick: bool = False,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole demo (see the module docstring) and return ``results.json``'s content.

    Args:
        output: folder for the phases, figures and ``results.json``.
        quick: the same pipeline at toy size (about a minute; numbers are meaningless).
        data_dir: where the dataset is generated (default: the thumbdet cache folder).
        progress: show progress bars.
    """
    from thumbdet.data.synthetic import default_cache_dir
    from thumbdet.experiments.report import format_results_table, make_row, write_results

    started = time.perf_counter()
    name = "quick" if quick else "full"
    recipe = RECIPES[name]
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    root = Path(data_dir) if data_dir is not None else default_cache_dir() / f"demo-{name}"
    print(f"[demo] dataset: {root}", flush=True)
    data = generate_synthetic_dataset(root, recipe.data, progress=progress)
    phase_seconds: dict[str, float] = {}

    def phase(key: str, config: TrainConfig, upstream: str = "") -> tuple[Path, str]:
        print(f"[demo] {key}: training {config.epochs} epochs ({config.mode})", flush=True)
        tick = time.perf_counter()
        result = run_phase(config, upstream)
        phase_seconds[key] = round(time.perf_counter() - tick, 1)
        return result

    teacher, teacher_fp = phase(
        "teacher", phase_config(recipe, data, output / "teacher", "teacher")
    )
    runs = {"teacher": (teacher, teacher_fp)}
    runs["bicubic_4x"] = phase(
        "bicubic_4x", phase_config(recipe, data, output / "bicubic_4x", "bicubic")
    )
    runs["thumbdet_4x"] = phase(
        "thumbdet_4x",
        phase_config(recipe, data, output / "thumbdet_4x", "thumbdet", teacher=str(teacher)),
        upstream=teacher_fp,
    )
    print("[demo] evaluating and measuring speed", flush=True)
    tick = time.perf_counter()
    image = _figure_images(data, 1)[0][0][None]  # (1, 3, H, W)
    results: dict[str, Any] = {}
    models: dict[str, nn.Module] = {}
    for key in MODEL_KEYS:
        checkpoint, fingerprint = runs[key]
        metrics = evaluate_phase(checkpoint, fingerprint, data, progress)
        models[key] = load_detector(checkpoint)
        speed = measure_model(models[key], image, recipe.latency_repeats)
        teacher_map = results["teacher"]["mAP"] if key != "teacher" else None
        results[key] = make_row(metrics, teacher_map=teacher_map, **speed)
    phase_seconds["evaluate"] = round(time.perf_counter() - tick, 1)
    tick = time.perf_counter()
    _draw_figures(models, results, data, recipe, output)
    phase_seconds["figures"] = round(time.perf_counter() - tick, 1)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["phase_seconds"] = phase_seconds
    results["recipe"] = name
    write_results(results, output / "results.json")
    print(format_results_table(results))
    print(f"[demo] {results['wall_seconds']:.0f} s; results and figures in {output}", flush=True)
    return results


@contextlib.contextmanager
def use_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``0``: PyTorch's default), then restore.

    The tiny models parallelise poorly; measured on a 2-core machine shared with other jobs,
    two OpenMP threads ran a training step 8-20x slower than one (threads spinning against
    other processes), while on an idle machine they were about 1.8x faster.
    """
    if threads < 0:
        raise ValueError(f"threads: expected >= 0, got {threads}")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> int:
    output = args.output or ("thumbdet-demo-quick" if args.quick else "thumbdet-demo")
    with use_threads(args.threads):
        run_demo(output, quick=args.quick, data_dir=args.data_dir)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``thumbdet demo`` on the CLI."""
    parser = subparsers.add_parser(
        "demo",
        help="train teacher, bicubic and ThumbDet students on generated data (CPU)",
        description="The paper's Table 2 and Figs. 1, 5 and 6 on a generated dataset, on a CPU: "
        "trains the full-size teacher, the 4x bicubic student and the 4x ThumbDet student, "
        "evaluates them and draws the figures. Every phase is resumable.",
    )
    parser.add_argument("--output", default=None, help="folder (default ./thumbdet-demo)")
    parser.add_argument("--quick", action="store_true", help="toy size, about a minute")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: cache)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch threads (default 1: robust on a shared CPU; 0 = PyTorch's default)",
    )
    parser.set_defaults(func=_run)
