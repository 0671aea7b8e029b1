"""The ablations: Tables 3–6 of the paper (and two beyond it) at demo scale.

Each table trains the ThumbDet variants the paper compares, with the demo's recipe, dataset
and teacher; :func:`run_ablation` (``thumbdet ablate TABLE``) writes ``DIR/ablation_<table>.md``
(our numbers next to the paper's) and ``DIR/ablation_<table>.json``. Runs are shared through
the demo's phase folders (:mod:`thumbdet.experiments.phases`): a variant already trained (by
the demo or by another table) is reused, so pointing ``--output`` at the demo's folder (the
default, ``./thumbdet-demo``) skips the teacher, bicubic and full ThumbDet runs.
"""

from __future__ import annotations

import time
from typing import Any

from thumbdet.experiments.measure import use_threads
from thumbdet.experiments.options import DemoOptions
from thumbdet.experiments.phases import evaluate_phase, run_phase
from thumbdet.experiments.recipes import phase_config, prepare_recipe
from thumbdet.experiments.report import AP_KEYS, normalise_ap_metrics, write_results
from thumbdet.training.modes import get_mode

__all__ = ["PAPER", "PAPER_TABLES", "TABLES", "VARIANTS", "format_ablation", "run_ablation"]

# Table 4's and Table 5's variants run without distillation, as the paper says of Table 4
# and as Table 5's "Two-Stage w/ Dow." row (30.7 mAP) equals Table 3's L_mm-only row.
_NO_DISTILL = {"logit_weight": 0.0, "feature_weight": 0.0}
_STUDENT = {"phase": "thumbdet_4x"}
_ONE_STAGE = {"stage1_epochs": 0}

VARIANTS: dict[str, dict[str, Any]] = {
    "bicubic_4x": {"phase": "bicubic_4x"},
    "thumbdet_4x": {**_STUDENT},
    "moment_only": {**_STUDENT, **_NO_DISTILL},
    "moment_logit": {**_STUDENT, "feature_weight": 0.0},
    "layers_1": {**_STUDENT, "downsampler": "single_conv", **_NO_DISTILL},
    "layers_5": {**_STUDENT, "downsampler": "five_layer", **_NO_DISTILL},
    "one_stage": {**_STUDENT, **_ONE_STAGE, **_NO_DISTILL},
    "two_stage_frozen": {**_STUDENT, "freeze_downsampler_stage2": True, **_NO_DISTILL},
    "temperature_0.5": {**_STUDENT, "temperature": 0.5},
    "temperature_1.5": {**_STUDENT, "temperature": 1.5},
    "temperature_2": {**_STUDENT, "temperature": 2.0},
    "init_teacher": {**_STUDENT, "student_init": "teacher"},
    "one_stage_distill": {**_STUDENT, **_ONE_STAGE},
    "one_stage_distill_init_teacher": {**_STUDENT, **_ONE_STAGE, "student_init": "teacher"},
}
# Beyond the paper: every uniform downsampler family of learnthumb as the ThumbDet student's
# downsampler, in one stage with the paper's distillation (the wide thumbnail has nothing for
# a moment-only stage one to train: its image channels are fixed bicubic). The saliency
# sampler is left out: ThumbnailDetector does not map boxes back through a warp.
for _family in ("residual", "learned_resizer", "space_to_depth", "wide"):
    VARIANTS[f"family_{_family}"] = {**_STUDENT, **_ONE_STAGE, "downsampler": _family}
"""Variant name -> the demo phase it starts from and the settings it changes."""

TABLES: dict[str, dict[str, str]] = {
    "components": {
        "bicubic_4x": "Bicubic (no L_mm, L_cls, L_fm)",
        "moment_only": "+ L_mm (learned downsampler)",
        "moment_logit": "+ L_mm + L_cls",
        "thumbdet_4x": "+ L_mm + L_cls + L_fm",
    },
    "layers": {
        "layers_1": "N = 1",
        "moment_only": "N = 2",
        "layers_5": "N = 5",
    },
    "stages": {
        "bicubic_4x": "Bicubic",
        "one_stage": "One-Stage",
        "two_stage_frozen": "Two-Stage w/o Dow.",
        "moment_only": "Two-Stage w/ Dow.",
    },
    "temperature": {
        "temperature_0.5": "T = 0.5",
        "thumbdet_4x": "T = 1",
        "temperature_1.5": "T = 1.5",
        "temperature_2": "T = 2",
    },
    "families": {  # beyond the paper: the downsampler families, one stage, distillation
        "bicubic_4x": "bicubic",
        "one_stage_distill": "thumbdet (the paper's module)",
        "family_residual": "residual",
        "family_learned_resizer": "learned_resizer",
        "family_space_to_depth": "space_to_depth",
        "family_wide": "wide (the student's stem widened)",
    },
    "init": {  # beyond the paper: student initialisation, and one stage with distillation
        "thumbdet_4x": "two-stage, student from random weights (paper)",
        "init_teacher": "two-stage, student from the teacher's weights",
        "one_stage_distill": "one-stage, random weights",
        "one_stage_distill_init_teacher": "one-stage, teacher's weights",
    },
}
"""Table name -> (variant -> the row's label, as in the paper)."""

PAPER_TABLES: dict[str, int] = {"components": 3, "layers": 4, "stages": 5, "temperature": 6}
"""The tables the paper has (name -> its table number); the others go beyond it."""

