"""Training checkpoints that cannot run code, checked on load, written atomically.

A checkpoint is one `safetensors <https://huggingface.co/docs/safetensors>`_ file:

- its tensors are every tensor of the state (detector and downsampler weights under
  ``model/...`` and ``downsampler/...``, the optimizer moments under ``optimizer/...``, the
  torch RNG state under ``rng/...``);
- its header's ``__metadata__`` holds ``thumbdet.state``, the rest of the state as JSON (the
  configuration, ``meta``, the epoch, the scheduler, the python and numpy RNG states), with
  ``{"__tensor__": name}`` where a tensor was, and ``thumbdet.sha256``, the SHA-256 of that
  JSON and of every tensor's bytes, computed when it was saved.

Reading it parses JSON and copies tensor bytes: nothing in the file can run code. Every
tensor that is read, and the JSON, is checked against its SHA-256: a damaged file is refused
with one line naming the file and the tensor. One file replaced by one ``os.replace`` keeps
the checkpoint consistent: a save interrupted at any point leaves the previous checkpoint
intact (and a ``.<name>.*.tmp`` file that :func:`remove_interrupted_saves` deletes).

Checkpoints of earlier thumbdet versions (torch pickles) are read by
:func:`~thumbdet.checkpoints.torch_files.load_torch_file` (``weights_only=True`` and a small
allow-list; nothing in them can run code either).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from thumbdet.checkpoints._atomic import current_umask, fsync_folder, remove_quietly
from thumbdet.checkpoints._state_tree import StateEncoder, decode_state
from thumbdet.checkpoints.torch_files import load_torch_file

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "TRAINING_STATE_KEYS",
    "CorruptCheckpointError",
    "load_checkpoint",
    "remove_interrupted_saves",
    "save_checkpoint",
]

#: 1: a torch pickle (thumbdet 0.1); 2: safetensors + JSON metadata with SHA-256 checksums.
CHECKPOINT_VERSION = 2

#: The checkpoint file of a run folder (``thumbdet train``, ``thumbdet convert``):
#: :func:`load_checkpoint` given a folder reads this file in it.
CHECKPOINT_NAME = "checkpoint.pth"

#: Entries only ``--resume`` needs; ``load_checkpoint(..., training_state=False)`` skips them.
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "rng")

#: Entries holding model weights; :func:`save_checkpoint` refuses non-finite values in them.
_WEIGHT_KEYS = ("model", "downsampler")

# Keys of the safetensors metadata.
_STATE_KEY = "thumbdet.state"
_SHA256_KEY = "thumbdet.sha256"
_VERSION_KEY = "thumbdet.version"


class CorruptCheckpointError(ValueError):
    """A checkpoint's bytes differ from the SHA-256 recorded when it was saved."""


