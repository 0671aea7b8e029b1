"""The learned resizer (Talebi & Milanfar) and space-to-depth thumbnails.

Size contract and starting point (hypothesis), float64 gradients, TorchScript and ONNX export
with dynamic height and width, and the errors on bad input.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from learnthumb import (
    InterpolateDownsampler,
    LearnedResizer,
    SpaceToDepthDownsampler,
    create_downsampler,
    downsample_padding_mask,
    list_downsamplers,
    thumbnail_size,
)
from tests.onnx_helpers import export_legacy_onnx

PROPERTY = settings(max_examples=25, deadline=None)
HAS_ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None


def _small(name: str, scale: int, **kwargs: object) -> nn.Module:
    """The family at a size that keeps the tests fast (few resizer channels)."""
    if name == "learned_resizer":
        kwargs.setdefault("channels", 4)
    return create_downsampler(name, scale, **kwargs)


def _perturb_last_conv(down: LearnedResizer) -> LearnedResizer:
    """Give the zero-initialised last conv random weights, so every branch carries gradient."""
    with torch.no_grad():
        down.tail.weight.normal_(std=0.1)
        down.tail.bias.normal_(std=0.1)
    return down


# --------------------------------------------------------------------------------- registry
def test_both_families_are_registered():
    assert {"learned_resizer", "space_to_depth"} <= set(list_downsamplers())
    assert isinstance(create_downsampler("learned_resizer", 2), LearnedResizer)
    assert isinstance(create_downsampler("space_to_depth", 2), SpaceToDepthDownsampler)
    assert create_downsampler("space_to_depth", 3, out_channels=8).mix.out_channels == 8


def test_learned_resizer_structure_follows_the_paper():
    down = LearnedResizer(4)
    assert down.head.kernel_size == (7, 7) and down.head.out_channels == 16
    assert down.pointwise.kernel_size == (1, 1)
    assert len(down.blocks) == 1
    assert down.merge.kernel_size == (3, 3)
    assert down.tail.kernel_size == (7, 7) and down.tail.out_channels == 3
    assert len(LearnedResizer(4, num_blocks=0).blocks) == 0
    assert "mode='bilinear'" in repr(down)
    assert "scale=4" in repr(SpaceToDepthDownsampler(4))


# ---------------------------------------------------------------------------- size contract
@PROPERTY
@given(
    name=st.sampled_from(["learned_resizer", "space_to_depth"]),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    scale=st.integers(1, 5),
)
def test_output_size_is_the_thumbnail_size(name, height, width, scale):
    down = _small(name, scale)
    out = down(torch.rand(2, 3, height, width))
    expected = thumbnail_size((height, width), scale)
    assert out.shape == (2, 3, *expected)
    # The padding mask reduced by the library's rule lines up with the thumbnail.
    mask = torch.zeros(2, height, width, dtype=torch.bool)
    assert downsample_padding_mask(mask, scale).shape[-2:] == out.shape[-2:]


@pytest.mark.parametrize("name", ["learned_resizer", "space_to_depth"])
@pytest.mark.parametrize("size", [(1, 1), (3, 2), (4, 1)])
def test_images_smaller_than_the_scale_give_one_pixel(name, size):
    out = _small(name, 4)(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, 1, 1)
    assert torch.isfinite(out).all()


def test_space_to_depth_wide_thumbnail_shape():
    down = SpaceToDepthDownsampler(4, out_channels=12, kernel_size=3)
    assert down(torch.rand(2, 3, 37, 50)).shape == (2, 12, 10, 13)


def test_learned_resizer_single_one_pixel_thumbnail_needs_eval_mode():
    # BatchNorm in training mode cannot normalise one value per channel (documented).
    down = _small("learned_resizer", 4)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        down(torch.rand(1, 3, 3, 3))
    assert down.eval()(torch.rand(1, 3, 3, 3)).shape == (1, 3, 1, 1)


# --------------------------------------------------------------------- starting point
@PROPERTY
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    scale=st.integers(1, 5),
    mode=st.sampled_from(["bilinear", "bicubic"]),
    antialias=st.booleans(),
    train=st.booleans(),
)
def test_learned_resizer_equals_its_interpolation_at_init(
    height, width, scale, mode, antialias, train
):
    down = LearnedResizer(scale, channels=4, mode=mode, antialias=antialias).train(train)
    x = torch.rand(2, 3, height, width)
    expected = InterpolateDownsampler(scale, mode=mode, antialias=antialias)(x)
    assert torch.equal(down(x), expected)


@PROPERTY
@given(
    cells=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    scale=st.integers(1, 5),
    kernel_size=st.sampled_from([1, 3]),
    in_channels=st.sampled_from([1, 3, 4]),
)
def test_space_to_depth_equals_area_average_at_init(cells, scale, kernel_size, in_channels):
    down = SpaceToDepthDownsampler(
        scale, out_channels=in_channels, kernel_size=kernel_size, in_channels=in_channels
    )
    x = torch.rand(2, in_channels, cells[0] * scale, cells[1] * scale)
    torch.testing.assert_close(down(x), F.avg_pool2d(x, scale))


def test_space_to_depth_partial_cells_average_the_zero_padding():
    x = torch.rand(1, 3, 5, 7)
    padded = F.pad(x, [0, 1, 0, 3])  # to 8 x 8
    torch.testing.assert_close(SpaceToDepthDownsampler(4)(x), F.avg_pool2d(padded, 4))


@pytest.mark.parametrize("out_channels", [2, 8])
def test_space_to_depth_other_widths_start_with_the_area_average(out_channels):
    torch.manual_seed(0)
    down = SpaceToDepthDownsampler(4, out_channels=out_channels)
    x = torch.rand(2, 3, 16, 12)
    out = down(x)
    shared = min(3, out_channels)
    torch.testing.assert_close(out[:, :shared], F.avg_pool2d(x, 4)[:, :shared])
    if out_channels > 3:
        # The extra channels keep PyTorch's default (random, non-zero) initialisation.
        assert down.mix.weight[3:].abs().sum() > 0


def test_reset_parameters_restores_the_starting_point():
    x = torch.rand(2, 3, 16, 20)
    resizer = _perturb_last_conv(LearnedResizer(4, channels=4))
    assert not torch.equal(resizer(x), InterpolateDownsampler(4, mode="bilinear")(x))
    resizer.reset_parameters()
    assert torch.equal(resizer(x), InterpolateDownsampler(4, mode="bilinear")(x))
    wide = SpaceToDepthDownsampler(4, kernel_size=3)
    with torch.no_grad():
        wide.mix.weight.normal_()
    wide.reset_parameters()
    torch.testing.assert_close(wide(x), F.avg_pool2d(x, 4))


def test_learned_resizer_learns_from_its_starting_point():
    x = torch.rand(2, 3, 16, 20)
    down = LearnedResizer(4, channels=4)
    down(x).square().mean().backward()
    assert down.tail.weight.grad.abs().sum() > 0  # the zero conv gets a gradient at once
    down.zero_grad()
    _perturb_last_conv(down)(x).square().mean().backward()
    dead = [name for name, p in down.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, f"parameters without gradient: {dead}"


# -------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(("mode", "antialias"), [("bilinear", True), ("bicubic", False)])
def test_learned_resizer_gradcheck(mode, antialias):
    torch.manual_seed(0)
    down = LearnedResizer(4, channels=2, mode=mode, antialias=antialias).double()
    _perturb_last_conv(down)
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(down, (x,))


def test_space_to_depth_gradcheck():
    torch.manual_seed(0)
    down = SpaceToDepthDownsampler(4, out_channels=4, kernel_size=3).double()
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(down, (x,))


# --------------------------------------------------------------------------------- export
EXPORT_CASES = {
    "learned_resizer": lambda: _perturb_last_conv(LearnedResizer(4, channels=4)),
    "learned_resizer_no_antialias": lambda: _perturb_last_conv(
        LearnedResizer(4, channels=4, antialias=False)
    ),
    "space_to_depth": lambda: SpaceToDepthDownsampler(4, out_channels=5, kernel_size=3),
}
OTHER_SIZES = [(37, 50), (21, 30)]  # neither is the export size, nor a multiple of 4


def _export_case(name: str) -> nn.Module:
    torch.manual_seed(0)
    down = EXPORT_CASES[name]()
    if isinstance(down, LearnedResizer):
        # Non-trivial BatchNorm statistics, then eval mode as exported models run.
        with torch.no_grad():
            down(torch.rand(4, 3, 32, 40))
    return down.eval()


@pytest.mark.parametrize("name", sorted(EXPORT_CASES))
def test_jit_script_and_trace_keep_height_and_width_dynamic(name):
    down = _export_case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(down)
        traced = torch.jit.trace(down, torch.rand(1, 3, 32, 32))
    for size in OTHER_SIZES:
        images = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected = down(images)
            torch.testing.assert_close(scripted(images), expected)
            torch.testing.assert_close(traced(images), expected)


def _run_onnx(model_bytes: bytes, images: torch.Tensor) -> torch.Tensor:
    """Run an exported model: onnxruntime when installed, else ONNX's reference evaluator."""
    if HAS_ONNXRUNTIME:
        import onnxruntime

        session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        (out,) = session.run(None, {name: images.numpy()})
    else:
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.load_from_string(model_bytes)
        (out,) = ReferenceEvaluator(model).run(None, {model.graph.input[0].name: images.numpy()})
    return torch.from_numpy(np.asarray(out))


