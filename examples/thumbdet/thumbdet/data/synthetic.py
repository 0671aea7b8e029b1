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

This module owns the spec (:class:`SyntheticSpec`), the cache and the files written
(:func:`generate_synthetic_dataset`); drawing one image is
:mod:`thumbdet.data.synthetic_render`'s (:func:`render_image`).

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

from PIL import Image
from tqdm.auto import tqdm

from thumbdet.data.synthetic_render import GENERATOR_VERSION, TEXTURES, render_image

__all__ = [
    "SyntheticDataset",
    "SyntheticSpec",
    "default_cache_dir",
    "generate_synthetic_dataset",
]


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
