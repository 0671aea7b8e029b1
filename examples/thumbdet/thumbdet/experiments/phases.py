"""The phase cache of the demo and the ablations: train or evaluate once per configuration.

A *phase* is one training run in its own folder (the teacher, a student, an ablation
variant). Its ``phase.json`` holds the fingerprint of the configuration it was trained with
(and of the phases it depends on), whether it completed, and while it runs the id of the
process training it: re-running reuses a completed phase whose fingerprint matches, continues
an interrupted one, starts again when the configuration changed, and refuses to train a folder
that another live process is training. ``metrics.json`` caches the phase's evaluation the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from thumbdet.checkpoints import CHECKPOINT_NAME
from thumbdet.evaluation import evaluate_checkpoint
from thumbdet.files import read_json, write_json
from thumbdet.training.config import TrainConfig
from thumbdet.training.trainer import Trainer

__all__ = ["evaluate_phase", "fingerprint", "run_phase"]


def fingerprint(config: TrainConfig, upstream: str = "") -> str:
    """A short hash of everything in ``config`` that changes the trained weights.

    Args:
        config: The phase's configuration.
        upstream: Fingerprint of the phases this one depends on (a student's teacher).
    """
    values = config.flat()
    # Settings that do not change the trained weights.
    for volatile in ("resume", "output", "device", "num_workers", "eval_every"):
        values.pop(volatile, None)
    text = json.dumps(values, sort_keys=True) + upstream
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (the owner of a phase that has not completed)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(output: Path, state: dict[str, Any]) -> None:
    """Refuse a phase folder that another live process is training.

    Raises:
        FileExistsError: one line naming the folder and the process (as a training run's
            output lock does), so the commands report it without a traceback.
    """
    owner = state.get("pid")
    if not state.get("complete") and owner not in (None, os.getpid()) and _alive(owner):
        raise FileExistsError(
            f"{output} is being trained by process {owner} (another demo or ablation sharing "
            "this phase); wait for it to finish"
        )


def run_phase(config: TrainConfig, upstream: str = "") -> tuple[Path, str]:
    """Train one phase, or reuse/resume it when ``config`` (and ``upstream``) match.

    Training uses random flips only: Deformable DETR's multi-scale resize and crop resample
    the image, which turns the 1-px textures that *are* the classes of the synthetic data into
    other textures.

    Args:
        config: the run; ``config.output`` is the phase folder.
        upstream: fingerprint of the phases this one depends on (the teacher of a student),
            so that a retrained teacher retrains its students.

    Returns:
        ``(checkpoint, fingerprint)``.
    """
    output = Path(config.output)
    phase_fingerprint = fingerprint(config, upstream)
    marker = output / "phase.json"
    checkpoint = output / CHECKPOINT_NAME
    state = read_json(marker) or {}
    _claim(output, state)
    same = state.get("fingerprint") == phase_fingerprint and checkpoint.exists()
    if same and state.get("complete"):
        return checkpoint, phase_fingerprint
    if not same:  # another configuration trained here: start again
        for name in (CHECKPOINT_NAME, "log.jsonl", "config.json", "metrics.json"):
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    running = {"fingerprint": phase_fingerprint, "complete": False, "pid": os.getpid()}
    write_json(marker, running)
    trainer = Trainer(config.replace(resume=same))
    try:
        trainer.fit()
    finally:
        trainer.close()
    write_json(marker, {"fingerprint": phase_fingerprint, "complete": True})
    return checkpoint, phase_fingerprint


def evaluate_phase(
    checkpoint: Path, fingerprint: str, data: Any, progress: bool = True
) -> dict[str, float]:
    """COCO AP of a phase's checkpoint on the val set, cached in ``metrics.json``.

    Args:
        checkpoint: The phase's checkpoint (from :func:`run_phase`).
        fingerprint: Its fingerprint (from :func:`run_phase`): a cache of another one is stale.
        data: A :class:`~thumbdet.data.synthetic.SyntheticDataset`.
        progress: Show a progress bar.
    """
    cache = checkpoint.parent / "metrics.json"
    cached = read_json(cache)
    if isinstance(cached, dict) and cached.get("fingerprint") == fingerprint:
        return cached["metrics"]
    size = data.spec.image_size
    metrics = evaluate_checkpoint(
        checkpoint,
        data.val_images,
        data.val_ann,
        batch_size=16,
        short_side=[size],
        max_size=size,
        device="cpu",
        show_progress=progress,
    )
    write_json(cache, {"fingerprint": fingerprint, "metrics": metrics})
    return metrics
