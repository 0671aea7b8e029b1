"""One of the paper's ablation tables (3-6), at demo scale.

Trains the table's variants with the demo's data, recipe and teacher, and writes
DIR/ablation_TABLE.md (our numbers next to the paper's) and DIR/ablation_TABLE.json. Reuses
the demo's teacher and phases when their settings match.
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


COMMAND = Command("ablate", __doc__, AblateOptions, _run)
