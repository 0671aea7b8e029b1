"""Speed of the multi-scale deformable attention backends (issue 3) -> JSON.

Forward and forward+backward time of each MSDA backend on the encoder self-attention shapes of
the paper model (N=1, Lq=S, M=8 heads, D=32 channels per head, L=4 levels, P=4 points; the four
levels of an 800x1333 input at strides 8, 16, 32, 64) and of its 4x thumbnail (200x334).
``pytorch-autograd`` is the plain differentiable ``grid_sample`` reference
(``ms_deform_attn_pytorch``, no custom operator), timed for comparison with ``pytorch`` (the same
forward as a registered operator with an explicit backward).

Method: ``benchmarks._harness.time_function`` (warm-up calls, then the median and IQR of
individually timed calls). Run from the repository root::

    python -m benchmarks.bench_ms_deform_attn                    # all shapes, built backends
    python -m benchmarks.bench_ms_deform_attn --shapes thumbnail --repeats 5

Results: ``benchmarks/results/<machine>/ms_deform_attn.json`` (e.g. ``cpu-2core``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import torch

from benchmarks._harness import describe_environment, time_function, write_result
from thumbdet.ops import available_backends, ms_deform_attn, ms_deform_attn_pytorch
from thumbdet.ops._extension import require_kernel

# (H, W) of the levels at strides 8, 16, 32, 64 (ceil division, as a padded backbone gives).
SHAPES = {
    "paper": [(100, 167), (50, 84), (25, 42), (13, 21)],  # 800 x 1333 input
    "thumbnail": [(25, 42), (13, 21), (7, 11), (4, 6)],  # 200 x 334, the 4x thumbnail
}
HEADS, CHANNELS, POINTS = 8, 32, 4
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_inputs(level_shapes, dtype: torch.dtype, device: str, seed: int = 0):
    """Encoder self-attention inputs: one query per pixel, points near its reference point."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(level_shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(-1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    pixels = int(areas.sum())
    levels = len(level_shapes)
    value = torch.randn(1, pixels, HEADS, CHANNELS, generator=generator)
    reference = torch.rand(1, pixels, 1, levels, 1, 2, generator=generator)
    size_xy = spatial_shapes.flip(-1).float()  # (L, 2) as (W, H)
    offsets = 2 * torch.randn(1, pixels, HEADS, levels, POINTS, 2, generator=generator)
    locations = reference + offsets / size_xy[:, None, :]  # a few pixels around the reference
    weights = torch.rand(1, pixels, HEADS, levels * POINTS, generator=generator).softmax(-1)
    weights = weights.view(1, pixels, HEADS, levels, POINTS)
    floats = [t.to(device=device, dtype=dtype) for t in (value, locations, weights)]
    return floats[0], spatial_shapes.to(device), level_start_index.to(device), *floats[1:]


def attention_call(backend: str):
    if backend == "pytorch-autograd":
        return ms_deform_attn_pytorch
    return lambda *inputs: ms_deform_attn(*inputs, backend=backend)


def bench_backend(backend, inputs, device, warmup, repeats, max_seconds):
    attention = attention_call(backend)
    value, spatial_shapes, level_start_index, locations, weights = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    grad_output = torch.randn(
        value.shape[0], locations.shape[1], HEADS * CHANNELS, dtype=value.dtype, device=device
    )

    def forward():
        with torch.no_grad():
            attention(*inputs)

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        output = attention(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
        output.backward(grad_output)

    timing = {"warmup": warmup, "repeats": repeats, "device": device, "max_seconds": max_seconds}
    return {
        "forward": asdict(time_function(forward, **timing)),
        "forward_backward": asdict(time_function(forward_backward, **timing)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--backends", nargs="+", default=None, help="default: all usable")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(_DTYPES), default=["float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per timed function")
    parser.add_argument("--output-dir", default=None, help="instead of benchmarks/results")
    args = parser.parse_args(argv)

    device = args.device
    backends = args.backends
    if backends is None:
        require_kernel(device)  # build the compiled kernel of this device (cached)
        backends = [
            "pytorch-autograd",
            "pytorch",
            *[b for b in available_backends() if b == device],
        ]
    rows = []
    for shape_name in args.shapes:
        for dtype_name in args.dtypes:
            inputs = make_inputs(SHAPES[shape_name], _DTYPES[dtype_name], device)
            for backend in backends:
                print(f"{shape_name} {dtype_name} {backend} ...", flush=True)
                timings = bench_backend(
                    backend, inputs, device, args.warmup, args.repeats, args.max_seconds
                )
                rows.append(
                    {
                        "shape": shape_name,
                        "level_shapes": SHAPES[shape_name],
                        "queries": inputs[0].shape[1],
                        "dtype": dtype_name,
                        "backend": backend,
                        **timings,
                    }
                )
                print(
                    f"  forward {1e3 * timings['forward']['median_s']:.1f} ms, forward+backward "
                    f"{1e3 * timings['forward_backward']['median_s']:.1f} ms",
                    flush=True,
                )
    speedups = _speedups(rows)
    for line in speedups:
        print(line)
    results = {
        "method": "median (IQR) of individually timed calls after warm-up (benchmarks/_harness)",
        "settings": {
            "batch": 1,
            "heads": HEADS,
            "channels_per_head": CHANNELS,
            "points": POINTS,
            "levels": 4,
            "queries": "S (encoder self-attention)",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "max_seconds": args.max_seconds,
            "torch_threads": torch.get_num_threads(),
        },
        "rows": rows,
        "speedups": speedups,
    }
    path = write_result(
        "ms_deform_attn",
        results,
        device=device,
        output_dir=args.output_dir,
        environment=describe_environment(device),
    )
    print(f"wrote {path}")


def _speedups(rows: list[dict]) -> list[dict]:
    """Median-time ratios baseline / backend, per shape and dtype, measured in the same run,
    against both PyTorch paths (the operator and the plain autograd reference)."""
    speedups = []
    for baseline_name in ("pytorch", "pytorch-autograd"):
        baselines = {(r["shape"], r["dtype"]): r for r in rows if r["backend"] == baseline_name}
        for row in rows:
            baseline = baselines.get((row["shape"], row["dtype"]))
            if baseline is None or row["backend"] in ("pytorch", "pytorch-autograd"):
                continue
            ratios = {
                key: round(baseline[key]["median_s"] / row[key]["median_s"], 2)
                for key in ("forward", "forward_backward")
            }
            speedups.append(
                {
                    "shape": row["shape"],
                    "dtype": row["dtype"],
                    "backend": row["backend"],
                    "baseline": baseline_name,
                    **ratios,
                }
            )
    return speedups


if __name__ == "__main__":
    main()
