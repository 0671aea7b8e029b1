"""A subcommand, declared: its name, its text, the settings its flags come from, its body.

Each command module of :mod:`thumbdet.cli` defines one :class:`Command`, ``COMMAND``. The
parser is generated from the settings classes (:func:`thumbdet.cli.flags.add_settings`);
the body receives the settings instances, never the argparse namespace.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thumbdet.cli.flags import add_settings, settings_from_args

__all__ = ["Command", "SettingsGroup"]

_CONFIG_HELP = (
    "JSON (or YAML, with PyYAML) file of settings: a run's config.json, or setting names "
    "(batch_size, logit_weight, model_overrides: {num_queries: 12}); flags given here win"
)


@dataclass(frozen=True)
class SettingsGroup:
    """More flags of a command, from another settings class (e.g. ``eval``'s data flags).

    Args:
        settings: The settings class.
        only: Its settings to add (default: all).
        defaults: Defaults of this command that differ from the class's.
        title: Argument group of the flags.
    """

    settings: type
    only: tuple[str, ...] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


@dataclass(frozen=True)
class Command:
    """One ``thumbdet`` subcommand.

    Args:
        name: The subcommand.
        doc: Its text, written once (the command module's docstring): the first line is the
            one-line help of ``thumbdet --help``, all of it the description of
            ``thumbdet NAME --help``.
        settings: The settings class of its flags.
        run: The body: ``run(settings, *groups) -> exit status`` (``None``: 0), with one
            instance per settings class, in order.
        required: Settings without which the command cannot run.
        groups: More flags from other settings classes.
        config_file: A ``--config FILE`` flag fills ``settings`` from a JSON/YAML file.
        interrupt_note: ``note(args) -> str`` printed after "interrupted" on Ctrl-C.
    """

    name: str
    doc: str | None
    settings: type
    run: Callable[..., int | None]
    required: tuple[str, ...] = ()
    groups: tuple[SettingsGroup, ...] = ()
    config_file: bool = False
    interrupt_note: Callable[[argparse.Namespace], str] | None = None

    @property
    def help(self) -> str:
        """The first line of ``doc``: the command's line in ``thumbdet --help``."""
        return self.description.partition("\n")[0]

    @property
    def description(self) -> str:
        """All of ``doc``, for ``thumbdet NAME --help`` (``python -OO`` strips docstrings: the
        command's name then stands for it)."""
        return inspect.cleandoc(self.doc or self.name)

    def add_parser(self, subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        """Register the subcommand, its flags and its body."""
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description)
        if self.config_file:
            parser.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)
        add_settings(parser, self.settings, required=self.required)
        for group in self.groups:
            add_settings(
                parser, group.settings, only=group.only, defaults=group.defaults, group=group.title
            )
        parser.set_defaults(
            func=self.__call__,
            settings=self.settings if self.config_file else None,
            interrupt_note=self.interrupt_note,
        )
        return parser

    def __call__(self, args: argparse.Namespace) -> int:
        """Run the body with the settings of parsed ``args``."""
        classes = [self.settings, *(group.settings for group in self.groups)]
        return int(self.run(*(settings_from_args(args, cls) for cls in classes)) or 0)
