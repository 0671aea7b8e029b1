"""Learned thumbnails outside training: image files in, the downsampler's thumbnails out.

:func:`load_image` reads an image file like training does, :func:`find_downsampler` takes the
downsampler out of a student detector, and :func:`save_thumbnails` writes the thumbnail of each
image as a PNG (the downsampler is useful on its own, e.g. to store or send smaller images);
``thumbdet thumbnail`` is its command (:mod:`thumbdet.cli.thumbnail`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from thumbdet.data.images import load_rgb_image

__all__ = ["find_downsampler", "load_image", "save_thumbnails", "thumbnail_names"]


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as a ``(3, H, W)`` float tensor in [0, 1].

    Read like training and evaluation images (:func:`thumbdet.data.images.load_rgb_image`):
    every PIL mode is converted to 8-bit RGB, 16-bit images scaled; an unreadable file
    raises ``ImageReadError`` (a ``ValueError``) naming it.
    """
    pixels = np.asarray(load_rgb_image(path), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # (3, H, W)


def find_downsampler(detector: nn.Module) -> nn.Module:
    """The downsampler in front of a student detector (``learnthumb.Thumbnailed``).

    Raises:
        ValueError: when the detector has none, i.e. it is a full-size teacher.
    """
    downsampler = getattr(detector, "downsampler", None)
    if not isinstance(downsampler, nn.Module):
        raise ValueError(
            "checkpoint: expected a student (bicubic or thumbdet mode) with a downsampler, got a "
            f"{type(detector).__name__} without one (a full-size teacher has no thumbnail)"
        )
    return downsampler


def thumbnail_names(image_paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Distinct relative output names of the thumbnails of ``image_paths``.

    An image's thumbnail is ``<stem>_thumbnail.png``. Different files that share a stem keep
    the folders that tell them apart (``cam1/0001.jpg``, ``cam2/0001.jpg`` ->
    ``cam1/0001_thumbnail.png``, ``cam2/0001_thumbnail.png``), and in the same folder their
    extension (``img.png``, ``img.jpg`` -> ``img_png_thumbnail.png``, ``img_jpg_thumbnail.png``);
    any name still taken gets ``-2``, ``-3``... The same file given twice gets the same name.

    Example:
        >>> [str(name) for name in thumbnail_names(["a/x.png", "b/x.png", "y.jpg"])]
        ['a/x_thumbnail.png', 'b/x_thumbnail.png', 'y_thumbnail.png']
    """
    files = [Path(os.path.abspath(path)) for path in image_paths]
    names = [Path(f"{file.stem}_thumbnail.png") for file in files]
    by_stem: dict[str, list[int]] = {}
    for index, file in enumerate(files):
        by_stem.setdefault(file.stem, []).append(index)
    for stem, indices in by_stem.items():
        if len({files[index] for index in indices}) < 2:
            continue
        common = Path(os.path.commonpath([files[index].parent for index in indices]))
        folders = {index: files[index].parent.relative_to(common) for index in indices}
        for index in indices:
            names[index] = folders[index] / f"{stem}_thumbnail.png"
        for index in indices:
            twins = [other for other in indices if folders[other] == folders[index]]
            if len({files[other] for other in twins}) > 1:
                extension = files[index].suffix.lstrip(".")
                names[index] = folders[index] / f"{stem}_{extension}_thumbnail.png"
    owner: dict[Path, Path] = {}  # name -> the file that has it
    for index, file in enumerate(files):
        name, count = names[index], 1
        while owner.setdefault(name, file) != file:
            count += 1
            name = names[index].with_name(f"{names[index].stem}-{count}.png")
        names[index] = name
    return names


@torch.no_grad()
def save_thumbnails(
    downsampler: nn.Module, image_paths: Sequence[str | os.PathLike], output: str | os.PathLike
) -> list[Path]:
    """Write the thumbnail of each image as ``<output>/<stem>_thumbnail.png``.

    Images that share a file stem get distinct names (:func:`thumbnail_names`): no thumbnail
    overwrites another one of the same call.

    Args:
        downsampler: maps ``(1, 3, H, W)`` images in [0, 1] to thumbnails.
        image_paths: image files of any size PIL reads.
        output: the folder to write into (created).

    Returns:
        The written files, in the order of ``image_paths``.
    """
    if not image_paths:
        raise ValueError("image_paths: expected at least one image, got none")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    downsampler.eval()
    written = []
    for image_path, name in zip(image_paths, thumbnail_names(image_paths), strict=True):
        image = load_image(image_path)
        # (3, h, w): a wide thumbnail's image channels (its learned ones are not an image)
        thumbnail = downsampler(image[None])[0, :3].clamp(0.0, 1.0)
        pixels = (thumbnail.permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        target = output / name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target)
        written.append(target)
    return written
