"""Save and load downsamplers and students as ``model.safetensors`` plus ``config.json``.

The folder layout is the one of the Hugging Face ecosystem, so a folder pushed to the Hub loads
with one line:

- ``model.safetensors``: the module's ``state_dict`` (parameters and persistent buffers).
  Loading never unpickles anything.
- ``config.json``: what rebuilds the module before the weights go in::

      {
        "format": "learnthumb.pretrained",
        "format_version": 1,
        "library_version": "0.1.0",
        "kind": "downsampler",            # or "thumbnailed"
        "downsampler": {"name": "residual", "scale": 4, "kwargs": {"hidden_channels": 8}},
        "model": {"source": "timm", "name": "resnet18", "kwargs": {"num_classes": 10},
                  "mask_argument": null},
        "extra": {"category_names": ["cat", "dog"]}
      }

  ``"model"`` is present for ``"thumbnailed"`` only; its ``"source"`` is ``"timm"`` (rebuilt
  with ``timm.create_model(name, pretrained=False, **kwargs)``) or ``"factory"`` (rebuilt by
  the ``model_factory(**kwargs)`` given to :func:`from_pretrained`). Its ``"mask_argument"``
  is the student's :class:`learnthumb.Thumbnailed` ``mask_argument`` (``null`` when absent,
  as in folders written before it was recorded).

A downsampler is rebuilt from its registry name and constructor arguments, which
:func:`learnthumb.create_downsampler` records on the module it returns (``learnthumb_config``).
A downsampler built from its class directly carries no such record and cannot be saved: build
it with ``create_downsampler`` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learnthumb.downsamplers import create_downsampler, list_downsamplers
from learnthumb.wrappers import Thumbnailed

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "from_pretrained",
    "load_pretrained_config",
    "read_folder_config",
    "save_pretrained",
    "write_pretrained_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Version of the ``config.json`` layout; :func:`from_pretrained` refuses any other.
FORMAT_VERSION = 1
_FORMAT = "learnthumb.pretrained"
_KINDS = ("downsampler", "thumbnailed")
_MODEL_SOURCES = ("timm", "factory")
# "owner/name" or "name" as the Hub spells repository ids; anything else is a local path.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_LISTED = 5  # keys named in an error message before "..."

ModelFactory = Callable[..., nn.Module]
Restore = Callable[[Any, tuple[int, int], tuple[int, int]], Any]


# ------------------------------------------------------------------------------------ saving
def _json_value(value: object, name: str) -> Any:
    """``value`` as JSON would give it back (tuples become lists), or ``TypeError``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be JSON-serialisable, got {value!r} ({error})") from None


def _downsampler_config(downsampler: nn.Module, name: str) -> dict[str, Any]:
    config = getattr(downsampler, "learnthumb_config", None)
    if not isinstance(config, Mapping) or not {"name", "scale", "kwargs"} <= set(config):
        raise ValueError(
            f"{name} has no learnthumb_config to rebuild it from: build it with "
            "learnthumb.create_downsampler(name, scale, **kwargs)"
        )
    record = {"name": config["name"], "scale": config["scale"], "kwargs": dict(config["kwargs"])}
    return _json_value(record, f"{name}.learnthumb_config")


def _build_config(
    module: nn.Module,
    timm_model: str | None,
    model_kwargs: Mapping[str, object] | None,
    extra_config: Mapping[str, object],
) -> dict[str, Any]:
    from learnthumb import __version__

    config: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
    }
    if isinstance(module, Thumbnailed):
        if timm_model is not None and (not isinstance(timm_model, str) or not timm_model):
            raise ValueError(f"timm_model must be a non-empty string or None, got {timm_model!r}")
        if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
            raise TypeError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}")
        config["kind"] = "thumbnailed"
        config["downsampler"] = _downsampler_config(module.downsampler, "module.downsampler")
        model: dict[str, Any] = {"source": "factory" if timm_model is None else "timm"}
        if timm_model is not None:
            model["name"] = timm_model
        model["kwargs"] = _json_value(dict(model_kwargs or {}), "model_kwargs")
        model["mask_argument"] = module.mask_argument
        config["model"] = model
    else:
        if timm_model is not None or model_kwargs is not None:
            raise ValueError("timm_model and model_kwargs apply to a Thumbnailed student only")
        config["kind"] = "downsampler"
        config["downsampler"] = _downsampler_config(module, "module")
    config["extra"] = _json_value(dict(extra_config), "extra_config")
    return config


