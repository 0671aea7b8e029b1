"""The quality suite (benchmarks/quality): its data, metrics, statistics and one tiny run."""

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch

from benchmarks.quality.data import (
    EXTERNAL_SOURCES,
    SOURCES,
    UNSEEN_SOURCES,
    build_dataset,
    external_photos,
    unseen_photos,
)
from benchmarks.quality.runner import Budget, load_data, run_arm, train_teacher
from benchmarks.quality.stats import paired_difference, summarize
from benchmarks.quality.tasks import _centernet_targets, _soft_argmax, task_spec


def test_paired_difference_interval():
    # Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 +- 2.484: a tie.
    diff = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert diff["mean"] == pytest.approx(2.0)
    assert diff["low"] == pytest.approx(2.0 - 4.3027 / math.sqrt(3), abs=1e-3)
    assert diff["verdict"] == "tie"
    assert paired_difference([1.1, 1.0, 0.9, 1.0], [0.0] * 4)["verdict"] == "better"
    assert paired_difference([-1.1, -1.0, -0.9], [0.0] * 3)["verdict"] == "worse"
    assert paired_difference([3.0], [1.0])["verdict"] == "tie"  # one seed proves nothing
    with pytest.raises(ValueError, match="pair up seed by seed"):
        paired_difference([1.0, 2.0], [1.0])
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}


@pytest.mark.parametrize("task", ["classify", "detect", "segment", "keypoints", "mechanism"])
def test_datasets_are_images_with_valid_targets(task):
    size = task_spec(task).image_size
    train = build_dataset(task, "train", 6, size, seed=1)
    again = build_dataset(task, "train", 6, size, seed=1)
    test = build_dataset(task, "test", 6, size, seed=1)
    assert train.images.shape == (6, 3, size, size) and train.images.dtype == torch.float32
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0
    assert torch.equal(train.images, again.images)  # deterministic
    assert not torch.equal(train.images, test.images)
    if task == "detect":
        for boxes in train.targets:
            assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) >= 1
            assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= size
    elif task == "keypoints":
        assert train.targets.shape == (6, 4, 2)
        assert train.targets.min() >= 0 and train.targets.max() <= size
    elif task == "segment":
        assert set(train.targets.unique().tolist()) <= {0, 1} and train.targets.sum() > 0
    with pytest.raises(ValueError, match="task must be one of"):
        build_dataset("pose", "train", 1, 8)


@pytest.mark.parametrize("split", ["unseen", "external"])
@pytest.mark.parametrize("task", ["detect", "segment", "keypoints"])
def test_the_scene_splits_draw_scenes_on_other_photos(task, split):
    size = task_spec(task).image_size
    scenes = build_dataset(task, split, 4, size, seed=1)
    test = build_dataset(task, "test", 4, size, seed=1)
    assert scenes.images.shape == (4, 3, size, size)
    assert scenes.images.min() >= 0.0 and scenes.images.max() <= 1.0
    assert not torch.equal(scenes.images, test.images)
    assert torch.equal(scenes.images, build_dataset(task, split, 4, size, seed=1).images)
    assert len({*SOURCES, *UNSEEN_SOURCES, *EXTERNAL_SOURCES}) == (
        len(SOURCES) + len(UNSEEN_SOURCES) + len(EXTERNAL_SOURCES)
    )


def test_the_external_photos_are_other_packages_photos():
    photos = external_photos()
    assert tuple(photos) == EXTERNAL_SOURCES
    for name, photo in photos.items():
        assert photo.dtype == np.float32 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= task_spec("detect").image_size, name
        assert photo.min() >= 0.0 and photo.max() <= 1.0 and photo.std() > 0.02, name
    assert not any(
        np.array_equal(photo, other)
        for photo in photos.values()
        for other in unseen_photos().values()
        if photo.shape == other.shape
    )


@pytest.mark.parametrize("split", ["unseen", "external"])
@pytest.mark.parametrize("task", ["classify", "mechanism"])
def test_the_scene_splits_refuse_tasks_without_scenes(task, split):
    with pytest.raises(ValueError, match=f"split '{split}' takes a scene task"):
        build_dataset(task, split, 1, 64)
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset(task, "validation", 1, 64)


