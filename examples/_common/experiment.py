"""The comparison both examples run: teacher, bicubic students (plain, + KD), learned student."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from examples._common.models import DensePredictionNet
from examples._common.reporting import parse_args, report
from examples._common.training import (
    OptimConfig,
    Split,
    TaskLoss,
    predict,
    train_distilled_student,
    train_supervised,
)
from learnthumb import ConvDownsampler, InterpolateDownsampler


@dataclass
class Task:
    """What differs between the examples.

    Attributes:
        num_outputs: channels of the dense prediction (classes or keypoints).
        loss: ``loss(predictions, targets)``; predictions at the model's output resolution.
        metric: ``metric(predictions, targets)`` -> ordered dict of scores at the ORIGINAL
            resolution; the first entry is the headline metric (mIoU, PCK@0.05).
    """

    num_outputs: int
    loss: TaskLoss
    metric: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]


@dataclass
class Trained:
    """A trained model, the downsampler in front of it, and its scores."""

    name: str
    model: nn.Module
    downsampler: nn.Module
    scores: dict[str, float]
    seconds: float


def compare(
    task: Task,
    train: Split,
    val: Split,
    teacher_config: OptimConfig,
    student_config: OptimConfig,
    scale: int = 4,
    seed: int = 0,
) -> list[Trained]:
    """Train and score, in this order: the teacher; a student on bicubic thumbnails; the same
    with feature distillation from the teacher (a control); a student on learned thumbnails
    (``ConvDownsampler``: moment matching, then task + moment + feature distillation).

    All students start from the same random weights and train the same number of joint
    steps. The learned student also has its stage one (``stage1_steps`` downsampler-only steps,
    which the others do not get) and draws those batches from the same generator, so its joint
    steps see other batches than the bicubic students'.
    """

    def score(name: str, model: nn.Module, downsampler: nn.Module, seconds: float) -> Trained:
        scores = task.metric(predict(model, downsampler, val.images), val.targets)
        headline = next(iter(scores))
        print(f"  {name}: {headline} {scores[headline]:.3f} (trained in {seconds:.0f} s)")
        return Trained(name, model, downsampler, scores, seconds)

    results = []
    print("teacher (full resolution)")
    torch.manual_seed(seed)
    teacher = DensePredictionNet(task.num_outputs)
    seconds = train_supervised(teacher, nn.Identity(), train, task.loss, teacher_config)
    results.append(score("teacher", teacher, nn.Identity(), seconds))

    print(f"student on bicubic {scale}x thumbnails")
    torch.manual_seed(seed + 1)
    student = DensePredictionNet(task.num_outputs)
    bicubic = InterpolateDownsampler(scale, mode="bicubic")
    seconds = train_supervised(student, bicubic, train, task.loss, student_config)
    results.append(score(f"bicubic {scale}x student", student, bicubic, seconds))

    print(f"student on bicubic {scale}x thumbnails + feature distillation (control)")
    torch.manual_seed(seed + 1)
    student = DensePredictionNet(task.num_outputs)
    seconds = train_distilled_student(
        student, bicubic, teacher, teacher.feature_names, train, task.loss, student_config
    )
    results.append(score(f"bicubic {scale}x student + KD", student, bicubic, seconds))

    print(f"student on learned {scale}x thumbnails (moment matching + feature distillation)")
    torch.manual_seed(seed + 1)
    student = DensePredictionNet(task.num_outputs)
    learned = ConvDownsampler(scale)
    seconds = train_distilled_student(
        student, learned, teacher, teacher.feature_names, train, task.loss, student_config
    )
    results.append(score(f"learned {scale}x student", student, learned, seconds))
    return results


def start_timer() -> Callable[[], float]:
    """Seconds since this call."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


@dataclass
class Experiment:
    """The data and schedules both examples use (a toy size with ``--quick``)."""

    size: tuple[int, int]
    train: Split
    val: Split
    teacher_config: OptimConfig
    student_config: OptimConfig


