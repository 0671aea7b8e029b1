"""ONNX export of a trained detector and of a student's downsampler.

:func:`export_onnx` writes the deployed detector (downsampler + student, full-size image in,
``pred_logits``/``pred_boxes`` out) and, for a student, the downsampler alone; ``thumbdet
export`` is its command (:mod:`thumbdet.cli.export`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from thumbdet.thumbnails import find_downsampler

__all__ = ["EXPORT_PARTS", "DetectorOutputs", "export_onnx"]


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


def _export(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str]) -> None:
    from thumbdet.ops import traceable_ms_deform_attn

    module.eval()
    # MSDA as plain PyTorch ops (grid_sample...): an ONNX exporter cannot translate its
    # registered custom op, while its pure-PyTorch reference traces into standard operators.
    with traceable_ms_deform_attn():
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
            with ``pred_logits`` and ``pred_boxes`` (:func:`thumbdet.checkpoints.load_detector`).
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