def test_detection_metric_of_perfect_predictions_is_100():
    spec = task_spec("detect")
    data = build_dataset("detect", "test", 8, spec.image_size)
    heat, regression, _ = _centernet_targets(data.targets, (32, 32), spec.image_size)
    output = torch.cat([torch.logit(heat.clamp(1e-4, 1 - 1e-4))[:, None], regression], dim=1)
    metrics = spec.evaluate(output, data)
    assert metrics["box_ap"] == pytest.approx(100.0)
    assert spec.evaluate(torch.zeros_like(output) - 5, data)["box_ap"] < 1.0


def test_soft_argmax_finds_a_sharp_peak_in_original_pixels():
    heatmaps = torch.full((1, 1, 16, 16), -1e4)
    heatmaps[0, 0, 3, 10] = 0.0  # cell (row 3, column 10) of a 16-cell grid over 128 pixels
    assert _soft_argmax(heatmaps, 128).tolist() == [[[84.0, 28.0]]]  # cell centres: 8 px apart


def test_a_tiny_suite_run_scores_every_kind_of_arm(tmp_path):
    spec = dataclasses.replace(task_spec("detect"), train_count=16, test_count=8)
    budget = Budget(teacher_steps=2, student_steps=3)
    data = load_data(spec)
    teacher, record = train_teacher(spec, data, budget, tmp_path)
    _, again = train_teacher(spec, data, budget, tmp_path)  # read back, not retrained
    assert again == record and len(list(tmp_path.glob("*.pt"))) == 1
    for arm, channels in [("bicubic", 3), ("residual", 3), ("thumbdet", 3), ("wide", 24),
                          ("saliency_sampler", 3)]:  # fmt: skip
        result = run_arm(spec, data, teacher, arm, 4, seed=0, budget=budget)
        assert 0.0 <= result["metrics"]["box_ap"] <= 100.0
        assert len(result["constant_fraction"]) == channels


