"""``thumbdet demo``: the paper's Table 2 and Figs. 1, 5, 6 on a generated dataset, on a CPU.

A thin command over :func:`thumbdet.experiments.demo.run_demo`; its flags come from
:class:`~thumbdet.experiments.options.DemoOptions`.
"""

from __future__ import annotations

from thumbdet.cli.command import Command
from thumbdet.experiments.options import DemoOptions

__all__ = ["COMMAND"]


def _run(options: DemoOptions) -> int:
    """Body of ``thumbdet demo``."""
    from thumbdet.experiments.demo import run_demo

    run_demo(options)
    return 0


COMMAND = Command(
    "demo",
    help="train teacher, bicubic and ThumbDet students on generated data (CPU)",
    description="The paper's Table 2 and Figs. 1, 5 and 6 on a generated dataset, on a CPU: "
    "trains the full-size teacher, the 4x bicubic student and the 4x ThumbDet student, "
    "evaluates them and draws the figures. Every phase is resumable.",
    settings=DemoOptions,
    run=_run,
)
