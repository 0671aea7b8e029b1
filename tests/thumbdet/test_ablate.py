"""``thumbdet ablate``: variants wired to the right options, tables next to the paper's."""

import json

import pytest

from tests.thumbdet.quick_golden import GOLDEN_BACKEND, compare, phase_fingerprint
from thumbdet.cli import main
from thumbdet.experiments.ablations import (
    PAPER,
    PAPER_TABLES,
    TABLES,
    VARIANTS,
    format_ablation,
)
from thumbdet.experiments.report import AP_KEYS
from thumbdet.ops import BACKEND_ENV_VAR
from thumbdet.training.config import TrainConfig


def test_every_table_row_is_a_known_variant_with_paper_numbers():
    assert set(PAPER_TABLES) <= set(TABLES)
    for rows in TABLES.values():
        assert set(rows) <= set(VARIANTS)
    for table in PAPER_TABLES:  # every row of the paper's tables has the paper's numbers
        assert set(TABLES[table]) <= set(PAPER)
    assert set(PAPER) == {v for table in PAPER_TABLES for v in TABLES[table]}
    assert all(len(numbers) == len(AP_KEYS) for numbers in PAPER.values())


def test_tables_beyond_the_paper_show_no_paper_numbers():
    ours = {"bicubic_4x": dict.fromkeys(AP_KEYS, 5.0)}
    bicubic_row = format_ablation("families", ours).splitlines()[2]
    assert bicubic_row.startswith("| bicubic |") and bicubic_row.endswith("| - | - | - | - | - |")
    assert "| 29.1 |" in format_ablation("components", ours)


def test_format_ablation_puts_ours_next_to_the_paper():
    ours = {"layers_1": dict.fromkeys(AP_KEYS, 5.0), "moment_only": dict.fromkeys(AP_KEYS, 9.0)}
    text = format_ablation("layers", ours)
    lines = text.splitlines()
    assert len(lines) == 2 + len(TABLES["layers"])
    assert "| N = 2 | **9.0** |" in text and "**30.7**" in text  # best of each side in bold
    assert "not run" in lines[-1]  # N = 5 was not given
    with pytest.raises(ValueError, match="table"):
        format_ablation("speed", ours)


def _quick_stages_argv(output, data_dir):
    return ["ablate", "stages", "--quick", "--output", str(output), "--data-dir", str(data_dir)]


def test_quick_stages_ablation_trains_each_variant_as_configured(tmp_path, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, GOLDEN_BACKEND)  # as when the golden runs were recorded
    output = tmp_path / "out"
    assert main(_quick_stages_argv(output, tmp_path / "d")) == 0
    result = json.loads((output / "ablation_stages.json").read_text())
    assert set(result["variants"]) == set(TABLES["stages"])
    assert (output / "ablation_stages.md").read_text().count("\n") == 2 + len(TABLES["stages"])
    configs = {
        v: TrainConfig.from_dict(json.loads((output / v / "config.json").read_text()))
        for v in TABLES["stages"]
    }
    assert configs["bicubic_4x"].mode == "bicubic"
    one_stage = configs["one_stage"]
    assert one_stage.schedule.stage1_epochs == 0 and one_stage.distill.logit_weight == 0
    assert configs["two_stage_frozen"].schedule.freeze_downsampler_stage2
    moment_only = configs["moment_only"]
    assert moment_only.distill.feature_weight == 0 and moment_only.schedule.stage1_epochs == 1
    assert moment_only.distill.teacher == str(output / "teacher" / "checkpoint.pth")
    # Bit-identical to the runs recorded before the reorganisation of issue 14.
    phases = {
        path.parent.name: phase_fingerprint(path.parent) for path in output.glob("*/checkpoint.pth")
    }
    assert set(phases) == {"teacher", *TABLES["stages"]}
    assert compare(phases) == []


def test_a_phase_another_process_trains_is_refused_in_one_line(tmp_path, capsys):
    import os

    output = tmp_path / "out"
    (output / "teacher").mkdir(parents=True)
    marker = {"fingerprint": "x", "complete": False, "pid": os.getppid()}  # a live process
    (output / "teacher" / "phase.json").write_text(json.dumps(marker))
    assert main(_quick_stages_argv(output, tmp_path / "d")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("thumbdet ablate: error:") and "being trained by process" in err
    assert json.loads((output / "teacher" / "phase.json").read_text()) == marker  # untouched
