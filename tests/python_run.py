"""Run Python in a subprocess from the repository root, as a user would, for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_python(*args: str, timeout: float) -> str:
    """``python args`` from the repository root with one OpenMP thread; assert exit 0.

    Args:
        *args: the interpreter's arguments, e.g. ``"-m", "benchmarks.run", "--quick"``.
        timeout: seconds before the run is killed (and the test fails).

    Returns:
        The run's standard output.
    """
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,  # with -m, the repository's packages import from here, as for a user
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout
