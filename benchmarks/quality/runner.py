"""Train the teacher and every student arm of one task, scale and seed; score them.

Protocol (the same for every arm, so differences come from the thumbnail alone):

- one teacher per task, trained at full resolution (``teacher_steps``), seed 0;
- every student starts from the teacher's weights and takes exactly ``student_steps``
  optimiser steps of AdamW with the same one-cycle schedule, learning rate and batches (a
  seed fixes the batch order and the downsampler's initialisation); a learned downsampler's
  stage one, when its recipe has one, counts inside those steps;
- the metric is computed at the original resolution on held-out images: the test split, or
  the unseen split of the scene tasks (photos that no task trains or tests on).

Every result kept in the work folder is keyed by its settings and by :func:`code_version`, so
a run made by other code is never read back as if it were this code's.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks._harness import REPO_ROOT, write_atomically
from benchmarks.quality.arms import ARMS, Arm
from benchmarks.quality.data import Dataset, build_dataset
from benchmarks.quality.tasks import TaskSpec, task_spec
from examples._common.training import _batches, _optimizer
from learnthumb import (
    DistillWeights,
    Safeguards,
    ThumbnailDistillation,
    ThumbnailHealthWarning,
    TwoStageSchedule,
    check_thumbnail_health,
    create_downsampler,
    widen_input_conv,
)

__all__ = [
    "Budget",
    "cached_run",
    "code_version",
    "fingerprint",
    "load_data",
    "run_arm",
    "run_job",
    "train_arm",
    "train_teacher",
]


@dataclass(frozen=True)
class Budget:
    """Optimisation settings shared by every arm of a task.

    Attributes:
        teacher_steps: optimiser steps of the teacher (full size, from random weights).
        student_steps: optimiser steps of every student, stage one included.
        lr: peak learning rate of the teacher.
        student_lr: peak learning rate of every student (fine-tuned from the teacher).
        weight_decay: AdamW's weight decay.
    """

    teacher_steps: int = 1000
    student_steps: int = 300
    lr: float = 1e-2
    student_lr: float = 2e-3
    weight_decay: float = 1e-4


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _targets(data: Dataset, index: torch.Tensor):
    if isinstance(data.targets, list):
        return [data.targets[i] for i in index.tolist()]
    return data.targets[index]


def _forward(model: nn.Module, downsampler: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(downsampler(images))``; dense outputs of a warping sampler are unwarped.

    A content-adaptive sampler (one with ``sample``, e.g. :class:`learnthumb.SaliencySampler`)
    does not scale uniformly: its student's dense maps (heatmaps, logits) are resampled onto
    the uniform grid of the same size through the warp ("unzoom", Thavamani et al. 2023), so
    that losses and decoding see the same coordinates as every other arm, and the loss trains
    the saliency through the warp.
    """
    if hasattr(downsampler, "sample"):
        thumbnail, warp = downsampler.sample(images)
        output = model(thumbnail)
        if output.dim() == 4:
            output = warp.masks_to_image(output, size=output.shape[-2:])
        return output
    return model(downsampler(images))


@torch.no_grad()
def _predict(model: nn.Module, downsampler: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    downsampler.eval()
    return torch.cat([_forward(model, downsampler, chunk) for chunk in images.split(64)])


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# What a run computes besides its settings: the library, the suite's data, tasks and training,
# and the examples' models and loop. Editing the report or the command line keeps the runs.
_CODE = ("learnthumb", "examples/_common", "benchmarks/quality/data.py",
         "benchmarks/quality/imagewise.py", "benchmarks/quality/runner.py",
         "benchmarks/quality/tasks.py")  # fmt: skip


@functools.cache
def code_version() -> str:
    """A hash of the source files in :data:`_CODE` and the torch version.

    Part of every key in the work folder: after an edit to the library or the suite, earlier
    runs are trained again instead of being mixed with new ones.
    """
    digest = hashlib.sha256(torch.__version__.encode())
    for entry in _CODE:
        path = REPO_ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _write_json(path: Path, value: dict) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(value)))


def load_data(spec: TaskSpec, test_split: str = "test") -> tuple[Dataset, Dataset]:
    """The task's train split and its ``test_split`` (fixed: the same for every seed and arm).

    ``test_split`` is ``"test"`` or, for a scene task, ``"unseen"`` or ``"external"`` (see
    :func:`~benchmarks.quality.data.build_dataset`).
    """
    train = build_dataset(spec.name, "train", spec.train_count, spec.image_size)
    test = build_dataset(spec.name, test_split, spec.test_count, spec.image_size)
    return train, test


