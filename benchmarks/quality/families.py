"""One comparison table of the downsampler families: quality, cost and CPU latency share.

Reads what the other commands wrote and joins it, one row per quality-suite arm:

- ``benchmarks/results/quality/quality.json`` (``python -m benchmarks.quality``): the paired
  difference to bicubic per task with its 95% interval;
- ``benchmarks/results/quality/costs.json`` (``python -m benchmarks.quality.costs``):
  parameters and MACs per input megapixel (plus what a wide thumbnail adds to the student);
- ``benchmarks/results/<machine>/downsamplers.json`` (``python -m benchmarks.bench_downsamplers``):
  the downsampler's share of a 4x student's CPU latency.

Usage (from the repository root)::

    python -m benchmarks.quality.families [--machine cpu-2core]

Writes ``benchmarks/results/quality/families.md`` and prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._harness import RESULTS_DIR
from benchmarks.quality.arms import ARMS
from benchmarks.quality.report import _interval, headline_difference

__all__ = ["render_families"]

NATURAL = ("classify", "detect", "segment", "keypoints")


def render_families(quality: dict, costs: dict, latency: dict | None) -> str:
    """The Markdown table (see the module's docstring for the inputs)."""
    cost = {row["name"]: row for row in costs["rows"]}
    share: dict[tuple[str, str], float] = {}
    for row in (latency or {}).get("rows", []):
        share[(row["student"], row["downsampler"])] = row["share"]
    students = sorted({student for student, _ in share})
    tasks = [task for task in (*NATURAL, "mechanism") if task in quality["results"]]
    header = [
        "arm",
        *(f"{task} vs bicubic" for task in tasks),
        "parameters",
        "MACs / MP, stem included",
    ]
    header += [f"share of {student}" for student in students]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    arms = next(iter(quality["results"][tasks[0]].values()))["arms"]
    for arm in arms:
        if arm == "bicubic":
            continue
        name = ARMS[arm].downsampler
        cells = [f"`{arm}`"]
        for task in tasks:
            block = next(iter(quality["results"][task].values()))
            cells.append(_interval(headline_difference(block["arms"][arm])))
        row = cost.get(name, {})
        macs = row.get("macs_per_megapixel", 0.0) + row.get("student_macs_per_megapixel", 0.0)
        cells += [f"{row.get('parameters', 0):,}", f"{macs / 1e6:.0f} M"]
        cells += [
            f"{100 * share[(student, name)]:.1f}%" if (student, name) in share else "—"
            for student in students
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.families")
    parser.add_argument("--quality-dir", type=Path, default=RESULTS_DIR / "quality")
    parser.add_argument("--machine", default="cpu-2core", help="folder of downsamplers.json")
    args = parser.parse_args(argv)
    quality = json.loads((args.quality_dir / "quality.json").read_text())
    costs = json.loads((args.quality_dir / "costs.json").read_text())
    latency_path = RESULTS_DIR / args.machine / "downsamplers.json"
    latency = json.loads(latency_path.read_text()) if latency_path.is_file() else None
    table = render_families(quality, costs, latency)
    (args.quality_dir / "families.md").write_text(table)
    print(table)
    return table


if __name__ == "__main__":
    main()
