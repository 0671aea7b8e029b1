"""Training loops shared by the examples: teacher, fixed-thumbnail student, learned student.

The teacher and the bicubic student go through ``learnthumb.Thumbnailed(model, downsampler)``
(the teacher with an identity "downsampler"); the distilled students through
``learnthumb.ThumbnailDistillation``, the learned one (``ConvDownsampler``) in two stages
(Algorithm 2 of ThumbDet): moment matching alone first, then the task loss + moment matching +
feature distillation from the frozen teacher.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from learnthumb import (
    DistillWeights,
    FeatureDistillationLoss,
    MomentMatchingLoss,
    Safeguards,
    ThumbnailDistillation,
    Thumbnailed,
    TwoStageSchedule,
)

TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class OptimConfig:
    """Optimisation settings of one model (the learned student also uses the distillation ones)."""

    steps: int = 600
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    stage1_steps: int = 100  # moment matching only, downsampler only (stage one)
    downsampler_lr: float = 3e-3
    moment_weight: float = 1.0  # gamma of the paper
    feature_weight: float = 1.0  # beta of the paper
    lam: float = 0.1  # lambda of Eq. (5)
    seed: int = 0


@dataclass
class Split:
    """Images ``(N, 3, H, W)`` in [0, 1] and task targets ``(N, ...)`` held in memory."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def _batches(num_items: int, batch_size: int, steps: int, generator: torch.Generator):
    """Indices of ``steps`` mini-batches, reshuffled at every pass over the data."""
    order = torch.randperm(num_items, generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > num_items:
            order, position = torch.randperm(num_items, generator=generator), 0
        yield order[position : position + batch_size]
        position += batch_size


def _optimizer(groups: list[dict], weight_decay: float, steps: int):
    """AdamW with a one-cycle schedule peaking at each group's ``lr``."""
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    peaks = [group["lr"] for group in groups]
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peaks, total_steps=max(steps, 1)
    )
    return optimizer, schedule


def train_supervised(
    model: nn.Module,
    downsampler: nn.Module,
    data: Split,
    task_loss: TaskLoss,
    config: OptimConfig,
    log: Callable[[str], None] = print,
) -> float:
    """Train ``model`` on ``downsampler(images)`` with the task loss only; returns seconds.

    The downsampler is fixed (identity for the teacher, bicubic for the baseline student).
    """
    start = time.perf_counter()
    net = Thumbnailed(model, downsampler).train()
    optimizer, schedule = _optimizer(
        [{"params": model.parameters(), "lr": config.lr}], config.weight_decay, config.steps
    )
    generator = torch.Generator().manual_seed(config.seed)
    for step, index in enumerate(_batches(len(data), config.batch_size, config.steps, generator)):
        loss = task_loss(net(data.images[index]), data.targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(config.steps // 5, 1) == 0 or step == config.steps - 1:
            log(f"    step {step:4d}/{config.steps}  task loss {loss.item():.4f}")
    return time.perf_counter() - start


def train_distilled_student(
    model: nn.Module,
    downsampler: nn.Module,
    teacher: nn.Module,
    feature_names: Sequence[str],
    data: Split,
    task_loss: TaskLoss,
    config: OptimConfig,
    log: Callable[[str], None] = print,
) -> float:
    """ThumbDet training of a student (and its downsampler, if learnable); returns seconds.

    The losses come from :class:`learnthumb.ThumbnailDistillation` with a step schedule. A
    learnable downsampler goes through two stages (Algorithm 2): first alone, on
    ``gamma * moment`` (Eq. (5)), with its own optimiser and one-cycle schedule over
    ``stage1_steps``; then with the student on ``task + gamma * moment + beta * feature``, where
    the feature loss (Eq. (8)) compares the student's backbone stages, upsampled, with the
    frozen teacher's. A fixed downsampler (bicubic) skips stage one and the moment term: the
    student then gets feature distillation only, the control that separates the effect of the
    learned thumbnail from that of distillation. The log shows the weighted terms.
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    learnable = any(p.requires_grad for p in downsampler.parameters())
    stage1_steps = config.stage1_steps if learnable else 0  # a fixed downsampler: stage two only
    distill = ThumbnailDistillation(
        downsampler,
        teacher,
        model,
        feature_layers=feature_names,
        weights=DistillWeights(
            moment=config.moment_weight if learnable else 0.0,
            logit=0.0,
            feature=config.feature_weight,
        ),
        # A step schedule: stage one is the first ``stage1_steps`` steps, then ``steps`` more.
        schedule=TwoStageSchedule(stage1_steps=stage1_steps),
        moment_loss=MomentMatchingLoss(lam=config.lam),
        feature_loss=FeatureDistillationLoss(align="bilinear"),
        safeguards=Safeguards(min_stage1_steps=0),
    ).train()
    try:
        if learnable:
            optimizer, schedule = _optimizer(
                [{"params": downsampler.parameters(), "lr": config.downsampler_lr}],
                0.0,
                config.stage1_steps,
            )
            for step, index in enumerate(
                _batches(len(data), config.batch_size, config.stage1_steps, generator)
            ):
                loss = distill(data.images[index], step=step).losses["moment"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if step == config.stage1_steps - 1:
                    log(f"    stage 1 step {step:4d}  moment loss {loss.item():.5f}")

        groups = [{"params": model.parameters(), "lr": config.lr}]
        if learnable:
            groups.append({"params": downsampler.parameters(), "lr": config.downsampler_lr})
        optimizer, schedule = _optimizer(groups, config.weight_decay, config.steps)
        zero = torch.zeros(())
        for step, index in enumerate(
            _batches(len(data), config.batch_size, config.steps, generator)
        ):
            images, targets = data.images[index], data.targets[index]
            _, output, losses = distill(images, step=stage1_steps + step)
            task = task_loss(output, targets)
            loss = task
            for name in ("moment", "feature"):  # (task + moment) + feature: a fixed order
                if name in losses:
                    loss = loss + losses[name]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % max(config.steps // 5, 1) == 0 or step == config.steps - 1:
                moment, feature = (losses.get(name, zero) for name in ("moment", "feature"))
                log(
                    f"    step {step:4d}/{config.steps}  task {task.item():.4f}  "
                    f"moment {moment.item():.5f}  feature {feature.item():.4f}"
                )
    finally:
        distill.remove_taps()  # the teacher serves other students after this one
    return time.perf_counter() - start


@torch.no_grad()
def predict(model: nn.Module, downsampler: nn.Module, images: torch.Tensor, batch_size: int = 32):
    """Model outputs on ``downsampler(images)`` (at the model's own output resolution)."""
    net = Thumbnailed(model, downsampler).eval()
    return torch.cat([net(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
