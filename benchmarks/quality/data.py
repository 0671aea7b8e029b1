"""Natural-image tasks built from photos that ship inside scikit-image and scikit-learn.

Nothing is downloaded: every source image is bundled with ``scikit-image`` (``skimage.data``)
or ``scikit-learn`` (``load_sample_images``). No task is shaped so that bicubic fails: patch and
object sizes follow the source photos (a coin is drawn at 0.5-1x its size in
``skimage.data.coins``), and every image keeps its natural content.

Each source photo is split by rows: crops for training come from its top 65%, crops for
testing from its bottom 30%, so no test pixel was seen in training. (Scenes of the dense tasks
take their backgrounds from the photos whose split holds a whole scene: in the test split,
ten photos, all but ``chelsea`` and ``coffee``.) The 24 coins of
``skimage.data.coins`` are split 18 / 6 the same way: test scenes show coins never trained on.

The scene tasks (``detect``, ``segment``, ``keypoints``) have a third split, ``unseen``: scenes
on five more bundled photos that no task trains or tests on (:data:`UNSEEN_SOURCES`), with the
test coins. The suite's settings and its recommended downsampler were chosen on the test
split's numbers; the unseen split checks those choices on images they never saw. (Not for
``classify``, whose classes are the photos themselves.) A fourth split, ``external``, does the
same on four photos bundled with other packages (matplotlib, mahotas, PyWavelets;
:data:`EXTERNAL_SOURCES`), added after the test and unseen results were published: no setting
of the suite was chosen on any image of it.

Tasks (images in ``[0, 1]``, float32, ``(N, 3, S, S)``):

- ``classify``: which of 12 photos a 64x64 crop comes from (RGB photos, grey photos and real
  textures: brick, grass, gravel);
- ``detect``: coins on crops of the photos, boxes in pixels;
- ``segment``: the same kind of scenes, a coin / background mask per pixel;
- ``keypoints``: a card cut from a photo, rotated by up to 30 degrees and pasted on another
  photo; its four corners (clockwise from top-left) are the keypoints.

One more task is *not* natural and is reported apart, as a mechanism demonstration and a
positive control: ``mechanism`` (flat or 1-px checkered box, generated like the examples'
datasets, where bicubic fails by construction).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = [
    "EXTERNAL_SOURCES",
    "SOURCES",
    "UNSEEN_SOURCES",
    "Dataset",
    "build_dataset",
    "coin_cutouts",
    "external_photos",
    "source_photos",
    "unseen_photos",
]

# Bundled photos (no network): RGB, grey, and real textures. The fetched ones are avoided.
SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "china",
    "flower",
    "camera",
    "brick",
    "grass",
    "gravel",
)
# Bundled photos that no split of SOURCES uses: the backgrounds and cards of the "unseen"
# split (lunar surface, retina fundus, street scene, microscopy, motion-blurred wall clock).
UNSEEN_SOURCES = ("moon", "retina", "stereo_motorcycle", "cell", "clock")
# Photos bundled with other packages, the backgrounds and cards of the "external" split: a
# portrait (matplotlib's ``grace_hopper.jpg``), a portrait and a fluorescence micrograph
# (mahotas' demo data), an aerial photo (PyWavelets' ``aero``). Left out of the same folders:
# mahotas' ``lena.jpg`` (withdrawn by its subject), ``DepartmentStore.jpg`` (a drawing, not a
# photo) and matplotlib's 128-pixel ``Minduka_Present_Blue_Pack.png`` (too small for a scene).
EXTERNAL_SOURCES = ("grace_hopper", "luispedro", "nuclear", "aero")
TRAIN_ROWS = (0.0, 0.65)
TEST_ROWS = (0.7, 1.0)
SPLITS = ("train", "test", "unseen", "external")
# Splits of photos that no task trains on: their scenes are drawn on the whole of every photo.
SCENE_SPLITS = ("unseen", "external")
# Tasks whose scenes can be drawn on any photo (the scene splits).
SCENE_TASKS = ("detect", "keypoints", "segment")


def _require(package: str) -> None:
    try:
        __import__(package)
    except ImportError as error:
        raise ImportError(
            f"the quality suite builds its tasks from images bundled with {package}: "
            'pip install -e ".[quality]"'
        ) from error


def _as_rgb(array: np.ndarray) -> np.ndarray:
    """A uint8-range photo, grey or RGB(A), as float32 RGB ``(H, W, 3)`` in ``[0, 1]``."""
    array = np.asarray(array, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def _load_photos(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    _require("skimage")
    _require("sklearn")
    from skimage import data
    from sklearn.datasets import load_sample_images

    sklearn_images = dict(zip(("china", "flower"), load_sample_images().images, strict=True))
    photos = {}
    for name in names:
        array = sklearn_images[name] if name in sklearn_images else getattr(data, name)()
        if isinstance(array, tuple):  # stereo_motorcycle: (left, right, disparity)
            array = array[0]
        photos[name] = _as_rgb(array)
    return photos


def _package_file(package: str, *parts: str) -> np.ndarray:
    """An image file shipped inside ``package``, read with PIL as a uint8 array."""
    from importlib.resources import files

    _require(package)
    resource = files(package).joinpath(*parts)
    with resource.open("rb") as handle, Image.open(handle) as image:
        return np.asarray(image.convert("RGB"))


def _aero() -> np.ndarray:
    _require("pywt")
    import pywt.data

    return pywt.data.aero()


_EXTERNAL_LOADERS = {
    "grace_hopper": lambda: _package_file(
        "matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"
    ),
    "luispedro": lambda: _package_file("mahotas", "demos", "data", "luispedro.jpg"),
    "nuclear": lambda: _package_file("mahotas", "demos", "data", "nuclear.png"),
    "aero": _aero,
}


@functools.cache
def source_photos() -> dict[str, np.ndarray]:
    """The photos of :data:`SOURCES` as float32 RGB arrays ``(H, W, 3)`` in ``[0, 1]``."""
    return _load_photos(SOURCES)


@functools.cache
def unseen_photos() -> dict[str, np.ndarray]:
    """The photos of :data:`UNSEEN_SOURCES`, as :func:`source_photos` gives its own."""
    return _load_photos(UNSEEN_SOURCES)


@functools.cache
def external_photos() -> dict[str, np.ndarray]:
    """The photos of :data:`EXTERNAL_SOURCES`, as :func:`source_photos` gives its own."""
    return {name: _as_rgb(_EXTERNAL_LOADERS[name]()) for name in EXTERNAL_SOURCES}


# The photos of each scene split (SCENE_SPLITS).
_SCENE_PHOTOS = {"unseen": unseen_photos, "external": external_photos}


@functools.cache
def coin_cutouts() -> list[tuple[np.ndarray, np.ndarray]]:
    """The 24 coins of ``skimage.data.coins``: (grey crop ``(h, w)``, bool mask ``(h, w)``).

    Segmented with a watershed of the Sobel gradient from dark (< 30) and bright (> 150)
    markers, holes filled; sorted by position (row, then column), so the split is fixed.
    """
    _require("skimage")
    from scipy import ndimage
    from skimage import data, filters, measure, segmentation

    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        foreground = segmentation.watershed(filters.sobel(coins), markers) == 2
    labels = measure.label(ndimage.binary_fill_holes(foreground))
    cutouts = []
    regions = sorted(
        (r for r in measure.regionprops(labels) if r.area > 300), key=lambda r: r.bbox[:2]
    )
    for region in regions:
        top, left, bottom, right = region.bbox
        crop = coins[top:bottom, left:right].astype(np.float32) / 255.0
        cutouts.append((crop, region.image.copy()))
    return cutouts


@dataclass
class Dataset:
    """One split of a task, in memory.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in ``[0, 1]``.
        targets: class ids ``(N,)``, masks ``(N, S, S)``, keypoints ``(N, K, 2)`` (x, y in
            pixels), or, for detection, a list of ``(n_i, 4)`` boxes (x0, y0, x1, y1).
    """

    images: torch.Tensor
    targets: torch.Tensor | list[torch.Tensor]

    def __len__(self) -> int:
        return self.images.shape[0]


def _rows(photo: np.ndarray, split: str) -> np.ndarray:
    low, high = TRAIN_ROWS if split == "train" else TEST_ROWS
    height = photo.shape[0]
    return photo[int(low * height) : int(high * height)]


def _pool(split: str, size: int) -> list[np.ndarray]:
    """The split's rows of every photo that holds a ``size`` x ``size`` crop there (the
    whole of every photo of an unseen or external split)."""
    if split in _SCENE_PHOTOS:
        regions = list(_SCENE_PHOTOS[split]().values())
    else:
        regions = [_rows(photo, split) for photo in source_photos().values()]
    return [region for region in regions if min(region.shape[:2]) >= size]


def _crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    top = int(rng.integers(0, photo.shape[0] - size + 1))
    left = int(rng.integers(0, photo.shape[1] - size + 1))
    return photo[top : top + size, left : left + size]


def _augment(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return patch


def _classify(rng: np.random.Generator, count: int, split: str, size: int) -> Dataset:
    photos = [_rows(photo, split) for photo in source_photos().values()]
    labels = np.arange(count) % len(photos)
    rng.shuffle(labels)
    images = np.stack([_augment(rng, _crop(rng, photos[label], size)) for label in labels])
    return Dataset(_to_tensor(images), torch.from_numpy(labels.astype(np.int64)))


def _resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize a float ``(h, w)`` array (PIL, mode F) to ``size`` = (h, w)."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), resample), dtype=np.float32)


def _coin_scene(
    rng: np.random.Generator, split: str, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene with 1-3 coins: image ``(S, S, 3)``, instance ids ``(S, S)``, boxes ``(n, 4)``."""
    coins = coin_cutouts()
    pool = coins[:18] if split == "train" else coins[18:]  # unseen, external: the test coins
    photos = _pool(split, size)
    image = _crop(rng, photos[int(rng.integers(len(photos)))], size).copy()
    instances = np.zeros((size, size), np.int64)
    boxes = []
    for instance in range(1, int(rng.integers(1, 4)) + 1):
        crop, mask = pool[int(rng.integers(len(pool)))]
        factor = rng.uniform(0.5, 1.0)
        height = max(4, round(crop.shape[0] * factor))
        width = max(4, round(crop.shape[1] * factor))
        crop = _resize(crop, (height, width), Image.BICUBIC).clip(0.0, 1.0)
        alpha = _resize(mask.astype(np.float32), (height, width), Image.BILINEAR)
        if rng.random() < 0.5:
            crop, alpha = crop[:, ::-1], alpha[:, ::-1]
        top = int(rng.integers(0, size - height + 1))
        left = int(rng.integers(0, size - width + 1))
        region = (slice(top, top + height), slice(left, left + width))
        a = alpha[..., None]
        image[region] = a * crop[..., None] + (1.0 - a) * image[region]
        inside = alpha >= 0.5
        instances[region][inside] = instance
        ys, xs = np.nonzero(instances == instance)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else None)
    # A later coin may cover an earlier one: boxes from what stays visible, hidden ones dropped.
    visible = []
    for instance in range(1, len(boxes) + 1):
        ys, xs = np.nonzero(instances == instance)
        if len(xs) >= 16:
            visible.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return image, instances, np.asarray(visible, np.float32).reshape(-1, 4)


