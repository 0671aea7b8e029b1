"""python -m examples.pose.run --quick runs end to end and writes what its README promises."""

from __future__ import annotations

import importlib
import json

import torch

from tests.examples._run_example import COMPARED_MODELS, run_quick


def test_pose_quick(tmp_path):
    stdout, results = run_quick("examples.pose.run", tmp_path)
    assert [row["model"] for row in results["rows"]] == COMPARED_MODELS
    for row in results["rows"]:
        assert 0.0 <= row["PCK@0.05"] <= 1.0
    assert "| model | input | PCK@0.05 |" in stdout
    keypoints = json.loads((tmp_path / "data" / "train" / "keypoints.json").read_text())
    assert len(keypoints) == 32
    assert all(len(points) == 6 and len(points[0]) == 2 for points in keypoints.values())
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_pose_decoding_recovers_target_keypoints():
    """Gaussian targets decoded at any heatmap size come back within a fraction of a pixel."""
    pose = importlib.import_module("examples.pose.run")  # the repository root is on sys.path
    image_size = (64, 64)
    keypoints = torch.tensor([[[10.3, 20.7], [40.0, 41.5], [5.5, 60.2]]])  # (1, 3, 2) as (x, y)
    heatmaps = pose.target_heatmaps(keypoints, image_size, pose.heatmap_size(image_size))
    decoded = pose.predicted_keypoints(heatmaps, image_size)
    assert (decoded - keypoints).norm(dim=-1).max() < 1.0
