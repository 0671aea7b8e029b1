"""Deployable exports of downsamplers and ``Thumbnailed`` students: ONNX and ``torch.export``.

Both exports keep the batch, height and width dynamic. Heights and widths are at least
``scale + 1`` (a thumbnail side of at least 2: a side of 1 is a special case the traced
graphs do not cover), and some graphs only hold for sizes that are multiples of the scale:

- :func:`export_program` (``torch.export``): the symbolic shape engine cannot prove that two
  ways of computing ``ceil(H / s)`` agree (``residual``: bicubic plus a strided convolution)
  nor simplify the bottom/right padding to a multiple of ``s`` (``space_to_depth``,
  ``wide``). Those three export for heights and widths that are multiples of the scale; the
  others (``thumbdet``, ``single_conv``, ``five_layer``, ``learned_resizer``, ``bicubic``,
  ``bilinear``, ``area``, ``nearest``) for every size. The program records the constraint (its
  input's height is ``s * height_cells``) but torch 2.14 does not check it when called: feed
  it multiples of the scale.
- :func:`export_onnx` (the dynamo-based ONNX exporter, which also covers the antialiased
  resizes the TorchScript-based one lacks): every registered downsampler exports for every
  size except ``area``, whose adaptive average pooling becomes a fixed ``s x s`` average pool
  in ONNX, exact only for multiples of the scale. ONNX checks no sizes at run time: feed such
  a graph multiples of the scale only.

Checked with torch 2.14.1 and onnxruntime 1.32 (tests/test_export.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from learnthumb._checks import check_floating, check_ndim
from learnthumb.downsamplers import InterpolateDownsampler
from learnthumb.wrappers import Thumbnailed

__all__ = ["DEFAULT_ONNX_OPSET", "export_onnx", "export_program"]

#: Opset 18 is the first with ONNX ``Resize(antialias=1)``, needed by antialiased downsamplers.
DEFAULT_ONNX_OPSET = 18


def _downsampler_of(module: object) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    downsampler = module.downsampler if isinstance(module, Thumbnailed) else module
    scale = getattr(downsampler, "scale", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(
            "module must be a downsampler with an int scale attribute or a Thumbnailed student "
            f"around one, got {type(module).__name__} (scale={scale!r})"
        )
    return downsampler


def _example(
    downsampler: nn.Module, example_input: torch.Tensor | None, multiple: bool
) -> torch.Tensor:
    scale = downsampler.scale
    if example_input is None:
        channels = getattr(downsampler, "in_channels", 3)
        # Batch 2 and sides of 16 cells: no size the tracer would specialise on (0 or 1).
        return torch.rand(2, channels, 16 * scale, 16 * scale)
    check_ndim(example_input, 4, "example_input", "(B, C, H, W)")
    check_floating(example_input, "example_input")
    height, width = example_input.shape[-2:]
    if min(height, width) < scale + 1:
        raise ValueError(
            f"example_input must be at least scale + 1 = {scale + 1} pixels high and wide, "
            f"got shape {tuple(example_input.shape)}"
        )
    if multiple and (height % scale or width % scale):
        raise ValueError(
            f"example_input must have a height and width that are multiples of the scale "
            f"({scale}) for this export, got shape {tuple(example_input.shape)}"
        )
    return example_input


def _dynamic_shapes(scale: int, multiple: bool) -> tuple[dict[int, object]]:
    batch = torch.export.Dim("batch")
    if multiple:
        height = torch.export.Dim("height_cells", min=2) * scale
        width = torch.export.Dim("width_cells", min=2) * scale
    else:
        height = torch.export.Dim("height", min=scale + 1)
        width = torch.export.Dim("width", min=scale + 1)
    return ({0: batch, 2: height, 3: width},)


def _has_area_pooling(module: nn.Module) -> bool:
    return any(
        isinstance(sub, InterpolateDownsampler) and sub.mode == "area" for sub in module.modules()
    )


class _EvalMode:
    """Put a module in eval mode for an export and restore its mode afterwards.

    Each submodule gets its own flag back: a frozen BatchNorm kept in eval mode inside a
    training model stays in eval mode.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.modes = [(sub, sub.training) for sub in module.modules()]

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        for sub, training in self.modes:
            sub.training = training


