"""Save and load detectors and students as ``model.safetensors`` plus ``config.json``.

The layout is the Hugging Face ecosystem's, as :mod:`learnthumb.pretrained` writes it for
downsamplers, so a folder pushed to the Hub loads with one line:

- ``model.safetensors``: the detector's ``state_dict`` under ``detector.``, and for a student
  its downsampler's under ``downsampler.``. Loading never unpickles anything.
- ``config.json``: what rebuilds the model before the weights go in::

      {
        "format": "thumbdet.checkpoints.pretrained",
        "format_version": 1,
        "thumbdet_version": "0.2.0",
        "kind": "student",                 # or "detector" (a teacher)
        "detector": {...},                 # DetectorConfig.to_dict()
        "downsampler": {"name": "thumbdet", "scale": 4, "kwargs": {}},   # students only
        "category_ids": [3, 7],
        "category_names": ["cat", "dog"],
        "preprocessing": {"short_side": [128], "max_size": 213}          # optional
      }

  A student's downsampler is rebuilt from learnthumb's registry (the ``learnthumb_config``
  that :func:`learnthumb.create_downsampler` records); a wide downsampler's detector gets its
  widened stem (:func:`~thumbdet.models.thumbnail_detector.widen_stem`) before the weights go in.
  ``preprocessing`` holds the resize sizes of the training run, which ``thumbdet eval`` uses
  by default.

``thumbdet train`` writes such a folder, ``OUTPUT/pretrained``, with its final checkpoint;
``thumbdet eval``, ``thumbnail``, ``export`` and ``train --teacher`` read it wherever they
read a checkpoint.

Example:
    >>> folder = save_pretrained(load_detector("runs/thumbdet4"), "thumbdet4")  # doctest: +SKIP
    >>> student = from_pretrained("thumbdet4")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# learnthumb's folder machinery (Hub download, atomic writes, strict key and shape checks),
# shared so that both packages refuse a bad folder with the same messages.
from learnthumb.pretrained import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    _build_downsampler,
    _downsampler_config,
    _json_value,
    _load_weights,
    _read_weights,
    _resolve_folder,
    read_folder_config,
    write_pretrained_folder,
)
from thumbdet.models import DetectorConfig, build_model
from thumbdet.models.thumbnail_detector import ThumbnailDetector, widen_stem

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "PRETRAINED_DIR",
    "WEIGHTS_NAME",
    "from_pretrained",
    "is_pretrained_folder",
    "load_pretrained_config",
    "save_pretrained",
]

#: Version of the ``config.json`` layout; :func:`from_pretrained` refuses any other.
FORMAT_VERSION = 1
#: The folder ``thumbdet train`` writes next to its checkpoint.
PRETRAINED_DIR = "pretrained"
_FORMAT = "thumbdet.checkpoints.pretrained"
_KINDS = ("detector", "student")
_PREFIXES = {"detector": "detector.", "downsampler": "downsampler."}


# ------------------------------------------------------------------------------------ saving
def _categories(
    model: nn.Module,
    num_classes: int,
    category_ids: Sequence[int] | None,
    category_names: Sequence[str] | None,
) -> tuple[list[int], list[str]]:
    """The given categories, else those of ``model.checkpoint_meta``, else ``0..K-1``."""
    meta = getattr(model, "checkpoint_meta", None) or {}
    if category_ids is None:
        category_ids = meta.get("category_ids", range(num_classes))
    if category_names is None:
        category_names = meta.get("category_names", [str(i) for i in category_ids])
    ids, names = list(category_ids), list(category_names)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError(f"category_ids must be ints, got {ids!r}")
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"category_names must be strings, got {names!r}")
    if len(ids) != len(names):
        raise ValueError(
            f"expected one name per category id, got {len(ids)} ids and {len(names)} names"
        )
    return ids, names


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    category_ids: Sequence[int] | None = None,
    category_names: Sequence[str] | None = None,
    short_side: Sequence[int] | None = None,
    max_size: int | None = None,
) -> Path:
    """Write a detector (teacher) or a student to ``directory`` (see the module docstring).

    Both files are written to temporary files in ``directory`` and renamed over the old ones
    (:func:`learnthumb.pretrained.write_pretrained_folder`): a failure leaves an existing
    folder as it was.

    Args:
        model: A :class:`~thumbdet.models.DeformableDETR` or a
            :class:`~thumbdet.models.thumbnail_detector.ThumbnailDetector` whose downsampler was
            built by :func:`learnthumb.create_downsampler` (as :func:`~thumbdet.checkpoints.loading.
            load_detector` and ``thumbdet train`` build them).
        directory: The folder to write; created if missing, files of the same names replaced.
        category_ids: The category id of each class logit; default: the model's
            ``checkpoint_meta`` (set by ``load_detector``), else ``0..K-1``.
        category_names: The name of each class; default as ``category_ids``.
        short_side: Resize sizes the model was trained with (``thumbdet eval``'s default).
        max_size: Longest side it was trained with.

    Returns:
        The folder, as a :class:`pathlib.Path`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    student = isinstance(model, ThumbnailDetector)
    detector = model.detector if student else model
    detector_config = getattr(detector, "config", None)
    if not isinstance(detector_config, DetectorConfig):
        raise TypeError(
            "model must be a thumbdet detector (with a DetectorConfig .config) or a "
            f"ThumbnailDetector around one, got {type(model).__name__}"
        )
    from thumbdet import __version__

    # The weights are in the file: a rebuilt detector must not fetch backbone weights again.
    record = dict(detector_config.to_dict(), pretrained_backbone=False, backbone_weights=None)
    ids, names = _categories(model, detector_config.num_classes, category_ids, category_names)
    config: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "thumbdet_version": __version__,
        "kind": "student" if student else "detector",
        "detector": _json_value(record, "model.config"),
        "category_ids": ids,
        "category_names": names,
    }
    parts = {"detector": detector}
    if student:
        config["downsampler"] = _downsampler_config(model.downsampler, "model.downsampler")
        parts["downsampler"] = model.downsampler
    if short_side is not None or max_size is not None:
        preprocessing = {"short_side": list(short_side or []), "max_size": max_size}
        config["preprocessing"] = _json_value(preprocessing, "short_side and max_size")
    # A copy per tensor: safetensors refuses tensors that share memory (tied heads).
    state = {
        _PREFIXES[part] + key: value.detach().cpu().clone()
        for part, module in parts.items()
        for key, value in module.state_dict().items()
    }
    return write_pretrained_folder(directory, state, config)


