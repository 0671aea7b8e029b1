"""export_onnx and export_program: dynamic batch, height and width, checked against PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from learnthumb import (
    Thumbnailed,
    create_downsampler,
    export_onnx,
    export_program,
    list_downsamplers,
)

SCALE = 4
# Three batches and sizes; the second and third are not multiples of the scale.
SIZES = [(1, 32, 32), (3, 37, 50), (2, 64, 17)]
MULTIPLE_SIZES = [(1, 32, 32), (3, 36, 52), (2, 64, 16)]
# The downsamplers whose graphs hold for multiples of the scale only (module docstring).
PROGRAM_MULTIPLE_ONLY = {"residual", "space_to_depth", "wide"}
ONNX_MULTIPLE_ONLY = {"area"}


@torch.no_grad()
def _perturb(module: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator)).abs_()
    return module


def _run_onnx(path, images: torch.Tensor) -> torch.Tensor:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": images.numpy()})
    return torch.from_numpy(np.asarray(output))


def _export(module, path, **kwargs):
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(module, path, **kwargs)


# ----------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("name", list_downsamplers())
def test_onnx_matches_pytorch_at_three_sizes(name, tmp_path):
    pytest.importorskip("onnxruntime")
    down = _perturb(create_downsampler(name, SCALE)).eval()
    path = _export(down, tmp_path / f"{name}.onnx")
    sizes = MULTIPLE_SIZES if name in ONNX_MULTIPLE_ONLY else SIZES
    for batch, height, width in sizes:
        images = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            expected = down(images)
        output = _run_onnx(path, images)
        assert output.shape == expected.shape
        torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the timm model takes about 8 s to export
def test_onnx_of_a_timm_student_matches_pytorch_at_three_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    student = Thumbnailed(model, _perturb(create_downsampler("residual", 2))).eval()
    path = _export(student, tmp_path / "student.onnx")
    for batch, height, width in [(1, 64, 64), (2, 77, 90), (1, 128, 48)]:
        images = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            expected = student(images)
        output = _run_onnx(path, images)
        assert output.shape == expected.shape == (batch, 10)
        # A whole network: float32 sums in another order differ by a few 1e-5 (seen in CI).
        torch.testing.assert_close(output, expected, atol=1e-4, rtol=1e-4)


def test_onnx_static_export_fixes_the_example_shape(tmp_path):
    onnx = pytest.importorskip("onnx")
    down = create_downsampler("thumbdet", SCALE)
    path = _export(
        down, tmp_path / "static.onnx", example_input=torch.rand(3, 3, 40, 24), dynamic=False
    )
    (graph_input,) = onnx.load(str(path)).graph.input
    dims = [dim.dim_value for dim in graph_input.type.tensor_type.shape.dim]
    assert dims == [3, 3, 40, 24]


def test_export_keeps_the_training_mode(tmp_path):
    down = create_downsampler("learned_resizer", SCALE).train()
    _export(down, tmp_path / "resizer.onnx")
    assert down.training
    export_program(down)
    assert down.training


def test_export_restores_each_submodules_own_mode():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
    student = Thumbnailed(model, create_downsampler("thumbdet", SCALE)).train()
    model[1].eval()  # a frozen BatchNorm inside a training student
    export_program(student)
    assert student.training and model[0].training
    assert not model[1].training


# ---------------------------------------------------------------------------- torch.export
@pytest.mark.parametrize("name", list_downsamplers())
def test_exported_program_matches_pytorch_at_three_sizes(name):
    down = _perturb(create_downsampler(name, SCALE)).eval()
    program = export_program(down)
    sizes = MULTIPLE_SIZES if name in PROGRAM_MULTIPLE_ONLY else SIZES
    for batch, height, width in sizes:
        images = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(images), down(images), atol=0, rtol=0)
    multiple = name in PROGRAM_MULTIPLE_ONLY
    assert _sizes_are_multiples(program) == (multiple, multiple)


def _sizes_are_multiples(program: torch.export.ExportedProgram) -> tuple[bool, bool]:
    """Whether the program's input height and width are ``scale * symbol`` (e.g. ``4*s86``)."""
    (images,) = [node for node in program.graph.nodes if node.name == "images"]
    return tuple(str(size).startswith(f"{SCALE}*") for size in images.meta["val"].shape[-2:])


def test_exported_program_of_a_student():
    student = Thumbnailed(nn.Conv2d(3, 5, 3, padding=1), create_downsampler("thumbdet", 2)).eval()
    program = export_program(student)
    images = torch.rand(3, 3, 41, 30)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(images), student(images))


def test_multiple_of_scale_can_be_forced():
    down = create_downsampler("thumbdet", SCALE)
    program = export_program(down, multiple_of_scale=True)
    assert _sizes_are_multiples(program) == (True, True)
    assert program.module()(torch.rand(2, 3, 36, 44)).shape == (2, 3, 9, 11)
    with pytest.raises(Exception):  # noqa: B017 - the constraint violation, from torch.export
        export_program(create_downsampler("residual", SCALE), multiple_of_scale=False)


# ---------------------------------------------------------------------------------- bad input
def test_bad_input(tmp_path):
    down = create_downsampler("thumbdet", SCALE)
    with pytest.raises(TypeError, match="module must be an nn.Module, got str"):
        export_program("thumbdet")
    with pytest.raises(ValueError, match="module must be a downsampler with an int scale"):
        export_program(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match=r"at least scale \+ 1 = 5 pixels"):
        export_program(down, torch.rand(1, 3, 4, 40))
    with pytest.raises(ValueError, match=r"example_input must be 4-D \(B, C, H, W\)"):
        export_program(down, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="opset must be an int >= 18, got 17"):
        export_onnx(down, tmp_path / "x.onnx", opset=17)
    with pytest.raises(ValueError, match="multiples of the scale"):
        export_onnx(
            create_downsampler("area", SCALE), tmp_path / "x.onnx", torch.rand(1, 3, 37, 40)
        )
    with pytest.raises(TypeError, match="multiple_of_scale must be a bool or None"):
        export_program(down, multiple_of_scale="yes")
