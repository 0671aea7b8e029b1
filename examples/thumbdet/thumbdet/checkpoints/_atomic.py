"""File-system steps of an atomic, durable replace (:func:`~thumbdet.checkpoints.format.
save_checkpoint`): the permissions a new file gets, a durable rename, cleanup."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["current_umask", "fsync_folder", "remove_quietly"]


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where folders can be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_quietly(name: str | Path) -> None:
    """Remove a file if it exists (cleanup after a failed write)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)
