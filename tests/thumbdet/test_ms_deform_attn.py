"""Multi-scale deformable attention: every backend against the PyTorch path, gradcheck, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from thumbdet.ops import (
    BACKEND_ENV_VAR,
    _build,
    _extension,
    available_backends,
    ms_deform_attn,
    ms_deform_attn_macs,
    ms_deform_attn_pytorch,
    traceable_ms_deform_attn,
    uncounted_ms_deform_attn,
)

BACKENDS = [
    "pytorch",
    "cpu",
    pytest.param("cuda", marks=pytest.mark.cuda),
]


def device_of(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def require_backend(backend: str) -> None:
    """Skip when the backend cannot run here; build the compiled kernel on first use."""
    if backend == "pytorch":
        return
    if backend == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA GPU visible")
        if not _build.cuda_toolkit_usable():
            pytest.skip("no CUDA toolkit to build the kernel")
    elif shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler to build the CPU kernel")
    _extension.require_kernel(backend)  # a compile error fails the test


def make_inputs(
    batch: int,
    level_shapes: list[tuple[int, int]],
    heads: int,
    channels: int,
    queries: int,
    points: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    outside: float = 0.2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random MSDA inputs; locations uniform in [-outside, 1 + outside] (partly off the map)."""
    generator = torch.Generator().manual_seed(seed)
    levels = len(level_shapes)
    spatial_shapes = torch.tensor(level_shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(-1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    pixels = int(areas.sum())
    value = torch.randn(batch, pixels, heads, channels, generator=generator, dtype=torch.float64)
    locations = torch.rand(
        batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64
    )
    locations = locations * (1 + 2 * outside) - outside
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator).double()
    weights = weights.softmax(-1)
    value, locations, weights = (
        t.to(device=device, dtype=dtype) for t in (value, locations, weights)
    )
    return value, spatial_shapes.to(device), level_start_index.to(device), locations, weights


class OperatorRecorder(TorchDispatchMode):
    """Records the names (``namespace.op``) of the operators called under it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(f"{func.namespace}.{func._opname}")
        return func(*args, **(kwargs or {}))


def run(backend, value, spatial_shapes, level_start_index, locations, weights):
    return ms_deform_attn(
        value, spatial_shapes, level_start_index, locations, weights, backend=backend
    )


# (batch, level shapes, heads M, channels D, queries Lq, points P)
PARITY_CASES = [
    (1, [(5, 7)], 2, 30, 9, 3),
    (3, [(6, 5), (3, 3), (2, 1)], 3, 71, 7, 2),
    (3, [(4, 4), (2, 3)], 1, 8, 5, 4),
    (1, [(8, 6), (4, 3), (2, 2), (1, 1)], 8, 4, 11, 4),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_shape(backend):
    require_backend(backend)
    inputs = make_inputs(2, [(4, 5), (2, 3)], 3, 6, 7, 2, device=device_of(backend))
    assert run(backend, *inputs).shape == (2, 7, 3 * 6)


@pytest.mark.parametrize(
    "case", PARITY_CASES, ids=lambda case: f"N{case[0]}L{len(case[1])}D{case[3]}"
)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_pytorch_path(backend, dtype, atol, case):
    require_backend(backend)
    inputs = make_inputs(*case, dtype=dtype, device=device_of(backend))
    value, _, _, locations, weights = inputs
    differentiable = [value, locations, weights]
    for tensor in differentiable:
        tensor.requires_grad_()
    expected = ms_deform_attn_pytorch(*inputs)  # plain autograd, independent of the operators
    actual = run(backend, *inputs)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
    grad_output = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, differentiable, grad_output)
    actual_grads = torch.autograd.grad(actual, differentiable, grad_output)
    for name, got, want in zip(
        ("value", "locations", "weights"), actual_grads, expected_grads, strict=True
    ):
        # Location gradients scale with W and H; compare them relative to their size.
        tolerance = atol * max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got, want, atol=tolerance, rtol=0, msg=f"grad of {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_centres_read_the_pixels(backend):
    # Independent of grid_sample: with align_corners=False, location ((x + 0.5) / W,
    # (y + 0.5) / H) is the centre of pixel (x, y), so bilinear sampling returns that pixel.
    require_backend(backend)
    value, spatial_shapes, level_start_index, _, weights = make_inputs(
        2, [(4, 5), (3, 2)], 2, 3, 6, 2, device=device_of(backend)
    )
    generator = torch.Generator().manual_seed(3)
    batch, queries, heads, levels, points = weights.shape
    expected = torch.zeros(batch, queries, heads, value.shape[-1], dtype=value.dtype)
    locations = torch.zeros(batch, queries, heads, levels, points, 2, dtype=value.dtype)
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        columns = torch.randint(width, (batch, queries, heads, points), generator=generator)
        rows = torch.randint(height, (batch, queries, heads, points), generator=generator)
        locations[:, :, :, level, :, 0] = (columns.double() + 0.5) / width
        locations[:, :, :, level, :, 1] = (rows.double() + 0.5) / height
        pixel = int(level_start_index[level]) + rows * width + columns  # (N, Lq, M, P)
        for n, q, m, p in torch.cartesian_prod(*map(torch.arange, pixel.shape)).tolist():
            weight = weights[n, q, m, level, p].cpu()
            expected[n, q, m] += weight * value[n, pixel[n, q, m, p], m].cpu()
    locations = locations.to(value.device)
    actual = run(backend, value, spatial_shapes, level_start_index, locations, weights)
    torch.testing.assert_close(actual.cpu(), expected.flatten(2), atol=1e-12, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    level_shapes=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=4),
    heads=st.integers(1, 3),
    channels=st.integers(1, 9),
    queries=st.integers(1, 6),
    points=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_cpu_kernel_matches_reference_on_random_shapes(
    batch, level_shapes, heads, channels, queries, points, seed
):
    require_backend("cpu")
    inputs = make_inputs(batch, level_shapes, heads, channels, queries, points, seed=seed)
    value, _, _, locations, weights = inputs
    differentiable = [t.requires_grad_() for t in (value, locations, weights)]
    expected = ms_deform_attn_pytorch(*inputs)
    actual = run("cpu", *inputs)
    torch.testing.assert_close(actual, expected, atol=1e-9, rtol=0)
    grad_output = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, differentiable, grad_output)
    actual_grads = torch.autograd.grad(actual, differentiable, grad_output)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-9 * max(1.0, float(want.abs().max())), rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    require_backend(backend)
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(4, 5), (3, 2)], 2, 3, 3, 2, device=device_of(backend), seed=1
    )

    def attention(value, locations, weights):
        return run(backend, value, spatial_shapes, level_start_index, locations, weights)

    inputs = tuple(t.requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(attention, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_low_precision_close_to_float64(backend, dtype):
    require_backend(backend)
    inputs = make_inputs(2, [(6, 5), (3, 3)], 2, 16, 8, 4, device=device_of(backend))
    value, spatial_shapes, level_start_index, locations, weights = inputs
    expected = run(backend, *inputs)
    low = [t.to(dtype).requires_grad_() for t in (value, locations, weights)]
    actual = run(backend, low[0], spatial_shapes, level_start_index, low[1], low[2])
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.double(), expected, atol=5e-2, rtol=0)
    actual.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == dtype for t in low)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs_give_the_contiguous_result(backend):
    require_backend(backend)
    inputs = make_inputs(2, [(4, 5), (2, 3)], 2, 6, 5, 2, device=device_of(backend))
    value, spatial_shapes, level_start_index, locations, weights = inputs
    strided_value = value.transpose(0, 1).contiguous().transpose(0, 1)  # same values, new strides
    strided_locations = locations.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided_value.is_contiguous() and not strided_locations.is_contiguous()
    expected = run(backend, *inputs)
    actual = run(
        backend, strided_value, spatial_shapes, level_start_index, strided_locations, weights
    )
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)


def test_compiled_operator_rejects_non_contiguous_tensors():
    require_backend("cpu")
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(4, 5)], 2, 6, 5, 2
    )
    strided_value = value.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided_value.is_contiguous()
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.thumbdet.ms_deform_attn(
            strided_value, spatial_shapes, level_start_index, locations, weights
        )


def test_compiled_operator_names_the_bad_shape_in_the_project_vocabulary():
    require_backend("cpu")
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(4, 5)], 2, 6, 5, 2
    )
    with pytest.raises(
        RuntimeError, match=r"value must have shape \(N, S, M, D\), got \[20, 2, 6\]"
    ):
        torch.ops.thumbdet.ms_deform_attn(
            value[0], spatial_shapes, level_start_index, locations, weights
        )
    with pytest.raises(RuntimeError, match=r"grad_output must have shape \(N, Lq, M \* D\), got"):
        torch.ops.thumbdet.ms_deform_attn_backward(
            torch.zeros(2, 3, 5, dtype=value.dtype),
            value,
            spatial_shapes,
            level_start_index,
            locations,
            weights,
        )


def _bad_input_cases():
    value, shapes, starts, locations, weights = make_inputs(2, [(4, 5), (2, 3)], 2, 6, 5, 3)
    return {
        "value rank": ((value[0], shapes, starts, locations, weights), ValueError, "value"),
        "locations rank": (
            (value, shapes, starts, locations[..., 0], weights),
            ValueError,
            "sampling_locations",
        ),
        "weights rank": (
            (value, shapes, starts, locations, weights[..., 0]),
            ValueError,
            "attention_weights",
        ),
        "heads differ": (
            (value[:, :, :1], shapes, starts, locations, weights),
            ValueError,
            "sampling_locations",
        ),
        "levels differ": (
            (value, shapes[:1], starts[:1], locations, weights),
            ValueError,
            "sampling_locations",
        ),
        "points differ": (
            (value, shapes, starts, locations, weights[..., :2]),
            ValueError,
            "attention_weights",
        ),
        "batch differs": (
            (value[:1], shapes, starts, locations, weights),
            ValueError,
            "sampling_locations",
        ),
        "areas do not sum to S": (
            (value, shapes + 1, starts, locations, weights),
            ValueError,
            "add up",
        ),
        "wrong level starts": (
            (value, shapes, starts + 1, locations, weights),
            ValueError,
            "level_start_index",
        ),
        "float spatial_shapes": (
            (value, shapes.double(), starts, locations, weights),
            TypeError,
            "spatial_shapes",
        ),
        "dtype mismatch": (
            (value, shapes, starts, locations.float(), weights),
            TypeError,
            "sampling_locations",
        ),
        "integer value": ((value.long(), shapes, starts, locations, weights), TypeError, "value"),
        "not a tensor": ((value.tolist(), shapes, starts, locations, weights), TypeError, "value"),
    }


@pytest.mark.parametrize("case", list(_bad_input_cases()))
def test_bad_input_raises_a_clear_error(case):
    arguments, error, message = _bad_input_cases()[case]
    with pytest.raises(error, match=message):
        ms_deform_attn(*arguments, backend="pytorch")


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        run("triton", *make_inputs(1, [(2, 2)], 1, 2, 1, 1))


def test_environment_variable_forces_the_backend(monkeypatch):
    inputs = make_inputs(1, [(3, 3)], 1, 2, 2, 1)
    monkeypatch.setenv(BACKEND_ENV_VAR, "cuda")  # overrides the explicit "pytorch"
    with pytest.raises((RuntimeError, ValueError), match="cuda"):
        run("pytorch", *inputs)
    monkeypatch.setenv(BACKEND_ENV_VAR, "pytorch")
    with OperatorRecorder() as recorder:
        run("auto", *inputs)
    assert "thumbdet.ms_deform_attn_pytorch" in recorder.names
    assert "thumbdet.ms_deform_attn" not in recorder.names


def test_missing_cuda_backend_says_how_to_build():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="python -m thumbdet.ops.build"):
        run("cuda", *make_inputs(1, [(3, 3)], 1, 2, 2, 1))


def test_import_never_builds_and_reports_pytorch(tmp_path):
    # A fresh process with an empty build cache: importing and asking must not compile.
    script = "import thumbdet.ops as ops; print(ops.available_backends())"
    environment = {**os.environ, "THUMBDET_BUILD_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['pytorch']"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("backend", ["auto", "pytorch", "cpu"])
def test_traceable_context_uses_no_custom_operator(backend):
    require_backend("cpu" if backend == "auto" else backend)  # "auto" then picks the kernel
    inputs = make_inputs(2, [(4, 5), (2, 3)], 2, 6, 5, 2)
    expected = run(backend, *inputs)
    with OperatorRecorder() as recorder, traceable_ms_deform_attn():
        actual = run(backend, *inputs)
    assert not any(name.startswith("thumbdet.") for name in recorder.names)
    assert "aten.grid_sampler_2d" in recorder.names
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)


def test_auto_uses_the_compiled_kernel_once_built():
    require_backend("cpu")
    assert "cpu" in available_backends()
    with OperatorRecorder() as recorder:
        run("auto", *make_inputs(1, [(3, 3)], 1, 2, 2, 1))
    assert "thumbdet.ms_deform_attn" in recorder.names


@pytest.mark.parametrize("backend", ["pytorch", "cpu"])
def test_torch_compile_matches_eager(backend):
    require_backend(backend)
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(4, 5), (2, 3)], 2, 6, 5, 2, dtype=torch.float32
    )

    def attention(value, locations, weights):
        return run(backend, value, spatial_shapes, level_start_index, locations, weights)

    torch._dynamo.reset()
    compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
    inputs = [t.requires_grad_() for t in (value, locations, weights)]
    expected = attention(*inputs)
    actual = compiled(*inputs)
    torch.testing.assert_close(actual, expected)
    grads = torch.autograd.grad(actual.square().sum(), inputs)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_mac_formula():
    value, spatial_shapes, level_start_index, locations, weights = make_inputs(
        2, [(4, 5), (2, 3)], 3, 6, 7, 2
    )
    shapes = [
        tuple(t.shape) for t in (value, spatial_shapes, level_start_index, locations, weights)
    ]
    assert ms_deform_attn_macs(*shapes) == 2 * 7 * 3 * 2 * 2 * 6 * 5
    with uncounted_ms_deform_attn():
        assert ms_deform_attn_macs(*shapes) == 0
    assert ms_deform_attn_macs(*shapes) > 0


@pytest.mark.parametrize("backend", ["pytorch", "cpu"])
def test_count_macs_counts_every_backend(backend):
    learnthumb = pytest.importorskip("learnthumb")
    if not hasattr(learnthumb, "count_macs") or not hasattr(learnthumb, "register_mac_formula"):
        pytest.skip("learnthumb.count_macs is not available yet")
    require_backend(backend)
    inputs = make_inputs(2, [(4, 5), (2, 3)], 3, 6, 7, 2)

    class Attention(torch.nn.Module):
        def forward(self, value, spatial_shapes, level_start_index, locations, weights):
            return run(backend, value, spatial_shapes, level_start_index, locations, weights)

    run(backend, *inputs)  # registers the formulas of the operators this backend uses
    expected = 2 * 7 * 3 * 2 * 2 * 6 * 5
    assert learnthumb.count_macs(Attention(), *inputs) == expected
    with uncounted_ms_deform_attn():
        assert learnthumb.count_macs(Attention(), *inputs) == 0
