"""Question 3: what does distillation cost? Images/s of one training step per training mode.

Each step is what ``thumbdet.training.engine.train_one_epoch`` does per batch (forward, Hungarian
criterion, weighted sum, ``zero_grad``, backward, gradient clipping at 0.1, AdamW step) on a
fixed random batch with random targets:

- ``teacher``: Deformable DETR on the full-size images;
- ``bicubic-4x``: the same detector behind a fixed bicubic 4x downsampler;
- ``thumbdet-4x``: the stage-two step of ThumbDet (``learnthumb.ThumbnailDistillation`` as
  ``thumbdet.training`` builds it: frozen teacher forward + learned downsampler + student + moment,
  feature and logit losses with the Query Filter);
- ``thumbdet-4x-no-query-filter``: the same, distilling every query
  (``ThumbnailDistillation(query_filter=False)``; the results recorded before that option
  existed used a threshold of 1e-6, which also keeps every query);
- ``teacher-forward``: the frozen teacher's forward alone (``no_grad``, eval).

The teacher of the distillation steps has random weights with its class bias shifted so that
about half of its queries pass the 0.5 filter, like a trained teacher's confident ones (the
kept fraction is recorded). Steps are timed round-robin, so their ratios are fair.
Target (recorded, never asserted): stage-two step <= 1.5 x (teacher forward + bicubic step).

    python -m benchmarks.bench_training [--quick] [--presets tiny paper_r50]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks._harness import (
    benchmark_main,
    benchmark_parser,
    run_presets,
    time_interleaved,
)

NAME = "training"
PRESETS = ("tiny", "paper_r50")
SCALE = 4
# preset, quick -> input size, batch, warm-up rounds, timed rounds, budget (s). The paper
# preset trains at 800x1333 on GPUs; on 2 CPU cores a reduced input keeps one step in seconds.
SETTINGS = {
    ("tiny", False): ((128, 128), 2, 2, 10, 120.0),
    ("tiny", True): ((128, 128), 2, 1, 3, 20.0),
    ("paper_r50", False): ((320, 544), 1, 1, 3, 90.0),
    ("paper_r50", True): ((192, 320), 1, 1, 1, 60.0),
}


def _random_targets(batch: int, num_classes: int, generator: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch):
        count = 4
        centres = 0.2 + 0.6 * torch.rand(count, 2, generator=generator)
        sizes = 0.05 + 0.25 * torch.rand(count, 2, generator=generator)
        boxes = torch.cat([centres, sizes], dim=1)  # (T, 4) normalised cx, cy, w, h
        labels = torch.randint(0, num_classes, (count,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def _optimizer_step(
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    outputs: dict[str, Any],
    targets: list[dict],
    extra_losses: dict[str, torch.Tensor],
) -> None:
    """The part of ``train_one_epoch`` after the forward: losses, backward, clip, step."""
    from thumbdet.training.criterion import weighted_loss

    total = weighted_loss(criterion(outputs, targets), criterion.weight_dict)
    total = total + sum(extra_losses.values(), torch.zeros((), device=total.device))
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_([p for p in trainable if p.grad is not None], 0.1)
    optimizer.step()


@torch.no_grad()
def _calibrate_class_bias(teacher: nn.Module, images: torch.Tensor, padding_mask: torch.Tensor):
    """Shift the class bias so that the median query's top logit is 0: about half of the
    queries then pass the Query Filter's 0.5 threshold, like a trained teacher's confident
    ones (a random teacher keeps none at the 0.01 prior, or all with a zero bias)."""
    head = teacher.class_embed[-1]  # shared by every decoder layer without box refinement
    head.bias.zero_()
    top_logits = teacher(images, padding_mask)["pred_logits"].amax(dim=-1)  # (B, Q)
    head.bias.fill_(-float(top_logits.median()))


def build_steps(
    preset: str, size: tuple[int, int], batch: int, device: torch.device
) -> tuple[dict[str, Any], dict]:
    """The zero-argument training steps of every mode, and facts about the batch."""
    from learnthumb import (
        DistillWeights,
        InterpolateDownsampler,
        LogitDistillationLoss,
        QueryFilter,
        ThumbnailDistillation,
        TwoStageSchedule,
        create_downsampler,
        query_filter,
    )
    from thumbdet.models import build_model
    from thumbdet.models.thumbnail_detector import ThumbnailDetector
    from thumbdet.training.criterion import build_criterion
    from thumbdet.training.groups import OptimSettings

    optim = OptimSettings()  # thumbdet train's defaults
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, *size, generator=generator).to(device)
    padding_mask = torch.zeros(batch, *size, dtype=torch.bool, device=device)
    teacher_for_distillation = build_model(preset).to(device).eval().requires_grad_(False)
    _calibrate_class_bias(teacher_for_distillation, images, padding_mask)
    config = teacher_for_distillation.config
    targets = [
        {key: value.to(device) for key, value in target.items()}
        for target in _random_targets(batch, config.num_classes, generator)
    ]
    criterion = build_criterion(config)

    def plain_step(model: nn.Module, detector: nn.Module) -> Any:
        groups = detector.param_groups(optim.lr, optim.lr_backbone)
        optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
        model.train()

        def step() -> None:
            _optimizer_step(criterion, optimizer, model(images, padding_mask), targets, {})

        return step

    def distillation_step(use_query_filter: bool) -> Any:
        downsampler = create_downsampler("thumbdet", scale=SCALE).to(device)
        student = build_model(preset).to(device)
        # Deformable DETR classifies with a sigmoid focal loss: the filter and the loss agree.
        filter_ = QueryFilter(activation="sigmoid") if use_query_filter else False
        distillation = ThumbnailDistillation(
            downsampler,
            teacher_for_distillation,
            student,
            features="backbone_features",
            logits="pred_logits",
            weights=DistillWeights(),
            schedule=TwoStageSchedule(0),  # always stage two
            logit_loss=LogitDistillationLoss(activation="sigmoid"),
            query_filter=filter_,
            mask_argument="padding_mask",
        )
        groups = student.param_groups(optim.lr, optim.lr_backbone)
        groups.append({"params": list(downsampler.parameters()), "lr": optim.lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
        distillation.train()

        def step() -> None:
            _, outputs, losses = distillation(images, padding_mask=padding_mask, epoch=0)
            _optimizer_step(criterion, optimizer, outputs, targets, dict(losses))

        return step

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher_for_distillation(images, padding_mask)

    teacher = build_model(preset).to(device)
    bicubic_detector = build_model(preset).to(device)
    bicubic = ThumbnailDetector(bicubic_detector, InterpolateDownsampler(SCALE)).to(device)
    steps = {
        "teacher": plain_step(teacher, teacher),
        "bicubic-4x": plain_step(bicubic, bicubic_detector),
        "thumbdet-4x": distillation_step(True),
        "thumbdet-4x-no-query-filter": distillation_step(False),
        "teacher-forward": teacher_forward,
    }
    with torch.no_grad():
        logits = teacher_for_distillation(images, padding_mask)["pred_logits"]
        kept = float(query_filter(logits, 0.5, "sigmoid").float().mean())
    facts = {"query_filter_kept_fraction": kept, "num_queries": config.num_queries}
    return steps, facts


def benchmark_preset(preset: str, quick: bool, device: torch.device) -> dict[str, Any]:
    size, batch, warmup, repeats, budget = SETTINGS[(preset, quick)]
    steps, facts = build_steps(preset, size, batch, device)
    timings = time_interleaved(
        steps, warmup=warmup, repeats=repeats, device=device, max_seconds=budget
    )
    rows = {
        name: {
            "step_ms": timing.median_s * 1e3,
            "iqr_ms": timing.iqr_s * 1e3,
            "images_per_s": timing.per_second(batch),
            "timing": timing.to_dict(),
        }
        for name, timing in timings.items()
    }
    reference = timings["teacher-forward"].median_s + timings["bicubic-4x"].median_s
    targets = {}
    for name in ("thumbdet-4x", "thumbdet-4x-no-query-filter"):
        ratio = timings[name].median_s / reference
        rows[name]["ratio_to_teacher_forward_plus_bicubic_step"] = ratio
        targets[f"{name}_vs_teacher_forward_plus_bicubic_step"] = {
            "measured": ratio,
            "target": "<= 1.5",
            "met": ratio <= 1.5,
        }
    return {
        "preset": preset,
        "input_size": list(size),
        "batch": batch,
        "scale": SCALE,
        **facts,
        "rows": rows,
        "targets": targets,
    }


def run(
    *,
    quick: bool = False,
    presets: tuple[str, ...] = PRESETS,
    device: str = "cpu",
    output_dir: Path | str | None = None,
) -> Path:
    """Run the training-step benchmark and write ``training.json``; returns its path."""
    method = (
        "median (IQR) of one optimiser step per mode on a fixed random batch, modes timed "
        "round-robin after warm-up; float32; random weights and targets"
    )
    return run_presets(
        NAME,
        lambda preset, torch_device: benchmark_preset(preset, quick, torch_device),
        method,
        quick=quick,
        presets=presets,
        device=device,
        output_dir=output_dir,
    )


def main(argv: list[str] | None = None) -> None:
    benchmark_main(run, benchmark_parser(__doc__.splitlines()[0], PRESETS), argv)


if __name__ == "__main__":
    main()
