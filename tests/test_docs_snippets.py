"""Every ```python block of docs/plugging-in.md runs as written (each in a fresh namespace)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugging-in.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)


def _first_code_line(block: str) -> str:
    return next(
        line for line in block.splitlines() if line and not line.startswith(("import", "from"))
    )


def test_the_page_has_the_three_ways_and_the_resnet_example():
    assert len(BLOCKS) >= 6
    text = "\n".join(BLOCKS)
    for needle in ("Thumbnailed(", "moment_matching_loss(", "ThumbnailDistillation(", "resnet50"):
        assert needle in text


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_docs_snippet_runs(block):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, f"{DOC.name}:{_first_code_line(block)[:40]}", "exec"), {})
