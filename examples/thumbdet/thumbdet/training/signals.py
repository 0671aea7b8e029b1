"""Process-level plumbing of a run: seeding, and Ctrl-C held back while a checkpoint is saved."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["deferred_interrupt", "epoch_seed", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's global and torch's random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may use the global state)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one epoch of one process (augmentation and loader), so a resumed run
    draws what an uninterrupted one would have."""
    return seed * 100_003 + epoch * 1_009 + rank


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise ``KeyboardInterrupt``.

    A checkpoint save interrupted inside ``torch.save`` surfaces as a ``RuntimeError`` from
    the C++ writer instead of a ``KeyboardInterrupt``; deferring the signal lets the save
    finish (the previous checkpoint is replaced atomically) and exits cleanly right after.
    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
