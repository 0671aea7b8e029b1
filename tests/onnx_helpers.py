"""A helper of the library's ONNX tests: export with the TorchScript-based exporter."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def export_legacy_onnx(module: nn.Module):
    """``module`` as an ``onnx.ModelProto`` from ``torch.onnx.export(..., dynamo=False)``,
    traced on a ``(1, 3, 32, 32)`` batch, with a dynamic batch, height and width on its input
    ``"images"`` and its output named ``"thumbnail"``.

    The TorchScript exporter is quick (no ``torch.export``) but has no antialiased resize;
    ``learnthumb.export_onnx`` is the library's own, dynamo-based export.
    """
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(1, 3, 32, 32),),
            buffer,
            dynamo=False,
            input_names=["images"],
            output_names=["thumbnail"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        )
    return onnx.load_from_string(buffer.getvalue())