def _write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


def _temporary_path(directory: Path, name: str) -> Path:
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    return Path(path)


def save_pretrained(
    module: nn.Module,
    directory: str | os.PathLike[str],
    *,
    timm_model: str | None = None,
    model_kwargs: Mapping[str, object] | None = None,
    **extra_config: object,
) -> Path:
    """Write ``module`` to ``directory`` as ``model.safetensors`` plus ``config.json``.

    ``module`` is a downsampler made by :func:`learnthumb.create_downsampler` or a
    :class:`learnthumb.Thumbnailed` student whose downsampler was. A student's model is
    rebuilt at load time by timm (``timm_model`` names it) or by the caller's factory; either
    way ``model_kwargs`` are recorded and passed again. A student's ``restore`` callable is
    not saved: give it to :func:`from_pretrained`.

    Saving is atomic per file: both files are written to temporary files in ``directory`` and
    then renamed over the old ones, so a failure leaves an existing folder as it was.

    Args:
        module: the downsampler or student to save.
        directory: the folder to write; created if missing, files of the same names replaced.
        timm_model: for a student whose model is a timm model, its ``timm.create_model`` name.
        model_kwargs: for a student, the keyword arguments that rebuild its model (for timm,
            e.g. ``{"num_classes": 10}``; ``pretrained`` is always False at load).
        **extra_config: JSON-serialisable values stored under ``"extra"`` (e.g. category
            names); read them back with :func:`load_pretrained_config`.

    Returns:
        The folder, as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile
        >>> from learnthumb import create_downsampler
        >>> down = create_downsampler("residual", 4, hidden_channels=8)
        >>> folder = save_pretrained(down, tempfile.mkdtemp())
        >>> sorted(path.name for path in folder.iterdir())
        ['config.json', 'model.safetensors']
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    config = _build_config(module, timm_model, model_kwargs, extra_config)
    # A copy per tensor: safetensors refuses tensors that share memory (tied weights).
    state = {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}
    return write_pretrained_folder(directory, state, config)


def write_pretrained_folder(
    directory: str | os.PathLike[str], state: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write ``state`` as ``model.safetensors`` and ``config`` as ``config.json``, atomically.

    The two files :func:`save_pretrained` writes, for packages that save modules of their own
    in this layout (with a config of their own format): each file is written to a temporary
    file in ``directory`` and renamed over the old one, so a failure leaves an existing
    folder as it was.

    Args:
        directory: the folder to write; created if missing, files of the same names replaced.
        state: the tensors, on the CPU, none sharing memory with another.
        config: JSON-serialisable configuration.

    Returns:
        The folder, as a :class:`pathlib.Path`.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"directory must be a folder, got the file {str(folder)!r}")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    temporary: list[Path] = []
    try:
        weights_tmp = _temporary_path(folder, WEIGHTS_NAME)
        temporary.append(weights_tmp)
        _write_safetensors(state, weights_tmp)
        config_tmp = _temporary_path(folder, CONFIG_NAME)
        temporary.append(config_tmp)
        config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(weights_tmp, folder / WEIGHTS_NAME)
        os.replace(config_tmp, folder / CONFIG_NAME)
    except BaseException:
        for path in temporary:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return folder


# ----------------------------------------------------------------------------------- loading
def _resolve_folder(directory_or_repo_id: str | os.PathLike[str], revision: str | None) -> Path:
    """A local folder, or the snapshot of a Hugging Face Hub repository."""
    if not isinstance(directory_or_repo_id, (str, os.PathLike)):
        raise TypeError(
            "directory_or_repo_id must be a path or a Hub repo id, "
            f"got {type(directory_or_repo_id).__name__}"
        )
    path = Path(directory_or_repo_id)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"directory_or_repo_id must be a folder, got the file {str(path)!r}")
    text = os.fspath(directory_or_repo_id)
    if not _REPO_ID.match(text) or text.startswith(".") or text.count("/") > 1:
        raise FileNotFoundError(f"no folder at {text!r} (and it is not a Hugging Face repo id)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(
            f"{text!r} is not a local folder; loading it from the Hugging Face Hub needs "
            "huggingface_hub (pip install huggingface_hub)"
        ) from None
    snapshot = snapshot_download(
        repo_id=text, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
    )
    return Path(snapshot)


def read_folder_config(
    folder: Path,
    *,
    format_name: str,
    format_version: int,
    kinds: Sequence[str],
    reader: str,
    hints: Mapping[str | None, str] | None = None,
) -> dict[str, Any]:
    """``folder/config.json``, checked for its format, version and kind (one-line errors).

    Shared by every package that writes pretrained folders (``learnthumb``, ``thumbdet``).

    Args:
        folder: the local folder.
        format_name: the ``"format"`` the config must have.
        format_version: the only ``"format_version"`` accepted.
        kinds: the accepted ``"kind"`` values.
        reader: the package's name, for the messages.
        hints: found format -> a hint appended when the format is not ``format_name``.
    """
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_NAME} is missing from {str(folder)!r}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{CONFIG_NAME} in {str(folder)!r} is not valid JSON ({error})") from None
    found = config.get("format") if isinstance(config, dict) else None
    if found != format_name:
        hint = (hints or {}).get(found, "")
        raise ValueError(
            f"{CONFIG_NAME} in {str(folder)!r} is not a {reader} config "
            f"(expected format {format_name!r}, got {found!r}){hint}"
        )
    version = config.get("format_version")
    if version != format_version:
        raise ValueError(
            f"{CONFIG_NAME} in {str(folder)!r} has format_version {version!r}; this {reader} "
            f"reads format_version {format_version} only"
        )
    if config.get("kind") not in kinds:
        raise ValueError(f"{CONFIG_NAME}: kind must be one of {kinds}, got {config.get('kind')!r}")
    return config


def _read_config(folder: Path) -> dict[str, Any]:
    return read_folder_config(
        folder,
        format_name=_FORMAT,
        format_version=FORMAT_VERSION,
        kinds=_KINDS,
        reader="learnthumb",
    )


def load_pretrained_config(
    directory_or_repo_id: str | os.PathLike[str], *, revision: str | None = None
) -> dict[str, Any]:
    """The checked ``config.json`` of a saved folder (see the module docstring for its keys).

    ``config["extra"]`` holds what :func:`save_pretrained` got as ``**extra_config``.

    Args:
        directory_or_repo_id: a local folder or a Hugging Face Hub repo id (as
            :func:`from_pretrained`).
        revision: the Hub revision (branch, tag or commit); ignored for a local folder.

    Returns:
        The parsed config, a dict.
    """
    return _read_config(_resolve_folder(directory_or_repo_id, revision))


def _build_downsampler(record: object) -> nn.Module:
    if not isinstance(record, dict) or not {"name", "scale", "kwargs"} <= set(record):
        raise ValueError(
            f'{CONFIG_NAME}: "downsampler" must hold name, scale and kwargs, got {record!r}'
        )
    name = record["name"]
    if name not in list_downsamplers():
        raise ValueError(
            f"{CONFIG_NAME} names the unknown downsampler {name!r}; registered: "
            f"{list_downsamplers()} (register it before loading)"
        )
    if not isinstance(record["kwargs"], dict):
        raise ValueError(f'{CONFIG_NAME}: "downsampler.kwargs" must be an object')
    return create_downsampler(name, record["scale"], **record["kwargs"])


def _build_model(record: object, model_factory: ModelFactory | None) -> nn.Module:
    if not isinstance(record, dict) or record.get("source") not in _MODEL_SOURCES:
        raise ValueError(
            f'{CONFIG_NAME}: "model.source" must be one of {_MODEL_SOURCES}, got {record!r}'
        )
    kwargs = record.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f'{CONFIG_NAME}: "model.kwargs" must be an object, got {kwargs!r}')
    if model_factory is not None:
        model = model_factory(**kwargs)
    elif record["source"] == "timm":
        import timm

        model = timm.create_model(record["name"], pretrained=False, **kwargs)
    else:
        raise ValueError(
            "this student's model was saved without a timm name: pass "
            "model_factory=callable(**model_kwargs) -> nn.Module to rebuild it"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_factory must return an nn.Module, got {type(model).__name__}")
    return model


def _listed(keys: set[str]) -> str:
    names = sorted(keys)
    shown = ", ".join(names[:_LISTED])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _LISTED else shown


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_NAME} is missing from {str(folder)!r}")
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{WEIGHTS_NAME} in {str(folder)!r} is unreadable ({message})") from None


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = module.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listed(unexpected)}")
        raise ValueError(
            f"{WEIGHTS_NAME} in {str(folder)!r} does not match the module that "
            f"{CONFIG_NAME} builds: {'; '.join(parts)}"
        )
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if state[key].shape != value.shape
    ]
    if mismatched:
        shown = ", ".join(mismatched[:_LISTED])
        raise ValueError(
            f"{WEIGHTS_NAME} in {str(folder)!r} has tensors of the wrong shape "
            f"(saved vs built): {shown}"
        )
    module.load_state_dict(state, strict=True)


def from_pretrained(
    directory_or_repo_id: str | os.PathLike[str],
    *,
    model_factory: ModelFactory | None = None,
    restore: Restore | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a module written by :func:`save_pretrained` and load its weights.

    The module is built from ``config.json`` (a registered downsampler, or a
    :class:`learnthumb.Thumbnailed` student around it), then ``model.safetensors`` is loaded
    strictly: every tensor must be there with its shape. Nothing is unpickled. An argument that
    is not an existing folder is taken as a Hugging Face Hub repo id and downloaded with
    ``huggingface_hub.snapshot_download`` (needs ``huggingface_hub``).

    Args:
        directory_or_repo_id: a folder written by :func:`save_pretrained`, or a Hub repo id
            (``"owner/name"``) holding the same two files.
        model_factory: for a student, ``model_factory(**model_kwargs) -> nn.Module`` rebuilds
            its model; required when it was saved without ``timm_model``, and used instead of
            timm when given.
        restore: for a student, the ``restore`` callable of :class:`learnthumb.Thumbnailed`.
        revision: the Hub revision (branch, tag or commit); ignored for a local folder.
        device: where the module's tensors go.

    Returns:
        The module in eval mode (call ``.train()`` to fine-tune it).

    Example:
        >>> import tempfile
        >>> from learnthumb import create_downsampler
        >>> down = create_downsampler("thumbdet", 4)
        >>> folder = save_pretrained(down, tempfile.mkdtemp())
        >>> loaded = from_pretrained(folder)
        >>> images = torch.rand(1, 3, 37, 50)
        >>> torch.equal(loaded(images), down(images))
        True
    """
    if model_factory is not None and not callable(model_factory):
        raise TypeError(f"model_factory must be callable, got {type(model_factory).__name__}")
    folder = _resolve_folder(directory_or_repo_id, revision)
    config = _read_config(folder)
    state = _read_weights(folder)
    downsampler = _build_downsampler(config.get("downsampler"))
    if config["kind"] == "thumbnailed":
        record = config.get("model")
        model = _build_model(record, model_factory)
        mask_argument = record.get("mask_argument")  # absent from older folders: None
        if mask_argument is not None and (not isinstance(mask_argument, str) or not mask_argument):
            raise ValueError(
                f'{CONFIG_NAME}: "model.mask_argument" must be a keyword name (str) or null, '
                f"got {mask_argument!r}"
            )
        module: nn.Module = Thumbnailed(
            model, downsampler, restore=restore, mask_argument=mask_argument
        )
    else:
        module = downsampler
    _load_weights(module, state, folder)
    return module.to(device).eval()
