"""The quality suite: learned thumbnails against nearest, area and bicubic on natural images.

Usage (from the repository root, after ``pip install -e ".[dev,quality]" -e examples/thumbdet``)::

    python -m benchmarks.quality --quick                 # a few minutes: a check, not a result
    python -m benchmarks.quality                         # the full suite quoted in docs/quality.md
    python -m benchmarks.quality --tasks classify --seeds 10 --arms bicubic residual
    python -m benchmarks.quality --test-split unseen --tasks detect keypoints segment \
        --arms bicubic wide                              # scored on photos no task uses
    python -m benchmarks.quality --test-split external   # on other packages' photos

Runs go to ``--jobs`` worker processes (2 by default, one torch thread each: on a 2-core CPU
that is faster than one process with two threads). Every finished run is kept in
``--work-dir`` (one JSON file each, teachers as weights), so an
interrupted suite resumes where it stopped (runs made by other code are trained again, see
``runner.code_version``); ``--fresh`` starts over. The summary goes to ``--output-dir``:
``quality.json`` (``quality-quick.json``, ``quality-unseen.json``, ``quality-external.json``), a
Markdown table and a plot.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks._harness import RESULTS_DIR, describe_environment, git_commit
from benchmarks.quality.arms import ARMS, DEFAULT_ARMS
from benchmarks.quality.data import SCENE_SPLITS, SCENE_TASKS
from benchmarks.quality.imagewise import ImageStats
from benchmarks.quality.report import render_table, save_plot
from benchmarks.quality.runner import Budget, code_version, run_job
from benchmarks.quality.stats import (
    combined_difference,
    image_interval,
    image_resamples,
    paired_difference,
    resampled_scores,
    summarize,
)
from benchmarks.quality.tasks import TASKS, task_spec

BASELINE = "bicubic"
QUICK_ARMS = ("area", "bicubic", "thumbdet", "wide")
QUICK_BUDGET = Budget(teacher_steps=200, student_steps=100)
#: bootstrap resamples of the test images behind each arm's image interval
IMAGE_RESAMPLES = 1000


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Learned thumbnails vs nearest/area/bicubic on natural-image tasks.",
    )
    parser.add_argument("--quick", action="store_true", help="short budgets, 2 seeds, 4 arms")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=sorted(TASKS),
        help="tasks to run (default: all; with --test-split unseen, the scene tasks)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=sorted(ARMS),
        help=f"default: {' '.join(DEFAULT_ARMS)}; quick: {' '.join(QUICK_ARMS)}",
    )
    parser.add_argument("--seeds", type=_positive_int, help="seeds per arm (default 5; quick 2)")
    parser.add_argument(
        "--first-seed",
        type=_non_negative_int,
        default=0,
        help="the seeds are first-seed, first-seed + 1, ... (0); a later block is a held-out "
        "check of a setting chosen on the first seeds",
    )
    parser.add_argument(
        "--test-split",
        choices=("test", *SCENE_SPLITS),
        default="test",
        help="score on the test split (default), or on scenes drawn on photos that no task "
        "trains or tests on: unseen (five more scikit-image photos) or external (four photos "
        f"from matplotlib, mahotas and PyWavelets); those take the scene tasks "
        f"{' '.join(SCENE_TASKS)} only",
    )
    parser.add_argument(
        "--scales", nargs="+", type=_positive_int, default=[4], help="downsampling factors"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR / "quality")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/quality"))
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=min(2, len(os.sched_getaffinity(0))),
        help="runs in parallel, one process each (default: 2, or 1 on a 1-CPU machine)",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=1, help="torch threads per process (1)"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore finished runs in --work-dir")
    args = parser.parse_args(argv)
    if BASELINE not in (args.arms or [BASELINE]):
        parser.error(f"--arms must include the baseline {BASELINE!r}, got {args.arms}")
    if args.test_split in SCENE_SPLITS:
        args.tasks = args.tasks or list(SCENE_TASKS)
        others = " ".join(sorted(set(args.tasks) - set(SCENE_TASKS)))
        if others:
            parser.error(
                f"--test-split {args.test_split} takes the tasks {SCENE_TASKS}, got {others}"
            )
    args.tasks = args.tasks or sorted(TASKS)
    args.arms = args.arms or list(QUICK_ARMS if args.quick else DEFAULT_ARMS)
    args.seeds = args.seeds or (2 if args.quick else 5)
    return args


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the dev extra
        return None
    return tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)


def _execute(jobs: list[dict], workers: int, bar) -> list[dict]:
    """Run ``jobs`` (see :func:`run_job`), in ``workers`` processes when more than one."""
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for job in jobs:
            if bar is not None:
                bar.set_description(_describe(job))
            results.append(run_job(job))
            if bar is not None and "arm" in job:
                bar.update()
        return results
    context = multiprocessing.get_context("spawn")  # no fork of a threaded torch process
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): index for index, job in enumerate(jobs)}
        results: list[dict] = [{}] * len(jobs)
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            if bar is not None and "arm" in jobs[index]:
                bar.set_description(_describe(jobs[index]))
                bar.update()
    return results


def _describe(job: dict) -> str:
    if "arm" not in job:
        return f"{job['task']} teacher"
    return f"{job['task']} x{job['scale']} {job['arm']} seed {job['seed']}"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = QUICK_BUDGET if args.quick else Budget()
    start = time.perf_counter()
    # Read before any run: the code that the runs below are made (or were kept) with.
    environment, commit, code = describe_environment(), git_commit(), code_version()
    common = {
        "work_dir": str(args.work_dir),
        "budget": asdict(budget),
        "threads": args.threads,
        "fresh": args.fresh,
        "test_split": args.test_split,
    }
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # Teachers first (one per task, in parallel), then every student run.
    teacher_jobs = [dict(common, task=name, fresh=False) for name in args.tasks]
    student_jobs = [
        dict(common, task=name, arm="full_size", scale=1, seed=0) for name in args.tasks
    ]
    student_jobs += [
        dict(common, task=name, arm=arm, scale=scale, seed=seed)
        for name in args.tasks
        for scale in args.scales
        for arm in args.arms
        for seed in seeds
    ]
    bar = _progress(len(student_jobs))
    teachers = dict(zip(args.tasks, _execute(teacher_jobs, args.jobs, bar), strict=True))
    records = _execute(student_jobs, args.jobs, bar)
    if code_version.__wrapped__() != code:
        # Worker processes key runs by the code they find when they start: a summary would mix
        # teachers and students of two versions. What finished is kept under its own version.
        raise SystemExit(
            "the code that computes the runs (runner.code_version) changed while the suite ran: "
            "no summary written; run the command again"
        )
    runs = {
        (job["task"], job["arm"], job["scale"], job["seed"]): record
        for job, record in zip(student_jobs, records, strict=True)
    }
    results: dict = {}
    for name in args.tasks:
        spec = task_spec(name)
        for scale in args.scales:
            rows = {}
            for arm in args.arms:
                records_ = [runs[(name, arm, scale, seed)] for seed in seeds]
                values = [record["metrics"][spec.metric] for record in records_]
                rows[arm] = {
                    "arm": asdict(ARMS[arm]),
                    "values": values,
                    "summary": summarize(values),
                    "seconds": summarize([record["seconds"] for record in records_]),
                    "max_constant_fraction": max(max(r["constant_fraction"]) for r in records_),
                    "warnings": sorted({w for r in records_ for w in r["warnings"]}),
                    "all_metrics": [record["metrics"] for record in records_],
                }
            for row in rows.values():
                row["vs_bicubic"] = paired_difference(row["values"], rows[BASELINE]["values"])
            _add_image_intervals(rows, {arm: [runs[(name, arm, scale, s)] for s in seeds]
                                        for arm in args.arms})  # fmt: skip
            results.setdefault(name, {})[f"x{scale}"] = {
                "metric": spec.metric,
                "teacher": teachers[name],
                "full_size": {
                    key: value
                    for key, value in runs[(name, "full_size", 1, 0)].items()
                    if key != "images"  # per-image statistics stay in --work-dir
                },
                "arms": rows,
            }
    if bar is not None:
        bar.close()
    name = "quality-quick" if args.quick else "quality"
    payload = {
        "benchmark": name if args.test_split == "test" else f"{name}-{args.test_split}",
        "environment": environment,
        "git": commit,
        # Every run in the tables was made by this code (see runner.code_version).
        "code_version": code,
        "command": "python -m benchmarks.quality "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {
            "budget": asdict(budget),
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "test_split": args.test_split,
            "scales": args.scales,
            "baseline": BASELINE,
            "tasks": {name: _task_settings(name) for name in args.tasks},
        },
        "wall_seconds": time.perf_counter() - start,
        # Training time of everything in the table, also of runs read back from --work-dir.
        "training_seconds": sum(
            (block["teacher"]["seconds"] + block["full_size"]["seconds"]) * (index == 0)
            + sum(row["seconds"]["mean"] * row["seconds"]["n"] for row in block["arms"].values())
            for scales in results.values()
            for index, block in enumerate(scales.values())
        ),
        "results": results,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = payload["benchmark"]
    (args.output_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    table = render_table(payload)
    (args.output_dir / f"{stem}.md").write_text(table)
    save_plot(payload, args.output_dir / f"{stem}.png")
    print(table)
    print(
        f"wrote {args.output_dir / stem}.json/.md/.png in {payload['wall_seconds']:.0f} s "
        f"({payload['training_seconds']:.0f} s of training, runs read back included)"
    )
    return payload


def _add_image_intervals(rows: dict, records: dict[str, list[dict]]) -> None:
    """Add each arm's image interval and its combined difference to bicubic to ``rows``.

    Every arm is rescored on the same bootstrap resamples of the test images
    (:data:`IMAGE_RESAMPLES`), so the comparison stays paired over images as over seeds.
    """
    stats = {
        arm: [ImageStats.from_json(r["images"]) for r in runs] for arm, runs in records.items()
    }
    counts = image_resamples(stats[BASELINE][0].num_images, IMAGE_RESAMPLES)
    baseline = resampled_scores(stats[BASELINE], counts)
    for arm, row in rows.items():
        images = image_interval(resampled_scores(stats[arm], counts), baseline)
        row["vs_bicubic_images"] = images
        row["vs_bicubic_combined"] = combined_difference(row["vs_bicubic"], images)


def _task_settings(name: str) -> dict:
    spec = task_spec(name)
    return {
        "metric": spec.metric,
        "image_size": spec.image_size,
        "train_count": spec.train_count,
        "test_count": spec.test_count,
        "batch_size": spec.batch_size,
    }


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs are kept in --work-dir; run again to resume",
            file=sys.stderr,
        )
        sys.exit(130)
