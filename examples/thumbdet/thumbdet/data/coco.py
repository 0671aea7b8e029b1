"""COCO-format detection dataset for any images folder + annotation file."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from thumbdet.data.images import ImageReadError, check_image_files, load_rgb_image

__all__ = ["CocoDetection", "load_coco_annotations"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("images", "annotations", "categories")


def load_coco_annotations(annotation_file: str | Path) -> COCO:
    """Read a COCO-format annotation file into a ``pycocotools.coco.COCO`` index.

    Args:
        annotation_file: JSON file with ``images``, ``annotations`` and ``categories``.

    Returns:
        The COCO index (pycocotools prints are silenced).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not JSON, or not COCO-format JSON (names what is missing).
    """
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as handle:
            dataset = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"annotation file {path} is not COCO JSON: not valid JSON ({error})"
        ) from None
    if not isinstance(dataset, dict):
        raise ValueError(
            f"annotation file {path} is not COCO JSON: top level is {type(dataset).__name__}, "
            f"expected an object with keys {list(_REQUIRED_KEYS)}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in dataset]
    if missing:
        raise ValueError(
            f"annotation file {path} is not COCO JSON: missing key(s) {missing} "
            f"(found {sorted(dataset)[:10]})"
        )
    for image in dataset["images"]:
        if not {"id", "file_name"} <= set(image):
            raise ValueError(
                f"annotation file {path} is not COCO JSON: an image entry lacks 'id' or "
                f"'file_name': {image}"
            )
    _check_annotations(dataset, path)
    next_id = 1 + max((int(a.get("id", 0)) for a in dataset["annotations"]), default=0)
    for annotation in dataset["annotations"]:
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", float(annotation["bbox"][2] * annotation["bbox"][3]))
        if "id" not in annotation:  # COCOeval needs unique ids for ground truth
            annotation["id"] = next_id
            next_id += 1
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_annotations(dataset: dict[str, Any], path: Path) -> None:
    """Refuse malformed ``annotations`` entries with a message naming the annotation id.

    Each annotation needs an integer ``image_id`` listed in ``images``, an integer
    ``category_id`` listed in ``categories`` and a ``bbox`` of four finite numbers
    ``[x, y, width, height]`` with non-negative width and height (zero-size boxes are dropped
    later, as degenerate). ``id`` (optional) must be an integer.
    """
    if not isinstance(dataset["annotations"], list) or not isinstance(dataset["categories"], list):
        raise ValueError(
            f"annotation file {path} is not COCO JSON: 'annotations' and 'categories' must be lists"
        )
    for category in dataset["categories"]:
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise ValueError(f"annotation file {path}: category {category!r} has no integer 'id'")
    for image in dataset["images"]:
        if not _is_id(image["id"]):
            raise ValueError(
                f"annotation file {path}: image {image['file_name']!r} has id {image['id']!r}, "
                "expected an integer"
            )
    image_ids = {image["id"] for image in dataset["images"]}
    category_ids = {category["id"] for category in dataset["categories"]}
    for index, annotation in enumerate(dataset["annotations"]):
        if not isinstance(annotation, dict):
            raise ValueError(
                f"annotation file {path}: annotation #{index} is {type(annotation).__name__}, "
                "expected an object"
            )
        name = (
            f"annotation id {annotation['id']!r}"
            if "id" in annotation
            else f"annotation #{index} (no id)"
        )
        where = f"{name} in {path}"
        missing = [key for key in ("image_id", "bbox", "category_id") if key not in annotation]
        if missing:
            raise ValueError(f"{where} lacks {missing} (needs 'image_id', 'bbox', 'category_id')")
        if "id" in annotation and not _is_id(annotation["id"]):
            raise ValueError(f"{where}: 'id' must be an integer")
        bbox = annotation["bbox"]
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(_is_number(value) and math.isfinite(value) for value in bbox)
        ):
            raise ValueError(
                f"{where}: bbox {bbox!r} is malformed, expected 4 finite numbers "
                "[x, y, width, height]"
            )
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(
                f"{where}: bbox {bbox!r} has a negative size, expected width and height >= 0"
            )
        if annotation["image_id"] not in image_ids:
            raise ValueError(
                f"{where}: image_id {annotation['image_id']!r} is not listed in 'images'"
            )
        if annotation["category_id"] not in category_ids:
            raise ValueError(
                f"{where}: category_id {annotation['category_id']!r} is not listed in "
                f"'categories' (ids {sorted(category_ids)})"
            )
        if "iscrowd" in annotation and annotation["iscrowd"] not in (0, 1):
            raise ValueError(f"{where}: iscrowd {annotation['iscrowd']!r}, expected 0 or 1")


class CocoDetection(Dataset):
    """Images and box targets from a COCO-format annotation file.

    Category ids come from the annotation file and are mapped to contiguous labels
    ``0..K-1`` in increasing id order (:attr:`category_ids`, :attr:`label_of_category`).
    Images without annotations are kept (empty targets). Crowd annotations and degenerate
    boxes (width or height 0) are not training targets; degenerate boxes are counted in
    :attr:`num_degenerate_boxes` and logged. Malformed annotations (a ``bbox`` that is not four
    finite numbers, a negative size, an unknown image or category id) raise ``ValueError``
    naming the annotation id.

    Every image file is checked at construction (``check_files``): it must exist and decode
    completely as an image (:func:`thumbdet.data.images.load_rgb_image`), so a missing,
    truncated or unreadable file is reported by name before any training. With
    ``skip_bad_images`` unreadable files are left out instead, counted in
    :attr:`num_skipped_images` and logged. Images of every PIL mode are converted to 8-bit RGB
    (16-bit images scaled, not clipped).

    Each item is ``(image, target)``: the (transformed) image and a dict with ``"boxes"``
    (absolute x0, y0, x1, y1 before ``transforms``; the standard transforms turn them into
    normalised cx, cy, w, h), ``"labels"`` (int64), ``"image_id"``, ``"orig_size"`` and
    ``"size"`` (``(h, w)`` int64 tensors).

    Args:
        images_dir: Folder holding the files named by ``file_name``.
        annotation_file: COCO-format JSON file.
        transforms: Callable ``(PIL image, target) -> (image, target)``, e.g.
            :func:`thumbdet.data.make_transforms`.
        check_files: Check that every image file exists and can be decoded at construction.
        skip_bad_images: Leave out images whose file is missing or cannot be read (with a
            warning counting them) instead of raising.
        image_check_cache: JSON file of images already checked (path, size, modification
            time), read if it exists; see :func:`thumbdet.data.images.write_image_check_cache`.

    Example:
        >>> dataset = CocoDetection("val2017", "instances_val2017.json",
        ...                         make_transforms("val"))  # doctest: +SKIP
        >>> image, target = dataset[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotation_file: str | Path,
        transforms: Callable[[Image.Image, dict[str, Any]], tuple[Any, dict[str, Any]]]
        | None = None,
        check_files: bool = True,
        skip_bad_images: bool = False,
        image_check_cache: str | Path | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images folder not found: {self.images_dir}")
        self.annotation_file = Path(annotation_file)
        self.coco = load_coco_annotations(annotation_file)
        self.transforms = transforms
        self.image_ids: list[int] = sorted(self.coco.imgs)
        self.category_ids: list[int] = sorted(self.coco.cats)
        self.category_names: list[str] = [
            str(self.coco.cats[cat].get("name", cat)) for cat in self.category_ids
        ]
        self.label_of_category: dict[int, int] = {
            cat: label for label, cat in enumerate(self.category_ids)
        }
        self.num_degenerate_boxes = 0
        self._targets = [self._build_target(image_id) for image_id in self.image_ids]
        if self.num_degenerate_boxes:
            logger.warning(
                "%s: dropped %d degenerate boxes (width or height 0)",
                self.annotation_file,
                self.num_degenerate_boxes,
            )
        self.num_skipped_images = 0
        if check_files:
            self._check_image_files(skip_bad_images, image_check_cache)

    def _check_image_files(self, skip: bool, cache_file: str | Path | None) -> None:
        missing = [i for i in self.image_ids if not self.image_path(i).is_file()]
        if missing and not skip:
            raise FileNotFoundError(
                f"image file not found: {self.image_path(missing[0])} (image id {missing[0]} in "
                f"{self.annotation_file}; {len(missing)} of {len(self.image_ids)} missing; "
                "--skip-bad-images leaves them out)"
            )
        missing_set = set(missing)
        present = [i for i in self.image_ids if i not in missing_set]
        bad = check_image_files([self.image_path(i) for i in present], cache_file)
        unreadable = [i for i in present if self.image_path(i) in bad]
        if unreadable and not skip:
            first = unreadable[0]
            raise ImageReadError(
                f"{bad[self.image_path(first)]} (image id {first} in {self.annotation_file}; "
                f"{len(unreadable)} of {len(self.image_ids)} unreadable; --skip-bad-images "
                "leaves them out)"
            )
        dropped = set(missing) | set(unreadable)
        if dropped:
            first = min(dropped)
            reason = bad.get(
                self.image_path(first), f"image file not found: {self.image_path(first)}"
            )
            logger.warning(
                "%s: skipped %d of %d images whose file is missing or unreadable (first: %s)",
                self.annotation_file,
                len(dropped),
                len(self.image_ids),
                reason,
            )
            keep = [k for k, i in enumerate(self.image_ids) if i not in dropped]
            self.image_ids = [self.image_ids[k] for k in keep]
            self._targets = [self._targets[k] for k in keep]
            self.num_skipped_images = len(dropped)

    def image_paths(self) -> list[Path]:
        """Paths of the image files of :attr:`image_ids`."""
        return [self.image_path(image_id) for image_id in self.image_ids]

    @property
    def num_classes(self) -> int:
        """Number of categories in the annotation file."""
        return len(self.category_ids)

    def image_path(self, image_id: int) -> Path:
        """Path of the image file of ``image_id``."""
        return self.images_dir / self.coco.imgs[image_id]["file_name"]

    def _build_target(self, image_id: int) -> dict[str, torch.Tensor]:
        info = self.coco.imgs[image_id]
        boxes, labels = [], []
        for annotation in self.coco.imgToAnns.get(image_id, []):
            if annotation.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            if w <= 0 or h <= 0:
                self.num_degenerate_boxes += 1
                continue
            category = annotation["category_id"]
            if category not in self.label_of_category:
                raise ValueError(
                    f"annotation {annotation.get('id')} in {self.annotation_file} has "
                    f"category_id {category}, not listed in 'categories'"
                )
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label_of_category[category])
        height, width = int(info.get("height", 0)), int(info.get("width", 0))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),  # (N, 4) xyxy
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        image = load_rgb_image(self.image_path(image_id))
        target = {key: value.clone() for key, value in self._targets[index].items()}
        width, height = image.size
        # The file is the truth: annotation files with missing or wrong sizes still work.
        target["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
        target["size"] = torch.tensor([height, width], dtype=torch.int64)
        target["boxes"][:, 0::2].clamp_(min=0, max=width)
        target["boxes"][:, 1::2].clamp_(min=0, max=height)
        inside = (target["boxes"][:, 2] > target["boxes"][:, 0]) & (
            target["boxes"][:, 3] > target["boxes"][:, 1]
        )
        target["boxes"], target["labels"] = target["boxes"][inside], target["labels"][inside]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
