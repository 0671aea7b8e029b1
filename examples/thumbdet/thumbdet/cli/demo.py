"""``thumbdet demo``: the paper's Table 2 and Figs. 1, 5, 6 on a generated dataset, on a CPU.

A thin command over :func:`thumbdet.experiments.demo.run_demo`; its flags come from
:class:`DemoOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbdet.cli.command import Command
from thumbdet.settings import setting

__all__ = ["COMMAND", "DemoOptions"]


@dataclass
class DemoOptions:
    """Settings of ``thumbdet demo``."""

    output: str | None = setting(None, "folder (default ./thumbdet-demo)")
    quick: bool = setting(False, "toy size, about a minute")
    data_dir: str | None = setting(None, "dataset folder (default: cache)")
    threads: int = setting(
        1, "PyTorch threads (default 1: robust on a shared CPU; 0 = PyTorch's default)"
    )


def _run(options: DemoOptions) -> int:
    """Body of ``thumbdet demo``."""
    from thumbdet.experiments.demo import run_demo
    from thumbdet.experiments.measure import use_threads

    output = options.output or ("thumbdet-demo-quick" if options.quick else "thumbdet-demo")
    with use_threads(options.threads):
        run_demo(output, quick=options.quick, data_dir=options.data_dir)
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
