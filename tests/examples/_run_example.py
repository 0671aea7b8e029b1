"""Run an example in a subprocess, as a user would, and return its results.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The rows of the segmentation and pose examples' results, in order.
COMPARED_MODELS = ["teacher", "bicubic 4x student", "bicubic 4x student + KD", "learned 4x student"]


def run_example(script: str, *args: str, timeout: float = 300) -> str:
    """Run an example from the repository root; return its stdout.

    ``script`` is a file under ``examples/`` (``python examples/<script> <args>``) or a module
    (``python -m examples.segmentation.run <args>``).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = ["-m", script] if not script.endswith(".py") else [str(ROOT / "examples" / script)]
    completed = subprocess.run(
        [sys.executable, *command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def run_quick(script: str, output: Path) -> tuple[str, dict]:
    """``--quick --threads 1 --output output``; returns stdout and the parsed results.json."""
    stdout = run_example(script, "--quick", "--threads", "1", "--output", str(output))
    return stdout, json.loads((output / "results.json").read_text())
