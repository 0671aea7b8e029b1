"""Train a teacher and two students on generated data, on a CPU.

The paper's Table 2 and Figs. 1, 5 and 6 on a generated dataset: trains the full-size
teacher, the 4x bicubic student and the 4x ThumbDet student, evaluates them and draws the
figures. Every phase is resumable.
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


COMMAND = Command("demo", __doc__, DemoOptions, _run)
