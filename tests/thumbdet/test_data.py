"""COCO-format dataset, Deformable DETR transforms and padded batching."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests.thumbdet.helpers import write_tiny_coco
from thumbdet.data import (
    CocoDetection,
    DetectionCollator,
    collate_detection,
    load_coco_annotations,
    make_transforms,
    pad_images,
    resized_size,
)
from thumbdet.data import images as image_io
from thumbdet.data.images import ImageReadError, load_rgb_image, to_rgb
from thumbdet.thumbnails import load_image


@pytest.fixture
def tiny_coco(tmp_path):
    return write_tiny_coco(tmp_path, num_images=5, empty_images=1, category_ids=(3, 7))


def test_dataset_maps_category_ids_to_contiguous_labels(tiny_coco):
    images_dir, annotation_file = tiny_coco
    dataset = CocoDetection(images_dir, annotation_file)
    assert len(dataset) == 5
    assert dataset.category_ids == [3, 7]
    assert dataset.label_of_category == {3: 0, 7: 1}
    assert dataset.num_classes == 2
    raw = json.loads(annotation_file.read_text())
    image, target = dataset[0]
    expected = [a for a in raw["annotations"] if a["image_id"] == dataset.image_ids[0]]
    assert sorted(target["labels"].tolist()) == sorted(
        dataset.label_of_category[a["category_id"]] for a in expected
    )
    x, y, w, h = expected[0]["bbox"]
    assert [x, y, x + w, y + h] in target["boxes"].tolist()
    assert target["orig_size"].tolist() == [image.size[1], image.size[0]]


def test_images_without_annotations_are_kept(tiny_coco):
    dataset = CocoDetection(*tiny_coco, transforms=make_transforms("val", [32], 64))
    image, target = dataset[len(dataset) - 1]  # the last image has no object
    assert target["boxes"].shape == (0, 4)
    assert target["labels"].shape == (0,)
    assert image.shape[0] == 3 and min(image.shape[1:]) == 32


def test_missing_image_file_is_named(tiny_coco):
    images_dir, annotation_file = tiny_coco
    (images_dir / "0002.png").unlink()
    with pytest.raises(FileNotFoundError, match="0002.png"):
        CocoDetection(images_dir, annotation_file)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2, 3]", "not COCO JSON"),
        ('{"images": []}', "missing key"),
        ("this is { not json", "not valid JSON"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "file_name"),
    ],
)
def test_non_coco_annotation_file_says_so(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_coco_annotations(path)


def test_degenerate_boxes_are_dropped_and_counted(tiny_coco, caplog):
    images_dir, annotation_file = tiny_coco
    data = json.loads(annotation_file.read_text())
    good = len(data["annotations"])
    data["annotations"] += [
        {"id": 100, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},
        {"id": 101, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, 0], "iscrowd": 0},
    ]
    annotation_file.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        dataset = CocoDetection(images_dir, annotation_file)
    assert dataset.num_degenerate_boxes == 2
    assert "2 degenerate boxes" in caplog.text
    assert sum(len(dataset[i][1]["labels"]) for i in range(len(dataset))) == good


def test_resized_size_respects_short_side_and_max_size():
    assert resized_size(640, 480, 240, None) == (240, 320)
    assert resized_size(480, 640, 240, None) == (320, 240)
    # 1000x100 at short side 200 would be 2000 long: the max size wins.
    height, width = resized_size(1000, 100, 200, 500)
    assert width == 500 and height == 50


def _coloured_box(tensor: torch.Tensor) -> list[float] | None:
    """Bounding box (x0, y0, x1, y1) of the pixels at least half covered by the red square."""
    red = tensor[1] < 0.25  # green is 0 on the square and 0.5 on the grey background
    if not red.any():
        return None
    rows = torch.nonzero(red.any(dim=1)).flatten()
    cols = torch.nonzero(red.any(dim=0)).flatten()
    return [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1]


def test_train_transforms_keep_boxes_on_their_object():
    image = Image.new("RGB", (120, 90), (128, 128, 128))
    image.paste((255, 0, 0), (30, 20, 70, 60))  # box x0=30 y0=20 x1=70 y1=60
    transforms = make_transforms("train", short_sides=[40, 48, 56], max_size=80)
    checked = 0
    for seed in range(30):
        random.seed(seed)
        target = {
            "boxes": torch.tensor([[30.0, 20.0, 70.0, 60.0]]),
            "labels": torch.tensor([0]),
            "size": torch.tensor([90, 120]),
        }
        tensor, out = transforms(image, target)
        assert tensor.dtype == torch.float32 and tensor.min() >= 0.0 and tensor.max() <= 1.0
        height, width = tensor.shape[1:]
        assert max(height, width) <= 80 and out["size"].tolist() == [height, width]
        visible = _coloured_box(tensor)
        if out["boxes"].shape[0] == 0:
            continue  # cropped away; then no more than a sliver of the object may remain
        cx, cy, w, h = out["boxes"][0].tolist()
        box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width]
        box.append((cy + h / 2) * height)
        assert visible is not None
        expected = torch.tensor(visible, dtype=torch.float32)
        assert torch.allclose(torch.tensor(box), expected, atol=1.0), (seed, box, visible)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("augmentation", ["flip", "none"])
def test_light_augmentations_never_crop(augmentation):
    image = Image.new("RGB", (64, 48))
    for seed in range(10):
        random.seed(seed)
        target = {"boxes": torch.tensor([[0.0, 0.0, 64.0, 48.0]]), "labels": torch.tensor([0])}
        transforms = make_transforms("train", [48, 24], 64, augmentation=augmentation)
        tensor, out = transforms(image, target)
        assert torch.allclose(out["boxes"], torch.tensor([[0.5, 0.5, 1.0, 1.0]]))  # whole image
        if augmentation == "none":
            assert tuple(tensor.shape) == (3, 48, 64)
    with pytest.raises(ValueError, match="augmentation"):
        make_transforms("train", augmentation="mosaic")


def test_val_transform_uses_largest_short_side():
    image = Image.new("RGB", (100, 50))
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    tensor, out = make_transforms("val", [20, 30], 1000)(image, target)
    assert tuple(tensor.shape) == (3, 30, 60)
    assert out["boxes"].shape == (0, 4)


def test_collate_pads_with_mask_and_divisibility():
    first, second = torch.rand(3, 10, 7), torch.rand(3, 5, 13)
    targets = [{"labels": torch.tensor([1])}, {"labels": torch.tensor([0])}]
    images, mask, out = DetectionCollator(4)(list(zip([first, second], targets, strict=True)))
    assert images.shape == (2, 3, 12, 16) and mask.shape == (2, 12, 16)
    assert torch.equal(images[0, :, :10, :7], first) and torch.equal(images[1, :, :5, :13], second)
    assert not mask[0, :10, :7].any() and mask[0, 10:].all() and mask[0, :, 7:].all()
    assert not mask[1, :5, :13].any() and mask[1, 5:].all() and mask[1, :, 13:].all()
    assert images[mask[:, None].expand_as(images)].abs().sum() == 0
    assert out == targets
    plain, plain_mask = pad_images([first, second])
    assert plain.shape == (2, 3, 10, 13) and plain_mask.sum() == 2 * 130 - 70 - 65


def test_collate_rejects_mismatched_channels():
    with pytest.raises(ValueError, match=r"images\[1\]"):
        collate_detection([(torch.rand(3, 4, 4), {}), (torch.rand(1, 4, 4), {})])


def test_minimal_annotation_fields_get_defaults(tmp_path):
    _, annotation_file = write_tiny_coco(tmp_path, num_images=3, empty_images=0)
    data = json.loads(annotation_file.read_text())
    for annotation in data["annotations"]:
        for key in ("id", "area", "iscrowd"):
            annotation.pop(key)
    annotation_file.write_text(json.dumps(data))
    coco = load_coco_annotations(annotation_file)
    ids = [annotation["id"] for annotation in coco.dataset["annotations"]]
    assert len(set(ids)) == len(ids) == len(data["annotations"])
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in coco.dataset["annotations"])


# ------------------------------------------------------------------ image modes and files
def _ramp16() -> np.ndarray:
    """A 16-bit ramp over the whole 0..65535 range, (16, 32)."""
    return np.linspace(0, 65535, 16 * 32).round().astype(np.uint16).reshape(16, 32)


def _expected8(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)[..., None], 3, -1)


def test_sixteen_bit_png_is_scaled_not_saturated_in_training_and_thumbnail(tiny_coco):
    images_dir, annotation_file = tiny_coco
    ramp = _ramp16()
    Image.fromarray(ramp).save(images_dir / "0001.png")  # a 16-bit greyscale PNG (I;16)
    with Image.open(images_dir / "0001.png") as handle:
        assert handle.mode in ("I;16", "I")
    image, _ = CocoDetection(images_dir, annotation_file)[0]  # training and eval data
    pixels = np.asarray(image)
    assert np.array_equal(pixels, _expected8(ramp))
    assert (pixels == 255).mean() < 0.01  # it used to be 99.6% white
    thumbnail_input = load_image(images_dir / "0001.png")  # thumbdet thumbnail
    expected = torch.from_numpy(pixels.copy()).permute(2, 0, 1) / 255.0
    assert torch.allclose(thumbnail_input, expected)


def _rgba(colour):
    return Image.new("RGBA", (2, 1), colour)


def _float_image(values):
    return Image.fromarray(np.array([values], np.float32), "F")


def _palette_image(colour):
    image = Image.new("P", (1, 1), 1)
    image.putpalette([0, 0, 0, *colour])
    return image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(_ramp16()[:1, :4]), _expected8(_ramp16()[:1, :4])),
        (
            Image.frombytes("I;16B", (4, 1), _ramp16()[:1, :4].astype(">u2").tobytes()),
            _expected8(_ramp16()[:1, :4]),
        ),
        (Image.fromarray(_ramp16()[:1, :4].astype(np.int32), "I"), _expected8(_ramp16()[:1, :4])),
        (_float_image([0.0, 0.5, 1.0]), [[[0] * 3, [128] * 3, [255] * 3]]),
        (_float_image([0.0, 100.0, 255.0]), [[[0] * 3, [100] * 3, [255] * 3]]),
        (Image.new("L", (1, 1), 100), [[[100, 100, 100]]]),
        (Image.new("LA", (1, 1), (100, 255)), [[[100, 100, 100]]]),
        (Image.new("LA", (1, 1), (100, 0)), [[[255, 255, 255]]]),  # transparent: white
        (_rgba((10, 20, 30, 255)), [[[10, 20, 30]] * 2]),
        (_rgba((0, 0, 0, 0)), [[[255, 255, 255]] * 2]),
        (Image.new("CMYK", (1, 1), (255, 0, 0, 0)), [[[0, 255, 255]]]),
        (Image.new("CMYK", (1, 1), (0, 0, 0, 255)), [[[0, 0, 0]]]),
        (_palette_image((1, 2, 3)), [[[1, 2, 3]]]),
        (Image.new("1", (1, 1), 1), [[[255, 255, 255]]]),
    ],
    ids=["I;16", "I;16B", "I", "F[0,1]", "F[0,255]", "L", "LA", "LA-clear", "RGBA", "RGBA-clear",
         "CMYK-cyan", "CMYK-black", "P", "1"],
)  # fmt: skip
def test_every_image_mode_becomes_8_bit_rgb(image, expected):
    rgb = to_rgb(image, "test.png")
    assert rgb.mode == "RGB"
    assert np.array_equal(np.asarray(rgb), np.asarray(expected, dtype=np.uint8))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image.fromarray(np.array([[-1.0, 0.5]], np.float32), "F"), "mode F with values -1.0"),
        (Image.fromarray(np.array([[np.nan, 0.5]], np.float32), "F"), "expected finite values"),
        (Image.fromarray(np.array([[0, 70000]], np.int32), "I"), "expected 16-bit values"),
        (Image.new("LAB", (1, 1)), "unsupported image mode 'LAB'"),
    ],
)
def test_images_without_a_faithful_rgb_form_are_refused_by_name(image, message):
    with pytest.raises(ImageReadError, match="odd.tif") as error:
        to_rgb(image, "odd.tif")
    assert message in str(error.value) and "\n" not in str(error.value)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_or_non_image_files_are_named_before_any_item_is_read(tiny_coco):
    images_dir, annotation_file = tiny_coco
    _truncate(images_dir / "0003.png")
    with pytest.raises(ImageReadError, match="0003.png") as error:
        CocoDetection(images_dir, annotation_file)
    message = str(error.value)
    assert "image id 3" in message and "--skip-bad-images" in message and "\n" not in message
    (images_dir / "0003.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="0003.png.*cannot be read"):
        load_rgb_image(images_dir / "0003.png")
    with pytest.raises(ValueError, match="0003.png"):
        load_image(images_dir / "0003.png")  # thumbdet thumbnail


def test_skip_bad_images_leaves_them_out_with_a_counted_warning(tiny_coco, caplog):
    images_dir, annotation_file = tiny_coco
    _truncate(images_dir / "0002.png")
    (images_dir / "0004.png").write_bytes(b"\x89PNG garbage")
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetection(images_dir, annotation_file, skip_bad_images=True)
    assert dataset.num_skipped_images == 2 and len(dataset) == 3
    assert dataset.image_ids == [1, 3, 5]
    assert "skipped 2 of 5 images" in caplog.text and "0002.png" in caplog.text
    for index in range(len(dataset)):
        _, target = dataset[index]
        assert int(target["image_id"]) == dataset.image_ids[index]


def test_image_check_is_cached_by_size_and_mtime(tiny_coco, tmp_path, monkeypatch):
    images_dir, annotation_file = tiny_coco
    cache = tmp_path / "image_check.json"
    dataset = CocoDetection(images_dir, annotation_file, image_check_cache=cache)
    image_io.write_image_check_cache(dataset.image_paths(), cache)
    decoded = []
    real = image_io.load_rgb_image
    monkeypatch.setattr(image_io, "load_rgb_image", lambda path: decoded.append(path) or real(path))
    monkeypatch.setattr(image_io, "_checked", {})  # a new process: only the file remembers
    CocoDetection(images_dir, annotation_file, image_check_cache=cache)
    assert decoded == []
    _truncate(images_dir / "0005.png")  # size and mtime change: checked again, and refused
    with pytest.raises(ImageReadError, match="0005.png"):
        CocoDetection(images_dir, annotation_file, image_check_cache=cache)
    assert [path.name for path in decoded] == ["0005.png"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bbox": [5, 5, 10]}, "bbox [5, 5, 10] is malformed, expected 4 finite numbers"),
        ({"bbox": ["5", "5", "10", "10"]}, "is malformed, expected 4 finite numbers"),
        ({"bbox": "5 5 10 10"}, "is malformed"),
        ({"bbox": [5, 5, float("nan"), 10]}, "is malformed"),
        ({"bbox": [5, 5, -3, 10]}, "has a negative size"),
        ({"category_id": 99}, "category_id 99 is not listed in 'categories'"),
        ({"image_id": 999}, "image_id 999 is not listed in 'images'"),
        ({"category_id": "3"}, "category_id '3' is not listed"),
    ],
)
def test_malformed_annotations_are_named_by_id(tiny_coco, change, message):
    images_dir, annotation_file = tiny_coco
    data = json.loads(annotation_file.read_text())
    data["annotations"].append(
        dict({"id": 101, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10]}, **change)
    )
    annotation_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation id 101") as error:
        CocoDetection(images_dir, annotation_file)
    assert message in str(error.value) and "\n" not in str(error.value)
