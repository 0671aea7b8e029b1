"""Command-line flags generated from settings classes (:mod:`thumbdet.settings`).

:func:`add_settings` gives a parser one flag per setting (argument groups for nested
classes), :func:`settings_from_args` turns the parsed namespace back into the settings
instance, and :func:`apply_config_file` makes a JSON/YAML file's settings the defaults that
the flags then override. A flag is never written by hand: a test compares every parser with
its settings class.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from thumbdet.settings import Leaf, coerce, flatten, from_leaves, leaves, unwrap_optional

__all__ = [
    "add_settings",
    "apply_config_file",
    "read_config_file",
    "settings_from_args",
]


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    required: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    only: tuple[str, ...] | None = None,
    group: str | None = None,
) -> None:
    """Add one flag per setting of ``cls`` to ``parser``.

    A setting whose ``flag`` is its own name without dashes (``setting(..., flag="images")``)
    becomes a positional argument; a ``tuple[int, int]`` setting takes exactly two values.

    Args:
        parser: A (sub)command's parser.
        cls: The settings class.
        required: Settings the command cannot run without (``--output``).
        defaults: Defaults of this command that differ from the class's.
        only: The settings to add (default: all).
        group: Argument group of the top-level settings (default: none).
    """
    defaults = defaults or {}
    groups: dict[str | None, Any] = {None: parser.add_argument_group(group) if group else parser}
    for leaf in leaves(cls):
        meta = leaf.meta
        if not meta["cli"] or (only is not None and leaf.name not in only):
            continue
        if leaf.group not in groups:
            groups[leaf.group] = parser.add_argument_group(leaf.group)
        target = groups[leaf.group]
        kind, _ = unwrap_optional(leaf.kind)
        default = defaults.get(leaf.name, _default(leaf))
        options: dict[str, Any] = {"dest": leaf.name, "help": leaf.help()}
        if meta["metavar"]:
            options["metavar"] = meta["metavar"]
        if kind is bool:  # --x and --no-x, so that a flag can undo a --config file's true
            options.update(action=argparse.BooleanOptionalAction, default=default)
        elif meta["parse"] is not None:  # a mapping set by a repeatable KEY=VALUE flag
            options.update(action="append", default=[], metavar=meta["metavar"] or "KEY=VALUE")
        else:
            origin = getattr(kind, "__origin__", None)
            if origin in (list, tuple):
                items = kind.__args__
                fixed = origin is tuple and Ellipsis not in items  # tuple[int, int]: 2 values
                options.update(type=items[0], nargs=len(items) if fixed else "+")
            else:
                options["type"] = kind
            options.update(default=default, choices=leaf.choices())
        if leaf.flag.startswith("-"):
            options["required"] = leaf.name in required
        else:  # flag=<the field's name>: a positional argument, which argparse names itself
            del options["dest"]
        target.add_argument(leaf.flag, *meta["aliases"], **options)
        for switch, (value, text) in meta["switches"].items():
            target.add_argument(
                switch, dest=leaf.name, action="store_const", const=value, help=text
            )


def _default(leaf: Leaf) -> Any:
    field = leaf.field
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def settings_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The ``cls`` instance of a namespace parsed by a parser made with :func:`add_settings`."""
    values = {}
    for leaf in leaves(cls):
        if not leaf.meta["cli"] or not hasattr(args, leaf.name):
            continue
        value = getattr(args, leaf.name)
        if leaf.meta["parse"] is not None:
            value = leaf.meta["parse"](value)
        values[leaf.name] = value
    return from_leaves(cls, values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON file, or a YAML file (``.yaml``/``.yml``, needs PyYAML).

    Raises:
        ValueError: unreadable or not a mapping, or YAML without PyYAML (one line, naming it).
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise ValueError(
                f"--config {path}: YAML needs PyYAML (pip install pyyaml), or use JSON"
            ) from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not valid YAML: {error}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path}: not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings, got {values!r:.80}")
    return values


def _as_flag_text(value: Any) -> str:
    """A JSON/YAML value as the text of ``--model KEY=TEXT``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def apply_config_file(parser: argparse.ArgumentParser, path: str | Path, cls: type) -> None:
    """Make the settings of a ``--config`` file the defaults of ``parser`` (made with
    :func:`add_settings` for ``cls``), so that flags on the command line override them.

    The file holds setting names, nested groups (a run's ``config.json``), or both; a class
    with an ``upgrade(mapping)`` classmethod first translates the names of older versions.

    Raises:
        ValueError: one line naming the file and the key: unknown keys (listing the valid
            ones) and values of the wrong type or outside their choices.
    """
    label = f"--config {path}"
    values = read_config_file(path)
    if hasattr(cls, "upgrade"):
        values = cls.upgrade(values)
    flat = flatten(cls, values, label)
    by_name = {leaf.name: leaf for leaf in leaves(cls)}
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    defaults = {}
    for name, value in flat.items():
        leaf = by_name[name]
        where = f"{label}: {name} ({leaf.flag})"
        if name not in actions:
            raise ValueError(f"{where}: not a setting of this command")
        if leaf.meta["parse"] is not None:  # {key: value}: parsed like repeated flags
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a mapping of KEY: VALUE, got {value!r}")
            default = [f"{key}={_as_flag_text(item)}" for key, item in value.items()]
        else:
            default = coerce(where, value, leaf.kind)
            leaf.check_choice(where, default)
        defaults[name] = default
        for action in parser._actions:
            if action.dest == name:
                action.required = False
    parser.set_defaults(**defaults)
