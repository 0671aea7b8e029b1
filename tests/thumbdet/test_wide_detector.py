"""Deformable-DETR reads a wide thumbnail once its backbone stem is widened."""

import pytest
import torch

from learnthumb import InterpolateDownsampler, WideDownsampler, find_input_conv, widen_input_conv
from thumbdet.models import build_model


def test_widened_detector_starts_as_on_the_bicubic_thumbnail():
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=3).eval()
    assert find_input_conv(model) == "backbone.body.conv1"
    images = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        expected = model(InterpolateDownsampler(4)(images))
        down = WideDownsampler(4)
        widen_input_conv(model, down.out_channels)
        out = model(down(images))
    torch.testing.assert_close(out["pred_logits"], expected["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(out["pred_boxes"], expected["pred_boxes"], rtol=0, atol=0)


def test_fewer_than_three_channels_is_refused():
    model = build_model("tiny", num_classes=3).eval()
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        model(torch.rand(1, 2, 32, 32))
