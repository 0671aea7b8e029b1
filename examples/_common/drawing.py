"""Drawing utilities for the generated datasets: textured backgrounds and fine-textured paint.

Images are float32 numpy arrays ``(H, W, 3)`` in ``[0, 1]``; masks are bool arrays ``(H, W)``
drawn with Pillow. The one idea both datasets share: some objects are painted with a 1-pixel
checkerboard whose *mean* colour is the same as a flat paint's. An anti-aliased 4x bicubic
thumbnail averages that checkerboard away, so the difference between the two paints is gone
before the student network sees it; a learned downsampler (conv + ReLU) can keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]


def textured_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random colour, a few oriented gratings (periods 6-24 px) and mild pixel noise."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.broadcast_to(rng.uniform(0.25, 0.75, 3), (height, width, 3)).astype(np.float32)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6.0, 24.0)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (cols * np.cos(angle) + rows * np.sin(angle)) / period + phase)
        image = image + wave[..., None] * rng.uniform(-0.12, 0.12, 3)  # (H, W, 3)
    image = image + rng.normal(0.0, 0.03, (height, width, 3))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def random_color(rng: np.random.Generator) -> np.ndarray:
    """An RGB colour away from black and white, so a +-contrast checkerboard fits around it."""
    return rng.uniform(0.3, 0.7, 3).astype(np.float32)


def checkerboard(size: tuple[int, int], color: np.ndarray, contrast: float) -> np.ndarray:
    """A 1-pixel checkerboard alternating ``color - contrast`` and ``color + contrast``."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    sign = np.where((rows + cols) % 2 == 0, -1.0, 1.0).astype(np.float32)  # (H, W)
    return np.clip(color[None, None, :] + contrast * sign[..., None], 0.0, 1.0)


def paint(image: np.ndarray, mask: np.ndarray, color: np.ndarray, contrast: float = 0.0) -> None:
    """Paint ``mask`` in place: flat ``color``, or a checkerboard around it if ``contrast``."""
    if contrast > 0:
        image[mask] = checkerboard(mask.shape, color, contrast)[mask]
    else:
        image[mask] = color


def _canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size[1], size[0]), 0)
    return canvas, ImageDraw.Draw(canvas)


def disc_mask(size: tuple[int, int], center: Point, radius: float) -> np.ndarray:
    """Bool mask of a filled disc."""
    canvas, draw = _canvas(size)
    x, y = center
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    return np.asarray(canvas) > 0


def polygon_mask(size: tuple[int, int], corners: Sequence[Point]) -> np.ndarray:
    """Bool mask of a filled polygon."""
    canvas, draw = _canvas(size)
    draw.polygon([tuple(c) for c in corners], fill=255)
    return np.asarray(canvas) > 0


def segments_mask(
    size: tuple[int, int], segments: Sequence[tuple[Point, Point]], width: int
) -> np.ndarray:
    """Bool mask of straight strokes ``width`` pixels wide (the thin parts)."""
    canvas, draw = _canvas(size)
    for start, end in segments:
        draw.line([tuple(start), tuple(end)], fill=255, width=width)
    return np.asarray(canvas) > 0


def rotated_box(center: Point, half_width: float, half_height: float, angle: float) -> list[Point]:
    """Corners of a box rotated by ``angle`` radians about its centre."""
    cos, sin = np.cos(angle), np.sin(angle)
    corners = []
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x, y = dx * half_width, dy * half_height
        corners.append((center[0] + cos * x - sin * y, center[1] + sin * x + cos * y))
    return corners


def save_png(array: np.ndarray, path: Path) -> None:
    """Save a float image in [0, 1] or an integer label map as PNG."""
    if array.dtype.kind == "f":
        array = np.round(np.clip(array, 0, 1) * 255)
    Image.fromarray(array.astype(np.uint8)).save(path)


def load_png(path: Path) -> np.ndarray:
    """Load a PNG as uint8 array (H, W) or (H, W, 3)."""
    with Image.open(path) as image:
        return np.asarray(image).copy()
