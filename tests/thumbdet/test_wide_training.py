"""``thumbdet train --mode thumbdet --downsampler wide``: a student with a widened stem."""

import pytest
import torch

from learnthumb import WideDownsampler
from tests.thumbdet.helpers import tiny_train_config, write_tiny_coco
from thumbdet.checkpoints.loading import load_detector
from thumbdet.models.thumbnail_detector import widen_stem
from thumbdet.training.modes import make_downsampler
from thumbdet.training.trainer import train


def test_widen_stem_unfreezes_the_widened_stem_and_ignores_three_channels():
    from thumbdet.models import build_model

    detector = build_model("tiny", num_classes=2)
    assert not detector.backbone.body.conv1.weight.requires_grad  # frozen as in the paper
    widen_stem(detector, torch.nn.Identity())  # 3 channels: nothing to do
    assert detector.backbone.body.conv1.in_channels == 3
    widen_stem(detector, WideDownsampler(4, extra_channels=5))
    assert detector.backbone.body.conv1.in_channels == 8
    assert detector.backbone.body.conv1.weight.requires_grad
    assert make_downsampler("wide", 4).out_channels == 24
    with pytest.raises(ValueError, match="warps the image"):
        make_downsampler("saliency_sampler", 4)


def test_wide_student_trains_saves_and_loads(tmp_path):
    data = write_tiny_coco(tmp_path / "data", num_images=4, size=(40, 52))
    teacher = train(tiny_train_config(data, tmp_path / "teacher"))
    config = tiny_train_config(
        data, tmp_path / "student", mode="thumbdet", teacher=str(teacher), stage1_epochs=0,
        downsampler="wide",
    )  # fmt: skip
    with pytest.raises(ValueError, match="add --one-stage"):
        train(config.replace(stage1_epochs=1))
    student = load_detector(train(config))
    assert student.detector.backbone.body.conv1.in_channels == 24
    images = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        out = student(images)
    assert out["pred_boxes"].shape[-1] == 4 and torch.isfinite(out["pred_logits"]).all()