def prepare_experiment(
    args: argparse.Namespace,
    write_dataset: Callable[[Path, dict[str, int], tuple[int, int], int], None],
    load_split: Callable[[Path, str], Split],
    elapsed: Callable[[], float],
) -> Experiment:
    """Generate the example's dataset and pick the schedules from ``args.quick``."""
    quick = args.quick
    size = (32, 32) if quick else (64, 64)
    splits = {"train": 32, "val": 16} if quick else {"train": 600, "val": 150}
    steps = 3 if quick else 800
    teacher_config = OptimConfig(steps=steps, batch_size=16, lr=1e-2, seed=args.seed)
    student_config = OptimConfig(
        steps=steps,
        batch_size=16,
        lr=1e-2,
        stage1_steps=2 if quick else 100,
        seed=args.seed,
    )
    data = args.output / "data"
    write_dataset(data, splits, size, seed=args.seed)
    train, val = load_split(data, "train"), load_split(data, "val")
    print(f"data: {len(train)} train / {len(val)} val images of {size} ({elapsed():.0f} s)")
    return Experiment(size, train, val, teacher_config, student_config)


@dataclass
class Comparison:
    """A finished run of an example: its command line, data and the four trained models.

    Attributes:
        args: the parsed command line.
        experiment: the data and schedules.
        results: ``[teacher, bicubic student, bicubic student + KD, learned student]``.
        elapsed: wall seconds since the start of the run.
        shown: the validation images of the figure, (R, 3, H, W).
    """

    args: argparse.Namespace
    experiment: Experiment
    results: list[Trained]
    elapsed: Callable[[], float]
    shown: torch.Tensor

    @property
    def shown_targets(self) -> torch.Tensor:
        """The targets of the figure's images."""
        return self.experiment.val.targets[: len(self.shown)]

    def predictions(self) -> list[torch.Tensor]:
        """Each model's predictions on the figure's images, in the order of ``results``."""
        return [predict(result.model, result.downsampler, self.shown) for result in self.results]

    def report(
        self,
        columns: Sequence[Sequence[np.ndarray]],
        points: Sequence[Sequence[np.ndarray | None]] | None = None,
    ) -> dict:
        """Print the table, write ``results.json`` and ``figure.png`` (see ``reporting.report``).

        Args:
            columns: the figure's columns after the thumbnails: the ground truth, then one per
                model; ``columns[c][r]`` is an (H, W, 3) array.
            points: optional keypoints per column and row, ``points[c][r]`` (K, 2).
        """
        size, results = self.experiment.size, self.results
        headline = next(iter(results[0].scores))
        return report(
            self.args,
            results,
            self.shown,
            columns,
            ["ground truth", *[result.name for result in results]],
            self.elapsed,
            f"{headline} at the original resolution {size[0]}x{size[1]}, "
            f"{len(self.experiment.val)} val images",
            points=points,
        )


def run_comparison(
    description: str,
    default_output: str,
    write_dataset: Callable[[Path, dict[str, int], tuple[int, int], int], None],
    load_split: Callable[[Path, str], Split],
    make_task: Callable[[tuple[int, int]], Task],
    figure_rows: int = 4,
) -> Comparison:
    """An example's run up to its figure: command line, data, and :func:`compare`.

    Args:
        description: the command line's description.
        default_output: the run folder when ``--output`` is not given.
        write_dataset: the example's ``write_dataset(root, splits, size, seed)``.
        load_split: the example's ``load_split(root, split)``.
        make_task: the example's :class:`Task` for the image size ``(H, W)``.
        figure_rows: validation images shown in the figure.
    """
    args = parse_args(description, default_output)
    elapsed = start_timer()
    experiment = prepare_experiment(args, write_dataset, load_split, elapsed)
    results = compare(
        make_task(experiment.size),
        experiment.train,
        experiment.val,
        experiment.teacher_config,
        experiment.student_config,
        seed=args.seed,
    )
    return Comparison(args, experiment, results, elapsed, experiment.val.images[:figure_rows])
