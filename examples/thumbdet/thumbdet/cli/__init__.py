"""The ``thumbdet`` command line: one thin module per subcommand, imported only when needed.

Each command module (:data:`COMMANDS`) declares a :class:`~thumbdet.cli.command.Command`,
``COMMAND``: its help, the settings classes its flags are generated from, and its body. The
modules import no torch; the subcommand being run builds its full parser (whose choices may
import the modules that own them), the others are listed with their one-line help, so
``thumbdet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Sequence

from thumbdet import __version__
from thumbdet.cli.flags import apply_config_file

__all__ = ["COMMANDS", "build_parser", "main", "subcommand_parsers"]

#: Subcommand -> the module declaring it.
COMMANDS = {
    "train": "thumbdet.cli.train",
    "eval": "thumbdet.cli.evaluate",
    "convert": "thumbdet.cli.convert",
    "demo": "thumbdet.cli.demo",
    "ablate": "thumbdet.cli.ablate",
    "thumbnail": "thumbdet.cli.thumbnail",
    "export": "thumbdet.cli.export",
    "bench": "thumbdet.cli.bench",
}
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default; ``None`` defaults are not shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The parser of ``thumbdet`` and of each subcommand: help with defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    """The ``thumbdet`` argument parser.

    Args:
        requested: the subcommand about to run: only its parser is built, the others are
            listed with their one-line help. ``None``: every subcommand in full.
    """
    parser = Parser(
        prog="thumbdet",
        description="ThumbDet: object detection on learned thumbnails (Deformable DETR).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module_name in COMMANDS.items():
        command = importlib.import_module(module_name).COMMAND
        if requested in (None, name):
            command.add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=command.help, description=command.help)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Name -> parser of each subcommand of :func:`build_parser`'s parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _requested_command(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv`` (the first word that is not an option), or ``""``."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thumbdet`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _requested_command(argv)
    parser = build_parser(command)
    # The --config file first: its settings become the defaults that the other flags override
    # (a full parse now would already refuse a required flag that the file gives).
    subparser = subcommand_parsers(parser).get(command)
    settings = subparser.get_default("settings") if subparser is not None else None
    if settings is not None:
        config_reader = argparse.ArgumentParser(add_help=False)
        config_reader.add_argument("--config")
        config_file = config_reader.parse_known_args(argv)[0].config
        try:
            if config_file is not None:
                apply_config_file(subparser, config_file, settings)
        except (ValueError, OSError) as error:
            print(f"thumbdet {command}: error: {_one_line(error)}", file=sys.stderr)
            return 1
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        note = getattr(args, "interrupt_note", None)
        print(f"thumbdet {args.command}: interrupted{note(args) if note else ''}", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError, FloatingPointError) as error:
        # OSError: missing files, read-only or full disks, paths below a file...
        print(f"thumbdet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    An error raised in a DataLoader worker comes back with the worker's traceback appended;
    its last line holds the original message.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "Traceback" in str(error):
        # "thumbdet.data.images.ImageReadError: image file ... cannot be read: ..."
        return re.sub(r"^[\w.]+: ", "", lines[-1], count=1)
    return " ".join(lines)


if __name__ == "__main__":
    sys.exit(main())
