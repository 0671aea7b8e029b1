"""COCO-format detection dataset for any images folder + annotation file: :class:`CocoDetection`.

This module owns the dataset: labels from category ids, box targets, the image-file checks and
reading items. Reading and checking the annotation file is
:mod:`thumbdet.data.coco_annotations`'s (:func:`load_coco_annotations`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from thumbdet.data.coco_annotations import load_coco_annotations
from thumbdet.data.images import ImageReadError, check_image_files, load_rgb_image

__all__ = ["CocoDetection"]

logger = logging.getLogger(__name__)


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
