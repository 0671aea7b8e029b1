"""Reading and writing the JSON files of runs, experiments and benchmarks.

One writer for every JSON file thumbdet leaves behind (``results.json``, ``metrics.json``,
a phase's ``phase.json``, ``thumbdet bench --json``): written to a temporary file in the same
folder and moved over the target with :func:`os.replace`, so a reader, or a run interrupted
mid-write, never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json", "write_json"]


def write_json(
    path: str | os.PathLike, value: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write ``value`` as JSON with a trailing newline, atomically; parent folders are created.

    Args:
        path: The file to write (replaced if it exists).
        value: Anything :func:`json.dumps` takes; NaN and infinities are written as
            ``NaN``/``Infinity`` (Python's default), as COCO metrics may hold them.
        indent: Spaces per level (``None``: one line).
        sort_keys: Sort the keys of every mapping (default: insertion order).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_json(Path(folder) / "a.json", {"mAP": 31.2}).read_text()
        '{\\n  "mAP": 31.2\\n}\\n'
    """
    path = Path(path)
    text = json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder (so os.replace stays on one file system); the pid keeps writers apart.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_json(path: str | os.PathLike) -> Any | None:
    """The value in a JSON file, or ``None`` when the file is missing, unreadable or not JSON.

    For caches, where a missing or damaged file only means "compute it again".
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
