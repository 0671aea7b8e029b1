"""One training run per output folder: a lock file that names the process holding it.

``thumbdet train`` holds :class:`OutputLock` on its ``--output`` folder from the start of the
run to its end (also when it fails). A second run into the same folder is refused with one
line naming the first one's pid; a lock left by a run that died (``kill -9``, power loss) is
taken over with a one-line notice.

The lock is ``flock`` on the lock file where the file system offers it (the kernel releases
it when its process dies, however it dies); elsewhere, the pid written in the file is checked
for a live process on this host.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import weakref
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "OutputLock", "OutputLockedError"]

logger = logging.getLogger(__name__)

#: Name of the lock file inside the output folder (removed when the run ends).
LOCK_NAME = ".thumbdet-train.lock"


class OutputLockedError(FileExistsError):
    """Another run holds the lock of the output folder."""


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (True when it cannot be known)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _read_holder(handle: int) -> dict[str, Any]:
    """The ``{"pid", "host", "started"}`` record of a lock file ({} if empty or unreadable)."""
    try:
        os.lseek(handle, 0, os.SEEK_SET)
        data = os.read(handle, 4096)
        record = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "unknown")
    text = f"pid {pid}"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        text += f" on host {holder['host']}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    return text


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing[::-1]


def _release(handle: int, path: Path, created: list[Path]) -> None:
    """Remove the lock file (while still holding it), close it, remove folders it created."""
    try:
        if os.path.samestat(os.fstat(handle), os.stat(path)):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(handle)
    for folder in reversed(created):
        try:
            folder.rmdir()  # only when still empty: the run failed before writing anything
        except OSError:
            break


class OutputLock:
    """Exclusive use of ``folder`` by this process until :meth:`release` (or exit).

    The folder is created if needed (and removed again on release if it is still empty).

    Args:
        folder: The output folder.

    Raises:
        OutputLockedError: Another live process holds the lock; the message names its pid
            and the lock file.

    Example:
        >>> with OutputLock("runs/x"):  # doctest: +SKIP
        ...     ...  # write into runs/x
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        created = _missing_folders(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = self._acquire()
        except BaseException:
            for path in reversed(created):
                try:
                    path.rmdir()
                except OSError:
                    break
            raise
        self._finalizer = weakref.finalize(self, _release, handle, self.path, created)

    def _acquire(self) -> int:
        while True:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                kernel_lock = self._lock_or_refuse(handle)
                # The previous holder may have removed the file between our open and lock:
                # then we hold a lock on a deleted file; start again with the new one.
                try:
                    current = os.path.samestat(os.fstat(handle), os.stat(self.path))
                except FileNotFoundError:
                    current = False
                if not current:
                    os.close(handle)
                    continue
                holder = _read_holder(handle)
                if holder and holder.get("pid") != os.getpid():
                    self._take_over(holder, kernel_lock)
                self._write_record(handle)
                return handle
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(handle)
                raise

    def _lock_or_refuse(self, handle: int) -> bool:
        """Take the kernel lock; False where the file system has none (pid check instead)."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._refusal(_read_holder(handle)) from None
            return False  # ENOLCK, ENOSYS, EINVAL: no flock on this file system
        return True

    def _take_over(self, holder: dict[str, Any], kernel_lock: bool) -> None:
        """Refuse a live holder; announce taking over a dead one's lock."""
        if not kernel_lock:
            pid = holder.get("pid")
            same_host = holder.get("host") in (None, socket.gethostname())
            if not isinstance(pid, int) or not same_host or _pid_alive(pid):
                raise self._refusal(holder)
        logger.warning(
            "taking over the stale lock %s of %s: that run is gone", self.path, _describe(holder)
        )

    def _refusal(self, holder: dict[str, Any]) -> OutputLockedError:
        return OutputLockedError(
            f"{self.folder} is in use by another thumbdet train ({_describe(holder)}); wait "
            "for it to finish or choose another --output (if that run is gone, delete "
            f"{self.path})"
        )

    @staticmethod
    def _write_record(handle: int) -> None:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(handle, 0)
        os.lseek(handle, 0, os.SEEK_SET)
        os.write(handle, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(handle)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._finalizer.alive

    def release(self) -> None:
        """Remove the lock file and release the lock (again: no-op). Also runs at exit."""
        self._finalizer()

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
