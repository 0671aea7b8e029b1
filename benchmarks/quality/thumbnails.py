"""A figure of the thumbnails every downsampler family makes of the same test images.

Each learned family is trained exactly as in the quality suite (one seed, the suite's budget,
from the task's teacher in ``--work-dir``), then shown on the first test images next to the
original. A wide thumbnail's learned channels are shown as a false-colour image of their first
three principal components (its first three channels are the bicubic thumbnail itself).

Usage (from the repository root)::

    python -m benchmarks.quality.thumbnails [--task detect] [--arms ...] [--images 3]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks._harness import REPO_ROOT
from benchmarks.quality.arms import ARMS
from benchmarks.quality.runner import Budget, _task_data, train_arm, train_teacher
from benchmarks.quality.tasks import TASKS

DEFAULT_ARMS = (
    "bicubic",
    "thumbdet",
    "residual",
    "learned_resizer",
    "space_to_depth",
    "saliency_sampler",
    "wide",
)


def _false_colour(channels: torch.Tensor) -> torch.Tensor:
    """``(C, h, w)`` -> ``(3, h, w)`` in [0, 1]: the first three principal components."""
    flat = channels.flatten(1).T  # (h*w, C)
    flat = flat - flat.mean(dim=0)
    _, _, basis = torch.linalg.svd(flat, full_matrices=False)
    components = (flat @ basis[:3].T).T.reshape(3, *channels.shape[1:])
    low = components.amin(dim=(1, 2), keepdim=True)
    high = components.amax(dim=(1, 2), keepdim=True)
    return (components - low) / (high - low).clamp_min(1e-8)


@torch.no_grad()
def thumbnails(task: str, arms: list[str], count: int, seed: int, work_dir: Path) -> dict:
    """Column name -> ``(count, 3, h, w)`` images in [0, 1], the original first."""
    spec, data = _task_data(task)
    budget = Budget()
    teacher, _ = train_teacher(spec, data, budget, work_dir / "teachers")
    images = data[1].images[:count]
    columns = {"original": images}
    for arm in arms:
        print(f"training {arm} ({task}, seed {seed})", flush=True)
        with torch.enable_grad():
            _, down, _, _ = train_arm(spec, data, teacher, arm, 4, seed, budget)
        out = down.eval()(images)
        columns[arm] = out[:, :3].clamp(0, 1)
        if out.shape[1] > 3:
            columns[f"{arm} (learned channels)"] = torch.stack(
                [_false_colour(item[3:]) for item in out]
            )
    return columns


def save_figure(columns: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    rows = columns["original"].shape[0]
    figure, axes = plt.subplots(rows, len(names), figsize=(1.6 * len(names), 1.7 * rows))
    axes = axes.reshape(rows, len(names))
    for column, name in enumerate(names):
        for row in range(rows):
            axis = axes[row, column]
            axis.imshow(columns[name][row].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name.replace(" (", "\n("), fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.thumbnails")
    parser.add_argument("--task", choices=sorted(TASKS), default="detect")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(DEFAULT_ARMS))
    parser.add_argument("--images", type=int, default=3, help="test images shown (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/quality"))
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "docs" / "images" / "downsamplers.png"
    )
    args = parser.parse_args(argv)
    if args.images < 1 or args.seed < 0:
        parser.error(f"--images must be >= 1 and --seed >= 0, got {args.images}, {args.seed}")
    torch.set_num_threads(1)
    columns = thumbnails(args.task, args.arms, args.images, args.seed, args.work_dir)
    save_figure(columns, args.output)
    print(f"wrote {args.output} (budget {asdict(Budget())})")
    return args.output


if __name__ == "__main__":
    main()
