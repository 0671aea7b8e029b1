"""examples/plug_into_torchvision.py keeps running and maps boxes back to the original size."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("torchvision")

_helper = importlib.util.spec_from_file_location(
    "_run_example", Path(__file__).with_name("_run_example.py")
)
run_example = importlib.util.module_from_spec(_helper)
_helper.loader.exec_module(run_example)


def test_plug_into_torchvision():
    stdout = run_example.run_example("plug_into_torchvision.py")
    assert "training losses:" in stdout and "loss_classifier" in stdout
    lines = re.findall(r"thumbnail-space max ([\d.]+) .* original-space max ([\d.]+)", stdout)
    assert len(lines) == 2
    for thumbnail_max, original_max in lines:
        assert float(original_max) == pytest.approx(4 * float(thumbnail_max), rel=1e-4)
