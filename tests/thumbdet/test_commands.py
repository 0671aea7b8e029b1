"""The thin command modules of ``thumbdet``: every flag is generated from a settings class,
and the parsed namespace turns back into it."""

import argparse
import importlib
import subprocess
import sys

import pytest

from thumbdet.cli import COMMANDS, build_parser, subcommand_parsers
from thumbdet.cli.flags import settings_from_args
from thumbdet.inference_options import InferenceOptions
from thumbdet.settings import leaves


def _parser(name: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, object]:
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(prog="thumbdet")
    subparsers = parser.add_subparsers(dest="command")
    module.COMMAND.add_parser(subparsers)
    return parser, subparsers.choices[name], module


@pytest.mark.parametrize("name", COMMANDS)
def test_every_flag_is_a_setting_and_every_setting_a_flag(name):
    _, subparser, module = _parser(name)
    command = module.COMMAND
    names = {leaf.name for leaf in leaves(command.settings) if leaf.meta["cli"]}
    for group in command.groups:
        names |= {
            leaf.name
            for leaf in leaves(group.settings)
            if leaf.meta["cli"] and (group.only is None or leaf.name in group.only)
        }
    if command.config_file:
        names.add("config")
    dests = {action.dest for action in subparser._actions if action.dest != "help"}
    assert dests == names
    flags = {flag for action in subparser._actions for flag in action.option_strings}
    for leaf in leaves(command.settings):
        if leaf.meta["cli"] and leaf.flag.startswith("-"):
            assert {leaf.flag, *leaf.meta["aliases"], *leaf.meta["switches"]} <= flags, leaf.name
    assert subparser.get_default("func") == command.__call__
    assert all(action.help for action in subparser._actions)


def test_the_full_parser_has_every_command():
    assert set(subcommand_parsers(build_parser())) == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_modules_import_without_torch(name):
    script = f"import sys, {COMMANDS[name]}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_positional_settings():
    parser, _, module = _parser("ablate")
    args = parser.parse_args(["ablate", "layers", "--quick", "--threads", "0"])
    options = settings_from_args(args, module.AblateOptions)
    assert (options.table, options.quick, options.threads, options.output) == (
        "layers",
        True,
        0,
        None,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["ablate", "no-such-table"])

    parser, _, module = _parser("thumbnail")
    args = parser.parse_args(["thumbnail", "--checkpoint", "c", "a.png", "b.png", "--output", "o"])
    options = settings_from_args(args, module.ThumbnailOptions)
    assert options.images == ["a.png", "b.png"] and options.checkpoint == "c"
    with pytest.raises(SystemExit):  # --output is required
        parser.parse_args(["thumbnail", "--checkpoint", "c", "a.png"])


def test_fixed_length_tuple_takes_exactly_that_many_values():
    parser, _, module = _parser("export")
    args = parser.parse_args(["export", "--checkpoint", "c", "--image-size", "64", "96"])
    assert settings_from_args(args, module.ExportOptions).image_size == [64, 96]
    default = settings_from_args(
        parser.parse_args(["export", "--checkpoint", "c"]), module.ExportOptions
    )
    assert default.image_size == (128, 128)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--checkpoint", "c", "--image-size", "64", "96", "3"])


def test_bench_fast_paths_are_inference_options():
    parser, _, module = _parser("bench")
    args = parser.parse_args(["bench", "--channels-last", "--amp-scope", "backbone"])
    options = settings_from_args(args, module.BenchOptions)
    assert options.fast_paths == InferenceOptions(channels_last=True, amp_scope="backbone")
    assert options.image_size is None and options.variant == "teacher"