# ----------------------------------------------------------------------------------- loading
def is_pretrained_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local folder holding ``model.safetensors`` (a pretrained folder,
    not a training run folder or checkpoint file)."""
    path = Path(path)
    return path.is_dir() and (path / WEIGHTS_NAME).is_file()


def _read_config(folder: Path) -> dict[str, Any]:
    config = read_folder_config(
        folder,
        format_name=_FORMAT,
        format_version=FORMAT_VERSION,
        kinds=_KINDS,
        reader="thumbdet pretrained",
        hints={
            "learnthumb.pretrained": "; it holds a learnthumb downsampler or student: load it "
            "with learnthumb.from_pretrained",
            None: "; a Hugging Face transformers Deformable DETR is read by thumbdet convert "
            "--from transformers",
        },
    )
    for key, kind in (("detector", dict), ("category_ids", list), ("category_names", list)):
        if not isinstance(config.get(key), kind):
            raise ValueError(
                f'{CONFIG_NAME} in {str(folder)!r}: "{key}" must be a JSON '
                f"{'object' if kind is dict else 'list'}, got {config.get(key)!r}"
            )
    return config


def load_pretrained_config(
    directory_or_repo_id: str | os.PathLike[str], *, revision: str | None = None
) -> dict[str, Any]:
    """The checked ``config.json`` of a folder written by :func:`save_pretrained`.

    Args:
        directory_or_repo_id: A local folder or a Hugging Face Hub repo id.
        revision: The Hub revision (branch, tag or commit); ignored for a local folder.
    """
    return _read_config(_resolve_folder(directory_or_repo_id, revision))


def _split_weights(state: Mapping[str, torch.Tensor], folder: Path) -> dict[str, dict]:
    """``{"detector": {...}, "downsampler": {...}}`` with the key prefixes removed."""
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in _PREFIXES}
    stray = []
    for key, value in state.items():
        part = next((name for name, prefix in _PREFIXES.items() if key.startswith(prefix)), None)
        if part is None:
            stray.append(key)
        else:
            parts[part][key[len(_PREFIXES[part]) :]] = value
    if stray:
        raise ValueError(
            f"{WEIGHTS_NAME} in {str(folder)!r} has keys outside 'detector.' and "
            f"'downsampler.': {', '.join(sorted(stray)[:5])}"
        )
    return parts


def _checkpoint_meta(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``checkpoint_meta`` a training checkpoint of the same model records."""
    detector = config["detector"]
    downsampler = config.get("downsampler") if config["kind"] == "student" else None
    name = downsampler["name"] if downsampler else None
    return {
        "preset": detector.get("preset"),
        "num_classes": detector.get("num_classes"),
        "mode": "teacher" if name is None else "bicubic" if name == "bicubic" else "thumbdet",
        "scale": downsampler["scale"] if downsampler else None,
        "downsampler": name,
        "category_ids": list(config["category_ids"]),
        "category_names": list(config["category_names"]),
    }


def from_pretrained(
    directory_or_repo_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a detector or student written by :func:`save_pretrained`, weights loaded.

    The model is built from ``config.json``, then ``model.safetensors`` is loaded strictly:
    every tensor must be there with its shape. Nothing is unpickled. An argument that is not
    an existing folder is taken as a Hugging Face Hub repo id (needs ``huggingface_hub``).

    Args:
        directory_or_repo_id: A folder written by :func:`save_pretrained`, or a Hub repo id.
        revision: The Hub revision (branch, tag or commit); ignored for a local folder.
        device: Where the model's tensors go.

    Returns:
        In eval mode, the detector (a teacher) or a
        :class:`~thumbdet.models.thumbnail_detector.ThumbnailDetector` (a student), as
        :func:`~thumbdet.checkpoints.loading.load_detector` returns them: full-size images in, with
        ``checkpoint_meta`` (mode, scale, category ids and names) attached.
    """
    folder = _resolve_folder(directory_or_repo_id, revision)
    config = _read_config(folder)
    parts = _split_weights(_read_weights(folder), folder)
    try:
        detector_config = DetectorConfig.from_dict(config["detector"])
    except (TypeError, ValueError) as error:
        raise ValueError(f'{CONFIG_NAME} in {str(folder)!r}: "detector": {error}') from None
    detector = build_model(detector_config)
    model: nn.Module = detector
    if config["kind"] == "student":
        downsampler = _build_downsampler(config.get("downsampler"))
        widen_stem(detector, downsampler)  # a wide thumbnail's student has a wider stem
        _load_weights(downsampler, parts["downsampler"], folder)
        model = ThumbnailDetector(detector, downsampler)
    elif parts["downsampler"]:
        raise ValueError(
            f"{WEIGHTS_NAME} in {str(folder)!r} holds downsampler weights, but {CONFIG_NAME} "
            "describes a detector without one"
        )
    _load_weights(detector, parts["detector"], folder)
    model.checkpoint_meta = _checkpoint_meta(config)
    model.pretrained_config = config
    return model.to(device).eval()
