"""Render the JSON results of one machine as Markdown tables (for ``benchmarks/README.md``).

    python -m benchmarks.render_tables --machine cpu-2core            # print
    python -m benchmarks.render_tables --machine cpu-2core --update-readme

``--update-readme`` replaces the text between ``<!-- BEGIN RESULTS <machine> -->`` and
``<!-- END RESULTS <machine> -->`` in the README, so its tables are always the JSON's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks._harness import RESULTS_DIR

README = Path(__file__).resolve().parent / "README.md"
MIB = 1024 * 1024
STAGE_ORDER = ("downsampler", "backbone", "input_proj+pos", "encoder", "decoder", "other")
STAGE_ORDER += ("postprocess",)
FASTPATH_HEADER = ["configuration", "ms (IQR)", "speed-up", "first call s", "max abs logit diff"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _size(values: list[int]) -> str:
    return "x".join(str(value) for value in values)


def _environment_line(result: dict[str, Any]) -> str:
    env = result["environment"]
    commit = (env.get("commit") or "?")[:10] + (" (dirty)" if env.get("dirty") else "")
    return (
        f"*{env['date_utc']}, {env['cpu_model']}, {env['usable_cpus']} CPUs, "
        f"{env['torch_threads']} torch threads, torch {env['torch_version']}, commit {commit}, "
        f"load average {env.get('load_average_1_5_15min')} before and "
        f"{env.get('load_average_at_end')} after the run (1/5/15 min)"
        f"{', quick run' if result.get('quick') else ''}.*"
    )


def _section(title: str, result: dict[str, Any]) -> list[str]:
    """The first lines of a benchmark's section: its title, machine and method."""
    return [f"### {title}", _environment_line(result), "", result["method"] + "."]


def _targets_table(targets: dict[str, Any]) -> str:
    """The table of a benchmark's targets: name, wanted, measured and whether it was met."""
    rows = []
    for name, target in targets.items():
        measured = target["measured"]
        shown = "n/a" if measured is None else f"{measured:.3g}"
        rows.append(
            [name.replace("_", " "), target["target"], shown, "yes" if target["met"] else "**no**"]
        )
    return _table(["target", "wanted", "measured", "met"], rows)


def render_inference(result: dict[str, Any]) -> str:
    parts = _section("Inference (question 1)", result)
    for preset, data in result["presets"].items():
        rows_by_batch: dict[int, dict[str, Any]] = {}
        for row in data["rows"]:
            rows_by_batch.setdefault(row["batch"], {})[row["case"]] = row
        batches = sorted(rows_by_batch)
        header = ["model", "detector input", "GMACs", "MAC ratio", "params (M)"]
        for batch in batches:
            header += [f"b{batch} latency ms (IQR)", f"b{batch} img/s", f"b{batch} speed-up"]
        header += ["peak RSS b1 (MiB)", "call RSS b1 (MiB)"]
        table_rows = []
        for case, first in rows_by_batch[batches[0]].items():
            size = "x".join(str(v) for v in first["detector_input_size"])
            cells = [
                case,
                size,
                f"{first['gmacs_per_image']:.2f}",
                f"{first['mac_ratio_vs_teacher']:.2f}",
                f"{first['params_m']:.2f}",
            ]
            for batch in batches:
                row = rows_by_batch[batch][case]
                cells += [
                    f"{row['latency_ms']:.1f} ({row['iqr_ms']:.1f})",
                    f"{row['images_per_s']:.2f}",
                    f"{row['speedup_vs_teacher']:.2f}x",
                ]
            memory = first["peak_memory_batch1"]
            peak = memory.get("peak_rss_bytes", memory.get("peak_bytes", 0)) / MIB
            call = memory.get("call_rss_bytes", memory.get("call_bytes", 0)) / MIB
            cells += [f"{peak:.0f}", f"{call:.0f}"]
            table_rows.append(cells)
        repeats = {b: next(iter(rows_by_batch[b].values()))["timing"] for b in batches}
        repeat_text = ", ".join(
            f"batch {b}: {t['warmup']} warm-up + {t['repeats']} timed rounds"
            for b, t in repeats.items()
        )
        parts += [
            "",
            f"**{preset}**, full-size input {_size(data['input_size'])} ({repeat_text}).",
        ]
        if data.get("settings_note"):
            parts.append(f"Note: {data['settings_note']}.")
        parts += ["", _table(header, table_rows)]
        if data.get("targets"):
            parts += ["", _targets_table(data["targets"])]
    return "\n".join(parts)