def train_teacher(
    spec: TaskSpec,
    data: tuple[Dataset, Dataset],
    budget: Budget,
    cache: Path,
    seed: int = 0,
    test_split: str = "test",
) -> tuple[nn.Module, dict]:
    """The full-resolution teacher of ``spec`` (trained once, then read from ``cache``).

    Returns:
        The teacher and its record: the metrics on ``data``'s test images (``test_split``
        names them, to keep one record per split) and the training seconds.
    """
    key = fingerprint(spec.key, spec.image_size, spec.train_count, asdict(budget), seed,
                      code_version())  # fmt: skip
    weights_path = cache / f"teacher-{spec.name}-{key}.pt"
    trained_path = weights_path.with_suffix(".json")  # {"seconds": training time}
    record_path = cache / f"teacher-{spec.name}-{key}-{test_split}.json"
    train, test = data
    if weights_path.is_file() and trained_path.is_file():
        model = spec.make_model()
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        if record_path.is_file():
            return model, json.loads(record_path.read_text())
        seconds = json.loads(trained_path.read_text())["seconds"]
    else:
        generator = _seed_everything(seed)
        model = spec.make_model()  # after seeding: a seeded initialisation
        start = time.perf_counter()
        _fit(model, nn.Identity(), train, spec, budget, budget.teacher_steps, generator,
             teacher=True)  # fmt: skip
        seconds = time.perf_counter() - start
        write_atomically(weights_path, lambda temporary: torch.save(model.state_dict(), temporary))
        _write_json(trained_path, {"seconds": seconds})
    record = dict(spec.evaluate(_predict(model, nn.Identity(), test.images), test), seconds=seconds)
    _write_json(record_path, record)
    return model, record


