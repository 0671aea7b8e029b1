"""``thumbdet thumbnail --checkpoint CKPT IMAGE... --output DIR``: a student's thumbnails as PNGs.

A thin command over :func:`thumbdet.thumbnails.save_thumbnails`; its flags come from
:class:`ThumbnailOptions`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from thumbdet.cli.flags import add_settings, settings_from_args
from thumbdet.settings import setting

__all__ = ["HELP", "ThumbnailOptions", "add_parser", "run"]

HELP = "save the learned thumbnails of images (student checkpoint)"


@dataclass
class ThumbnailOptions:
    """Settings of ``thumbdet thumbnail``."""

    checkpoint: str | None = setting(
        None, "a bicubic or thumbdet checkpoint, run folder or pretrained folder"
    )
    images: list[str] = setting([], "image files", flag="images")
    output: str | None = setting(None, "folder for the thumbnails")


def run(args: argparse.Namespace) -> int:
    """Body of ``thumbdet thumbnail``: print the path of each thumbnail written."""
    from thumbdet.checkpoints import load_detector
    from thumbdet.thumbnails import find_downsampler, save_thumbnails

    options: ThumbnailOptions = settings_from_args(args, ThumbnailOptions)
    detector = load_detector(options.checkpoint)
    for path in save_thumbnails(find_downsampler(detector), options.images, options.output):
        print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``thumbdet thumbnail`` on the CLI."""
    parser = subparsers.add_parser(
        "thumbnail",
        help=HELP,
        description="Run a student's downsampler on image files and save each thumbnail as "
        "a PNG, to look at what the detector sees.",
    )
    add_settings(parser, ThumbnailOptions, required=("checkpoint", "output"))
    parser.set_defaults(func=run)
