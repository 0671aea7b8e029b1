"""Generated segmentation data: shapes with thin parts on textured backgrounds, masks as PNG.

Classes: 0 background, 1 disc, 2 flat box, 3 checkered box. Every object has one or two thin
"antennae" (1-2 px strokes) that belong to its mask. Discs are painted flat or with a 1-pixel
checkerboard at random; boxes are told apart *only* by that paint (same colour distribution,
same mean), which a 4x anti-aliased bicubic thumbnail averages away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from examples._common import drawing
from examples._common.datasets import load_images, write_generated_dataset
from examples._common.training import Split

CLASSES = ("background", "disc", "flat box", "checkered box")


def draw_sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) float in [0, 1] and its label map (H, W) uint8."""
    height, width = size
    image = drawing.textured_background(rng, size)
    labels = np.zeros(size, dtype=np.uint8)
    for _ in range(rng.integers(2, 5)):
        label = int(rng.integers(1, len(CLASSES)))
        center = (rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height)
        extent = rng.uniform(0.06, 0.11) * min(size)
        if label == 1:
            body = drawing.disc_mask(size, center, extent)
        else:
            corners = drawing.rotated_box(
                center, extent, extent * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
            )
            body = drawing.polygon_mask(size, corners)
        antennae = []
        for angle in rng.uniform(0, 2 * np.pi, rng.integers(1, 3)):
            length = extent + rng.uniform(0.08, 0.16) * min(size)
            tip = (center[0] + length * np.cos(angle), center[1] + length * np.sin(angle))
            antennae.append((center, tip))
        mask = body | drawing.segments_mask(size, antennae, width=int(rng.integers(1, 3)))
        checkered = label == 3 or (label == 1 and rng.random() < 0.5)
        contrast = rng.uniform(0.2, 0.3) if checkered else 0.0
        drawing.paint(image, mask, drawing.random_color(rng), contrast)
        labels[mask] = label
    return image, labels


def _save_masks(folder: Path, masks: dict[str, np.ndarray]) -> None:
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for name, labels in masks.items():
        drawing.save_png(labels, folder / "masks" / name)


def write_dataset(root: Path, splits: dict[str, int], size: tuple[int, int], seed: int) -> None:
    """Write ``root/<split>/{images,masks}/NNNN.png``; reuse a folder written with the same spec."""
    spec = {"splits": splits, "size": list(size), "seed": seed, "classes": list(CLASSES)}
    write_generated_dataset(root, spec, draw_sample, _save_masks)


def load_split(root: Path, split: str) -> Split:
    """Images (N, 3, H, W) float in [0, 1] and masks (N, H, W) int64 from the PNG files."""
    image_paths = sorted((root / split / "images").glob("*.png"))
    masks = np.stack([drawing.load_png(root / split / "masks" / p.name) for p in image_paths])
    return Split(
        images=load_images(image_paths),
        targets=torch.from_numpy(masks).long(),  # (N, H, W)
    )
