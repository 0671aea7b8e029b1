"""Atomic training checkpoints with everything needed to resume exactly."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_VERSION",
    "IncompatibleCheckpointError",
    "capture_rng_state",
    "check_compatible",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 1


class IncompatibleCheckpointError(ValueError):
    """A checkpoint does not fit the run that wants to use it (preset, classes, mode...)."""


def capture_rng_state() -> dict[str, Any]:
    """States of the python, numpy, torch (and CUDA, when initialised) generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global state)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators from :func:`capture_rng_state` output."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` atomically: temp file in the same folder + rename.

    An existing file at ``path`` is replaced only once the new one is completely written and
    flushed to disk; on any error it is left untouched and the temp file is removed.

    Args:
        state: The checkpoint dict (tensors, state dicts, plain Python values).
        path: Destination file.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp_file:
            torch.save(dict(state, version=CHECKPOINT_VERSION), temp_file)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        _remove_quietly(temp_name)
        raise
    return path


def _remove_quietly(name: str) -> None:
    """Remove a file if it exists (cleanup after a failed write)."""
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The file is not a thumbdet checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # Checkpoints hold RNG states and config dicts, not only tensors.
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"{path} is not a thumbdet checkpoint (no 'model' and 'config' entries)")
    return checkpoint


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
