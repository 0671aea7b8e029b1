"""Settings declared once: dataclass fields whose metadata also makes their command-line flags.

A settings class is a dataclass whose fields come from :func:`setting` (a value with its help,
allowed choices and range) or are nested settings classes (argument groups). From it,
:mod:`thumbdet.cli.flags` generates the command's flags and reads ``--config`` files; here,
:func:`leaves` walks the fields, :func:`coerce` converts a value to a field's type and
:func:`check_ranges` checks every number against its declared range. Nothing here imports torch.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Options:
    ...     epochs: int = setting(50, "epochs to train", minimum=1)
    >>> [leaf.name for leaf in leaves(Options)]
    ['epochs']
    >>> coerce("--epochs", "12", int)
    12
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thumbdet.validation import check_number, flag

__all__ = [
    "Leaf",
    "check_ranges",
    "coerce",
    "flatten",
    "from_leaves",
    "leaves",
    "setting",
    "unwrap_optional",
]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | Mapping[str, str] | Callable[[], Any] | None = None,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    switches: dict[str, tuple[Any, str]] | None = None,
    metavar: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    resumable: bool = False,
    parse: Callable[[list[str]], Any] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field carrying everything its flag needs.

    Args:
        default: Default value (a list or dict default is copied for each instance).
        help: One-line description, shown by ``--help`` (lower case, no final period).
        choices: Allowed values, or a mapping of each to what it means (which ``--help``
            appends to ``help``), or a callable returning either (imported only when needed,
            so the module that owns the values stays their only definition).
        flag: Command-line flag; default ``--`` + the name with dashes.
        aliases: Other flags setting the same field (e.g. the paper's symbol, ``--gamma``).
        switches: Extra flags that store a fixed value, ``{"--one-stage": (0, "help")}``.
        metavar: Placeholder shown in ``--help``.
        minimum: Smallest allowed number (inclusive).
        maximum: Largest allowed number (inclusive).
        positive: The number must be > 0.
        resumable: ``--resume`` may change it (paths, durations, loading; not the training).
        parse: For a mapping setting: its flag is repeatable (``--model KEY=VALUE``) and
            ``parse(["KEY=VALUE", ...])`` makes the mapping.
        cli: Make a flag for it (``False``: programmatic only).
    """
    metadata = {
        "help": help,
        "choices": choices,
        "flag": flag,
        "aliases": tuple(aliases),
        "switches": dict(switches or {}),
        "metavar": metavar,
        "range": {"minimum": minimum, "maximum": maximum, "positive": positive},
        "resumable": resumable,
        "parse": parse,
        "cli": cli,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Leaf:
    """One setting of a (possibly nested) settings class.

    Attributes:
        name: Field name, unique over the whole class (also the argparse ``dest``).
        path: Names from the top class to the field, e.g. ``("optim", "lr")``.
        kind: The field's type (``int``, ``float``, ``str``, ``bool``, ``list[int] | None``...).
        field: The dataclass field (its ``metadata`` is :func:`setting`'s).
        group: Docstring title of the nested class holding it (``None`` at the top).
    """

    name: str
    path: tuple[str, ...]
    kind: Any
    field: dataclasses.Field
    group: str | None

    @property
    def meta(self) -> dict[str, Any]:
        """The field's :func:`setting` metadata."""
        return dict(self.field.metadata)

    @property
    def flag(self) -> str:
        """The command-line flag of the setting."""
        return self.meta.get("flag") or flag(self.name)

    def _declared_choices(self) -> Sequence[Any] | Mapping[str, str] | None:
        choices = self.meta.get("choices")
        return choices() if callable(choices) else choices

    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values (resolving a callable), or ``None``."""
        choices = self._declared_choices()
        return tuple(choices) if choices is not None else None

    def help(self) -> str:
        """The ``help`` text, followed by what each choice means where the choices say it.

        Example:
            >>> @dataclass
            ... class Options:
            ...     size: str = setting("s", "model size", choices={"s": "small", "l": "large"})
            >>> next(leaves(Options)).help()
            'model size (s: small; l: large)'
        """
        choices = self._declared_choices()
        if not isinstance(choices, Mapping):
            return self.meta["help"]
        meanings = "; ".join(f"{value}: {meaning}" for value, meaning in choices.items())
        return f"{self.meta['help']} ({meanings})"

    def check_choice(self, label: str, value: Any) -> None:
        """Refuse a value (not ``None``) outside the declared choices.

        Raises:
            ValueError: ``"LABEL: expected one of a, b, got 'c'"``.
        """
        choices = self.choices()
        if choices is not None and value is not None and value not in choices:
            raise ValueError(
                f"{label}: expected one of {', '.join(map(str, choices))}, got {value!r}"
            )

    def value_in(self, settings: Any) -> Any:
        """The setting's value in an instance of the (top) settings class, following ``path``."""
        value = settings
        for name in self.path:
            value = getattr(value, name)
        return value


def _title(cls: type) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")


def leaves(cls: type, _path: tuple[str, ...] = (), _group: str | None = None) -> Iterator[Leaf]:
    """Every setting of a settings class, nested classes walked in field order."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            yield from leaves(kind, (*_path, field.name), _title(kind))
        else:
            yield Leaf(field.name, (*_path, field.name), kind, field, _group)


def unwrap_optional(kind: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(kind, False)``.

    Example:
        >>> unwrap_optional(int | None)
        (<class 'int'>, True)
    """
    options = typing.get_args(kind)
    if type(None) in options and typing.get_origin(kind) in (typing.Union, _UnionType):
        rest = [option for option in options if option is not type(None)]
        return rest[0], True
    return kind, False


_UnionType = type(int | None)


def coerce(label: str, value: Any, kind: Any) -> Any:
    """``value`` (command-line text, or a JSON/YAML value) as a value of type ``kind``.

    Args:
        label: What the message names (``"--model num_queries"``, ``"--config x.json: lr"``).
        value: The value to convert.
        kind: ``int``, ``float``, ``str``, ``bool``, ``tuple[int, ...]``, ``list[int]``,
            ``dict[str, Any]``, or one of them ``| None``.

    Raises:
        ValueError: one line naming ``label``, what was expected and what was given.
    """
    kind, optional = unwrap_optional(kind)
    if optional and (
        value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
    ):
        return None
    origin = typing.get_origin(kind)
    if origin in (tuple, list):  # "1,2,2,2" or a list
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError(
                f"{label}: expected a list of integers (or comma-separated), got {value!r}"
            )
        return origin(coerce(label, item, int) for item in items)
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{label}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        text = str(value).strip().lower() if isinstance(value, (str, bool)) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{label}: expected true or false, got {value!r}")
    if kind in (int, float):
        name = "an integer" if kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{label}: expected {name}, got {value!r}")
        try:
            number = kind(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{label}: expected {name}, got {value!r}") from None
        if kind is int and number != int(number):
            raise ValueError(f"{label}: expected {name}, got {value!r}")
        return kind(number)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{label}: expected a name, got {value!r}")
    return value


def check_ranges(settings: Any) -> None:
    """Every number of a settings instance within its declared range, and every value with
    declared choices among them.

    Raises:
        ValueError: one line naming the flag: ``"--lr: expected a number > 0, got -1.0"``.
    """
    for leaf in leaves(type(settings)):
        value = leaf.value_in(settings)
        if value is None:
            continue
        leaf.check_choice(leaf.flag, value)
        bounds = leaf.meta["range"]
        if bounds["minimum"] is None and bounds["maximum"] is None and not bounds["positive"]:
            continue
        kind, _ = unwrap_optional(leaf.kind)
        integer = kind is int or typing.get_origin(kind) in (list, tuple)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            check_number(leaf.flag, item, integer=integer, **bounds)


def from_leaves(cls: type, values: dict[str, Any]) -> Any:
    """An instance of settings class ``cls`` from ``{leaf name: value}``; missing: defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            kwargs[field.name] = from_leaves(kind, values)
        elif field.name in values:
            kwargs[field.name] = values[field.name]
    return cls(**kwargs)


def flatten(cls: type, values: dict[str, Any], label: str) -> dict[str, Any]:
    """``{leaf name: value}`` of a mapping that holds leaf names, nested groups, or both.

    Raises:
        ValueError: one line naming ``label`` and the unknown key, listing the valid ones.
    """
    by_name = {leaf.name: leaf for leaf in leaves(cls)}
    groups = {leaf.path[-2] for leaf in by_name.values() if len(leaf.path) > 1}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in groups and isinstance(value, dict):
            for name, item in value.items():
                if name not in by_name or by_name[name].path[-2:-1] != (key,):
                    raise ValueError(f"{label}: unknown key {key}.{name!r}")
                flat[name] = item
        elif key in by_name:
            flat[key] = value
        else:
            raise ValueError(
                f"{label}: unknown key {key!r}; valid keys: {', '.join(sorted(by_name))}"
            )
    return flat
