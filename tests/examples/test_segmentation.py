"""`python -m examples.segmentation.run --quick` runs end to end and writes what its README says."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.examples._run_example import COMPARED_MODELS, run_quick


def test_segmentation_quick(tmp_path):
    stdout, results = run_quick("examples.segmentation.run", tmp_path)
    assert [row["model"] for row in results["rows"]] == COMPARED_MODELS
    assert [row["input"] for row in results["rows"]] == ["32x32", "8x8", "8x8", "8x8"]
    for row in results["rows"]:
        assert 0.0 <= row["mIoU"] <= 1.0
    margin = results["rows"][3]["mIoU"] - results["rows"][1]["mIoU"]
    assert abs(results["margin_learned_minus_bicubic"] - margin) < 1e-9
    assert "| model | input | mIoU |" in stdout
    # the generated dataset: PNG images and PNG label masks with the example's 4 classes
    masks = sorted((tmp_path / "data" / "train" / "masks").glob("*.png"))
    images = sorted((tmp_path / "data" / "train" / "images").glob("*.png"))
    assert len(masks) == len(images) == 32
    with Image.open(masks[0]) as mask, Image.open(images[0]) as image:
        assert mask.mode == "L" and image.mode == "RGB" and mask.size == image.size == (32, 32)
        assert np.asarray(mask).max() < 4
    with Image.open(tmp_path / "figure.png") as figure:
        assert figure.width > figure.height  # 8 columns, 4 rows
