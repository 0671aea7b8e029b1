"""Reading torch files that cannot run code: ``torch.load`` with ``weights_only=True`` and an
allow-list of the few classes thumbdet 0.1 checkpoints and the official Deformable-DETR
checkpoints hold (:data:`ALLOWED_PICKLE_GLOBALS`); a pickle that needs anything else is refused.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ALLOWED_PICKLE_GLOBALS", "UnsafeCheckpointError", "load_torch_file"]


class UnsafeCheckpointError(ValueError):
    """A torch pickle needs a class or function outside :data:`ALLOWED_PICKLE_GLOBALS`."""


def _numpy_reconstruct() -> Callable[..., Any]:
    """The function numpy arrays are pickled with (``numpy[._]core.multiarray._reconstruct``)."""
    return np.zeros(1).__reduce__()[0]


def _allowed_pickle_globals() -> list[Any]:
    reconstruct = _numpy_reconstruct()
    # np.random.get_state() holds a uint32 array: its dtype is rebuilt from its class.
    allowed: list[Any] = [argparse.Namespace, np.ndarray, np.dtype, reconstruct]
    uint32_dtype = type(np.dtype(np.uint32))
    if uint32_dtype is not np.dtype:  # numpy >= 1.25
        allowed.append(uint32_dtype)
    # Files pickled under numpy 1 name numpy.core, under numpy 2 numpy._core.
    modules = ("numpy.core.multiarray", "numpy._core.multiarray")
    allowed += [
        (reconstruct, f"{module}._reconstruct")
        for module in modules
        if module != reconstruct.__module__
    ]
    return allowed


#: What a torch pickle may contain besides tensors and plain Python values: the numpy uint32
#: array of the RNG states of thumbdet 0.1 checkpoints and the ``argparse.Namespace`` of the
#: official Deformable-DETR checkpoints (``"args"``).
ALLOWED_PICKLE_GLOBALS: list[Any] = _allowed_pickle_globals()


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` that cannot run code: ``weights_only=True`` plus a small allow-list.

    Tensors, plain Python values and the classes of :data:`ALLOWED_PICKLE_GLOBALS` (numpy
    arrays, ``argparse.Namespace``) load; a pickle that needs anything else is refused
    before any of it runs.

    Args:
        path: A file written by ``torch.save`` (e.g. a thumbdet 0.1 checkpoint, an official
            Deformable-DETR checkpoint, backbone weights).
        map_location: Where to put the tensors.

    Raises:
        UnsafeCheckpointError: The pickle needs another class or function.
        ValueError: The file is not a readable torch file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4" and the like
            with torch.serialization.safe_globals(ALLOWED_PICKLE_GLOBALS):
                return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(error))
        needed = next((name for name in match.groups() if name), None) if match else None
        what = (
            f"needs {needed}, which is not on the allow-list (tensors, plain values, numpy "
            "arrays, argparse.Namespace)"
            if needed
            else "uses pickle instructions a weights-only load does not allow"
        )
        raise UnsafeCheckpointError(
            f"{path}: refused to load: its pickle {what}; it could run code, so none of it was run"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a readable torch file: {detail}") from error
