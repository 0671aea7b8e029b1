"""Parameters and multiply-accumulates per megapixel of every registered downsampler.

Usage (from the repository root)::

    python -m benchmarks.quality.costs [--scale 4] [--output-dir benchmarks/results/quality]

MACs are counted by :func:`learnthumb.count_macs` on one 1024x1024 RGB image (convolutions and
matrix products; interpolation is not counted, as in common practice, so the fixed
interpolations show 0), i.e. per input megapixel. A wide thumbnail (more than 3 channels)
also costs its student: the first convolution reads the extra channels
(:func:`learnthumb.widen_input_conv`); ``student_macs_per_megapixel`` counts that extra for
the suite's dense student (``DensePredictionNet``) on the same image's thumbnail. Writes
``costs.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks._harness import RESULTS_DIR, git_commit
from examples._common.models import DensePredictionNet
from learnthumb import count_macs, create_downsampler, list_downsamplers, widen_input_conv

SIDE = 1024  # one input megapixel (1024 x 1024 = 1.05e6 pixels)


def measure(scale: int) -> list[dict]:
    """One row per registered downsampler: name, parameters, MACs per input megapixel."""
    images = torch.rand(1, 3, SIDE, SIDE)
    per_megapixel = 1e6 / (SIDE * SIDE)
    student = DensePredictionNet(2).eval()
    rows = []
    for name in list_downsamplers():
        module = create_downsampler(name, scale).eval()
        with torch.no_grad():
            thumbnail = module(images)
        extra = 0
        if thumbnail.shape[1] > 3:
            plain = count_macs(student, thumbnail[:, :3])
            wide = widen_input_conv(DensePredictionNet(2).eval(), thumbnail.shape[1])
            extra = count_macs(wide, thumbnail) - plain
        rows.append(
            {
                "name": name,
                "parameters": sum(p.numel() for p in module.parameters()),
                "macs_per_megapixel": count_macs(module, images) * per_megapixel,
                "student_macs_per_megapixel": extra * per_megapixel,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.costs")
    parser.add_argument("--scale", type=int, default=4, help="downsampling factor (4)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR / "quality")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error(f"--scale must be an integer >= 1, got {args.scale}")
    rows = measure(args.scale)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    payload = {"scale": args.scale, "git": git_commit(), "rows": rows}
    (args.output_dir / "costs.json").write_text(json.dumps(payload, indent=1) + "\n")
    print("| downsampler | parameters | MACs per input megapixel | added to the student |")
    print("|---|---|---|---|")
    for row in rows:
        macs, student = row["macs_per_megapixel"], row["student_macs_per_megapixel"]
        cells = [f"`{row['name']}`", f"{row['parameters']:,}", f"{macs / 1e6:.1f} M"]
        print("| " + " | ".join([*cells, f"{student / 1e6:.1f} M"]) + " |")
    return rows


if __name__ == "__main__":
    main()