def _check_onnx_model(model, down: nn.Module) -> None:
    import onnx

    onnx.checker.check_model(model)
    model_bytes = model.SerializeToString()
    for size in OTHER_SIZES:
        images = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected = down(images)
        out = _run_onnx(model_bytes, images)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["learned_resizer_no_antialias", "space_to_depth"])
def test_onnx_export_with_dynamic_height_and_width_matches_pytorch(name):
    down = _export_case(name)
    _check_onnx_model(export_legacy_onnx(down), down)


@pytest.mark.slow  # the dynamo-based exporter takes about 5 s on a first call
def test_antialiased_learned_resizer_onnx_export_with_dynamo_matches_pytorch():
    # The TorchScript-based exporter has no antialiased resize; the dynamo-based one has.
    pytest.importorskip("onnxscript")
    down = _export_case("learned_resizer")
    # A thumbnail side of 1 is a special case the graph does not cover: H, W >= 5 at 4x.
    dims = {
        0: torch.export.Dim("batch"),
        2: torch.export.Dim("height", min=5),
        3: torch.export.Dim("width", min=5),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            down, (torch.rand(2, 3, 32, 32),), dynamo=True, dynamic_shapes=(dims,), verbose=False
        )
    _check_onnx_model(program.model_proto, down)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("cls", [LearnedResizer, SpaceToDepthDownsampler])
def test_constructor_errors(cls):
    with pytest.raises(ValueError, match="scale must be >= 1, got 0"):
        cls(0)
    with pytest.raises(TypeError, match=r"scale must be an int, got float \(2.5\)"):
        cls(2.5)
    with pytest.raises(TypeError, match="scale must be an int"):
        cls(True)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        cls(4, in_channels=0)


def test_family_specific_constructor_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        LearnedResizer(4, mode="area")
    with pytest.raises(ValueError, match="channels must be >= 1"):
        LearnedResizer(4, channels=0)
    with pytest.raises(ValueError, match="num_blocks must be >= 0"):
        LearnedResizer(4, num_blocks=-1)
    with pytest.raises(ValueError, match="kernel_size must be odd so the output size is exact"):
        SpaceToDepthDownsampler(4, kernel_size=2)
    with pytest.raises(ValueError, match="out_channels must be >= 1"):
        SpaceToDepthDownsampler(4, out_channels=0)
    with pytest.raises(ValueError, match="scale must be >= 1"):
        create_downsampler("space_to_depth", 0)
