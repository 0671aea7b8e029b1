"""Results of the demo as the paper's Table 2: a dict for ``results.json`` and a printed table.

A *row* is one model's numbers: ``mAP, AP50, AP75, APs, APm, APl`` (percent; ``None`` when a
size range has no object in the val set), ``params``, ``gmacs`` (multiply-accumulates of one
image, in units of 10⁹) and ``images_per_s``. Students also get ``accuracy_drop_rate``: Eq. (11)
of ThumbDet on mAP, in percent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from learnthumb import accuracy_drop_rate
from thumbdet.files import write_json

__all__ = [
    "AP_KEYS",
    "format_results_table",
    "make_row",
    "normalise_ap_metrics",
    "write_results",
]

AP_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")
"""The COCO AP columns of Table 2, in order."""

# Names the COCO summaries go by in other tools, mapped to ours.
_ALIASES = {
    "mAP": ("mAP", "AP", "map", "bbox_mAP", "AP50:95"),
    "AP50": ("AP50", "AP_50", "ap50", "map_50"),
    "AP75": ("AP75", "AP_75", "ap75", "map_75"),
    "APs": ("APs", "AP_small", "APS", "ap_small", "map_small"),
    "APm": ("APm", "AP_medium", "APM", "ap_medium", "map_medium"),
    "APl": ("APl", "AP_large", "APL", "ap_large", "map_large"),
}


def normalise_ap_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """Pick the six COCO AP numbers (percent) out of an evaluation dict.

    Args:
        metrics: AP values in percent under our names or common aliases (``AP``,
            ``AP_small``...). COCO's ``-1`` ("no object of this size") becomes ``None``.

    Returns:
        A dict with exactly the keys of ``AP_KEYS``.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics: expected a mapping, got {type(metrics).__name__}")
    picked: dict[str, float | None] = {}
    for key, aliases in _ALIASES.items():
        found = next((metrics[name] for name in aliases if name in metrics), None)
        if found is None:
            raise ValueError(
                f"metrics: expected a value for {key} (or {aliases}), got {sorted(metrics)}"
            )
        value = float(found)
        picked[key] = None if value < 0 or math.isnan(value) else value
    return picked


def make_row(
    metrics: Mapping[str, float],
    params: int,
    gmacs: float,
    images_per_s: float,
    teacher_map: float | None = None,
) -> dict:
    """One model's entry of ``results.json``.

    Args:
        metrics: the evaluation dict (see ``normalise_ap_metrics``).
        params: number of parameters of the deployed model (student plus downsampler).
        gmacs: multiply-accumulates of one image, in 10⁹.
        images_per_s: measured throughput.
        teacher_map: the teacher's mAP in percent; when given, the row gets
            ``accuracy_drop_rate`` (Eq. 11, percent).

    Returns:
        A JSON-ready dict.
    """
    row: dict = dict(normalise_ap_metrics(metrics))
    row.update(params=int(params), gmacs=float(gmacs), images_per_s=float(images_per_s))
    if teacher_map is not None:
        if teacher_map > 0:
            row["accuracy_drop_rate"] = 100.0 * float(accuracy_drop_rate(teacher_map, row["mAP"]))
        else:
            row["accuracy_drop_rate"] = None
    return row


def write_results(results: Mapping, path: str | os.PathLike) -> Path:
    """Write ``results`` as indented JSON, atomically (:func:`thumbdet.files.write_json`)."""
    return write_json(path, dict(results))


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _params(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count / 1e3:.1f}K"


_MODEL_LABELS = {"teacher": ("Deformable-DETR", "-"), "bicubic_4x": ("Bicubic", "4×")}
_MODEL_LABELS.update(thumbdet_4x=("ThumbDet (ours)", "4×"), bicubic_2x=("Bicubic", "2×"))
_MODEL_LABELS.update(thumbdet_2x=("ThumbDet (ours)", "2×"))


def _table_rows(results: Mapping, teacher_key: str) -> tuple[list[str], list[list[str]]]:
    header = ["Method", "Dow. rate", *AP_KEYS, "Params", "images/s", "↑ rate", "GMACs"]
    header += ["↓ rate", "A↓ (%)"]
    teacher = results.get(teacher_key)
    rows = []
    for key, row in results.items():
        if not isinstance(row, Mapping) or "mAP" not in row:
            continue
        label, rate = _MODEL_LABELS.get(key, (key, "?"))
        speedup = reduction = "-"
        if teacher is not None and key != teacher_key:
            speedup = f"{row['images_per_s'] / teacher['images_per_s']:.2f}×"
            reduction = f"{teacher['gmacs'] / row['gmacs']:.2f}×"
        cells = [label, rate, *(_cell(row[k]) for k in AP_KEYS), _params(row["params"])]
        cells += [f"{row['images_per_s']:.1f}", speedup, f"{row['gmacs']:.3f}", reduction]
        cells.append(_cell(row.get("accuracy_drop_rate")))
        rows.append(cells)
    return header, rows


def format_results_table(results: Mapping, teacher_key: str = "teacher") -> str:
    """Table 2 of the paper as aligned plain text, with the gain of each student over bicubic.

    Args:
        results: model key -> row (``make_row``); other keys (``wall_seconds``) are ignored.
        teacher_key: the row the speed-up, GMAC reduction and drop rate are relative to.

    Returns:
        The table, one line per model.
    """
    header, rows = _table_rows(results, teacher_key)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    for scale in ("4x", "2x"):
        bicubic, ours = results.get(f"bicubic_{scale}"), results.get(f"thumbdet_{scale}")
        if isinstance(bicubic, Mapping) and isinstance(ours, Mapping):
            gains = [
                f"{key} {ours[key] - bicubic[key]:+.1f}"
                for key in AP_KEYS
                if ours[key] is not None and bicubic[key] is not None
            ]
            lines.append(f"ThumbDet vs bicubic at {scale.replace('x', '×')}: " + ", ".join(gains))
    return "\n".join(lines)
