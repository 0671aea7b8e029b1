"""WideDownsampler: bicubic plus learned detail channels, for a model with a widened stem.

Size contract (hypothesis), the starting point (a widened student on a wide thumbnail equals
the original model on the bicubic thumbnail), float64 gradients, TorchScript and ONNX export
with dynamic height and width, and the errors on bad input.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learnthumb import (
    InterpolateDownsampler,
    ThumbnailDistillation,
    WideDownsampler,
    create_downsampler,
    downsample_padding_mask,
    moment_matching_loss,
    thumbnail_size,
    widen_input_conv,
)
from tests.onnx_helpers import export_legacy_onnx

PROPERTY = settings(max_examples=25, deadline=None)


@PROPERTY
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    scale=st.integers(1, 5),
    extra=st.integers(1, 6),
    kernel_size=st.sampled_from([1, 3]),
)
def test_output_size_and_first_channels_are_the_bicubic_thumbnail(
    height, width, scale, extra, kernel_size
):
    down = WideDownsampler(scale, extra_channels=extra, kernel_size=kernel_size)
    images = torch.rand(2, 3, height, width)
    out = down(images)
    assert out.shape == (2, 3 + extra, *thumbnail_size((height, width), scale))
    assert down.out_channels == 3 + extra
    torch.testing.assert_close(out[:, :3], InterpolateDownsampler(scale)(images), rtol=0, atol=0)
    mask = torch.zeros(2, height, width, dtype=torch.bool)
    assert downsample_padding_mask(mask, scale).shape[-2:] == out.shape[-2:]


def test_registered_and_extra_channels_are_alive_at_init():
    down = create_downsampler("wide", 4, extra_channels=5, mode="area")
    assert isinstance(down, WideDownsampler) and down.out_channels == 8
    assert down.mode == "area"
    out = down(torch.rand(4, 3, 32, 32))
    spread = out[:, 3:].flatten(2).std(dim=2)  # (B, extra): no constant learned channel
    assert (spread > 0).all()


def test_widened_student_starts_as_the_model_on_the_bicubic_thumbnail():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=4).eval()
    images = torch.rand(2, 3, 64, 64)
    expected = model(InterpolateDownsampler(4)(images))
    down = WideDownsampler(4, extra_channels=9)
    student = widen_input_conv(model, down.out_channels)
    torch.testing.assert_close(student(down(images)), expected, rtol=0, atol=0)
    # ...and training moves the learned channels through the widened stem.
    student(down(images)).sum().backward()
    assert down.detail.mix.weight.grad is None or down.detail.mix.weight.grad.abs().sum() == 0
    assert student.conv_stem.weight.grad[:, 3:].abs().sum() > 0


def test_gradcheck():
    torch.manual_seed(0)
    down = WideDownsampler(3, extra_channels=2, kernel_size=3).double()
    x = torch.rand(1, 3, 8, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(down, (x,))


@pytest.mark.parametrize("antialias", [True, False])
def test_jit_script_keeps_height_and_width_dynamic(antialias):
    down = WideDownsampler(4, extra_channels=3, kernel_size=3, antialias=antialias).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(down)
    for size in [(37, 50), (21, 30)]:
        images = torch.rand(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(scripted(images), down(images))


def test_onnx_export_with_dynamic_height_and_width_matches_pytorch():
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    # The TorchScript-based exporter has no antialiased resize: export the plain one.
    down = WideDownsampler(4, extra_channels=3, kernel_size=3, antialias=False).eval()
    model = export_legacy_onnx(down)
    onnx.checker.check_model(model)
    for size in [(40, 52), (24, 36)]:
        images = torch.rand(2, 3, *size)
        (out,) = ReferenceEvaluator(model).run(None, {"images": images.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(
                torch.from_numpy(np.asarray(out)), down(images), atol=1e-4, rtol=1e-4
            )


def test_bad_input():
    with pytest.raises(ValueError, match="scale must be >= 1, got 0"):
        WideDownsampler(0)
    with pytest.raises(ValueError, match="extra_channels must be >= 1, got 0"):
        WideDownsampler(4, extra_channels=0)
    with pytest.raises(ValueError, match="extra_channels must be >= 1, got -1"):
        WideDownsampler(4, extra_channels=-1)
    with pytest.raises(TypeError, match=r"extra_channels must be an int, got float \(2.0\)"):
        WideDownsampler(4, extra_channels=2.0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        WideDownsampler(4, kernel_size=2)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        WideDownsampler(4, in_channels=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        WideDownsampler(4, mode="lanczos")
    down = WideDownsampler(4)
    with pytest.raises(ValueError, match=r"images must be 4-D"):
        down(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"images must have 3 channels"):
        down(torch.rand(1, 4, 16, 16))


def test_distillation_matches_moments_on_the_image_channels_of_a_wide_thumbnail():
    torch.manual_seed(0)
    teacher = timm.create_model("test_efficientnet", num_classes=4)
    student = widen_input_conv(timm.create_model("test_efficientnet", num_classes=4), 24)
    down = WideDownsampler(4)
    distill = ThumbnailDistillation(
        down, teacher, student, feature_layers=["blocks.1"], logits=lambda output: output
    )
    images = torch.rand(2, 3, 64, 64)
    thumbnail, logits, losses = distill(images, step=0)
    assert thumbnail.shape == (2, 24, 16, 16) and logits.shape == (2, 4)
    expected = moment_matching_loss(
        images, InterpolateDownsampler(4)(images), distill.moment_loss.lam
    )
    torch.testing.assert_close(losses["moment"], distill.weights.moment * expected)
