"""Fig.-1-like plot of the inference benchmark: images/s against GMACs (or against mAP).

    python -m benchmarks.plot [--machine cpu-2core] [--demo-results runs/demo/results.json]

Writes ``benchmarks/results/<machine>/inference.png``: one panel per preset with images/s
(batch 1 and batch 8) against GMACs per image, log-log, one marker per model. With the demo's
``results.json`` (model keys ``teacher``, ``bicubic_4x``, ``thumbdet_4x`` ... with ``mAP``), a
last panel shows mAP against the tiny preset's measured images/s, like the paper's Fig. 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from benchmarks._harness import RESULTS_DIR

_COLOURS = {"teacher": "black", "bicubic": "tab:blue", "thumbdet": "tab:red"}
_MARKERS = {1: "o", 2: "s", 4: "^"}


def _style(row: dict[str, Any]) -> tuple[str, str]:
    return _COLOURS.get(row["variant"], "tab:gray"), _MARKERS.get(row["scale"], "D")


def plot_inference(
    inference: dict[str, Any], path: Path | str, demo_results: dict[str, Any] | None = None
) -> Path:
    """Draw the figure from ``inference.json`` (and optionally the demo's results) to ``path``."""
    presets = list(inference["presets"].items())
    panels = len(presets) + (1 if demo_results else 0)
    figure, axes_list = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), squeeze=False)
    for axes, (preset, data) in zip(axes_list[0], presets, strict=False):
        batches = sorted({row["batch"] for row in data["rows"]})
        for row in data["rows"]:
            colour, marker = _style(row)
            filled = row["batch"] == batches[0]
            axes.scatter(
                row["gmacs_per_image"],
                row["images_per_s"],
                color=colour if filled else "none",
                edgecolors=colour,
                marker=marker,
                s=70,
                label=f"{row['case']} (b{row['batch']})",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        for axis in (axes.xaxis, axes.yaxis):  # ticks at 1, 2, 5 x 10^k, written plainly
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("GMACs per image (MSDA counted)")
        axes.set_ylabel("images/s")
        size = "x".join(str(v) for v in data["input_size"])
        axes.set_title(f"{preset}, {size} input; filled: batch {batches[0]}")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=6, loc="best")
    if demo_results:
        axes = axes_list[0][-1]
        tiny = inference["presets"].get("tiny", {"rows": []})
        speed = {row["case"].replace("-", "_"): row for row in tiny["rows"] if row["batch"] == 1}
        for key, result in demo_results.items():
            if not isinstance(result, dict) or "mAP" not in result or key not in speed:
                continue
            row = speed[key]
            colour, marker = _style(row)
            axes.scatter(row["images_per_s"], result["mAP"], color=colour, marker=marker, s=80)
            axes.annotate(key, (row["images_per_s"], result["mAP"]), fontsize=7, xytext=(5, 3),
                          textcoords="offset points")  # fmt: skip
        axes.set_xlabel("images/s (tiny preset, batch 1, this benchmark)")
        axes.set_ylabel("mAP (%) on the demo val set")
        axes.set_title("accuracy against speed (Fig. 1)")
        axes.grid(alpha=0.3)
    environment = inference["environment"]
    figure.suptitle(
        f"{environment['machine']}: {environment['cpu_model']}, "
        f"{environment['torch_threads']} threads, torch {environment['torch_version']}",
        fontsize=9,
    )
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="cpu-2core")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--demo-results", default=None, help="the demo's results.json")
    args = parser.parse_args(argv)
    folder = Path(args.results_dir) / args.machine
    inference = json.loads((folder / "inference.json").read_text())
    demo = json.loads(Path(args.demo_results).read_text()) if args.demo_results else None
    print(f"wrote {plot_inference(inference, folder / 'inference.png', demo)}")


if __name__ == "__main__":
    main()
