"""COCO-format detection dataset for any images folder + annotation file."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset

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
    next_id = 1 + max((int(a.get("id", 0)) for a in dataset["annotations"]), default=0)
    for annotation in dataset["annotations"]:
        if not {"image_id", "bbox", "category_id"} <= set(annotation):
            raise ValueError(
                f"annotation file {path} is not COCO JSON: an annotation lacks 'image_id', "
                f"'bbox' or 'category_id': {annotation}"
            )
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


class CocoDetection(Dataset):
    """Images and box targets from a COCO-format annotation file.

    Category ids come from the annotation file and are mapped to contiguous labels
    ``0..K-1`` in increasing id order (:attr:`category_ids`, :attr:`label_of_category`).
    Images without annotations are kept (empty targets). Crowd annotations and degenerate
    boxes (width or height <= 0) are not training targets; degenerate boxes are counted in
    :attr:`num_degenerate_boxes` and logged. Every image file is checked at construction, so a
    missing file is reported by name before any training.

    Each item is ``(image, target)``: the (transformed) image and a dict with ``"boxes"``
    (absolute x0, y0, x1, y1 before ``transforms``; the standard transforms turn them into
    normalised cx, cy, w, h), ``"labels"`` (int64), ``"image_id"``, ``"orig_size"`` and
    ``"size"`` (``(h, w)`` int64 tensors).

    Args:
        images_dir: Folder holding the files named by ``file_name``.
        annotation_file: COCO-format JSON file.
        transforms: Callable ``(PIL image, target) -> (image, target)``, e.g.
            :func:`thumbdet.data.make_transforms`.
        check_files: Check that every image file exists at construction.

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
                "%s: dropped %d degenerate boxes (width or height <= 0)",
                self.annotation_file,
                self.num_degenerate_boxes,
            )
        if check_files:
            for image_id in self.image_ids:
                path = self.image_path(image_id)
                if not path.is_file():
                    raise FileNotFoundError(
                        f"image file not found: {path} (image id {image_id} in "
                        f"{self.annotation_file})"
                    )

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
        path = self.image_path(image_id)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} (image id {image_id})")
        with Image.open(path) as handle:
            image = handle.convert("RGB")
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
