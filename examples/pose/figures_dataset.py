"""Generated pose data: articulated stick figures with six landmarks on textured backgrounds.

Every image holds two stick figures with thin (2 px) limbs: the *target*, painted with a
1-pixel checkerboard, and a *distractor* of the same shape distribution painted flat with a
colour of the same distribution. The keypoints to predict are the target's: head, pelvis,
left hand, right hand, left foot, right foot ("left" = smaller x in the image). An
anti-aliased 4x bicubic thumbnail averages the checkerboard away, so on it the two figures
look alike. Images are PNG files; keypoints (x, y) in pixels go to ``keypoints.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from examples._common import drawing
from examples._common.datasets import load_images, write_generated_dataset
from examples._common.training import Split

KEYPOINTS = ("head", "pelvis", "left hand", "right hand", "left foot", "right foot")


def _figure(
    rng: np.random.Generator, size: tuple[int, int], center_x: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mask (H, W) of one stick figure and its keypoints (6, 2) as (x, y) pixels."""
    height = size[0]
    figure_height = rng.uniform(0.5, 0.7) * height
    pelvis = np.array([center_x, rng.uniform(0.5, 0.6) * height])
    lean = rng.uniform(-0.3, 0.3)
    up = np.array([np.sin(lean), -np.cos(lean)])  # unit vector from pelvis to neck
    neck = pelvis + 0.32 * figure_height * up
    head = neck + 0.12 * figure_height * up
    limbs, hands, feet = [(pelvis, neck)], [], []
    for _ in range(2):
        angle = np.pi / 2 + rng.uniform(-1.8, 1.8)  # screen coordinates: pi / 2 points down
        hands.append(neck + 0.28 * figure_height * np.array([np.cos(angle), np.sin(angle)]))
        limbs.append((neck, hands[-1]))
    for side in (-1, 1):
        angle = np.pi / 2 + side * rng.uniform(0.15, 0.7)
        feet.append(pelvis + 0.42 * figure_height * np.array([np.cos(angle), np.sin(angle)]))
        limbs.append((pelvis, feet[-1]))
    mask = drawing.segments_mask(size, [(tuple(a), tuple(b)) for a, b in limbs], width=2)
    mask |= drawing.disc_mask(size, tuple(head), 0.07 * figure_height)
    hands.sort(key=lambda point: point[0])
    feet.sort(key=lambda point: point[0])
    keypoints = np.stack([head, pelvis, *hands, *feet]).astype(np.float32)  # (6, 2)
    return mask, keypoints


def draw_sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) float in [0, 1] and the target's keypoints (6, 2)."""
    width = size[1]
    image = drawing.textured_background(rng, size)
    target_left = rng.random() < 0.5
    centers = [rng.uniform(0.25, 0.35) * width, rng.uniform(0.65, 0.75) * width]
    target_x, distractor_x = centers if target_left else centers[::-1]
    distractor_mask, _ = _figure(rng, size, distractor_x)
    target_mask, keypoints = _figure(rng, size, target_x)
    drawing.paint(image, distractor_mask, drawing.random_color(rng))
    drawing.paint(image, target_mask, drawing.random_color(rng), rng.uniform(0.2, 0.3))
    return image, keypoints


def _save_keypoints(folder: Path, keypoints: dict[str, np.ndarray]) -> None:
    annotations = {name: points.round(3).tolist() for name, points in keypoints.items()}
    (folder / "keypoints.json").write_text(json.dumps(annotations))


def write_dataset(root: Path, splits: dict[str, int], size: tuple[int, int], seed: int) -> None:
    """Write ``root/<split>/images/NNNN.png`` and ``root/<split>/keypoints.json``."""
    spec = {"splits": splits, "size": list(size), "seed": seed, "keypoints": list(KEYPOINTS)}
    write_generated_dataset(root, spec, draw_sample, _save_keypoints)


def load_split(root: Path, split: str) -> Split:
    """Images (N, 3, H, W) float in [0, 1] and keypoints (N, 6, 2) float (x, y) pixels."""
    annotations = json.loads((root / split / "keypoints.json").read_text())
    names = sorted(annotations)
    return Split(
        images=load_images([root / split / "images" / name for name in names]),
        targets=torch.tensor([annotations[name] for name in names], dtype=torch.float32),
    )
