"""``thumbdet ablate TABLE``: one of the paper's ablation tables (3-6) at demo scale.

A thin command over :func:`thumbdet.experiments.ablations.run_ablation`; its flags come from
:class:`AblateOptions`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from thumbdet.cli.flags import add_settings, settings_from_args
from thumbdet.settings import setting

__all__ = ["HELP", "AblateOptions", "add_parser", "run"]

HELP = "the paper's ablations (Tables 3-6) at demo scale"


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


def run(args: argparse.Namespace) -> int:
    """Body of ``thumbdet ablate``."""
    from thumbdet.experiments.ablations import run_ablation
    from thumbdet.experiments.measure import use_threads

    options: AblateOptions = settings_from_args(args, AblateOptions)
    output = options.output or ("thumbdet-demo-quick" if options.quick else "thumbdet-demo")
    with use_threads(options.threads):
        run_ablation(options.table, output, quick=options.quick, data_dir=options.data_dir)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``thumbdet ablate`` on the CLI."""
    parser = subparsers.add_parser(
        "ablate",
        help=HELP,
        description="Reproduce one of the paper's ablation tables (3-6) with the demo's data "
        "and recipe; reuses the demo's teacher and phases when their settings match.",
    )
    add_settings(parser, AblateOptions)
    parser.set_defaults(func=run)
