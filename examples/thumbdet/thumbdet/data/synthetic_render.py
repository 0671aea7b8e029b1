"""Drawing one image of the generated dataset: :func:`render_image`.

Owns the pixels and their objects: the smooth background, the object sizes drawn from the COCO
area ranges, the silhouettes (rectangle or ellipse) and their polygons, the colours and the
1-px textures that are the classes (:data:`TEXTURES`). Each image has its own random stream,
seeded by ``(seed, split, index)``. Any change to what is drawn must bump
:data:`GENERATOR_VERSION`, so that cached datasets are regenerated. The spec, the cache and the
files on disk are :mod:`thumbdet.data.synthetic`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from thumbdet.data.synthetic import SyntheticSpec

__all__ = ["GENERATOR_VERSION", "TEXTURES", "render_image"]

# Bump when the drawing code changes, so that stale caches are regenerated.
GENERATOR_VERSION = 1

TEXTURES = ("solid", "hstripes", "vstripes", "checker")
"""The texture names a spec may use as classes, in category-id order by default."""

# COCO's area thresholds (pixels at full size): small < 32², large > 96².
_SMALL_MAX_SIDE = 32
_LARGE_MIN_SIDE = 96


def _smooth_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-frequency colour field: a coarse random grid upsampled bilinearly."""
    grid = 4
    base = rng.uniform(0.35, 0.65)
    coarse = base + rng.uniform(-0.12, 0.12, size=(grid, grid, 3))  # (g, g, 3)
    positions = np.linspace(0, grid - 1, size)
    weights = np.maximum(0.0, 1.0 - np.abs(positions[:, None] - np.arange(grid)[None, :]))
    # weights: (size, g) bilinear interpolation matrix, applied along rows and columns.
    field = np.einsum("yg,ghc,xh->yxc", weights, coarse, weights)  # (size, size, 3)
    field += rng.normal(0.0, 0.01, size=field.shape)
    return field


def _random_colour(
    rng: np.random.Generator, background_mean: float, amplitude: float
) -> np.ndarray:
    """A saturated colour whose brightness stands out from the background."""
    low, high = amplitude + 0.02, 1.0 - amplitude - 0.02
    for _ in range(100):
        colour = rng.uniform(low, high, size=3)
        if np.ptp(colour) > 0.25 and abs(colour.mean() - background_mean) > 0.08:
            return colour
    return colour


def _object_size(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[int, int]:
    """Box (height, width) whose area falls in a COCO size range drawn from ``size_mix``."""
    limit = spec.image_size - 4
    ranges = [(10, _SMALL_MAX_SIDE - 1), (_SMALL_MAX_SIDE + 2, _LARGE_MIN_SIDE - 2)]
    ranges.append((_LARGE_MIN_SIDE + 4, min(limit, 128)))
    weights = np.array(spec.size_mix, dtype=float)
    if ranges[2][0] > ranges[2][1]:  # images too small for a COCO-large object
        weights[2] = 0.0
    medium_high = min(ranges[1][1], limit)
    ranges[1] = (ranges[1][0], medium_high)
    category = rng.choice(3, p=weights / weights.sum())
    low, high = ranges[category]
    side = rng.uniform(low, high)
    aspect = rng.uniform(0.75, 1.33)
    height = int(np.clip(round(side * np.sqrt(aspect)), 6, limit))
    width = int(np.clip(round(side / np.sqrt(aspect)), 6, limit))
    return height, width


def _texture(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean ±1 pattern of period 2 px (or zeros for ``solid``), random phase."""
    rows = np.arange(height)[:, None] + rng.integers(2)
    cols = np.arange(width)[None, :] + rng.integers(2)
    if name == "solid":
        return np.zeros((height, width))
    if name == "hstripes":
        pattern = rows % 2 + 0 * cols
    elif name == "vstripes":
        pattern = cols % 2 + 0 * rows
    else:  # checker
        pattern = (rows + cols) % 2
    return 2.0 * pattern - 1.0  # (height, width) in {-1, +1}


def _silhouette(shape: str, height: int, width: int) -> np.ndarray:
    """Boolean mask of a rectangle or an ellipse filling a (height, width) box."""
    if shape == "rectangle":
        return np.ones((height, width), dtype=bool)
    rows = (np.arange(height)[:, None] + 0.5 - height / 2) / (height / 2)
    cols = (np.arange(width)[None, :] + 0.5 - width / 2) / (width / 2)
    return rows**2 + cols**2 <= 1.0


def _polygon(shape: str, x: int, y: int, width: int, height: int) -> list[float]:
    if shape == "rectangle":
        return [x, y, x + width, y, x + width, y + height, x, y + height]
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    xs = x + width / 2 + np.cos(angles) * width / 2
    ys = y + height / 2 + np.sin(angles) * height / 2
    return [round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]


def render_image(spec: SyntheticSpec, split: str, index: int) -> tuple[np.ndarray, list[dict]]:
    """Draw one image of the dataset.

    Args:
        spec: what to generate.
        split: ``"train"`` or ``"val"`` (each has its own random streams).
        index: the image number within the split.

    Returns:
        ``(image, objects)``: a ``(S, S, 3)`` uint8 array and a list of dicts with
        ``category_id`` (1-based), ``bbox`` (x, y, w, h in pixels), ``area`` (mask pixels),
        ``segmentation`` (one polygon) and ``texture``.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, index])
    size = spec.image_size
    image = _smooth_background(rng, size)
    occupied = np.zeros((size, size), dtype=bool)
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        height, width = _object_size(rng, spec)
        for _attempt in range(20):
            y = int(rng.integers(0, size - height + 1))
            x = int(rng.integers(0, size - width + 1))
            # keep a 2-px gap so objects never touch and boxes stay exact
            window = occupied[max(0, y - 2) : y + height + 2, max(0, x - 2) : x + width + 2]
            if not window.any():
                break
        else:
            continue
        texture_id = int(rng.integers(len(spec.textures)))
        shape = "rectangle" if rng.random() < 0.5 else "ellipse"
        mask = _silhouette(shape, height, width)
        amplitude = spec.texture_amplitude
        background_mean = float(image[y : y + height, x : x + width].mean())
        colour = _random_colour(rng, background_mean, amplitude)
        pattern = _texture(spec.textures[texture_id], height, width, rng)
        patch = colour[None, None, :] + amplitude * pattern[:, :, None]  # (h, w, 3)
        region = image[y : y + height, x : x + width]
        region[mask] = patch[mask]
        occupied[y : y + height, x : x + width] |= mask
        objects.append(
            {
                "category_id": texture_id + 1,
                "bbox": [x, y, width, height],
                "area": int(mask.sum()),
                "segmentation": [_polygon(shape, x, y, width, height)],
                "texture": spec.textures[texture_id],
            }
        )
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return pixels, objects
