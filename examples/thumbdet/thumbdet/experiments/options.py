"""Where and at which size the demo and the ablations run: :class:`DemoOptions`.

Torch-free, so that ``thumbdet demo`` and ``thumbdet ablate`` generate their flags from it
without importing the experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thumbdet.settings import setting

__all__ = ["DemoOptions"]


@dataclass
class DemoOptions:
    """The folder, size and CPU use of a demo run; the ablations take the same (and share the
    demo's folder, whose trained phases they reuse).

    Example:
        >>> DemoOptions(quick=True).folder().name
        'thumbdet-demo-quick'
    """

    output: str | None = setting(
        None, "folder (default ./thumbdet-demo, or ./thumbdet-demo-quick with --quick)"
    )
    quick: bool = setting(False, "the same pipeline at toy size, about a minute")
    data_dir: str | None = setting(None, "dataset folder (default: the thumbdet cache)")
    threads: int = setting(
        1, "PyTorch threads (default 1: robust on a shared CPU; 0 = PyTorch's default)", minimum=0
    )
    progress: bool = setting(True, "show progress bars", cli=False)

    def folder(self) -> Path:
        """``output``, or the default folder of the recipe."""
        if self.output:
            return Path(self.output)
        return Path("thumbdet-demo-quick" if self.quick else "thumbdet-demo")