# ---------------------------------------------------------------------------------- save
def _sha256_of_tensor(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(data).hexdigest()


def _sha256_of_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_finite_weights(state: Mapping[str, Any], path: Path) -> None:
    for entry in _WEIGHT_KEYS:
        weights = state.get(entry)
        if not isinstance(weights, Mapping):
            continue
        for key, value in weights.items():
            is_float = isinstance(value, torch.Tensor) and value.is_floating_point()
            if is_float and not bool(torch.isfinite(value).all()):
                raise FloatingPointError(
                    f"refusing to save {path}: {entry} weight {key!r} holds NaN or Inf "
                    "(the training diverged; the previous checkpoint, if any, is kept)"
                )


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` as a safetensors checkpoint, atomically, with SHA-256 checksums.

    The file is written to a temp file in the same folder (``.<name>.*.tmp``), flushed to
    disk, given the permissions of a normal new file (``0o666`` minus the umask) and renamed
    over ``path``: an existing checkpoint is replaced only by a complete new one, and on any
    error (or Ctrl-C) it is left untouched and the temp file is removed.

    Args:
        state: The checkpoint dict: tensors (state dicts), numeric numpy arrays, and dicts,
            lists, tuples, str, int, float, bool or None around them. ``state["model"]``
            and ``state["downsampler"]`` are the weights.
        path: Destination file.

    Returns:
        ``path``.

    Raises:
        FloatingPointError: A weight of ``state["model"]`` or ``state["downsampler"]`` holds
            NaN or Inf (nothing is written).
        TypeError: ``state`` holds a value of another type (nothing is written).
    """
    path = Path(path)
    _check_finite_weights(state, path)
    encoder = StateEncoder()
    tree = encoder.encode(dict(state, version=CHECKPOINT_VERSION), ())
    state_json = json.dumps(tree)
    checksums = {
        "state": _sha256_of_text(state_json),
        "tensors": {name: _sha256_of_tensor(t) for name, t in encoder.tensors.items()},
    }
    metadata = {
        "format": "pt",
        _VERSION_KEY: str(CHECKPOINT_VERSION),
        _STATE_KEY: state_json,
        _SHA256_KEY: json.dumps(checksums),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(encoder.tensors, temp_name, metadata=metadata)
        with open(temp_name, "rb") as temp_file:
            os.fsync(temp_file.fileno())
        os.chmod(temp_name, 0o666 & ~current_umask())  # mkstemp made it 0o600
        os.replace(temp_name, path)
    except BaseException:
        remove_quietly(temp_name)
        raise
    fsync_folder(path.parent)
    return path


def remove_interrupted_saves(path: str | Path) -> list[Path]:
    """Delete the temp files that interrupted :func:`save_checkpoint` calls left next to ``path``.

    A save killed hard (``kill -9``, power loss) cannot remove its ``.<name>.*.tmp`` file.
    Call this only while no other process saves to ``path`` (``thumbdet train`` calls it
    with the lock of its output folder held).

    Args:
        path: A checkpoint path (the file need not exist).

    Returns:
        The removed files.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for temp in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
        if temp.is_file():
            remove_quietly(temp)
            removed.append(temp)
    return removed


# ---------------------------------------------------------------------------------- load
def _file_kind(path: Path) -> str:
    """``"safetensors"``, ``"torch"`` (zip or pickle) or ``"unknown"``, from the first bytes."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    # The safetensors test comes before the pickle one: a header length whose low byte is
    # 0x80 starts the file with the byte a pickle starts with.
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head.startswith(b"\x80"):
        return "torch"
    return "unknown"


def _load_safetensors(path: Path, skip: Iterable[str]) -> dict[str, Any]:
    damaged = f"{path} is not a readable checkpoint (damaged or not written by thumbdet)"
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{damaged}: {error}") from error
    with handle:
        metadata = handle.metadata() or {}
        if _STATE_KEY not in metadata or _SHA256_KEY not in metadata:
            raise ValueError(
                f"{path} is a safetensors file but not a thumbdet checkpoint (no "
                f"{_STATE_KEY!r} and {_SHA256_KEY!r} metadata)"
            )
        try:
            version = int(metadata.get(_VERSION_KEY, "0"))
            checksums = json.loads(metadata[_SHA256_KEY])
            state_checksum, recorded = checksums["state"], dict(checksums["tensors"])
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise ValueError(f"{damaged}: checksums: {error}") from error
        if version > CHECKPOINT_VERSION:
            raise ValueError(
                f"{path} has checkpoint format {version}, this thumbdet reads formats up to "
                f"{CHECKPOINT_VERSION}: upgrade thumbdet"
            )
        state_json = metadata[_STATE_KEY]
        if _sha256_of_text(state_json) != state_checksum:
            raise CorruptCheckpointError(
                f"{path} is damaged: its metadata (configuration, epoch...) does not match the "
                "SHA-256 recorded when it was saved; use another copy or checkpoint"
            )

        def tensor(name: str) -> torch.Tensor:
            value = handle.get_tensor(name)
            if _sha256_of_tensor(value) != recorded.get(name):
                raise CorruptCheckpointError(
                    f"{path} is damaged: tensor {name!r} does not match the SHA-256 recorded "
                    "when it was saved; use another copy or checkpoint"
                )
            return value

        try:
            tree = json.loads(state_json)
            for key in skip:
                tree.pop(key, None)
            return decode_state(tree, tensor)
        except CorruptCheckpointError:
            raise
        except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{damaged}: {error}") from error
        except RecursionError as error:
            raise ValueError(f"{damaged}: metadata nested too deeply") from error


def _to_device(value: Any, device: str | torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_device(item, device) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_device(item, device) for item in value)
    return value


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    training_state: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or by thumbdet 0.1).

    A safetensors checkpoint is checked against its SHA-256 checksums (the JSON and every
    tensor read). A thumbdet 0.1 checkpoint (a torch pickle) is read with
    :func:`load_torch_file` (no checksum to check); saving it again converts it.

    Args:
        path: The checkpoint file, or a folder holding one named :data:`CHECKPOINT_NAME`.
        map_location: Where to put the tensors.
        training_state: Also read the optimizer, scheduler and RNG states
            (:data:`TRAINING_STATE_KEYS`), which only ``--resume`` needs; ``False`` leaves
            them out (and does not read their tensors).

    Returns:
        The state given to :func:`save_checkpoint` (dicts, lists, tuples, tensors and numpy
        arrays as saved; state dicts come back as plain dicts), plus ``"version"``.

    Raises:
        FileNotFoundError: No file at ``path``.
        CorruptCheckpointError: A tensor or the metadata differs from its checksum.
        UnsafeCheckpointError: A torch pickle that needs more than tensors and values.
        ValueError: The file is not a thumbdet checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise FileNotFoundError(
                f"checkpoint not found: {path} is a folder without {CHECKPOINT_NAME}"
            )
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    skip = () if training_state else TRAINING_STATE_KEYS
    kind = _file_kind(path)
    if kind == "safetensors":
        checkpoint: Any = _load_safetensors(path, skip)
    elif kind == "torch":
        checkpoint = load_torch_file(path)
    else:
        raise ValueError(
            f"{path} is not a readable checkpoint: expected a thumbdet checkpoint "
            "(safetensors) or a torch file"
        )
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"{path} is not a thumbdet checkpoint (no 'model' and 'config' entries)")
    for key in skip:
        checkpoint.pop(key, None)
    if str(map_location) != "cpu":
        checkpoint = _to_device(checkpoint, map_location)
    return checkpoint