def _detect(rng: np.random.Generator, count: int, split: str, size: int) -> Dataset:
    scenes = [_coin_scene(rng, split, size) for _ in range(count)]
    images = np.stack([scene[0] for scene in scenes])
    return Dataset(_to_tensor(images), [torch.from_numpy(scene[2]) for scene in scenes])


def _segment(rng: np.random.Generator, count: int, split: str, size: int) -> Dataset:
    scenes = [_coin_scene(rng, split, size) for _ in range(count)]
    images = np.stack([scene[0] for scene in scenes])
    masks = np.stack([scene[1] > 0 for scene in scenes]).astype(np.int64)
    return Dataset(_to_tensor(images), torch.from_numpy(masks))


def _card_scene(rng: np.random.Generator, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo card pasted, rotated, on another photo: image ``(S, S, 3)``, corners ``(4, 2)``."""
    photos = _pool(split, size)
    first, second = rng.choice(len(photos), size=2, replace=False)
    image = _crop(rng, photos[int(first)], size).copy()
    side = int(rng.integers(size // 4, size // 2 + 1))
    card = _crop(rng, photos[int(second)], side)
    angle = math.radians(rng.uniform(-30.0, 30.0))
    cos, sin = math.cos(angle), math.sin(angle)
    reach = side * (abs(cos) + abs(sin)) / 2  # half the rotated card's bounding box
    cx = rng.uniform(reach, size - reach)
    cy = rng.uniform(reach, size - reach)
    # Inverse map: every scene pixel centre -> card coordinates (bilinear lookup).
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = cos * (xs - cx) + sin * (ys - cy) + side / 2
    v = -sin * (xs - cx) + cos * (ys - cy) + side / 2
    inside = (u >= 0) & (u < side) & (v >= 0) & (v < side)
    channels = [
        _bilinear(card[..., c], u[inside] - 0.5, v[inside] - 0.5) for c in range(card.shape[2])
    ]
    image[inside] = np.stack(channels, axis=1)
    half = side / 2
    corners = []
    for du, dv in ((-half, -half), (half, -half), (half, half), (-half, half)):
        corners.append((cx + cos * du - sin * dv, cy + sin * du + cos * dv))
    return image, np.asarray(corners, np.float32)


def _bilinear(channel: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    height, width = channel.shape
    x = x.clip(0, width - 1)
    y = y.clip(0, height - 1)
    x0 = np.floor(x).astype(np.int64).clip(0, width - 2)
    y0 = np.floor(y).astype(np.int64).clip(0, height - 2)
    fx, fy = x - x0, y - y0
    top = channel[y0, x0] * (1 - fx) + channel[y0, x0 + 1] * fx
    bottom = channel[y0 + 1, x0] * (1 - fx) + channel[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _keypoints(rng: np.random.Generator, count: int, split: str, size: int) -> Dataset:
    scenes = [_card_scene(rng, split, size) for _ in range(count)]
    images = np.stack([scene[0] for scene in scenes])
    corners = np.stack([scene[1] for scene in scenes])
    return Dataset(_to_tensor(images), torch.from_numpy(corners))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32))


def _mechanism(rng: np.random.Generator, count: int, split: str, size: int) -> Dataset:  # noqa: ARG001 (a _BUILDERS signature)
    """The *mechanism* demonstration, not a natural task: is the box flat or 1-px checkered?

    Built like the examples' generated datasets, so that a 4x antialiased thumbnail averages
    the only cue away (both paints have the same mean colour). A positive control: a learned
    thumbnail should win here, and the suite should be able to show it.
    """
    from examples._common import drawing

    labels = np.arange(count) % 2
    rng.shuffle(labels)
    images = []
    for label in labels:
        image = drawing.textured_background(rng, (size, size))
        centre = (rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size)
        extent = rng.uniform(0.15, 0.25) * size
        corners = drawing.rotated_box(
            centre, extent, extent * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
        )
        contrast = rng.uniform(0.1, 0.25) if label else 0.0
        drawing.paint(
            image, drawing.polygon_mask((size, size), corners), drawing.random_color(rng), contrast
        )
        images.append(image)
    return Dataset(_to_tensor(np.stack(images)), torch.from_numpy(labels.astype(np.int64)))


_BUILDERS = {
    "classify": _classify,
    "mechanism": _mechanism,
    "detect": _detect,
    "segment": _segment,
    "keypoints": _keypoints,
}


def build_dataset(task: str, split: str, count: int, size: int, seed: int = 0) -> Dataset:
    """``count`` images of ``size`` x ``size`` pixels for ``task`` and ``split``.

    Args:
        task: ``"classify"``, ``"detect"``, ``"segment"``, ``"keypoints"`` or ``"mechanism"``.
        split: ``"train"`` or ``"test"`` (disjoint rows of every photo, disjoint coins), or
            ``"unseen"`` or ``"external"`` for a scene task (:data:`SCENE_TASKS`): scenes on
            photos that no other split uses, with the test coins.
        count: number of images.
        size: side of the square images, in pixels.
        seed: seed of the crops and placements (the same seed gives the same data).
    """
    if task not in _BUILDERS:
        raise ValueError(f"task must be one of {sorted(_BUILDERS)}, got {task!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split in SCENE_SPLITS and task not in SCENE_TASKS:
        raise ValueError(
            f"split {split!r} takes a scene task {SCENE_TASKS}, got {task!r} (classify's "
            "classes are the suite's photos; mechanism's images are generated)"
        )
    offset = {"train": 0, "test": 1_000_003, "unseen": 2_000_003, "external": 3_000_017}[split]
    rng = np.random.default_rng(seed + offset + 7919 * sorted(_BUILDERS).index(task))
    return _BUILDERS[task](rng, count, split, size)
