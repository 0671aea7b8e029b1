"""The generated dataset: deterministic, cached, valid COCO, classes told apart only by detail."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO

from thumbdet.data.synthetic import SyntheticSpec, generate_synthetic_dataset
from thumbdet.data.synthetic_render import render_image

SMALL_SPEC = SyntheticSpec(image_size=128, num_train=6, num_val=40, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), SMALL_SPEC)


def test_render_is_deterministic_and_seed_dependent():
    first, objects = render_image(SMALL_SPEC, "val", 5)
    again, objects_again = render_image(SMALL_SPEC, "val", 5)
    other, _ = render_image(SyntheticSpec(seed=4), "val", 5)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and objects == objects_again
    assert not np.array_equal(first, other)


def test_image_does_not_depend_on_dataset_size():
    bigger = SyntheticSpec(image_size=128, num_train=6, num_val=400, seed=3)
    assert np.array_equal(render_image(SMALL_SPEC, "val", 7)[0], render_image(bigger, "val", 7)[0])


def test_coco_files_are_valid_and_match_the_images(dataset):
    coco = COCO(str(dataset.val_ann))
    assert len(coco.getImgIds()) == SMALL_SPEC.num_val
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SMALL_SPEC.textures)
    annotations = coco.loadAnns(coco.getAnnIds())
    assert annotations, "no objects generated"
    for ann in annotations:
        image = coco.loadImgs(ann["image_id"])[0]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= image["width"] and y + h <= image["height"]
        assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
    assert len(list(dataset.val_images.glob("*.png"))) == SMALL_SPEC.num_val
    assert len(list(dataset.train_images.glob("*.png"))) == SMALL_SPEC.num_train


def test_objects_span_coco_size_ranges(dataset):
    areas = np.array([a["area"] for a in json.loads(dataset.val_ann.read_text())["annotations"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas <= 96**2)).any()
    assert (areas > 96**2).any()


def test_cache_is_reused_and_regenerated_when_spec_changes(tmp_path):
    spec = SyntheticSpec(image_size=64, num_train=2, num_val=2)
    first = generate_synthetic_dataset(tmp_path, spec)
    marker = first.val_ann.stat().st_mtime_ns
    generate_synthetic_dataset(tmp_path, spec)
    assert first.val_ann.stat().st_mtime_ns == marker
    changed = generate_synthetic_dataset(
        tmp_path, SyntheticSpec(image_size=64, num_train=3, num_val=2)
    )
    assert len(list(changed.train_images.glob("*.png"))) == 3


def _object_pixels(spec, texture):
    """Full-size and 4x-bicubic pixels of the first large-enough object of a texture."""
    for index in range(200):
        pixels, objects = render_image(spec, "val", index)
        for item in objects:
            x, y, w, h = item["bbox"]
            if item["texture"] == texture and min(w, h) >= 40 and item["area"] == w * h:
                patch = torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 255
                thumb = F.interpolate(patch, scale_factor=0.25, mode="bicubic", antialias=True)
                inner_full = patch[0, :, y + 8 : y + h - 8, x + 8 : x + w - 8]
                inner_thumb = thumb[
                    0, :, (y + 8) // 4 : (y + h - 8) // 4, (x + 8) // 4 : (x + w - 8) // 4
                ]
                return inner_full, inner_thumb
    raise AssertionError(f"no rectangle of texture {texture}")


@pytest.mark.parametrize("texture", ["hstripes", "vstripes", "checker"])
def test_texture_is_visible_at_full_size_and_gone_in_a_bicubic_thumbnail(texture):
    full, thumb = _object_pixels(SyntheticSpec(), texture)
    assert full.std(dim=(1, 2)).min() > 0.15  # the texture: +-amplitude around the colour
    assert thumb.std(dim=(1, 2)).max() < 0.02  # averaged into a flat colour


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="textures"):
        SyntheticSpec(textures=("solid", "zebra"))
    with pytest.raises(ValueError, match="image_size"):
        SyntheticSpec(image_size=8)
    with pytest.raises(ValueError, match="split"):
        render_image(SyntheticSpec(), "test", 0)
