"""COCO-format dataset, Deformable DETR transforms and padded batching."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

from thumbdet.data import (
    CocoDetection,
    DetectionCollator,
    collate_detection,
    load_coco_annotations,
    make_transforms,
    pad_images,
    resized_size,
)
from thumbdet.testing import write_tiny_coco


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
        {"id": 101, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, -2], "iscrowd": 0},
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


def test_train_transforms_keep_boxes_on_their_object(tmp_path):
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
        assert tensor.dtype == torch.float32 and 0.0 <= tensor.min() and tensor.max() <= 1.0
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