PAPER: dict[str, tuple[float, ...]] = {
    # Tables 3-6 share runs (e.g. L_mm only is Table 3's second row, Table 4's N = 2 and
    # Table 5's "w/ Dow."), so each run's numbers stand here once, under its variant.
    "bicubic_4x": (29.1, 45.4, 30.4, 9.0, 29.5, 48.0),
    "moment_only": (30.7, 47.4, 32.2, 10.4, 31.4, 50.7),
    "moment_logit": (30.9, 47.6, 32.6, 9.9, 32.0, 51.8),
    "thumbdet_4x": (31.2, 48.4, 32.6, 9.8, 32.0, 52.5),
    "layers_1": (10.9, 16.6, 11.5, 1.7, 9.4, 21.4),
    "layers_5": (26.7, 42.6, 27.7, 8.4, 26.7, 44.1),
    "one_stage": (22.2, 36.0, 22.8, 6.3, 21.2, 37.0),
    "two_stage_frozen": (18.1, 30.4, 18.7, 5.6, 17.7, 30.7),
    "temperature_0.5": (30.5, 47.0, 32.1, 10.1, 31.2, 51.2),
    "temperature_1.5": (27.0, 42.5, 28.2, 8.1, 21.1, 45.9),
    "temperature_2": (27.1, 42.3, 28.1, 8.5, 27.1, 45.5),
}
"""The paper's numbers of each variant of Tables 3-6 (COCO val, ResNet-50, 50 epochs), in the
order of ``AP_KEYS``; the tables beyond the paper show none (the official code ties teacher and
student weights, so ``init`` has no counterpart)."""


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_ablation(table: str, ours: dict[str, dict[str, float | None]]) -> str:
    """A Markdown table of our numbers next to the paper's for one ablation table.

    Args:
        table: a key of ``TABLES``.
        ours: variant -> our six AP numbers (``normalise_ap_metrics`` output).

    Returns:
        The Markdown text, with the best mAP of each side in bold.
    """
    if table not in TABLES:
        raise ValueError(f"table: expected one of {sorted(TABLES)}, got {table!r}")
    rows = TABLES[table]
    best_ours = max((ours[v]["mAP"] or 0.0) for v in rows if v in ours) if ours else None
    paper_rows = {v: PAPER[v] for v in rows if v in PAPER} if table in PAPER_TABLES else {}
    best_paper = max((row[0] for row in paper_rows.values()), default=None)
    header = ["Setting", *(f"{k} (ours)" for k in AP_KEYS), "mAP (paper)", "AP50 (paper)"]
    header += ["APs (paper)", "APm (paper)", "APl (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, label in rows.items():
        mine = ours.get(variant)
        cells = [_cell(mine[k]) if mine else "not run" for k in AP_KEYS]
        if mine and mine["mAP"] is not None and mine["mAP"] == best_ours:
            cells[0] = f"**{cells[0]}**"
        paper = paper_rows.get(variant, (None,) * len(AP_KEYS))
        paper_cells = [_cell(paper[i]) for i in (0, 1, 3, 4, 5)]
        if paper[0] is not None and paper[0] == best_paper:
            paper_cells[0] = f"**{paper_cells[0]}**"
        lines.append("| " + " | ".join([label, *cells, *paper_cells]) + " |")
    return "\n".join(lines)


def run_ablation(table: str, options: DemoOptions | None = None) -> dict:
    """Train (or reuse) every variant of one table, evaluate it, write the Markdown table.

    Args:
        table: a key of ``TABLES`` (``components``, ``layers``, ``stages``, ``temperature``,
            ``init``, ``families``).
        options: as for :func:`thumbdet.experiments.demo.run_demo`; its folder is best the
            demo's, whose phases are shared.

    Returns:
        ``{"table", "variants": {variant: six AP numbers}, "wall_seconds"}``.
    """
    if table not in TABLES:
        raise ValueError(f"table: expected one of {sorted(TABLES)}, got {table!r}")
    options = options or DemoOptions()
    with use_threads(options.threads):
        return _run_ablation(table, options)


def _run_ablation(table: str, options: DemoOptions) -> dict:
    started = time.perf_counter()
    name, recipe, data = prepare_recipe(options.quick, options.data_dir, options.progress)
    output = options.folder()
    teacher_config = phase_config(recipe, data, output / "teacher", "teacher")
    print("[ablate] teacher", flush=True)
    teacher, teacher_fp = run_phase(teacher_config)
    ours: dict[str, dict[str, float | None]] = {}
    for variant in TABLES[table]:
        changes = dict(VARIANTS[variant])
        phase = changes.pop("phase")
        distilled = get_mode(recipe.phases[phase]["mode"]).needs_teacher
        if distilled:
            changes["teacher"] = str(teacher)
        config = phase_config(recipe, data, output / variant, phase, **changes)
        print(f"[ablate] {table}: {variant}", flush=True)
        checkpoint, fingerprint = run_phase(config, teacher_fp if distilled else "")
        ours[variant] = normalise_ap_metrics(
            evaluate_phase(checkpoint, fingerprint, data, options.progress)
        )
    markdown = format_ablation(table, ours)
    (output / f"ablation_{table}.md").write_text(markdown + "\n")
    result = {"table": table, "recipe": name, "variants": ours}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_results(result, output / f"ablation_{table}.json")
    print(markdown)
    return result
