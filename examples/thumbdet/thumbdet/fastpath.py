"""Inference fast paths and the ``thumbdet bench`` command.

The fast paths are options applied to an unchanged model, never a fork of its code:
:class:`InferenceOptions` (grad mode, channels-last, autocast, ``torch.compile``, the MSDA
backend, CUDA graphs), :func:`prepare_model` and :func:`make_runner`. ``benchmarks/`` measures
them; ``thumbdet bench`` times one configuration from the command line::

    thumbdet bench --preset tiny --variant thumbdet --scale 4 --channels-last --amp
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DEFAULT_SIZES",
    "VARIANTS",
    "AutocastBackbone",
    "InferenceOptions",
    "add_parser",
    "build_inference_model",
    "capture_cuda_graph",
    "inference_context",
    "make_runner",
    "prepare_model",
    "run",
    "set_msda_backend",
]

# Input size (H, W) of each preset: the paper's 800x1333, and the embedded demo's 128x128.
DEFAULT_SIZES: dict[str, tuple[int, int]] = {"paper_r50": (800, 1333), "tiny": (128, 128)}
# teacher: the detector on full-size images; bicubic / thumbdet: a student behind a fixed
# bicubic or a learned ("thumbdet", the paper's ConvDownsampler) downsampler.
VARIANTS = ("teacher", "bicubic", "thumbdet")
_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class InferenceOptions:
    """How to run a detector for inference.

    Attributes:
        grad_mode: ``"inference_mode"`` (fastest), ``"no_grad"`` or ``"enabled"``.
        channels_last: NHWC memory format for the convolutions (weights and input).
        amp: autocast; ``amp_dtype`` picks the dtype and ``amp_scope`` what runs in it.
        amp_dtype: ``"bfloat16"`` / ``"float16"``; ``None``: bfloat16 on CPU, float16 on CUDA.
        amp_scope: ``"model"`` (the whole forward) or ``"backbone"`` (only the convolutional
            backbone, whose features return to float32; the transformer stays float32).
        compile: wrap the model in ``torch.compile``.
        compile_mode: ``torch.compile`` mode (``None``, ``"reduce-overhead"``,
            ``"max-autotune"``).
        msda_backend: backend of every MSDA module (``"auto"``, ``"pytorch"``, ``"cpu"``,
            ``"cuda"``).
        cuda_graph: capture one call in a CUDA graph and replay it (fixed input size; CUDA only).
    """

    grad_mode: str = "inference_mode"
    channels_last: bool = False
    amp: bool = False
    amp_dtype: str | None = None
    amp_scope: str = "model"
    compile: bool = False
    compile_mode: str | None = None
    msda_backend: str = "auto"
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        if self.grad_mode not in ("inference_mode", "no_grad", "enabled"):
            raise ValueError(
                "grad_mode must be 'inference_mode', 'no_grad' or 'enabled', "
                f"received {self.grad_mode!r}"
            )
        if self.amp_scope not in ("model", "backbone"):
            raise ValueError(
                f"amp_scope must be 'model' or 'backbone', received {self.amp_scope!r}"
            )
        if self.amp_dtype is not None and self.amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)} or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_inference_model(
    preset: str = "paper_r50",
    variant: str = "teacher",
    scale: int = 4,
    *,
    num_classes: int | None = None,
) -> nn.Module:
    """A randomly initialised detector pipeline that takes *full-size* images, in eval mode.

    Speed does not depend on the weights, so benchmarks use random ones; for a trained model
    use :func:`thumbdet.training.trainer.load_detector`.

    Args:
        preset: detector preset (``"paper_r50"``, ``"tiny"``).
        variant: ``"teacher"`` (detector at full size), ``"bicubic"`` or ``"thumbdet"``
            (detector behind a bicubic / learned downsampler of factor ``scale``).
        scale: downsampling factor of the students.
        num_classes: override the preset's class count.
    """
    from learnthumb import create_downsampler
    from thumbdet.models import build_model
    from thumbdet.models.thumbnail_detector import ThumbnailDetector

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, received {variant!r}")
    overrides = {} if num_classes is None else {"num_classes": num_classes}
    detector = build_model(preset, **overrides)
    if variant == "teacher":
        return detector.eval()
    downsampler = create_downsampler(variant, scale=scale)
    return ThumbnailDetector(detector, downsampler, scale).eval()


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
        raise RuntimeError(f"CUDA graphs need a CUDA input, received one on {example.device}")
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
        raise ValueError(f"example must have shape (B, 3, H, W), received {tuple(example.shape)}")
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``thumbdet bench`` on the ``thumbdet`` CLI (``func=run``)."""
    parser = subparsers.add_parser(
        "bench",
        help="time detector inference with optional fast paths",
        description="Time one detector configuration (random weights, or --checkpoint) on "
        "random images: median and IQR latency and images/s. For the full benchmark suite "
        "see `python -m benchmarks.run` in the repository.",
    )
    parser.add_argument("--preset", default="tiny", help="detector preset (tiny, paper_r50)")
    parser.add_argument(
        "--variant", choices=VARIANTS, default="teacher", help="full-size teacher or a student"
    )
    parser.add_argument("--scale", type=int, default=4, help="thumbnail factor of students")
    parser.add_argument("--checkpoint", default=None, help="time a trained checkpoint instead")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="full-size input (default: 800 1333 for paper_r50, 128 128 for tiny)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1, help="images per call")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--compile-mode", default=None, help="e.g. reduce-overhead")
    parser.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on GPU)")
    parser.add_argument(
        "--amp-dtype", choices=sorted(_AMP_DTYPES), default=None, help="instead of --amp's"
    )
    parser.add_argument(
        "--amp-scope", choices=("model", "backbone"), default="model",
        help="autocast the whole model or only the backbone",
    )  # fmt: skip
    parser.add_argument("--channels-last", action="store_true", help="NHWC convolutions")
    parser.add_argument("--cuda-graph", action="store_true", help="replay a CUDA graph")
    parser.add_argument(
        "--msda-backend",
        choices=("auto", "pytorch", "cpu", "cuda"),
        default="auto",
        help="multi-scale deformable attention backend (thumbdet.ops)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Body of ``thumbdet bench``: build, prepare, warm up, time, print (and save)."""
    from learnthumb import measure_latency
    from thumbdet.models.postprocess import PostProcess

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = InferenceOptions(
        channels_last=args.channels_last,
        amp=args.amp,
        amp_dtype=args.amp_dtype,
        amp_scope=args.amp_scope,
        compile=args.compile,
        compile_mode=args.compile_mode,
        msda_backend=args.msda_backend,
        cuda_graph=args.cuda_graph,
    )
    if args.checkpoint is not None:
        from thumbdet.checkpoints.loading import load_detector

        model = load_detector(args.checkpoint, device)
        preset = model.checkpoint_meta["preset"]
    else:
        preset = args.preset
        model = build_inference_model(preset, args.variant, args.scale)
    height, width = args.image_size or DEFAULT_SIZES.get(preset, (800, 1333))
    model = prepare_model(model, options, device)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 3, height, width, generator=generator).to(device)
    runner = make_runner(model, images, options, PostProcess())

    def timed_call() -> None:
        runner()
        if device.type == "cuda":  # measure_latency cannot see the device of a closure
            torch.cuda.synchronize(device)

    stats = measure_latency(timed_call, warmup=args.warmup, repeats=args.repeats)
    result = {
        "preset": preset,
        "variant": args.variant if args.checkpoint is None else model.checkpoint_meta["mode"],
        "image_size": [height, width],
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "options": options.to_dict(),
        "median_s": stats.median,
        "iqr_s": stats.iqr,
        "repeats": stats.repeats,
        "images_per_s": args.batch_size / stats.median,
    }
    print(
        f"{result['variant']} {preset} {height}x{width} batch {args.batch_size} on {device}: "
        f"{stats.median * 1e3:.1f} ms (IQR {stats.iqr * 1e3:.1f} ms, {stats.repeats} runs), "
        f"{result['images_per_s']:.2f} images/s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
