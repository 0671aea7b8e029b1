"""``thumbdet thumbnail`` and ``thumbdet export``: the learned downsampler outside training.

``thumbdet thumbnail --checkpoint CKPT IMAGE... --output DIR`` writes the learned thumbnail of
each image as a PNG (the downsampler is useful on its own, e.g. to store or send smaller
images). ``thumbdet export --checkpoint CKPT --format onnx`` writes the deployed detector
(downsampler + student, full-size image in, ``pred_logits``/``pred_boxes`` out) and, for a
student, the downsampler alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from thumbdet.data.images import load_rgb_image

__all__ = [
    "EXPORT_PARTS",
    "DetectorOutputs",
    "add_parser",
    "export_onnx",
    "find_downsampler",
    "load_image",
    "save_thumbnails",
    "thumbnail_names",
]


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


class DetectorOutputs(nn.Module):
    """A detector reduced to its two main outputs, as a tuple, for graph export.

    Shape:
        - images: :math:`(B, 3, H, W)` in [0, 1] (full size for a student).
        - output: ``pred_logits`` :math:`(B, Q, K)` and ``pred_boxes`` :math:`(B, Q, 4)`
          (normalised cx, cy, w, h).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.detector(images)
        return outputs["pred_logits"], outputs["pred_boxes"]


@contextlib.contextmanager
def _traceable_ms_deform_attn() -> Iterator[None]:
    """Run MSDA as plain PyTorch ops (grid_sample...) instead of its registered custom op.

    The custom op keeps ``torch.compile`` and the MAC counter happy, but an ONNX exporter
    cannot translate it; its pure-PyTorch reference traces into standard ONNX operators.
    """
    from thumbdet.ops import traceable_ms_deform_attn

    with traceable_ms_deform_attn():
        yield


def _export(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str]) -> None:
    module.eval()
    with _traceable_ms_deform_attn():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["images"],
            output_names=output_names,
            opset_version=20,  # GridSample with the "linear" mode name of opset 20
            dynamo=True,
            verbose=False,
        )


EXPORT_PARTS = ("detector", "downsampler")


def export_onnx(
    detector: nn.Module,
    output: str | os.PathLike,
    image_size: tuple[int, int],
    parts: Sequence[str] = EXPORT_PARTS,
) -> list[Path]:
    """Export a detector and/or its downsampler to ONNX (``detector.onnx``, ``downsampler.onnx``).

    MSDA is exported through its pure-PyTorch form, whatever backend the model was built with.

    Args:
        detector: a module taking full-size ``(B, 3, H, W)`` images and returning a dict
            with ``pred_logits`` and ``pred_boxes`` (``thumbdet.training.trainer.load_detector``).
        output: the folder to write into.
        image_size: (H, W) of the example input the graph is traced with.
        parts: ``"detector"`` (downsampler + student, or the teacher) and/or
            ``"downsampler"`` (students only).

    Returns:
        The written files.
    """
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size: expected (H, W) of positive ints, got {image_size}")
    unknown = [part for part in parts if part not in EXPORT_PARTS]
    if unknown or not parts:
        raise ValueError(f"parts: expected some of {EXPORT_PARTS}, got {list(parts)}")
    downsampler = find_downsampler(detector) if "downsampler" in parts else None
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, *image_size)
    written = []
    if "detector" in parts:
        written.append(output / "detector.onnx")
        _export(DetectorOutputs(detector), example, written[-1], ["pred_logits", "pred_boxes"])
    if downsampler is not None:
        written.append(output / "downsampler.onnx")
        _export(downsampler, example, written[-1], ["thumbnail"])
    return written


def _load(checkpoint: str) -> nn.Module:
    from thumbdet.checkpoints import load_detector

    detector = load_detector(checkpoint)
    detector.eval()
    return detector


def _run_thumbnail(args: argparse.Namespace) -> int:
    written = save_thumbnails(find_downsampler(_load(args.checkpoint)), args.images, args.output)
    for path in written:
        print(path)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    output = args.output or str(Path(args.checkpoint).with_suffix("")) + "_onnx"
    detector = _load(args.checkpoint)
    parts = args.parts or (EXPORT_PARTS if hasattr(detector, "downsampler") else ["detector"])
    for path in export_onnx(detector, output, tuple(args.image_size), parts):
        print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``thumbnail`` and ``export`` subcommands on the ``thumbdet`` CLI."""
    thumbnail = subparsers.add_parser(
        "thumbnail",
        help="save the learned thumbnails of images (student checkpoint)",
        description="Run a student's downsampler on image files and save each thumbnail as "
        "a PNG, to look at what the detector sees.",
    )
    thumbnail.add_argument(
        "--checkpoint",
        required=True,
        help="a bicubic or thumbdet checkpoint, run folder or pretrained folder",
    )
    thumbnail.add_argument("images", nargs="+", help="image files")
    thumbnail.add_argument("--output", required=True, help="folder for the thumbnails")
    thumbnail.set_defaults(func=_run_thumbnail)

    export = subparsers.add_parser(
        "export",
        help="export a checkpoint's detector to ONNX",
        description="Export the detector of a checkpoint (and a student's downsampler) to ONNX, "
        "traced with an example input of --image-size.",
    )
    export.add_argument(
        "--checkpoint", required=True, help="checkpoint file, run folder or pretrained folder"
    )
    export.add_argument("--format", choices=["onnx"], default="onnx", help="file format")
    export.add_argument("--output", default=None, help="folder (default: next to the checkpoint)")
    export.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(128, 128),
        metavar=("H", "W"),
        help="size of the example full-size input the graph is traced with",
    )
    export.add_argument(
        "--parts",
        nargs="+",
        choices=EXPORT_PARTS,
        default=None,
        help="what to export (default: the detector, plus the downsampler of a student)",
    )
    export.set_defaults(func=_run_export)
