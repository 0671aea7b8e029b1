"""Reading and checking a COCO-format annotation file: :func:`load_coco_annotations`.

Owns what a file must hold to be used: the top-level keys, image entries with an ``id`` and a
``file_name``, and annotations whose image, category and ``bbox`` are valid (a malformed one is
refused with a message naming its id). Fills the optional ``iscrowd``, ``area`` and ``id`` and
returns a ``pycocotools`` index. The dataset built on it is
:class:`thumbdet.data.coco.CocoDetection`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

__all__ = ["load_coco_annotations"]

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
