"""Refusal of a checkpoint that does not fit the run that wants to use it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["IncompatibleCheckpointError", "check_compatible"]


class IncompatibleCheckpointError(ValueError):
    """A checkpoint does not fit the run that wants to use it (preset, classes, mode...)."""


def check_compatible(
    checkpoint: Mapping[str, Any],
    path: str | Path,
    purpose: str,
    **expected: Any,
) -> None:
    """Refuse a checkpoint whose recorded values differ from ``expected``.

    Args:
        checkpoint: Loaded checkpoint; values are looked up in ``checkpoint["meta"]``.
        path: Its path, for the message.
        purpose: What it is used for (``"resume"``, ``"teacher"``), for the message.
        **expected: e.g. ``preset="tiny", num_classes=2``.

    Raises:
        IncompatibleCheckpointError: Naming every mismatching key, found vs expected.
    """
    meta = checkpoint.get("meta", {})
    mismatches = [
        f"{key}: checkpoint has {meta.get(key)!r}, this run has {value!r}"
        for key, value in expected.items()
        if meta.get(key) != value
    ]
    if mismatches:
        raise IncompatibleCheckpointError(
            f"cannot use {path} as {purpose} checkpoint: " + "; ".join(mismatches)
        )
