"""Latency share of every registered downsampler in front of a 4x student, on the CPU.

For each downsampler: the time of the downsampler alone on the full-size image, of the student
alone on the thumbnail, and the downsampler's share ``down / (down + student)``. Students: a
timm ResNet-50 (random weights, 1000 classes) and the ``tiny`` Deformable-DETR of
``examples/thumbdet``. A downsampler whose thumbnail has more than 3 channels (``wide``) is
timed with a student whose stem was widened (:func:`learnthumb.widen_input_conv`), so the
student's time includes what the extra channels cost it. Calls are interleaved
(:func:`benchmarks._harness.time_interleaved`) so that load drift on a shared machine spreads
over all of them; compare ratios, not absolute times across runs.

Usage (from the repository root)::

    python -m benchmarks.bench_downsamplers [--quick] [--threads 1] [--size 800 1216]

Writes ``benchmarks/results/<machine>/downsamplers.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

import timm
import torch
from torch import nn

from benchmarks._harness import describe_environment, git_commit, time_interleaved, write_result
from learnthumb import create_downsampler, list_downsamplers, widen_input_conv

SCALE = 4


def _tiny_detr() -> nn.Module:
    from thumbdet.models import build_model

    return build_model("tiny", num_classes=80)


STUDENTS: dict[str, Callable[[], nn.Module]] = {
    "resnet50": lambda: timm.create_model("resnet50", pretrained=False),
    "detr_tiny": _tiny_detr,
}


def measure(size: tuple[int, int], repeats: int, students: list[str]) -> list[dict]:
    images = torch.rand(1, 3, *size)
    rows = []
    for student_name in students:
        plain = STUDENTS[student_name]().eval()
        for name in list_downsamplers():
            down = create_downsampler(name, SCALE).eval()
            with torch.inference_mode():
                thumbnail = down(images)
            student = plain
            if thumbnail.shape[1] > 3:
                student = widen_input_conv(STUDENTS[student_name]().eval(), thumbnail.shape[1])
            calls = {
                "down": functools.partial(down, images),
                "student": functools.partial(student, thumbnail),
            }
            with torch.inference_mode():
                timings = time_interleaved(calls, warmup=1, repeats=repeats)
            down_s, student_s = timings["down"].median_s, timings["student"].median_s
            rows.append(
                {
                    "student": student_name,
                    "downsampler": name,
                    "downsampler_ms": 1e3 * down_s,
                    "student_ms": 1e3 * student_s,
                    "share": down_s / (down_s + student_s),
                    "downsampler_iqr_ms": 1e3 * timings["down"].iqr_s,
                    "student_iqr_ms": 1e3 * timings["student"].iqr_s,
                    "repeats": timings["down"].repeats,
                }
            )
            print(
                f"{student_name:10s} {name:16s} down {1e3 * down_s:8.2f} ms  "
                f"student {1e3 * student_s:8.2f} ms  share {100 * rows[-1]['share']:5.1f}%",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_downsamplers")
    parser.add_argument("--quick", action="store_true", help="a 256x384 image, 3 repeats")
    parser.add_argument("--size", nargs=2, type=int, default=[800, 1216], help="H W (800 1216)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--students", nargs="+", choices=sorted(STUDENTS), default=sorted(STUDENTS))
    parser.add_argument("--output-dir", default=None, help="instead of benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats = [256, 384], 3
    if min(args.size) < SCALE:
        parser.error(f"--size must be at least {SCALE} on each side, got {args.size}")
    if args.repeats < 1 or args.threads < 1:
        parser.error(f"--repeats and --threads must be >= 1, got {args.repeats}, {args.threads}")
    torch.set_num_threads(args.threads)
    rows = measure(tuple(args.size), args.repeats, args.students)
    results = {
        "git": git_commit(),
        "command": "python -m benchmarks.bench_downsamplers "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"scale": SCALE, "size": args.size, "threads": args.threads},
        "method": "median of interleaved calls (downsampler, student) after one warm-up round",
        "rows": rows,
    }
    path = write_result(
        "downsamplers", results, output_dir=args.output_dir, environment=describe_environment()
    )
    print("| student | downsampler | downsampler ms | student ms | share |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [row["student"], f"`{row['downsampler']}`", f"{row['downsampler_ms']:.1f}"]
        cells += [f"{row['student_ms']:.1f}", f"{100 * row['share']:.1f}%"]
        print("| " + " | ".join(cells) + " |")
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
