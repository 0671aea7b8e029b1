"""``thumbdet demo``: the paper's Table 2 and Figs. 1, 5, 6 on a generated dataset, on a CPU.

A thin command over :func:`thumbdet.experiments.demo.run_demo`; its flags come from
:class:`DemoOptions`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from thumbdet.cli.flags import add_settings, settings_from_args
from thumbdet.settings import setting

__all__ = ["HELP", "DemoOptions", "add_parser", "run"]

HELP = "train teacher, bicubic and ThumbDet students on generated data (CPU)"


@dataclass
class DemoOptions:
    """Settings of ``thumbdet demo``."""

    output: str | None = setting(None, "folder (default ./thumbdet-demo)")
    quick: bool = setting(False, "toy size, about a minute")
    data_dir: str | None = setting(None, "dataset folder (default: cache)")
    threads: int = setting(
        1, "PyTorch threads (default 1: robust on a shared CPU; 0 = PyTorch's default)"
    )


def run(args: argparse.Namespace) -> int:
    """Body of ``thumbdet demo``."""
    from thumbdet.experiments.demo import run_demo
    from thumbdet.experiments.measure import use_threads

    options: DemoOptions = settings_from_args(args, DemoOptions)
    output = options.output or ("thumbdet-demo-quick" if options.quick else "thumbdet-demo")
    with use_threads(options.threads):
        run_demo(output, quick=options.quick, data_dir=options.data_dir)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``thumbdet demo`` on the CLI."""
    parser = subparsers.add_parser(
        "demo",
        help=HELP,
        description="The paper's Table 2 and Figs. 1, 5 and 6 on a generated dataset, on a CPU: "
        "trains the full-size teacher, the 4x bicubic student and the 4x ThumbDet student, "
        "evaluates them and draws the figures. Every phase is resumable.",
    )
    add_settings(parser, DemoOptions)
    parser.set_defaults(func=run)
