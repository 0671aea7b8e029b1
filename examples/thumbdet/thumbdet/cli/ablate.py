"""``thumbdet ablate TABLE``: one of the paper's ablation tables (3-6) at demo scale.

A thin command over :func:`thumbdet.experiments.ablations.run_ablation`; its flags come from
:class:`AblateOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbdet.cli.command import Command
from thumbdet.experiments.options import DemoOptions
from thumbdet.settings import setting

__all__ = ["COMMAND", "AblateOptions"]


def _tables() -> list[str]:
    from thumbdet.experiments.ablations import TABLES

    return sorted(TABLES)


@dataclass
class AblateOptions(DemoOptions):
    """Settings of ``thumbdet ablate``: the table, and the demo's folder and size."""

    table: str | None = setting(None, "which table to reproduce", flag="table", choices=_tables)


def _run(options: AblateOptions) -> int:
    """Body of ``thumbdet ablate``."""
    from thumbdet.experiments.ablations import run_ablation

    run_ablation(options.table, options)
    return 0


COMMAND = Command(
    "ablate",
    help="the paper's ablations (Tables 3-6) at demo scale",
    description="Reproduce one of the paper's ablation tables (3-6) with the demo's data "
    "and recipe; reuses the demo's teacher and phases when their settings match.",
    settings=AblateOptions,
    run=_run,
)
