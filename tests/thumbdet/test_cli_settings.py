"""``thumbdet`` settings from the command line: ``--model KEY=VALUE``, ``--config FILE``,
``--version``, help texts, and a ``--help`` that does not import torch."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import thumbdet
from thumbdet.cli import COMMANDS, build_parser, main, subcommand_parsers
from thumbdet.cli.flags import settings_from_args
from thumbdet.training.config import TrainConfig
from thumbdet.training.model_overrides import model_keys, parse_model_overrides

REQUIRED = ["train", "--output", "out", "--train-images", "images", "--train-ann", "ann.json"]


def train_config(*flags: str):
    return settings_from_args(build_parser("train").parse_args([*REQUIRED, *flags]), TrainConfig)


def test_model_flags_are_typed():
    config = train_config(
        "--model", "num_queries=12", "--model", "with_box_refine=true", "--model",
        "backbone_layers=1,1,2,1", "--model", "backbone_stem_width=none", "--model",
        "dropout=0.25", "--model", "backbone=resnet34", "--model", "num_queries=20",
    )  # fmt: skip
    assert config.detector.model_overrides == {
        "num_queries": 20,  # the later flag wins
        "with_box_refine": True,
        "backbone_layers": (1, 1, 2, 1),
        "backbone_stem_width": None,
        "dropout": 0.25,
        "backbone": "resnet34",
    }


def test_every_tunable_detector_field_is_a_model_key():
    for key in ("num_queries", "with_box_refine", "two_stage", "enc_layers", "dec_layers"):
        assert key in model_keys()
    for key in ("d_model", "nheads", "backbone", "dim_feedforward", "lr_linear_proj_mult"):
        assert key in model_keys()
    assert "num_classes" not in model_keys() and "lr" not in model_keys()


@pytest.mark.parametrize(
    ("item", "fragments"),
    [
        ("num_queries=abc", ["--model num_queries", "expected an integer", "'abc'"]),
        ("num_queries=1.5", ["--model num_queries", "expected an integer"]),
        ("with_box_refine=maybe", ["--model with_box_refine", "expected true or false"]),
        ("dropout=x", ["--model dropout", "expected a number"]),
        ("backbone_layers=1,a", ["--model backbone_layers", "expected an integer"]),
        ("num_querys=3", ["--model num_querys", "unknown key", "num_queries", "with_box_refine"]),
        ("num_queries", ["--model num_queries", "expected KEY=VALUE"]),
        ("lr=0.1", ["--model lr", "set by --lr"]),
        ("num_classes=3", ["--model num_classes", "training data"]),
    ],
)
def test_bad_model_flags_name_the_key(item, fragments):
    with pytest.raises(ValueError) as error:
        parse_model_overrides([item])
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_model_values_out_of_range_are_refused_by_the_detector_checks():
    config = train_config("--model", "num_queries=0")
    with pytest.raises(ValueError, match="num_queries must be >= 1"):
        config.validate()


def test_bad_model_flag_on_the_command_line_is_one_line(capsys):
    assert main([*REQUIRED, "--model", "num_queries=many"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("thumbdet train: error: --model num_queries: expected an integer, got 'many'")


FLAGS = [
    "--preset", "tiny", "--epochs", "3", "--batch-size", "4", "--lr", "0.001", "--short-side",
    "96", "128", "--augmentation", "flip", "--no-logit", "--mode", "bicubic", "--model",
    "num_queries=12", "--model", "with_box_refine=true", "--model", "backbone_layers=1,1,1,1",
]  # fmt: skip
SETTINGS = {
    "preset": "tiny",
    "epochs": 3,
    "batch_size": 4,
    "lr": 0.001,
    "short_side": [96, 128],
    "augmentation": "flip",
    "no_logit": True,
    "mode": "bicubic",
    "model": {"num_queries": 12, "with_box_refine": True, "backbone_layers": [1, 1, 1, 1]},
    "output": "out",
    "train_images": "images",
    "train_ann": "ann.json",
}


def _parsed_by_main(argv: list[str], monkeypatch):
    """The ``TrainConfig`` that ``thumbdet train`` would train with."""
    seen = []
    # set_defaults(func=...) holds the real function: replace it where the parser reads it.
    original = build_parser

    def patched(command=None):
        parser = original(command)
        subcommand_parsers(parser)["train"].set_defaults(func=seen.append)
        return parser

    monkeypatch.setattr("thumbdet.cli.build_parser", patched)
    assert main(argv) == 0
    return settings_from_args(seen[0], TrainConfig)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_equals_the_flags(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"settings{suffix}"
    if suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(SETTINGS))
    else:
        path.write_text(json.dumps(SETTINGS))
    from_flags = _parsed_by_main([*REQUIRED, *FLAGS], monkeypatch)
    from_file = _parsed_by_main(["train", "--config", str(path)], monkeypatch)
    assert from_file == from_flags
    assert from_file.detector.model_overrides["backbone_layers"] == (1, 1, 1, 1)


def test_flags_override_the_config_file(tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(SETTINGS))
    argv = ["train", "--config", str(path), "--epochs", "7", "--model", "num_queries=5"]
    config = _parsed_by_main(argv, monkeypatch)
    assert config.schedule.epochs == 7 and config.data.batch_size == 4
    assert config.detector.model_overrides["num_queries"] == 5
    assert config.detector.model_overrides["with_box_refine"] is True


def test_a_flag_switches_off_a_boolean_of_the_config_file(tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({**SETTINGS, "skip_bad_images": True, "resume": True}))
    on = _parsed_by_main(["train", "--config", str(path)], monkeypatch)
    assert on.data.skip_bad_images and on.resume
    argv = ["train", "--config", str(path), "--no-skip-bad-images", "--no-resume"]
    off = _parsed_by_main(argv, monkeypatch)
    assert not off.data.skip_bad_images and not off.resume


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        ({"epoch": 3}, ["unknown key 'epoch'", "epochs", "batch_size"]),
        ({"epochs": "three"}, ["epochs (--epochs)", "expected an integer", "'three'"]),
        ({"epochs": 2.5}, ["epochs (--epochs)", "expected an integer"]),
        ({"lr": True}, ["lr (--lr)", "expected a number"]),
        ({"feature_weight": "x"}, ["feature_weight (--feature-weight)", "expected a number"]),
        ({"optim": {"lrr": 1}}, ["unknown key optim.'lrr'"]),
        ({"mode": "student"}, ["mode (--mode)", "expected one of teacher, bicubic, thumbdet"]),
        ({"short_side": 96}, ["short_side (--short-side)", "expected a list of integers"]),
        ({"model": {"num_queries": "x"}}, ["--model num_queries", "expected an integer"]),
    ],
)
def test_bad_config_file_is_one_line_naming_the_key(tmp_path, capsys, settings, fragments):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({**SETTINGS, **settings}))
    assert main(["train", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("thumbdet train: error:") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_config_file_that_is_no_mapping_is_refused(tmp_path, capsys):
    path = tmp_path / "settings.json"
    path.write_text("[1, 2]")
    assert main(["train", "--config", str(path)]) == 1
    assert "expected a mapping" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"thumbdet {thumbdet.__version__}"


def _subcommand_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help for choice in action._choices_actions}
    return {}


def test_every_subcommand_has_a_description_and_every_flag_a_help():
    parser = build_parser()  # every subcommand in full
    subcommands = subcommand_parsers(parser)
    assert set(COMMANDS) <= set(subcommands)
    helps = _subcommand_helps(parser)
    for name, subparser in subcommands.items():
        assert subparser.description, name
        assert helps[name], name
        for action in subparser._actions:
            assert action.help, (name, action.option_strings or action.dest)
        subparser.format_help()  # every %(default)s expands


def test_help_says_what_each_choice_means_from_the_choices_owners():
    from thumbdet.data import AUGMENTATIONS
    from thumbdet.training.modes import STUDENT_INITS, get_mode, list_modes

    helps = {
        action.dest: action.help
        for action in subcommand_parsers(build_parser("train"))["train"]._actions
    }
    for name in list_modes():
        assert f"{name}: {get_mode(name).summary}" in helps["mode"]
    for name, meaning in AUGMENTATIONS.items():
        assert f"{name}: {meaning}" in helps["augmentation"]
    for name, meaning in STUDENT_INITS.items():
        assert f"{name}: {meaning}" in helps["student_init"]


@pytest.mark.parametrize("command", [*COMMANDS, ""])
def test_each_subcommand_builds_with_the_others_listed(command):
    subcommands = subcommand_parsers(build_parser(command))
    assert set(COMMANDS) <= set(subcommands)


def test_listed_help_of_lazy_subcommands_is_their_own():
    full = _subcommand_helps(build_parser())
    lazy = _subcommand_helps(build_parser(""))
    for name in COMMANDS:
        assert lazy[name] == full[name], name


def test_help_does_not_import_torch():
    script = (
        "import sys; from thumbdet.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_config_json_of_a_run_round_trips_through_config(tmp_path, monkeypatch):
    config = train_config("--mode", "bicubic", "--lr", "0.001", "--model", "num_queries=7")
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert _parsed_by_main(["train", "--config", str(path)], monkeypatch) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"short_side": [96, 900], "max_size": 800}, "expected sizes <= --max-size 800"),
        ({"batch_size": 0}, "--batch-size: expected an integer >= 1, got 0"),
        ({"num_workers": -1}, "--num-workers: expected an integer >= 0, got -1"),
    ],
)
def test_train_and_eval_check_the_loading_settings_alike(tmp_path, data, message):
    from thumbdet.evaluation import evaluate_checkpoint

    paths = {"train_images": "i", "train_ann": "a", "output": str(tmp_path / "run")}
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({**paths, **data}).validate()
    loading = {"batch_size": 1, "num_workers": 0, **data}
    with pytest.raises(ValueError, match=message):  # before the checkpoint is even read
        evaluate_checkpoint(str(tmp_path / "missing.pth"), "i", "a", **loading)
    with pytest.raises(ValueError, match="--short-side: expected at least one size, got none"):
        evaluate_checkpoint(str(tmp_path / "missing.pth"), "i", "a", short_side=[])
