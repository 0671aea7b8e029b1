"""examples/plug_into_torchvision.py keeps running and maps boxes back to the original size."""

from __future__ import annotations

import re

import pytest

from tests.examples._run_example import run_example

pytest.importorskip("torchvision")


def test_plug_into_torchvision():
    stdout = run_example("plug_into_torchvision.py")
    assert "training losses:" in stdout and "loss_classifier" in stdout
    lines = re.findall(r"thumbnail-space max ([\d.]+) .* original-space max ([\d.]+)", stdout)
    assert len(lines) == 2
    for thumbnail_max, original_max in lines:
        assert float(original_max) == pytest.approx(4 * float(thumbnail_max), rel=1e-4)
