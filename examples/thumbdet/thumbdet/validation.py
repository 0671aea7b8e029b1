"""Checks of settings shared by ``thumbdet train`` and ``thumbdet eval``.

Every check raises ``ValueError`` with one line naming the command-line flag, what was
expected and what was given, before any data is read or any model is built.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_device",
    "check_number",
    "check_output_file",
    "check_output_folder",
    "check_short_sides",
    "flag",
]

_DEVICE_TYPES = ("cpu", "cuda")


def flag(name: str) -> str:
    """The command-line flag of a setting: ``"lr_backbone"`` -> ``"--lr-backbone"``."""
    return "--" + name.replace("_", "-")


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    integer: bool = False,
) -> None:
    """Refuse a non-finite, non-numeric or out-of-range setting.

    Args:
        name: Flag (``"--lr"``) or setting name shown in the message.
        value: The value.
        minimum: Smallest allowed value (inclusive).
        maximum: Largest allowed value (inclusive).
        positive: The value must be > 0.
        integer: The value must be an integer.

    Raises:
        ValueError: ``"--lr-backbone: expected a number >= 0, got -1.0"``.
    """
    kind = "an integer" if integer else "a number"
    bounds = []
    if positive:
        bounds.append("> 0")
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    expected = f"{kind} {' and '.join(bounds)}".rstrip()
    numeric = (
        isinstance(value, int)
        if integer
        else isinstance(value, (int, float)) and math.isfinite(value)
    )
    ok = (
        numeric
        and not isinstance(value, bool)
        and not (positive and value <= 0)
        and not (minimum is not None and value < minimum)
        and not (maximum is not None and value > maximum)
    )
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_short_sides(short_side: Sequence[int] | None, max_size: int | None) -> None:
    """The rules between ``--short-side`` and ``--max-size`` (their ranges are declared on
    the settings): at least one short side, none longer than ``max_size``."""
    if short_side is None:
        return
    if not short_side:
        raise ValueError("--short-side: expected at least one size, got none")
    if max_size is not None and max(short_side) > max_size:
        raise ValueError(
            f"--short-side: expected sizes <= --max-size {max_size}, got {list(short_side)}"
        )


def check_device(device: str | None) -> torch.device | None:
    """The ``torch.device`` of ``--device``; ``None`` stays ``None`` (CUDA when available).

    Raises:
        ValueError: Not ``cpu``, ``cuda`` or ``cuda:N``, or CUDA asked for but not visible.
    """
    if device is None:
        return None
    import torch  # here, not at the top: the CLI's help does not need torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in _DEVICE_TYPES:
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    return parsed


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_output_folder(path: str | os.PathLike, name: str = "--output") -> None:
    """Refuse an output folder that cannot be created or written.

    Nothing is created: a file in the way, a path below a file, or a read-only folder is
    reported before any work is done.
    """
    path = Path(path)
    existing = _nearest_existing(path)
    if existing == Path(os.path.abspath(path)) and not existing.is_dir():
        raise ValueError(f"{name} {path}: expected a folder, but it is a file")
    if not existing.is_dir():
        raise ValueError(f"{name} {path}: cannot create a folder below the file {existing}")
    if not _writable(existing):
        raise ValueError(f"{name} {path}: the folder {existing} is not writable (read-only)")


def check_output_file(path: str | os.PathLike, name: str = "--output") -> None:
    """Refuse an output file path that is a folder, lies below a file or is not writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {path}: expected a file path, but it is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name} {path}: the file is not writable (read-only)")
    if path.exists():
        return
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise ValueError(f"{name} {path}: cannot create a file below the file {existing}")
    if not _writable(existing):
        raise ValueError(f"{name} {path}: the folder {existing} is not writable (read-only)")
