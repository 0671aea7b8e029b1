"""Smoke tests of ``benchmarks/`` and ``thumbdet bench``: they write valid JSON (no timing)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from tests.python_run import REPO_ROOT, run_python


@pytest.fixture
def harness(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks import _harness

    return _harness


def test_time_function_counts_calls_and_summarises(harness):
    calls = []
    timing = harness.time_function(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7
    assert timing.repeats == 5 and timing.warmup == 2 and len(timing.times_s) == 5
    assert timing.min_s <= timing.median_s <= max(timing.times_s)
    assert timing.iqr_s >= 0 and not timing.budget_limited
    assert timing.per_second(8) == pytest.approx(8 / timing.median_s)


def test_time_function_budget_stops_after_one_call(harness):
    timing = harness.time_function(lambda: None, warmup=0, repeats=50, max_seconds=0.0)
    assert timing.repeats == 1 and timing.budget_limited and timing.iqr_s == 0.0


def test_time_interleaved_runs_round_robin(harness):
    order = []
    functions = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    timings = harness.time_interleaved(functions, warmup=1, repeats=3)
    assert order == ["a", "b"] * 4
    assert {name: timing.repeats for name, timing in timings.items()} == {"a": 3, "b": 3}


@pytest.mark.parametrize("bad", [{"repeats": 0}, {"warmup": -1}, {"repeats": 1.5}])
def test_timing_rejects_bad_counts(harness, bad):
    with pytest.raises(ValueError, match="repeats|warmup"):
        harness.time_function(lambda: None, **bad)
    with pytest.raises(ValueError, match="repeats|warmup"):
        harness.time_interleaved({"a": lambda: None}, **bad)


def test_write_result_records_the_machine(harness, tmp_path):
    path = harness.write_result("unit", {"rows": [1, 2]}, output_dir=tmp_path)
    assert path == tmp_path / harness.machine_name("cpu") / "unit.json"
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == "unit" and payload["rows"] == [1, 2]
    environment = payload["environment"]
    for key in ("cpu_model", "torch_threads", "torch_version", "commit", "date_utc", "machine"):
        assert key in environment
    assert environment["machine"].startswith("cpu-") and environment["machine"].endswith("core")


def test_peak_rss_of_a_subprocess(harness):
    arguments = {"preset": "tiny", "variant": "thumbdet", "scale": 4, "height": 64, "width": 64}
    memory = harness.peak_rss_in_subprocess(
        "benchmarks.bench_inference:build_call", {**arguments, "batch": 1}, threads=1
    )
    assert memory["peak_rss_bytes"] >= memory["baseline_rss_bytes"] > 0
    assert memory["call_rss_bytes"] == memory["peak_rss_bytes"] - memory["baseline_rss_bytes"]


def test_run_quick_writes_valid_json_and_tables(tmp_path):
    run_python(
        *("-m", "benchmarks.run", "--quick", "--only", "breakdown", "--presets", "tiny"),
        *("--device", "cpu", "--output-dir", str(tmp_path)),
        timeout=300,
    )
    (machine_dir,) = tmp_path.iterdir()
    result = json.loads((machine_dir / "breakdown.json").read_text())
    assert result["benchmark"] == "breakdown" and result["quick"] is True
    cases = result["presets"]["tiny"]["cases"]
    assert [case["case"] for case in cases] == [
        "teacher",
        "thumbdet-4x",
        "thumbdet-4x+channels_last",
    ]
    assert "downsampler" in cases[1]["stages"] and "downsampler" not in cases[0]["stages"]
    for case in cases:
        assert {"backbone", "encoder", "decoder", "postprocess"} <= set(case["stages"])
        assert all(stage["median_ms"] == stage["median_ms"] for stage in case["stages"].values())
    rendered = run_python(
        *("-m", "benchmarks.render_tables", "--results-dir", str(tmp_path)),
        *("--machine", machine_dir.name),
        timeout=60,
    )
    assert "| downsampler |" in rendered


def test_thumbdet_bench_cli_writes_json(tmp_path):
    from thumbdet.cli import bench

    parser = argparse.ArgumentParser()
    bench.COMMAND.add_parser(parser.add_subparsers())
    output = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            *("bench", "--preset", "tiny", "--variant", "bicubic", "--scale", "2"),
            *("--image-size", "64", "96", "--batch-size", "2", "--warmup", "0", "--repeats", "2"),
            *("--channels-last", "--device", "cpu", "--json", str(output)),
        ]
    )
    assert args.func == bench.COMMAND.__call__
    assert args.func(args) == 0
    result = json.loads(output.read_text())
    assert result["variant"] == "bicubic" and result["image_size"] == [64, 96]
    assert result["batch_size"] == 2 and result["repeats"] == 2
    assert result["options"]["channels_last"] is True


def test_backbone_autocast_returns_float32_features():
    from thumbdet.fastpath import (
        AutocastBackbone,
        InferenceOptions,
        build_inference_model,
        prepare_model,
    )

    torch.manual_seed(0)
    options = InferenceOptions(amp=True, amp_scope="backbone")
    model = prepare_model(build_inference_model("tiny", "thumbdet", 2), options)
    assert isinstance(model.detector.backbone, AutocastBackbone)
    with torch.inference_mode():
        features = model.detector.backbone(torch.rand(1, 3, 64, 64))
    assert all(feature.dtype == torch.float32 for feature in features)


def test_inference_options_reject_bad_values():
    from thumbdet.fastpath import InferenceOptions, build_inference_model, make_runner

    with pytest.raises(ValueError, match="grad_mode"):
        InferenceOptions(grad_mode="fast")
    with pytest.raises(ValueError, match="amp_scope"):
        InferenceOptions(amp_scope="decoder")
    with pytest.raises(ValueError, match="variant"):
        build_inference_model("tiny", "student")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        make_runner(torch.nn.Identity(), torch.rand(3, 8, 8), InferenceOptions())
