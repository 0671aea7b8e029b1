"""Reading image files: every PIL mode to 8-bit RGB, and a cached check of whole datasets.

:func:`load_rgb_image` is the one image reader of ``thumbdet``: training and evaluation data
(:class:`thumbdet.data.CocoDetection`) and ``thumbdet thumbnail`` use it. It converts

- 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` with values in
  0..65535) by scaling 0..65535 to 0..255 (not by clipping at 255);
- 32-bit float greyscale (``F``): values in [0, 1] are scaled to 0..255, values in [0, 255]
  kept; anything else (negative, above 255, NaN, infinity) is refused;
- ``1``, ``L``, ``P``, ``RGBX``, ``CMYK``, ``YCbCr``, ``HSV`` with PIL's conversions;
- images with transparency (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, and ``L``, ``P`` or
  ``RGB`` with a transparent colour) by compositing them over a white background.

Other modes (e.g. ``LAB``) are refused with a message naming the file and the mode.

:func:`check_image_files` decodes every file completely (a truncated PNG or JPEG fails here,
not in the middle of an epoch) and remembers the good ones by path, size and modification
time, in memory and optionally in a JSON file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from thumbdet.files import write_json

__all__ = [
    "IMAGE_CHECK_CACHE_NAME",
    "ImageReadError",
    "check_image_files",
    "load_rgb_image",
    "to_rgb",
    "write_image_check_cache",
]

logger = logging.getLogger(__name__)

#: File name of the cache of checked images in a training run's ``--output`` folder.
IMAGE_CHECK_CACHE_NAME = "image_check.json"
_CACHE_VERSION = 1
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_PIL_CONVERTED_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV")
_BACKGROUND = (255, 255, 255)

# Good files seen by this process: resolved path -> (size, mtime_ns).
_checked: dict[str, tuple[int, int]] = {}
_checked_lock = threading.Lock()


class ImageReadError(ValueError):
    """An image file that cannot be read or converted to RGB (the message names the file)."""


def _scaled_to_uint8(pixels: np.ndarray, top: float) -> np.ndarray:
    """``pixels`` in [0, top] mapped linearly to 0..255, rounded."""
    return np.rint(pixels.astype(np.float64) * (255.0 / top)).astype(np.uint8)


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """``image`` as an 8-bit RGB image, whatever its PIL mode (see the module docstring).

    Args:
        image: A loaded PIL image.
        name: What to call it in an error message (e.g. its path).

    Raises:
        ImageReadError: A mode or value range that has no faithful 8-bit RGB form.
    """
    mode = image.mode
    if mode in _ALPHA_MODES or (mode in ("L", "P", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        pixels = np.asarray(image)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ImageReadError(
                f"{name}: mode {mode} with values {pixels.min()}..{pixels.max()}, expected "
                "16-bit values in 0..65535"
            )
        return Image.fromarray(_scaled_to_uint8(pixels, 65535.0), "L").convert("RGB")
    if mode == "F":
        pixels = np.asarray(image, dtype=np.float32)
        if not pixels.size:
            return Image.new("RGB", image.size)
        low, high = float(pixels.min()), float(pixels.max())
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            raise ImageReadError(
                f"{name}: mode F with values {low}..{high}, expected finite values in [0, 1] "
                "or [0, 255]"
            )
        return Image.fromarray(
            _scaled_to_uint8(pixels, 1.0 if high <= 1.0 else 255.0), "L"
        ).convert("RGB")
    if mode in _PIL_CONVERTED_MODES:
        return image.convert("RGB")
    raise ImageReadError(
        f"{name}: unsupported image mode {mode!r}, expected one of "
        f"{[*_PIL_CONVERTED_MODES, *_SIXTEEN_BIT_MODES, 'I', 'F', *_ALPHA_MODES]}"
    )


def load_rgb_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file completely and return it as 8-bit RGB.

    Raises:
        FileNotFoundError: No file at ``path``.
        ImageReadError: The file is not an image PIL can read, is truncated or damaged, or
            has a mode without a faithful RGB form; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as handle:
            handle.load()  # decode everything now: truncated files fail here
            return to_rgb(handle, str(path))
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        # OSError covers PIL.UnidentifiedImageError and "image file is truncated".
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"image file {path} cannot be read: {message}") from error


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _read_cache(cache_file: Path | None) -> dict[str, tuple[int, int]]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
        if data.get("version") != _CACHE_VERSION:
            return {}
        return {str(key): (int(size), int(mtime)) for key, (size, mtime) in data["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        logger.warning("ignoring unreadable image check cache %s", cache_file)
        return {}


def write_image_check_cache(paths: Iterable[str | os.PathLike], cache_file: str | Path) -> None:
    """Record the good files among ``paths`` (checked by this process) in ``cache_file``."""
    files = {}
    with _checked_lock:
        for path in paths:
            key = str(Path(path).resolve())
            if key in _checked:
                files[key] = list(_checked[key])
    write_json(cache_file, {"version": _CACHE_VERSION, "files": files}, indent=None)


def check_image_files(
    paths: Iterable[str | os.PathLike],
    cache_file: str | Path | None = None,
    workers: int | None = None,
) -> dict[Path, str]:
    """Decode every file not yet known to be good; return the bad ones with the reason.

    A file is known to be good when this process, or the run that wrote ``cache_file``,
    decoded it with the same size and modification time.

    Args:
        paths: Image files.
        cache_file: JSON cache of good files (read if it exists; see
            :func:`write_image_check_cache`).
        workers: Decoding threads (default: up to 8, at most the CPU count).

    Returns:
        ``{path: one-line reason}`` of the files that cannot be read as RGB images.
    """
    cached = _read_cache(Path(cache_file) if cache_file is not None else None)
    todo: list[tuple[Path, str, tuple[int, int] | None]] = []
    bad: dict[Path, str] = {}
    for path in map(Path, paths):
        key = str(path.resolve())
        try:
            signature = _signature(path)
        except OSError as error:
            bad[path] = f"image file {path} cannot be read: {error.strerror or error}"
            continue
        with _checked_lock:
            known = _checked.get(key)
        if known == signature:
            continue
        if cached.get(key) == signature:
            with _checked_lock:
                _checked[key] = signature
            continue
        todo.append((path, key, signature))

    def check(item: tuple[Path, str, tuple[int, int] | None]) -> tuple[Path, str | None]:
        path, key, signature = item
        try:
            load_rgb_image(path)
        except (ImageReadError, OSError) as error:
            return path, str(error)
        with _checked_lock:
            _checked[key] = signature
        return path, None

    if todo:
        workers = workers or min(8, os.cpu_count() or 1)
        if len(todo) > 1000:
            logger.info("checking %d image files (cached for later runs)", len(todo))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            checked = pool.map(check, todo)
            bad.update({path: reason for path, reason in checked if reason is not None})
    return bad