def _fit(
    model: nn.Module,
    downsampler: nn.Module,
    data: Dataset,
    spec: TaskSpec,
    budget: Budget,
    steps: int,
    generator: torch.Generator,
    downsampler_lr: float = 1.0,
    teacher: bool = False,
) -> None:
    """Task loss only; a learnable downsampler trains with the model (end to end)."""
    model.train()
    downsampler.train()
    lr = budget.lr if teacher else budget.student_lr
    groups = [{"params": list(model.parameters()), "lr": lr}]
    learnable = [p for p in downsampler.parameters() if p.requires_grad]
    if learnable:
        groups.append({"params": learnable, "lr": lr * downsampler_lr})
    optimizer, schedule = _optimizer(groups, budget.weight_decay, steps)
    for index in _batches(len(data), spec.batch_size, steps, generator):
        output = _forward(model, downsampler, data.images[index])
        loss = spec.loss(output, _targets(data, index), spec.image_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def _fit_distilled(
    model: nn.Module,
    downsampler: nn.Module,
    teacher: nn.Module,
    data: Dataset,
    spec: TaskSpec,
    budget: Budget,
    arm: Arm,
    generator: torch.Generator,
) -> list[str]:
    """Task loss plus ThumbnailDistillation's losses; returns the warnings it raised."""
    steps = budget.student_steps
    stage1 = round(arm.stage1_fraction * steps)
    learnable = [p for p in downsampler.parameters() if p.requires_grad]
    weights = DistillWeights(**{"moment": 1.0 if learnable else 0.0, **arm.weights})
    distill = ThumbnailDistillation(
        downsampler,
        teacher,
        model,
        feature_layers=model.feature_names,
        logits=spec.logits,
        weights=weights,
        schedule=TwoStageSchedule(stage1_steps=stage1) if learnable and stage1 else None,
        safeguards=Safeguards(min_stage1_steps=0),
    ).train()
    groups = [{"params": list(model.parameters()), "lr": budget.student_lr}]
    if learnable:
        groups.append({"params": learnable, "lr": budget.student_lr * arm.downsampler_lr})
    groups.extend(
        {"params": list(module.parameters()), "lr": budget.student_lr}
        for module in (distill.feature_loss,)
        if any(True for _ in module.parameters())
    )
    optimizer, schedule = _optimizer(groups, budget.weight_decay, steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ThumbnailHealthWarning)
        for step, index in enumerate(_batches(len(data), spec.batch_size, steps, generator)):
            images = data.images[index]
            _, output, losses = distill(images, step=step)
            loss = sum(losses.values())
            if output is not None:
                loss = loss + spec.loss(output, _targets(data, index), spec.image_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def train_arm(
    spec: TaskSpec,
    data: tuple[Dataset, Dataset],
    teacher: nn.Module,
    arm_name: str,
    scale: int,
    seed: int,
    budget: Budget,
) -> tuple[nn.Module, nn.Module, float, list[str]]:
    """Train one student arm from the teacher's weights.

    Returns:
        The student model, its downsampler, the training seconds and the warnings raised.
    """
    arm = ARMS[arm_name]
    train, _ = data
    generator = _seed_everything(seed)
    if arm.downsampler == "identity":
        downsampler = nn.Identity()
    else:
        downsampler = create_downsampler(arm.downsampler, scale, **arm.kwargs)
    model = copy.deepcopy(teacher).requires_grad_(True)
    channels = getattr(downsampler, "out_channels", 3)
    if channels > 3:  # a wide thumbnail: the student's stem takes the extra channels
        widen_input_conv(model, channels)
    start = time.perf_counter()
    caught: list[str] = []
    if arm.distill and hasattr(downsampler, "sample"):
        raise ValueError(f"arm {arm_name!r}: distillation of a warping sampler is not supported")
    if arm.distill:
        caught = _fit_distilled(model, downsampler, teacher, train, spec, budget, arm, generator)
    else:
        _fit(model, downsampler, train, spec, budget, budget.student_steps, generator,
             arm.downsampler_lr)  # fmt: skip
    return model, downsampler, time.perf_counter() - start, caught


def run_arm(
    spec: TaskSpec,
    data: tuple[Dataset, Dataset],
    teacher: nn.Module,
    arm_name: str,
    scale: int,
    seed: int,
    budget: Budget,
) -> dict:
    """Train one student arm from the teacher's weights and score it on the test split.

    The record holds the metrics and, under ``images``, the per-image statistics
    (:meth:`~benchmarks.quality.imagewise.ImageStats.to_json`) that resample the test images.
    """
    _, test = data
    model, downsampler, seconds, caught = train_arm(
        spec, data, teacher, arm_name, scale, seed, budget
    )
    outputs = _predict(model, downsampler, test.images)
    with torch.no_grad():
        thumbnails = downsampler(test.images[:64])
    health = check_thumbnail_health(thumbnails)
    metrics, stats = spec.measure(outputs, test)
    return {
        "metrics": metrics,
        "images": stats.to_json(),
        "seconds": seconds,
        "constant_fraction": [round(v, 4) for v in health.constant_fraction],
        "warnings": caught,
        "downsampler_parameters": sum(p.numel() for p in downsampler.parameters()),
    }


@functools.cache
def _task_data(name: str, test_split: str = "test") -> tuple[TaskSpec, tuple[Dataset, Dataset]]:
    spec = task_spec(name)
    return spec, load_data(spec, test_split)


def run_job(job: dict) -> dict:
    """One unit of work of the suite, run in a worker process (see ``--jobs``).

    ``job`` holds ``task``, ``test_split``, ``work_dir``, ``budget`` (a dict), ``threads``,
    ``fresh`` and, for a student, ``arm``, ``scale`` and ``seed`` (without them: the task's
    teacher). Results are kept in ``work_dir`` exactly as a one-process run keeps them.
    """
    torch.set_num_threads(job["threads"])
    test_split = job["test_split"]
    spec, data = _task_data(job["task"], test_split)
    budget = Budget(**job["budget"])
    work_dir = Path(job["work_dir"])
    teacher, record = train_teacher(
        spec, data, budget, work_dir / "teachers", test_split=test_split
    )
    if "arm" not in job:
        return record
    return cached_run(
        work_dir, budget, spec, data, teacher, job["arm"], job["scale"], job["seed"], job["fresh"],
        test_split,
    )  # fmt: skip


def cached_run(
    work_dir: Path,
    budget: Budget,
    spec: TaskSpec,
    data: tuple[Dataset, Dataset],
    teacher: nn.Module,
    arm: str,
    scale: int,
    seed: int,
    fresh: bool = False,
    test_split: str = "test",
) -> dict:
    """:func:`run_arm`, read back from ``work_dir/runs`` when it already ran (unless ``fresh``).

    ``test_split`` names the split of ``data``'s test images, part of the key with the
    settings and :func:`code_version`.
    """
    key = fingerprint(spec.key, scale, asdict(ARMS[arm]), seed, asdict(budget), code_version())
    split = "" if test_split == "test" else f"-{test_split}"
    path = work_dir / "runs" / f"{spec.name}-x{scale}-{arm}-s{seed}{split}-{key}.json"
    if path.is_file() and not fresh:
        return json.loads(path.read_text())
    record = run_arm(spec, data, teacher, arm, scale, seed, budget)
    _write_json(path, record)
    return record
