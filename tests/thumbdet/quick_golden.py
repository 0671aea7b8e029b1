"""What the quick demo and quick ablations trained, reduced to numbers that change when any
computation does: each epoch's losses, checksums of the saved weights and the COCO metrics.

``tests/thumbdet/data/quick_golden.json`` holds these numbers as recorded before the
training code was reorganised (issue 14); ``test_demo`` and ``test_ablate`` compare their
quick runs with it. To record it again (only when a change of results is intended, and say
so in the commit)::

    THUMBDET_MSDA_BACKEND=pytorch OMP_NUM_THREADS=1 thumbdet demo --quick --output DIR
    (and ``thumbdet ablate TABLE --quick --output DIR`` for each table)
    python tests/thumbdet/quick_golden.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks._harness import cpu_model
from thumbdet.checkpoints import load_checkpoint

GOLDEN = Path(__file__).parent / "data" / "quick_golden.json"
#: The MSDA backend of the recorded runs (``THUMBDET_MSDA_BACKEND``): the PyTorch path, which
#: needs no compiler; the compiled kernel rounds differently.
GOLDEN_BACKEND = "pytorch"
#: Epoch statistics that measure time, not computation.
_TIMING = ("images_per_s",)


def _checksums(state: dict[str, torch.Tensor] | None) -> list[float] | None:
    if state is None:
        return None
    values = [t.double().flatten() for t in state.values() if t.is_floating_point()]
    flat = torch.cat(values) if values else torch.zeros(1, dtype=torch.float64)
    return [float(flat.sum()), float(flat.abs().sum()), float((flat * flat).sum())]


def phase_fingerprint(folder: str | Path) -> dict[str, Any]:
    """The losses, weight checksums and metrics of one trained phase folder."""
    folder = Path(folder)
    epochs = []
    for line in (folder / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "epoch":
            train = {k: v for k, v in record["train"].items() if k not in _TIMING}
            epochs.append({"epoch": record["epoch"], "stage": record["stage"], "train": train})
    checkpoint = load_checkpoint(folder / "checkpoint.pth", training_state=False)
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text())["metrics"] if metrics_file.exists() else None
    return {
        "epochs": epochs,
        "model": _checksums(checkpoint["model"]),
        "downsampler": _checksums(checkpoint.get("downsampler")),
        "metrics": metrics,
    }


def machine() -> dict[str, str]:
    """What bit-identical results depend on besides the code."""
    return {"torch": torch.__version__, "processor": cpu_model()}


def compare(phases: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between ``phases`` (name -> :func:`phase_fingerprint`) and the golden file.

    Bit-identical on the machine and torch version that recorded it; elsewhere (another CPU
    or BLAS may round differently) within a relative 1e-4.
    """
    golden = json.loads(GOLDEN.read_text())
    exact = golden["machine"] == machine()
    problems = []
    for name, found in phases.items():
        if name not in golden["phases"]:
            problems.append(f"{name}: not in {GOLDEN.name}")
            continue
        expected = dict(golden["phases"][name])
        if found["metrics"] is None:  # trained but not evaluated here (an ablation's teacher)
            expected["metrics"] = None
        problems += [f"{name}: {p}" for p in _diff(expected, found, "", exact)]
    return problems


def _diff(expected: Any, found: Any, where: str, exact: bool) -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        if set(expected) != set(found):
            return [f"{where or 'keys'}: {sorted(expected)} != {sorted(found)}"]
        return [p for k in expected for p in _diff(expected[k], found[k], f"{where}.{k}", exact)]
    if isinstance(expected, list) and isinstance(found, list):
        if len(expected) != len(found):
            return [f"{where}: {len(expected)} items != {len(found)}"]
        return [
            p
            for i, (e, f) in enumerate(zip(expected, found, strict=True))
            for p in _diff(e, f, f"{where}[{i}]", exact)
        ]
    if (
        isinstance(expected, float)
        and isinstance(found, (int, float))
        and not exact
        and abs(expected - found) <= 1e-4 * max(1.0, abs(expected))
    ):
        return []
    return [] if expected == found else [f"{where}: recorded {expected!r}, now {found!r}"]


def record(folder: str | Path) -> None:
    """Write the golden file from a folder holding the quick demo's and ablations' phases."""
    folder = Path(folder)
    phases = {
        path.parent.name: phase_fingerprint(path.parent)
        for path in sorted(folder.glob("*/checkpoint.pth"))
    }
    payload = {"machine": machine(), "phases": phases}
    GOLDEN.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(f"{len(phases)} phases -> {GOLDEN}")


if __name__ == "__main__":
    record(sys.argv[1])