def render_breakdown(result: dict[str, Any]) -> str:
    parts = _section("Where the time goes (question 2)", result)
    for preset, data in result["presets"].items():
        cases = data["cases"]
        header = ["stage"] + [f"{c['case']} ms (share)" for c in cases]
        present = {stage for case in cases for stage in case["stages"]}
        stages = [stage for stage in STAGE_ORDER if stage in present]
        stages += sorted(present - set(STAGE_ORDER))
        rows = []
        for stage in stages:
            cells = [stage]
            for case in cases:
                value = case["stages"].get(stage)
                cells.append(
                    "-"
                    if value is None
                    else f"{value['median_ms']:.1f} ({100 * value['share']:.1f}%)"
                )
            rows.append(cells)
        rows.append(["**total**"] + [f"{c['total_ms']:.1f}" for c in cases])
        sizes = ", ".join(f"{c['case']} {c['repeats']} timed calls" for c in cases)
        parts += [
            "",
            f"**{preset}**, input {_size(cases[0]['input_size'])}, batch 1 ({sizes}).",
            "",
        ]
        parts += [
            _table(header, rows),
            "",
            _targets_table(data["targets"]),
        ]
        for case in cases:
            if case.get("top_ops"):
                ops = ", ".join(
                    f"`{op['op']}` {100 * op['self_cpu_share']:.0f}%" for op in case["top_ops"][:5]
                )
                parts += ["", f"Top operators ({case['case']}, self CPU time): {ops}."]
    return "\n".join(parts)


def render_training(result: dict[str, Any]) -> str:
    parts = _section("Training cost (question 3)", result)
    for preset, data in result["presets"].items():
        rows = []
        for name, row in data["rows"].items():
            ratio = row.get("ratio_to_teacher_forward_plus_bicubic_step")
            rows.append(
                [
                    name,
                    f"{row['step_ms']:.1f} ({row['iqr_ms']:.1f})",
                    f"{row['images_per_s']:.2f}",
                    "-" if ratio is None else f"{ratio:.2f}",
                ]
            )
        timing = next(iter(data["rows"].values()))["timing"]
        parts += [
            "",
            f"**{preset}**, input {_size(data['input_size'])}, batch {data['batch']}, "
            f"{timing['warmup']} warm-up + {timing['repeats']} timed rounds; Query Filter kept "
            f"{100 * data['query_filter_kept_fraction']:.0f}% of {data['num_queries']} teacher "
            "queries.",
            "",
            _table(["step", "ms (IQR)", "images/s", "/ (teacher fwd + bicubic step)"], rows),
            "",
            _targets_table(data["targets"]),
        ]
    return "\n".join(parts)


def render_fastpaths(result: dict[str, Any], title: str) -> str:
    parts = _section(title, result)
    for subject in result["subjects"]:
        rows = [
            [
                name,
                f"{row['latency_ms']:.1f} ({row['iqr_ms']:.1f})",
                f"{row['speedup_vs_inference_mode']:.2f}x",
                f"{row['first_call_s']:.2f}",
                f"{row['max_abs_diff_logits_vs_baseline']:.2g}",
            ]
            for name, row in subject["rows"].items()
        ]
        timing = next(iter(subject["rows"].values()))["timing"]
        size = "x".join(str(v) for v in subject["input_size"])
        parts += [
            "",
            f"**{subject['preset']} {subject['case']}**, input {size}, batch 1, "
            f"{timing['warmup']} warm-up + {timing['repeats']} timed rounds.",
            "",
            _table(FASTPATH_HEADER, rows),
        ]
        for name, error in subject.get("errors", {}).items():
            parts.append(f"\n- `{name}` failed: {error}")
    speedups = result.get("student_4x_speedup_over_teacher")
    if speedups:
        shown = ", ".join(f"{name} {value:.1f}x" for name, value in speedups.items())
        parts += ["", f"4x student speed-up over the teacher (paper preset, batch 1): {shown}."]
    if result.get("skipped"):
        parts += [""] + [f"- skipped `{name}`: {why}" for name, why in result["skipped"].items()]
    return "\n".join(parts)


def render_machine(machine: str, results_dir: Path = RESULTS_DIR) -> str:
    """All available tables of one machine, in question order."""
    folder = results_dir / machine
    sections = []
    renderers = (
        ("inference", render_inference),
        ("breakdown", render_breakdown),
        ("training", render_training),
        ("fastpaths", lambda r: render_fastpaths(r, "Fast paths (question 4)")),
        (
            "fastpaths_compile",
            lambda r: render_fastpaths(r, "torch.compile (question 4, optional)"),
        ),
    )
    for name, renderer in renderers:
        path = folder / f"{name}.json"
        if path.exists():
            sections.append(renderer(json.loads(path.read_text())))
    return "\n\n".join(sections) if sections else f"No results for {machine} yet."


def update_readme(machine: str, text: str, readme: Path = README) -> None:
    """Replace the README's block of ``machine`` with ``text``."""
    begin, end = f"<!-- BEGIN RESULTS {machine} -->", f"<!-- END RESULTS {machine} -->"
    content = readme.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"{readme} has no {begin} ... {end} block")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="cpu-2core")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    text = render_machine(args.machine, Path(args.results_dir))
    if args.update_readme:
        update_readme(args.machine, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
