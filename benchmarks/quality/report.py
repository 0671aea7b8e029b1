"""The quality suite's Markdown table and plot, from its JSON payload."""

from __future__ import annotations

from pathlib import Path

__all__ = ["headline_difference", "render_table", "save_plot"]


def _interval(diff: dict) -> str:
    if diff["n"] < 2:
        return f"{diff['mean']:+.2f} (one seed)"
    mark = {"better": " **better**", "worse": " **worse**", "tie": ""}[diff["verdict"]]
    return f"{diff['mean']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]{mark}"


def _images_interval(row: dict) -> str:
    """The interval with the test images' error too; "—" for results made before it existed."""
    return _interval(row["vs_bicubic_combined"]) if "vs_bicubic_combined" in row else "—"


def headline_difference(row: dict) -> dict:
    """The difference whose verdict the suite reports: seeds and images when it has both."""
    return row.get("vs_bicubic_combined", row["vs_bicubic"])


def render_table(payload: dict) -> str:
    """One Markdown table per task and scale: mean ± std, paired difference to bicubic."""
    lines = []
    split = payload["settings"].get("test_split", "test")
    scored = "" if split == "test" else f", scored on the {split} split"
    for task, scales in payload["results"].items():
        for scale, block in scales.items():
            metric = block["metric"]
            teacher = block["teacher"][metric]
            full = block["full_size"]["metrics"][metric]
            kind = " (mechanism demonstration, built so that bicubic fails)" * (task == "mechanism")
            lines += [
                f"#### {task} {scale}: {metric}{scored}{kind}",
                "",
                f"Full size (no thumbnail): the teacher {teacher:.2f}; the teacher fine-tuned "
                f"with the students' budget {full:.2f} (one seed).",
                "",
                "| arm | mean ± std | vs bicubic, 95%: seeds | seeds and images | s / run "
                "| max constant |",
                "|---|---|---|---|---|---|",
            ]
            for arm, row in block["arms"].items():
                summary = row["summary"]
                lines.append(
                    f"| {arm} | {summary['mean']:.2f} ± {summary['std']:.2f} "
                    f"| {_interval(row['vs_bicubic']) if arm != 'bicubic' else '—'} "
                    f"| {_images_interval(row) if arm != 'bicubic' else '—'} "
                    f"| {row['seconds']['mean']:.1f} | {row['max_constant_fraction']:.0%} |"
                )
            lines.append("")
    return "\n".join(lines)


def save_plot(payload: dict, path: Path) -> None:
    """Paired difference to bicubic with its 95% interval, one panel per task and scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, s, b) for t, scales in payload["results"].items() for s, b in scales.items()]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (task, scale, block) in zip(axes[0], panels, strict=True):
        arms = [arm for arm in block["arms"] if arm != "bicubic"]
        diffs = [headline_difference(block["arms"][arm]) for arm in arms]
        means = [d["mean"] for d in diffs]
        errors = [
            [d["mean"] - d["low"] for d in diffs] if all(d["n"] > 1 for d in diffs) else None,
        ]
        colors = [
            {"better": "tab:green", "worse": "tab:red"}.get(d["verdict"], "tab:gray") for d in diffs
        ]
        positions = range(len(arms))
        axis.barh(positions, means, xerr=errors[0], color=colors, capsize=3)
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_yticks(list(positions), arms, fontsize=8)
        axis.invert_yaxis()
        label = "mechanism*" if task == "mechanism" else task
        axis.set_title(f"{label} {scale} ({block['metric']})", fontsize=9)
        axis.set_xlabel("difference to bicubic", fontsize=8)
    mechanism = "; *built so that bicubic fails" * ("mechanism" in payload["results"])
    images = all(
        "vs_bicubic_combined" in row
        for scales in payload["results"].values()
        for block in scales.values()
        for row in block["arms"].values()
    )
    figure.suptitle(
        f"{payload['benchmark']}: mean paired difference to bicubic, 95% interval "
        f"({payload['settings']['seeds']} seeds{' and the test images' * images}){mechanism}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
