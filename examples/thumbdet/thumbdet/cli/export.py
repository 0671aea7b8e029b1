"""Export a checkpoint's detector (and downsampler) to ONNX.

The detector, and a student's downsampler, are each traced with an example input of
--image-size and written to their own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thumbdet.cli.command import Command
from thumbdet.settings import setting

__all__ = ["COMMAND", "ExportOptions"]


def _parts() -> tuple[str, ...]:
    from thumbdet.export import EXPORT_PARTS

    return EXPORT_PARTS


@dataclass
class ExportOptions:
    """Settings of ``thumbdet export``."""

    checkpoint: str | None = setting(None, "checkpoint file, run folder or pretrained folder")
    format: str = setting("onnx", "file format", choices=("onnx",))
    output: str | None = setting(None, "folder (default: next to the checkpoint)")
    image_size: tuple[int, int] = setting(
        (128, 128),
        "size of the example full-size input the graph is traced with",
        metavar=("H", "W"),
    )
    parts: list[str] | None = setting(
        None,
        "what to export (default: the detector, plus the downsampler of a student)",
        choices=_parts,
    )


def _run(options: ExportOptions) -> int:
    """Body of ``thumbdet export``: print the path of each file written."""
    from thumbdet.checkpoints import load_detector
    from thumbdet.export import EXPORT_PARTS, export_onnx

    output = options.output or str(Path(options.checkpoint).with_suffix("")) + "_onnx"
    detector = load_detector(options.checkpoint)
    parts = options.parts or (EXPORT_PARTS if hasattr(detector, "downsampler") else ["detector"])
    for path in export_onnx(detector, output, tuple(options.image_size), parts):
        print(path)
    return 0


COMMAND = Command("export", __doc__, ExportOptions, _run, required=("checkpoint",))
