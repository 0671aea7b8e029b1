"""What ``--resume`` may change, and the check that refuses everything else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from thumbdet.checkpoints import check_compatible
from thumbdet.settings import leaves
from thumbdet.training.config import TrainConfig

__all__ = ["RESUMABLE_SETTINGS", "changed_settings", "check_resumable"]

#: Settings a ``--resume`` may change (declared ``resumable`` in :mod:`.config`): where the
#: data and outputs are, how long to train, how often to evaluate, and how the data is
#: loaded. Any other difference from the checkpoint's recorded configuration is refused (the
#: optimizer and scheduler state would keep the old values while ``config.json`` recorded
#: the new ones).
RESUMABLE_SETTINGS = tuple(leaf.name for leaf in leaves(TrainConfig) if leaf.meta["resumable"])


def changed_settings(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """``"name: checkpoint has A, this run has B"`` for each setting a resume cannot change.

    Args:
        recorded: The checkpoint's ``"config"`` (a :meth:`TrainConfig.to_dict`, or the flat
            configuration of thumbdet 0.1.0).
        config: The resuming run's configuration.
    """
    try:
        before = json.loads(json.dumps(TrainConfig.from_dict(dict(recorded)).flat()))
    except (TypeError, ValueError) as error:
        return [f"config: the checkpoint's recorded configuration is unreadable ({error})"]
    after = json.loads(json.dumps(config.flat()))
    return [
        f"{name}: checkpoint has {before[name]!r}, this run has {after[name]!r}"
        for name in sorted(after)
        if name not in RESUMABLE_SETTINGS and before.get(name) != after[name]
    ]


def check_resumable(
    checkpoint: dict[str, Any], path: Path, meta: dict[str, Any], config: TrainConfig
) -> None:
    """Refuse to resume a checkpoint of another model, mode, scale, class set or settings.

    Raises:
        IncompatibleCheckpointError: Another preset, class count, mode, scale, downsampler or
            category set than ``meta`` (this run's).
        ValueError: A setting other than :data:`RESUMABLE_SETTINGS` changed (one line, listing
            each change).
    """
    keys = ("preset", "num_classes", "mode", "scale", "downsampler", "category_ids")
    check_compatible(checkpoint, path, "resume", **{key: meta[key] for key in keys})
    changed = changed_settings(checkpoint.get("config") or {}, config)
    if changed:
        raise ValueError(
            f"cannot --resume {path} with changed settings: "
            + "; ".join(changed)
            + f" (only {', '.join(RESUMABLE_SETTINGS)} may change; resume with the "
            "recorded values, see config.json, or train into a new --output)"
        )
