"""Save a student's thumbnails of image files as PNGs.

Runs the downsampler of a student checkpoint on each image, to look at what its detector
sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbdet.cli.command import Command
from thumbdet.settings import setting

__all__ = ["COMMAND", "ThumbnailOptions"]


@dataclass
class ThumbnailOptions:
    """Settings of ``thumbdet thumbnail``."""

    checkpoint: str | None = setting(
        None, "a bicubic or thumbdet checkpoint, run folder or pretrained folder"
    )
    images: list[str] = setting([], "image files", flag="images")
    output: str | None = setting(None, "folder for the thumbnails")


def _run(options: ThumbnailOptions) -> int:
    """Body of ``thumbdet thumbnail``: print the path of each thumbnail written."""
    from thumbdet.checkpoints import load_detector
    from thumbdet.thumbnails import find_downsampler, save_thumbnails

    detector = load_detector(options.checkpoint)
    for path in save_thumbnails(find_downsampler(detector), options.images, options.output):
        print(path)
    return 0


COMMAND = Command("thumbnail", __doc__, ThumbnailOptions, _run, required=("checkpoint", "output"))