def test_the_command_writes_its_summary_and_resumes(tmp_path, monkeypatch):
    import importlib
    import json

    cli = importlib.import_module("benchmarks.quality.__main__")
    tasks = importlib.import_module("benchmarks.quality.tasks")
    small = dataclasses.replace(tasks.TASKS["segment"], train_count=8, test_count=4)
    monkeypatch.setitem(tasks.TASKS, "segment", small)
    monkeypatch.setattr(cli, "QUICK_BUDGET", Budget(teacher_steps=1, student_steps=2))
    runner = importlib.import_module("benchmarks.quality.runner")
    runner._task_data.cache_clear()
    monkeypatch.setattr(runner, "_task_data", functools.cache(runner._task_data.__wrapped__))
    argv = ["--quick", "--tasks", "segment", "--arms", "bicubic", "residual", "--jobs", "1"]
    argv += ["--output-dir", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    payload = cli.main(argv)
    block = payload["results"]["segment"]["x4"]
    assert set(block["arms"]) == {"bicubic", "residual"} and payload["settings"]["seeds"] == 2
    assert block["arms"]["residual"]["vs_bicubic"]["n"] == 2
    # The test images' error too: the bootstrap's spread widens the seeds' interval.
    residual = block["arms"]["residual"]
    assert residual["vs_bicubic_images"]["resamples"] == cli.IMAGE_RESAMPLES
    combined = residual["vs_bicubic_combined"]
    assert combined["mean"] == residual["vs_bicubic"]["mean"]
    assert combined["high"] - combined["low"] >= (
        residual["vs_bicubic"]["high"] - residual["vs_bicubic"]["low"]
    )
    assert "images" not in block["full_size"]  # per-image statistics stay in --work-dir
    assert "miou" in block["full_size"]["metrics"]
    written = json.loads((tmp_path / "out" / "quality-quick.json").read_text())
    assert written["results"] == json.loads(json.dumps(payload["results"]))
    assert (tmp_path / "out" / "quality-quick.png").stat().st_size > 0
    runs = sorted((tmp_path / "work" / "runs").iterdir())
    assert len(runs) == 5  # 2 arms x 2 seeds + the full-size reference
    before = [path.stat().st_mtime_ns for path in runs]
    again = cli.main(argv)  # everything is read back, nothing retrained
    assert [path.stat().st_mtime_ns for path in runs] == before
    assert again["results"] == payload["results"]
    # Scored on the unseen photos: the same teacher weights, its record and the runs per split.
    unseen = cli.main([*argv, "--test-split", "unseen"])
    assert unseen["benchmark"] == "quality-quick-unseen"
    assert unseen["settings"]["test_split"] == "unseen"
    table = (tmp_path / "out" / "quality-quick-unseen.md").read_text()
    assert "#### segment x4: miou, scored on the unseen split" in table
    assert "| vs bicubic, 95%: seeds | seeds and images |" in table
    assert len(list((tmp_path / "work" / "teachers").glob("*.pt"))) == 1
    assert len(list((tmp_path / "work" / "teachers").glob("*-unseen.json"))) == 1
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 10
    assert unseen["results"] != payload["results"]

    # Code edited while the suite runs: no summary mixes the two versions.
    def edited_since_the_start() -> str:
        return "code at the start"

    edited_since_the_start.__wrapped__ = runner.code_version.__wrapped__  # read at the end
    monkeypatch.setattr(cli, "code_version", edited_since_the_start)
    with pytest.raises(SystemExit, match="changed while the suite ran"):
        cli.main(argv)
    monkeypatch.setattr(cli, "code_version", runner.code_version)
    # Other code (an edited library, say) never reads back these runs: it trains again.
    monkeypatch.setattr(runner, "code_version", lambda: "other code")
    cli.main(argv)
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 15
    assert len(list((tmp_path / "work" / "teachers").glob("*.pt"))) == 2
    with pytest.raises(SystemExit):
        cli.main(["--seeds", "0"])
    with pytest.raises(SystemExit):
        cli.main(["--test-split", "unseen", "--tasks", "classify"])
    with pytest.raises(SystemExit):
        cli.main(["--test-split", "external", "--tasks", "mechanism"])


def test_downsampler_costs_match_the_convolutions(monkeypatch):
    import importlib

    costs = importlib.import_module("benchmarks.quality.costs")
    monkeypatch.setattr(costs, "SIDE", 64)
    rows = {row["name"]: row for row in costs.measure(4)}
    # The paper's module: 3->12 3x3 stride 2 (32x32 out), then 12->3 3x3 stride 2 (16x16 out).
    expected = 32 * 32 * 12 * 27 + 16 * 16 * 3 * 108
    assert rows["thumbdet"]["macs_per_megapixel"] == pytest.approx(expected * 1e6 / 64**2)
    assert rows["thumbdet"]["parameters"] == 12 * 27 + 12 + 3 * 108 + 3
    assert rows["bicubic"]["macs_per_megapixel"] == 0 and rows["bicubic"]["parameters"] == 0
    # Wide: its 21 learned channels cost the student's 3x3 stride-2 stem (24 outputs) 21 more
    # inputs on the 16x16 thumbnail; the others add nothing to the student.
    assert rows["wide"]["student_macs_per_megapixel"] == pytest.approx(
        8 * 8 * 24 * 21 * 9 * 1e6 / 64**2
    )
    assert rows["residual"]["student_macs_per_megapixel"] == 0
    # Space-to-depth: one 1x1 conv from 48 to 3 channels per thumbnail pixel.
    assert rows["space_to_depth"]["macs_per_megapixel"] == pytest.approx(
        16 * 16 * 48 * 3 * 1e6 / 64**2
    )


def test_family_table_joins_quality_costs_and_latency():
    from benchmarks.quality.families import render_families

    diff = {"mean": 1.0, "low": 0.5, "high": 1.5, "n": 5, "verdict": "better"}
    arms = {"bicubic": {"vs_bicubic": diff}, "wide": {"vs_bicubic": diff}}
    quality = {"results": {"detect": {"x4": {"arms": arms}}}}
    costs = {"rows": [{"name": "wide", "parameters": 1029, "macs_per_megapixel": 63e6,
                       "student_macs_per_megapixel": 71e6}]}  # fmt: skip
    latency = {"rows": [{"student": "resnet50", "downsampler": "wide", "share": 0.1}]}
    table = render_families(quality, costs, latency)
    assert "bicubic" not in table.split("\n", 2)[2]  # the baseline is not a row
    assert "| `wide` | +1.00 [+0.50, +1.50] **better** | 1,029 | 134 M | 10.0% |" in table
    assert "share of" not in render_families(quality, costs, None)  # no latency measured


def test_thumbnail_figure_shows_learned_channels(tmp_path):
    from benchmarks.quality.thumbnails import _false_colour, save_figure

    colour = _false_colour(torch.randn(21, 8, 8))
    assert colour.shape == (3, 8, 8) and colour.min() >= 0 and colour.max() <= 1
    columns = {"original": torch.rand(2, 3, 32, 32), "wide": torch.rand(2, 3, 8, 8)}
    save_figure(columns, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0
