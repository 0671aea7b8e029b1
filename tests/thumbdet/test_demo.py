"""``thumbdet demo --quick`` end to end, plus the report and figure helpers it uses."""

import json

import numpy as np
import pytest
import torch

from tests.thumbdet.quick_golden import GOLDEN_BACKEND, compare, phase_fingerprint
from thumbdet.cli import main
from thumbdet.experiments.figures import enlarge_nearest, plot_detections, plot_thumbnails
from thumbdet.experiments.report import (
    AP_KEYS,
    format_results_table,
    make_row,
    normalise_ap_metrics,
)
from thumbdet.ops import BACKEND_ENV_VAR

MODELS = ("teacher", "bicubic_4x", "thumbdet_4x")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    output, data = root / "out", root / "data"
    argv = ["demo", "--quick", "--output", str(output), "--data-dir", str(data)]
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        # The PyTorch MSDA path, as when the golden runs were recorded: no compiler needed.
        patch.setenv(BACKEND_ENV_VAR, GOLDEN_BACKEND)
        assert main(argv) == 0  # runs with --threads 1 ...
    assert torch.get_num_threads() == threads  # ... and leaves the process as it found it
    return output, data, argv


def test_quick_demo_writes_results_and_figures(quick_demo):
    output, _, _ = quick_demo
    results = json.loads((output / "results.json").read_text())
    for key in MODELS:
        row = results[key]
        for metric in AP_KEYS:
            assert row[metric] is None or 0.0 <= row[metric] <= 100.0
        assert row["params"] > 0 and row["gmacs"] > 0 and row["images_per_s"] > 0
    assert (
        "accuracy_drop_rate" in results["bicubic_4x"]
        and "accuracy_drop_rate" in results["thumbdet_4x"]
    )
    assert "accuracy_drop_rate" not in results["teacher"]
    assert results["wall_seconds"] > 0
    # the students see 16x fewer pixels; the learned downsampler adds a few convolutions
    assert results["bicubic_4x"]["gmacs"] < results["teacher"]["gmacs"] / 4
    assert results["bicubic_4x"]["gmacs"] < results["thumbdet_4x"]["gmacs"]
    assert results["thumbdet_4x"]["params"] > results["bicubic_4x"]["params"]
    for name in ("fig1_map_vs_speed", "fig5_thumbnails", "fig6_detections", "dataset_samples"):
        assert (output / f"{name}.png").stat().st_size > 1000


def test_quick_demo_is_bit_identical_to_the_recorded_runs(quick_demo):
    output, _, _ = quick_demo
    phases = {key: phase_fingerprint(output / key) for key in MODELS}
    assert compare(phases) == []


def test_rerun_reuses_finished_phases(quick_demo, capsys):
    output, _, argv = quick_demo
    checkpoints = [output / key / "checkpoint.pth" for key in MODELS]
    before = [path.stat().st_mtime_ns for path in checkpoints]
    assert main(argv) == 0
    assert [path.stat().st_mtime_ns for path in checkpoints] == before
    assert "ThumbDet vs bicubic" in capsys.readouterr().out


def test_normalise_ap_metrics_maps_names_and_missing_sizes():
    metrics = {"AP": 40.0, "AP50": 60.0, "AP75": 42.0, "APs": -1.0, "APm": 30.0, "APl": 50.0}
    assert normalise_ap_metrics(metrics) == {
        "mAP": 40.0,
        "AP50": 60.0,
        "AP75": 42.0,
        "APs": None,
        "APm": 30.0,
        "APl": 50.0,
    }
    with pytest.raises(ValueError, match="AP75"):
        normalise_ap_metrics({"AP": 1.0, "AP50": 1.0})


def test_make_row_accuracy_drop_rate_is_eq_11_in_percent():
    metrics = {"AP": 32.3, "AP50": 0, "AP75": 0, "APs": 0, "APm": 0, "APl": 0}
    row = make_row(metrics, params=10, gmacs=1.0, images_per_s=2.0, teacher_map=43.8)
    assert row["accuracy_drop_rate"] == pytest.approx(100 * (43.8 - 32.3) / 43.8)
    table = format_results_table(
        {"teacher": make_row({**metrics, "AP": 43.8}, 10, 4.0, 1.0), "thumbdet_4x": row}
    )
    assert "2.00×" in table and "4.00×" in table  # speed-up and GMAC reduction


def test_enlarge_nearest_repeats_pixels():
    thumbnail = torch.arange(4.0).reshape(1, 2, 2).expand(3, 2, 2) / 4
    big = enlarge_nearest(thumbnail, (4, 4))
    assert big.shape == (4, 4, 3)
    assert np.allclose(big[:2, :2, 0], 0.0) and np.allclose(big[2:, 2:, 0], 0.75)


def test_figures_reject_mismatched_inputs(tmp_path):
    images = [np.zeros((8, 8, 3), dtype=np.uint8)]
    with pytest.raises(ValueError, match="columns"):
        plot_thumbnails(images, {"bicubic": []}, tmp_path / "f.png")
    with pytest.raises(ValueError, match="detections"):
        plot_detections(images, {"m": []}, ["a"], tmp_path / "g.png")
    with pytest.raises(ValueError, match="image"):
        plot_thumbnails([np.zeros((8, 8))], {}, tmp_path / "h.png")
