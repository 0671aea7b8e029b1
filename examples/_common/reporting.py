"""Command line, results table, JSON and figure shared by the examples."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch


def parse_args(description: str, default_output: str) -> argparse.Namespace:
    """``--output DIR``, ``--quick`` (a smoke run of a few seconds), ``--threads``, ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output", type=Path, default=Path(default_output), help="run folder")
    parser.add_argument(
        "--quick", action="store_true", help="tiny data and few steps: checks the code paths"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: robust on shared cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    return args


def machine_description() -> str:
    """One line naming the machine and the torch version, written next to every result."""
    return (
        f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads "
        f"({os.cpu_count()} cores visible), torch {torch.__version__}"
    )


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) restricted to ``columns``; floats with 3 decimals."""

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def save_json(payload: dict, path: Path) -> None:
    """Write ``payload`` as indented JSON."""
    path.write_text(json.dumps(payload, indent=2) + "\n")


def to_display(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor in [0, 1] (thumbnails may leave it) -> (H, W, 3) array for imshow."""
    return image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (H, W, 3)


def save_figure(
    path: Path,
    titles: Sequence[str],
    rows: Sequence[Sequence[np.ndarray]],
    points: Sequence[Sequence[np.ndarray | None]] | None = None,
) -> None:
    """A grid of images: one row per example, one column per title.

    Args:
        path: output PNG.
        titles: column titles.
        rows: ``rows[r][c]`` is an (h, w, 3) array; thumbnails are shown at their own size
            with nearest-neighbour pixels, so the reader sees what the student saw.
        points: optional ``points[r][c]`` (K, 2) keypoints (x, y) drawn on that cell.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(rows), len(titles), figsize=(2.2 * len(titles), 2.2 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axis = axes[r][c]
            height, width = image.shape[:2]
            # extent keeps continuous pixel coordinates: pixel (i, j) covers [j, j+1] x [i, i+1].
            axis.imshow(image, interpolation="nearest", extent=(0, width, height, 0))
            if points is not None and points[r][c] is not None:
                keypoints = points[r][c]
                axis.scatter(
                    keypoints[:, 0],
                    keypoints[:, 1],
                    s=14,
                    c=np.arange(len(keypoints)),
                    cmap="tab10",
                    vmin=0,
                    vmax=9,
                    edgecolors="white",
                    linewidths=0.6,
                )
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(titles[c], fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (robust to other users of the cores)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(
    args: argparse.Namespace,
    results: Sequence,
    shown: torch.Tensor,
    columns: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    elapsed: Callable[[], float],
    caption: str,
    points: Sequence[Sequence[np.ndarray | None]] | None = None,
) -> dict:
    """Print the results table, write ``results.json`` and ``figure.png`` under ``args.output``.

    Args:
        args: the parsed command line.
        results: ``[teacher, bicubic student, bicubic student + KD, learned student]`` as
            ``experiment.Trained``.
        shown: the images of the figure, (R, 3, H, W).
        columns: extra figure columns after image | bicubic | learned thumbnail:
            ``columns[c][r]`` is an (H, W, 3) array.
        column_titles: one title per extra column.
        elapsed: wall seconds since the start of the run.
        caption: one line printed above the table.
        points: optional keypoints per extra column and row, ``points[c][r]`` (K, 2).
    """
    headline = next(iter(results[0].scores))
    rows = []
    for result in results:
        thumbnail = tuple(result.downsampler(shown[:1]).shape[-2:])
        rows.append(
            {
                "model": result.name,
                "input": f"{thumbnail[0]}x{thumbnail[1]}",
                **result.scores,
                "train s": f"{result.seconds:.0f}",
            }
        )
    learned_score = results[-1].scores[headline]
    margin = learned_score - results[1].scores[headline]
    margin_kd = learned_score - results[2].scores[headline]
    table = format_table(rows, list(rows[0]))
    wall, cpu = elapsed(), cpu_seconds()
    print(f"\n{caption}\n\n{table}\n")
    print(
        f"learned - bicubic {headline}: {margin:+.3f}; learned - (bicubic + KD): {margin_kd:+.3f}"
    )
    print(f"wall time {wall:.0f} s, CPU time {cpu:.0f} s; {machine_description()}")
    payload = {
        "rows": rows,
        "headline_metric": headline,
        "margin_learned_minus_bicubic": margin,
        "margin_learned_minus_bicubic_kd": margin_kd,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "machine": machine_description(),
        "load_average": os.getloadavg(),
        "quick": args.quick,
        "seed": args.seed,
    }
    save_json(payload, args.output / "results.json")

    with torch.no_grad():
        bicubic, learned = results[1].downsampler(shown), results[-1].downsampler.eval()(shown)
    figure_rows = [
        [to_display(shown[r]), to_display(bicubic[r]), to_display(learned[r])]
        + [column[r] for column in columns]
        for r in range(len(shown))
    ]
    figure_points = None
    if points is not None:
        figure_points = [
            [None, None, None] + [column[r] for column in points] for r in range(len(shown))
        ]
    titles = ["image", "bicubic thumbnail", "learned thumbnail", *column_titles]
    save_figure(args.output / "figure.png", titles, figure_rows, figure_points)
    print(f"wrote {args.output / 'results.json'} and {args.output / 'figure.png'}")
    return payload
