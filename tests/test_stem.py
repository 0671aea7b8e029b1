"""widen_input_conv: a model takes a wide thumbnail and starts exactly where it was."""

import pytest
import timm
import torch
from torch import nn

from learnthumb import SpaceToDepthDownsampler, find_input_conv, widen_input_conv


def test_widened_timm_model_is_unchanged_on_its_first_channels():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=5).eval()
    images = torch.rand(2, 3, 32, 32)
    before = model(images)
    assert find_input_conv(model) == "conv_stem"
    widen_input_conv(model, 12)
    assert model.conv_stem.in_channels == 12
    after = model(torch.cat([images, torch.randn(2, 9, 32, 32)], dim=1))
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_new_weights_get_a_gradient_and_a_wide_thumbnail_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))
    widen_input_conv(model, 7)
    down = SpaceToDepthDownsampler(2, out_channels=7)
    model(down(torch.rand(2, 3, 8, 8))).sum().backward()
    extra = model[0].weight.grad[:, 3:]
    assert extra.abs().sum() > 0
    assert model[0].weight.requires_grad


def test_keeps_class_settings_and_bias():
    class Same(nn.Conv2d):
        pass

    conv = Same(3, 6, 5, stride=2, padding=2, bias=True)
    model = nn.Sequential(nn.Identity(), conv)
    widen_input_conv(model, 4, name="1")
    wide = model[1]
    assert type(wide) is Same
    assert (wide.stride, wide.padding, wide.kernel_size) == ((2, 2), (2, 2), (5, 5))
    torch.testing.assert_close(wide.bias, conv.bias)
    torch.testing.assert_close(wide.weight[:, :3], conv.weight)
    assert torch.count_nonzero(wide.weight[:, 3:]) == 0


def test_model_that_is_a_conv_returns_the_new_conv_and_same_width_is_a_no_op():
    conv = nn.Conv2d(3, 2, 1)
    wide = widen_input_conv(conv, 5)
    assert wide is not conv and wide.in_channels == 5
    assert widen_input_conv(conv, 3) is conv


@pytest.mark.parametrize(
    ("model", "kwargs", "match"),
    [
        (nn.Sequential(nn.Conv2d(3, 2, 1)), {"in_channels": 2}, "in_channels must be at least"),
        (nn.Sequential(nn.Conv2d(3, 2, 1)), {"in_channels": 0}, "in_channels"),
        (nn.Sequential(nn.Linear(3, 2)), {"in_channels": 4}, "must hold an nn.Conv2d"),
        (nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 1)), {"in_channels": 4, "name": "0"}, "name"),
        (nn.Sequential(nn.Conv2d(4, 4, 1, groups=2)), {"in_channels": 6}, "groups=1"),
    ],
)
def test_bad_input(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        widen_input_conv(model, **kwargs)
