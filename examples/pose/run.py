"""Learned 4x thumbnails for keypoint estimation: teacher vs bicubic student vs learned student.

    python -m examples.pose.run [--output DIR] [--quick]   # from the repository root

Generates stick-figure images (PNG) and keypoints (JSON) under ``DIR/data``, trains a
full-resolution teacher, a student on anti-aliased bicubic 4x thumbnails and a student on
learned 4x thumbnails (ConvDownsampler: moment matching, then task + moment + feature
distillation from the teacher), and scores all three by PCK@0.05 at the ORIGINAL resolution:
heatmaps are upsampled with ``upsample_to``, decoded, and mapped back with
``rescale_keypoints``. Prints a table, writes ``DIR/results.json`` and ``DIR/figure.png``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from examples._common.experiment import Task, run_comparison
from examples.pose.figures_dataset import KEYPOINTS, load_split, write_dataset
from learnthumb import rescale_keypoints, upsample_to

SIGMA = 1.5  # Gaussian radius of a target peak, in heatmap pixels (half the image resolution)


def heatmap_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """Every model is scored on heatmaps at half the original resolution (the teacher's own)."""
    return (image_size[0] + 1) // 2, (image_size[1] + 1) // 2


def target_heatmaps(
    keypoints: torch.Tensor, image_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Gaussian peaks (B, K, h, w) at ``keypoints`` (B, K, 2), given in image pixels."""
    points = rescale_keypoints(keypoints, image_size, size)  # (B, K, 2) in heatmap pixels
    rows = torch.arange(size[0], dtype=points.dtype) + 0.5  # pixel centres
    cols = torch.arange(size[1], dtype=points.dtype) + 0.5
    dy = (rows[None, None, :] - points[..., 1:2]) ** 2  # (B, K, h)
    dx = (cols[None, None, :] - points[..., 0:1]) ** 2  # (B, K, w)
    return torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * SIGMA**2))  # (B, K, h, w)


def decode(heatmaps: torch.Tensor) -> torch.Tensor:
    """Keypoints (B, K, 2) in heatmap pixels: argmax, refined by a 3x3 weighted mean."""
    batch, num_keypoints, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch * num_keypoints, 1, height, width)  # (BK, 1, h, w)
    index = flat.flatten(1).argmax(1)  # (BK,)
    row, col = (index // width).double(), (index % width).double()
    weights = F.unfold(flat.clamp(min=0), 3, padding=1)  # (BK, 9, h*w)
    weights = weights[torch.arange(len(index)), :, index]  # (BK, 9): the peak's neighbourhood
    offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    weights = weights.double().reshape(-1, 3, 3) + 1e-12  # (BK, 3, 3) as (dy, dx)
    total = weights.sum((1, 2))
    row = row + (weights.sum(2) * offsets).sum(1) / total
    col = col + (weights.sum(1) * offsets).sum(1) / total
    points = torch.stack([col + 0.5, row + 0.5], dim=-1)  # pixel centres, (BK, 2) as (x, y)
    return points.reshape(batch, num_keypoints, 2).float()


def predicted_keypoints(heatmaps: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Keypoints (B, K, 2) in ORIGINAL image pixels from heatmaps of any resolution."""
    size = heatmap_size(image_size)
    return rescale_keypoints(decode(upsample_to(heatmaps, size)), size, image_size)


def make_pose_loss(image_size: tuple[int, int]):
    size = heatmap_size(image_size)

    def pose_loss(heatmaps: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Squared error to Gaussian targets, summed over pixels, averaged over keypoints."""
        error = (upsample_to(heatmaps, size) - target_heatmaps(keypoints, image_size, size)) ** 2
        return error.sum((-2, -1)).mean()

    return pose_loss


def make_pose_scores(image_size: tuple[int, int]):
    def pose_scores(heatmaps: torch.Tensor, keypoints: torch.Tensor) -> dict[str, float]:
        """PCK@0.05 of max(H, W) (first), mean error in pixels, PCK per keypoint."""
        error = (predicted_keypoints(heatmaps, image_size) - keypoints).norm(dim=-1)  # (N, K)
        correct = (error < 0.05 * max(image_size)).float()
        per_keypoint = {
            f"PCK {name}": v for name, v in zip(KEYPOINTS, correct.mean(0).tolist(), strict=True)
        }
        return {
            "PCK@0.05": correct.mean().item(),
            "mean error px": error.mean().item(),
            **per_keypoint,
        }

    return pose_scores


def main() -> None:
    run = run_comparison(
        __doc__.splitlines()[0],
        "runs/pose",
        write_dataset,
        load_split,
        lambda size: Task(len(KEYPOINTS), make_pose_loss(size), make_pose_scores(size)),
    )
    size, shown = run.experiment.size, run.shown
    images = [shown[r].permute(1, 2, 0).numpy() for r in range(len(shown))]  # (H, W, 3)
    columns, points = [images], [list(run.shown_targets.numpy())]
    for heatmaps in run.predictions():
        columns.append(images)
        points.append(list(predicted_keypoints(heatmaps, size).numpy()))
    run.report(columns, points)


if __name__ == "__main__":
    main()
