"""``thumbdet ablate TABLE``: one of the paper's ablation tables (3-6) at demo scale.

A thin command over :func:`thumbdet.experiments.ablations.run_ablation`; its flags come from
:class:`AblateOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbdet.cli.command import Command
from thumbdet.settings import setting

__all__ = ["COMMAND", "AblateOptions"]


def _tables() -> list[str]:
    from thumbdet.experiments.ablations import TABLES

    return sorted(TABLES)


@dataclass
class AblateOptions:
    """Settings of ``thumbdet ablate``."""

    table: str | None = setting(None, "which table to reproduce", flag="table", choices=_tables)
    output: str | None = setting(None, "the demo's folder (default ./thumbdet-demo)")
    quick: bool = setting(False, "the demo's toy recipe")
    data_dir: str | None = setting(None, "dataset folder (default: cache)")
    threads: int = setting(1, "PyTorch threads (0: default)")


def _run(options: AblateOptions) -> int:
    """Body of ``thumbdet ablate``."""
    from thumbdet.experiments.ablations import run_ablation
    from thumbdet.experiments.measure import use_threads

    output = options.output or ("thumbdet-demo-quick" if options.quick else "thumbdet-demo")
    with use_threads(options.threads):
        run_ablation(options.table, output, quick=options.quick, data_dir=options.data_dir)
    return 0


COMMAND = Command(
    "ablate",
    help="the paper's ablations (Tables 3-6) at demo scale",
    description="Reproduce one of the paper's ablation tables (3-6) with the demo's data "
    "and recipe; reuses the demo's teacher and phases when their settings match.",
    settings=AblateOptions,
    run=_run,
)
