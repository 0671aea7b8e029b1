"""Run an example in a subprocess, as a user would, and return its results.json."""

from __future__ import annotations

import json
from pathlib import Path

from tests.python_run import REPO_ROOT as ROOT
from tests.python_run import run_python

# The rows of the segmentation and pose examples' results, in order.
COMPARED_MODELS = ["teacher", "bicubic 4x student", "bicubic 4x student + KD", "learned 4x student"]


def run_example(script: str, *args: str, timeout: float = 300) -> str:
    """Run an example from the repository root; return its stdout.

    ``script`` is a file under ``examples/`` (``python examples/<script> <args>``) or a module
    (``python -m examples.segmentation.run <args>``).
    """
    command = ["-m", script] if not script.endswith(".py") else [str(ROOT / "examples" / script)]
    return run_python(*command, *args, timeout=timeout)


def run_quick(script: str, output: Path) -> tuple[str, dict]:
    """``--quick --threads 1 --output output``; returns stdout and the parsed results.json."""
    stdout = run_example(script, "--quick", "--threads", "1", "--output", str(output))
    return stdout, json.loads((output / "results.json").read_text())
