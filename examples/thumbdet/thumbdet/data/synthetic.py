"""A small generated COCO-format detection dataset whose classes only fine detail tells apart.

Every object has a random silhouette (rectangle or ellipse) and a random colour; its *class* is
its texture: solid, 1-px horizontal stripes, 1-px vertical stripes or a 1-px checkerboard, all
with the same mean colour. A full-size detector sees the texture; a 4× bicubic thumbnail
averages each 2-px period away, so every class looks like the solid one; a learned downsampler
can fold the texture into the thumbnail's colours. This is the effect the ThumbDet paper is
about (high-frequency detail lost by plain downsampling), made strong and cheap to measure.

Objects span the COCO area ranges at full size (small < 32², medium, large > 96² pixels), on a
mildly textured, smooth background. Generation is deterministic from the seed (each image has
its own random stream, so the first N images do not depend on how many are generated) and the
result is cached on disk: a second call with the same spec reuses the files.

Layout under ``root``::

    spec.json
    train/000000.png ...        val/000000.png ...
    annotations/instances_train.json   annotations/instances_val.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

__all__ = [
    "TEXTURES",
    "SyntheticDataset",
    "SyntheticSpec",
    "default_cache_dir",
    "generate_synthetic_dataset",
    "render_image",
]

# Bump when the drawing code changes, so that stale caches are regenerated.
GENERATOR_VERSION = 1

TEXTURES = ("solid", "hstripes", "vstripes", "checker")
"""The texture names a spec may use as classes, in category-id order by default."""

# COCO's area thresholds (pixels at full size): small < 32², large > 96².
_SMALL_MAX_SIDE = 32
_LARGE_MIN_SIDE = 96


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Two equal specs produce byte-identical datasets.

    Args:
        image_size: side of the square full-size images, in pixels.
        num_train: number of training images.
        num_val: number of validation images.
        max_objects: at most this many objects per image (at least one).
        textures: the classes, each a name from ``TEXTURES``; category ids are 1, 2, ...
        texture_amplitude: half the contrast of the stripes/checkerboard, in [0, 1] units.
        size_mix: probabilities of drawing a small, medium and large object.
        seed: the random seed.
    """

    image_size: int = 128
    num_train: int = 512
    num_val: int = 128
    max_objects: int = 3
    textures: tuple[str, ...] = TEXTURES
    texture_amplitude: float = 0.22
    size_mix: tuple[float, float, float] = (0.35, 0.45, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size: expected >= 32, got {self.image_size}")
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(
                f"num_train/num_val: expected >= 1, got {self.num_train}/{self.num_val}"
            )
        if self.max_objects < 1:
            raise ValueError(f"max_objects: expected >= 1, got {self.max_objects}")
        unknown = [name for name in self.textures if name not in TEXTURES]
        if unknown or len(set(self.textures)) != len(self.textures) or not self.textures:
            raise ValueError(
                f"textures: expected distinct names from {TEXTURES}, got {self.textures}"
            )
        if not 0.0 < self.texture_amplitude <= 0.25:
            raise ValueError(
                f"texture_amplitude: expected in (0, 0.25], got {self.texture_amplitude}"
            )
        if len(self.size_mix) != 3 or min(self.size_mix) < 0 or sum(self.size_mix) <= 0:
            raise ValueError(f"size_mix: expected 3 non-negative weights, got {self.size_mix}")

    def to_json(self) -> dict:
        """The spec as a JSON-ready dict, with the generator version."""
        return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a generated dataset, in the form the training data flags take."""

    root: Path
    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path
    spec: SyntheticSpec


def default_cache_dir() -> Path:
    """``$THUMBDET_CACHE`` if set, else ``~/.cache/thumbdet``."""
    return Path(os.environ.get("THUMBDET_CACHE", Path.home() / ".cache" / "thumbdet"))


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


def _write_split(
    spec: SyntheticSpec, split: str, count: int, root: Path, progress: bool = False
) -> None:
    image_dir = root / split
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for index in tqdm(range(count), desc=f"generating {split}", disable=not progress, leave=False):
        pixels, objects = render_image(spec, split, index)
        file_name = f"{index:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, compress_level=1)
        image_id = index + 1
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": spec.image_size,
                "width": spec.image_size,
            }
        )
        for item in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": item["category_id"],
                    "bbox": item["bbox"],
                    "area": item["area"],
                    "segmentation": item["segmentation"],
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"}
        for i, name in enumerate(spec.textures)
    ]
    coco = {
        "info": {"description": "thumbdet synthetic dataset", "spec": spec.to_json()},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with open(root / "annotations" / f"instances_{split}.json", "w") as handle:
        json.dump(coco, handle)


def _paths(root: Path, spec: SyntheticSpec) -> SyntheticDataset:
    return SyntheticDataset(
        root=root,
        train_images=root / "train",
        train_ann=root / "annotations" / "instances_train.json",
        val_images=root / "val",
        val_ann=root / "annotations" / "instances_val.json",
        spec=spec,
    )


def generate_synthetic_dataset(
    root: str | os.PathLike | None = None,
    spec: SyntheticSpec | None = None,
    progress: bool = False,
) -> SyntheticDataset:
    """Generate the dataset under ``root``, or reuse it if ``root`` already holds this spec.

    Args:
        root: the dataset folder; default
            ``default_cache_dir() / "synthetic-<image_size>px-seed<seed>"``.
        spec: what to generate; default ``SyntheticSpec()``.
        progress: show a progress bar while generating.

    Returns:
        The paths of the images and COCO annotation files.

    Example:
        >>> data = generate_synthetic_dataset("/tmp/synth", SyntheticSpec(num_train=8, num_val=4))
        >>> data.val_ann.name
        'instances_val.json'
    """
    spec = SyntheticSpec() if spec is None else spec
    if not isinstance(spec, SyntheticSpec):
        raise TypeError(f"spec: expected SyntheticSpec, got {type(spec).__name__}")
    if root is None:
        root = default_cache_dir() / f"synthetic-{spec.image_size}px-seed{spec.seed}"
    root = Path(root)
    spec_file = root / "spec.json"
    if spec_file.is_file():
        try:
            cached = json.loads(spec_file.read_text())
        except json.JSONDecodeError:
            cached = None
        if cached == json.loads(json.dumps(spec.to_json())):
            return _paths(root, spec)
    # Build next to the target and swap it in, so an interrupted run never leaves half a dataset.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        (staging / "annotations").mkdir()
        _write_split(spec, "train", spec.num_train, staging, progress)
        _write_split(spec, "val", spec.num_val, staging, progress)
        (staging / "spec.json").write_text(json.dumps(spec.to_json(), indent=2))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _paths(root, spec)
