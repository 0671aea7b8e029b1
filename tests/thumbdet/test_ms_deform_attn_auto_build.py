"""The ``auto`` MSDA backend compiles its kernel on first use: once, with one line of notice,
falling back to the PyTorch path with one line when the build fails, never inside traced code.

The compiler is replaced by a recorder in all but the last test, so these run in milliseconds;
the last one builds for real (in the shared build cache, so at most once per machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from thumbdet.ops import _backends, _extension, ms_deform_attn, ms_deform_attn_pytorch


class FakeCompiler:
    """Stands in for ``require_kernel``: records calls, then succeeds or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.built = False
        self.error = error

    def require_kernel(self, device_type: str) -> None:
        self.calls.append(device_type)
        if self.error is not None:
            raise RuntimeError("could not build the cpu MSDA extension") from self.error
        self.built = True


@pytest.fixture
def compiler(monkeypatch):
    """A machine with no built kernel whose compiler is a :class:`FakeCompiler`."""
    fake = FakeCompiler()
    monkeypatch.delenv(_backends.BACKEND_ENV_VAR, raising=False)
    monkeypatch.delenv(_extension.AUTO_BUILD_ENV_VAR, raising=False)
    monkeypatch.setattr(_extension, "_failed_auto_builds", set())
    monkeypatch.setattr(_extension, "kernel_available", lambda _device_type: fake.built)
    monkeypatch.setattr(_extension, "kernel_loaded", lambda _device_type: fake.built)
    monkeypatch.setattr(_extension, "require_kernel", fake.require_kernel)
    return fake


def small_inputs():
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(1, 9, 1, 2, generator=generator)
    spatial_shapes = torch.tensor([[3, 3]])
    level_start_index = torch.tensor([0])
    locations = torch.rand(1, 2, 1, 1, 1, 2, generator=generator)
    weights = torch.rand(1, 2, 1, 1, 1, generator=generator)
    return value, spatial_shapes, level_start_index, locations, weights


def test_first_auto_call_builds_once_with_one_line(compiler, capsys):
    assert _backends._resolve("auto", torch.device("cpu")) == "cpu"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "compiling" in lines[0] and _extension.AUTO_BUILD_ENV_VAR in lines[0]
    assert _backends._resolve("auto", torch.device("cpu")) == "cpu"
    assert compiler.calls == ["cpu"]
    assert capsys.readouterr().err == ""


def test_failed_build_falls_back_to_pytorch_with_one_line(compiler, capsys):
    compiler.error = OSError("g++: command not found")
    output = ms_deform_attn(*small_inputs())  # no exception: the PyTorch path
    torch.testing.assert_close(output, ms_deform_attn_pytorch(*small_inputs()))
    assert _backends._resolve("auto", torch.device("cpu")) == "pytorch"
    notice, failure = capsys.readouterr().err.splitlines()
    assert "compiling" in notice
    assert "g++: command not found" in failure and "PyTorch path" in failure
    ms_deform_attn(*small_inputs())  # not retried, nothing printed again
    assert compiler.calls == ["cpu"]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("setting", ["0", "false", "off"])
def test_environment_variable_switches_the_build_off(compiler, capsys, monkeypatch, setting):
    monkeypatch.setenv(_extension.AUTO_BUILD_ENV_VAR, setting)
    assert _backends._resolve("auto", torch.device("cpu")) == "pytorch"
    assert compiler.calls == [] and capsys.readouterr().err == ""


def test_forced_pytorch_backend_never_builds(compiler, capsys, monkeypatch):
    monkeypatch.setenv(_backends.BACKEND_ENV_VAR, "pytorch")
    assert _backends._resolve("auto", torch.device("cpu")) == "pytorch"
    ms_deform_attn(*small_inputs())
    assert compiler.calls == [] and capsys.readouterr().err == ""


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traced_code_never_builds(compiler, capsys):
    value, spatial_shapes, level_start_index, locations, weights = small_inputs()

    def attention(value, locations, weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)

    torch._dynamo.reset()
    compiled = torch.compile(attention, backend="eager", fullgraph=True)
    expected = ms_deform_attn_pytorch(*small_inputs())
    torch.testing.assert_close(compiled(value, locations, weights), expected)
    torch.jit.trace(attention, (value, locations, weights), check_trace=False)
    assert compiler.calls == [] and capsys.readouterr().err == ""


@pytest.mark.build
def test_fresh_process_uses_the_kernel_by_the_second_call():
    # The shared build cache (an empty temporary one in CI): the first call builds it if needed.
    script = textwrap.dedent(
        """
        import torch
        from thumbdet.ops import _backends, _extension, ms_deform_attn
        value = torch.randn(1, 9, 1, 2)
        shapes, start = torch.tensor([[3, 3]]), torch.tensor([0])
        locations, weights = torch.rand(1, 2, 1, 1, 1, 2), torch.rand(1, 2, 1, 1, 1)
        ms_deform_attn(value, shapes, start, locations, weights)
        second = _backends._resolve("auto", value.device)  # what the second call runs
        ms_deform_attn(value, shapes, start, locations, weights)
        print(second, _extension.loaded_variant())
        """
    )
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    for name in (_backends.BACKEND_ENV_VAR, _extension.AUTO_BUILD_ENV_VAR):
        environment.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["cpu", "cpu"], result.stdout
    assert len(result.stderr.strip().splitlines()) <= 1, result.stderr  # the build notice