def export_program(
    module: nn.Module,
    example_input: torch.Tensor | None = None,
    *,
    multiple_of_scale: bool | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of a downsampler (or student) with dynamic batch, height, width.

    The module is exported in eval mode. Heights and widths range from ``scale + 1`` up; with
    ``multiple_of_scale`` they are ``k * scale`` for ``k >= 2`` instead (``torch.export.Dim``
    constraints, recorded in the program but not checked when it is called). By default the
    fully dynamic export is tried first and the multiple-of-scale one used when
    ``torch.export`` cannot prove the graph for every size: ``residual``, ``space_to_depth``
    and ``wide`` (see the module docstring).

    Args:
        module: a downsampler (a module with an int ``scale``) or a
            :class:`learnthumb.Thumbnailed` student.
        example_input: the images traced; a random ``(2, C, 16 s, 16 s)`` batch by default.
        multiple_of_scale: force (True) or forbid (False) sizes that are multiples of the
            scale; None picks as above.

    Shape:
        - example_input: :math:`(B, C, H, W)`
        - the program's input: :math:`(B', C, H', W')` with dynamic :math:`B', H', W'`.

    Returns:
        The exported program; ``program.module()`` runs it.

    Example:
        >>> from learnthumb import create_downsampler
        >>> program = export_program(create_downsampler("thumbdet", 4))
        >>> program.module()(torch.rand(3, 3, 37, 50)).shape
        torch.Size([3, 3, 10, 13])
    """
    downsampler = _downsampler_of(module)
    scale = downsampler.scale
    if multiple_of_scale is not None and not isinstance(multiple_of_scale, bool):
        raise TypeError(
            f"multiple_of_scale must be a bool or None, got {type(multiple_of_scale).__name__}"
        )
    attempts = [False, True] if multiple_of_scale is None else [multiple_of_scale]
    if (
        multiple_of_scale is None
        and example_input is not None
        and example_input.dim() == 4
        and (example_input.shape[-2] % scale or example_input.shape[-1] % scale)
    ):
        attempts = [False]  # the fallback needs an example of multiples of the scale
    with _EvalMode(module):
        for index, multiple in enumerate(attempts):
            images = _example(downsampler, example_input, multiple)
            try:
                return torch.export.export(
                    module, (images,), dynamic_shapes=_dynamic_shapes(scale, multiple)
                )
            except Exception:
                if index == len(attempts) - 1:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    dynamic: bool = True,
    opset: int = DEFAULT_ONNX_OPSET,
    *,
    multiple_of_scale: bool | None = None,
) -> Path:
    """Export a downsampler or a :class:`learnthumb.Thumbnailed` student to an ONNX file.

    Uses ``torch.onnx.export(..., dynamo=True)`` with ``torch.export.Dim`` dynamic shapes: the
    graph's input ``"images"`` has a dynamic batch, height and width (from ``scale + 1`` up),
    and a downsampler's output is named ``"thumbnail"``. The module is exported in eval mode.
    Needs the ``onnx`` and ``onnxscript`` packages. ONNX checks no sizes at run time: a graph
    exported with ``multiple_of_scale`` (the default for a module holding an ``area``
    downsampler) is exact only on heights and widths that are multiples of the scale.

    Args:
        module: a downsampler (a module with an int ``scale``) or a student around one.
        path: the ``.onnx`` file to write.
        example_input: the images traced; a random ``(2, C, 16 s, 16 s)`` batch by default.
        dynamic: dynamic batch, height and width; False fixes them to ``example_input``'s.
        opset: the ONNX opset (18 or later for antialiased resizes).
        multiple_of_scale: heights and widths ``k * scale`` only; None: only for ``area``.

    Shape:
        - the graph's ``images``: :math:`(B, C, H, W)`
        - a downsampler's ``thumbnail``: :math:`(B, C', \\lceil H/s \\rceil, \\lceil W/s \\rceil)`

    Returns:
        The path written.

    Example:
        >>> import os, tempfile
        >>> from learnthumb import create_downsampler
        >>> path = os.path.join(tempfile.mkdtemp(), "down.onnx")
        >>> export_onnx(create_downsampler("thumbdet", 4), path).name  # doctest: +SKIP
        'down.onnx'
    """
    downsampler = _downsampler_of(module)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < DEFAULT_ONNX_OPSET:
        raise ValueError(f"opset must be an int >= {DEFAULT_ONNX_OPSET}, got {opset!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, got {type(path).__name__}")
    if multiple_of_scale is None:
        multiple_of_scale = _has_area_pooling(module)
    images = _example(downsampler, example_input, multiple_of_scale and dynamic)
    dynamic_shapes = _dynamic_shapes(downsampler.scale, multiple_of_scale) if dynamic else None
    output_names = None if isinstance(module, Thumbnailed) else ["thumbnail"]
    with _EvalMode(module):
        torch.onnx.export(
            module,
            (images,),
            os.fspath(path),
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=["images"],
            output_names=output_names,
            opset_version=opset,
            verbose=False,
        )
    return Path(path)
