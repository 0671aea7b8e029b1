"""Inference fast paths: options applied to an unchanged model, never a fork of its code.

:class:`InferenceOptions` (grad mode, channels-last, autocast, ``torch.compile``, the MSDA
backend, CUDA graphs; declared in :mod:`thumbdet.inference_options`), :func:`prepare_model`
and :func:`make_runner`. ``benchmarks/`` measures them; ``thumbdet bench``
(:mod:`thumbdet.cli.bench`) times one configuration from the command line::

    thumbdet bench --preset tiny --variant thumbdet --scale 4 --channels-last --amp
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from thumbdet.inference_options import AMP_DTYPES, InferenceOptions

__all__ = [
    "DEFAULT_SIZES",
    "AutocastBackbone",
    "InferenceOptions",
    "build_inference_model",
    "capture_cuda_graph",
    "inference_context",
    "make_runner",
    "prepare_model",
    "set_msda_backend",
]

# Input size (H, W) of each preset: the paper's 800x1333, and the embedded demo's 128x128.
DEFAULT_SIZES: dict[str, tuple[int, int]] = {"paper_r50": (800, 1333), "tiny": (128, 128)}
_AMP_DTYPES = {name: getattr(torch, name) for name in AMP_DTYPES}  # name -> torch dtype


def build_inference_model(
    preset: str = "paper_r50",
    variant: str = "teacher",
    scale: int = 4,
    *,
    num_classes: int | None = None,
) -> nn.Module:
    """A randomly initialised detector pipeline that takes *full-size* images, in eval mode.

    Speed does not depend on the weights, so benchmarks use random ones; for a trained model
    use :func:`thumbdet.checkpoints.load_detector`.

    Args:
        preset: detector preset (``"paper_r50"``, ``"tiny"``).
        variant: a training mode (:func:`thumbdet.training.modes.list_modes`): ``"teacher"``
            (detector at full size), ``"bicubic"`` or ``"thumbdet"`` (detector behind the
            mode's default downsampler, bicubic or the paper's, of factor ``scale``).
        scale: downsampling factor of the students.
        num_classes: override the preset's class count.
    """
    from learnthumb import create_downsampler
    from thumbdet.models import build_model
    from thumbdet.models.thumbnail_detector import ThumbnailDetector
    from thumbdet.training.config import TrainConfig
    from thumbdet.training.modes import get_mode, list_modes

    if variant not in list_modes():
        raise ValueError(f"variant: expected one of {', '.join(list_modes())}, got {variant!r}")
    overrides = {} if num_classes is None else {"num_classes": num_classes}
    detector = build_model(preset, **overrides)
    name = get_mode(variant).downsampler_name(TrainConfig.from_dict({"mode": variant}))
    if name is None:
        return detector.eval()
    return ThumbnailDetector(detector, create_downsampler(name, scale=scale)).eval()


def set_msda_backend(model: nn.Module, backend: str) -> int:
    """Set the backend of every MSDA module of ``model``; returns how many were changed."""
    from thumbdet.ops import MSDeformAttn

    changed = 0
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = backend
            changed += 1
    return changed


class AutocastBackbone(nn.Module):
    """Run a backbone under autocast and hand its feature maps back in float32.

    Args:
        backbone: returns a list of feature maps.
        device_type: ``"cpu"`` or ``"cuda"``.
        dtype: the autocast dtype.
    """

    def __init__(self, backbone: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.backbone = backbone
        self.device_type = device_type
        self.dtype = dtype
        self.num_channels = getattr(backbone, "num_channels", None)
        self.strides = getattr(backbone, "strides", None)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.autocast(self.device_type, dtype=self.dtype):
            features = self.backbone(images)
        return [feature.float() for feature in features]


def prepare_model(
    model: nn.Module, options: InferenceOptions, device: torch.device | str = "cpu"
) -> nn.Module:
    """Eval mode, device, memory format, MSDA backend and backbone autocast (in place).

    With ``amp`` and ``amp_scope="backbone"`` the detector's ``backbone`` is wrapped in
    :class:`AutocastBackbone`.
    """
    device = torch.device(device)
    model = model.eval().to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    set_msda_backend(model, options.msda_backend)
    if options.amp and options.amp_scope == "backbone":
        detector = getattr(model, "detector", model)  # a ThumbnailDetector or the detector
        if not isinstance(detector.backbone, AutocastBackbone):
            detector.backbone = AutocastBackbone(
                detector.backbone, device.type, _amp_dtype(options, device)
            )
    return model


def _amp_dtype(options: InferenceOptions, device: torch.device) -> torch.dtype:
    if options.amp_dtype is not None:
        return _AMP_DTYPES[options.amp_dtype]
    return torch.float16 if device.type == "cuda" else torch.bfloat16


@contextlib.contextmanager
def inference_context(
    options: InferenceOptions, device: torch.device | str = "cpu"
) -> Iterator[None]:
    """The grad mode and autocast of ``options``."""
    device = torch.device(device)
    with contextlib.ExitStack() as stack:
        if options.grad_mode == "inference_mode":
            stack.enter_context(torch.inference_mode())
        elif options.grad_mode == "no_grad":
            stack.enter_context(torch.no_grad())
        if options.amp and options.amp_scope == "model":
            stack.enter_context(torch.autocast(device.type, dtype=_amp_dtype(options, device)))
        yield


def capture_cuda_graph(
    function: Callable[[torch.Tensor], Any], example: torch.Tensor, warmup: int = 3
) -> Callable[[torch.Tensor], Any]:
    """Record ``function(example)`` in a CUDA graph; the result replays it on new inputs.

    The input is copied into a static buffer before each replay and the *same* output tensors
    are returned every time (clone them to keep a result). Only for a fixed input shape, and
    only for code without host synchronisation (``.item()``, CPU-to-GPU copies) inside.

    Raises:
        RuntimeError: when ``example`` is not on a CUDA device or the capture fails.
    """
    if example.device.type != "cuda":
        raise RuntimeError(
            f"example: expected a CUDA tensor (CUDA graphs), got one on {example.device}"
        )
    static_input = example.clone()
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):  # warm-up off the default stream, as PyTorch advises
        for _ in range(warmup):
            function(static_input)
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_output = function(static_input)
    except Exception as error:
        raise RuntimeError(f"CUDA graph capture failed: {type(error).__name__}: {error}") from error

    def replay(images: torch.Tensor) -> Any:
        static_input.copy_(images)
        graph.replay()
        return static_output

    return replay


def make_runner(
    model: nn.Module,
    example: torch.Tensor,
    options: InferenceOptions,
    postprocess: Callable[[Any, torch.Tensor], Any] | None = None,
) -> Callable[[], Any]:
    """A zero-argument call running ``model`` on ``example`` with ``options`` (for timing).

    ``model`` should come from :func:`prepare_model`. ``torch.compile`` compiles lazily: the
    first call of the runner includes the compilation (time it separately).

    Args:
        model: the prepared model.
        example: the input batch, :math:`(B, 3, H, W)` on the model's device.
        options: the fast paths.
        postprocess: optional ``postprocess(outputs, target_sizes)`` run after the model
            (e.g. :class:`thumbdet.models.postprocess.PostProcess`), with each image's full size.
    """
    if example.dim() != 4 or example.shape[1] != 3:
        raise ValueError(f"example: expected shape (B, 3, H, W), got {tuple(example.shape)}")
    device = example.device
    images = (
        example.contiguous(memory_format=torch.channels_last) if options.channels_last else example
    )
    forward: Callable[..., Any] = model
    if options.compile:
        forward = torch.compile(model, mode=options.compile_mode)
    batch, _, height, width = images.shape
    target_sizes = torch.tensor([[height, width]] * batch, device=device)  # (B, 2)

    def call(batch_images: torch.Tensor) -> Any:
        with inference_context(options, device):
            outputs = forward(batch_images)
            return postprocess(outputs, target_sizes) if postprocess is not None else outputs

    if options.cuda_graph:
        replay = capture_cuda_graph(call, images)
        return lambda: replay(images)
    return lambda: call(images)
