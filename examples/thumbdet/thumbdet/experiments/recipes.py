"""The demo's recipes: plain mappings of training settings, and each phase's ``TrainConfig``.

A recipe names the generated dataset, the settings every phase shares, and per phase (the
teacher and the two 4x students) what differs; :func:`phase_config` turns a recipe and a
phase (plus an ablation's changes) into the :class:`~thumbdet.training.config.TrainConfig`
that trains it. ``RECIPES["full"]`` is what ``thumbdet demo`` runs, ``RECIPES["quick"]`` the
same pipeline at toy size. The settings were chosen by measuring on a 2-core CPU
(docs/results.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thumbdet.data.synthetic import (
    SyntheticDataset,
    SyntheticSpec,
    default_cache_dir,
    generate_synthetic_dataset,
)
from thumbdet.training.config import TrainConfig

__all__ = ["RECIPES", "DemoRecipe", "phase_config", "prepare_recipe"]


@dataclass(frozen=True)
class DemoRecipe:
    """Everything the demo trains with.

    Args:
        data: the synthetic dataset.
        settings: ``TrainConfig`` settings of every phase (names as in ``thumbdet train``).
        phases: per phase (``teacher``, ``bicubic_4x``, ``thumbdet_4x``), its training ``mode``
            and the settings that differ from ``settings``.
        figure_images: val images shown in Figs. 5 and 6.
        latency_repeats: timed runs per model for images/s.
    """

    data: SyntheticSpec
    settings: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    figure_images: int = 4
    latency_repeats: int = 20


#: What every demo phase shares, whatever the recipe.
_COMMON = {
    "preset": "tiny",
    "scale": 4,
    "downsampler": "thumbdet",
    "student_init": "random",
    "device": "cpu",
    "num_workers": 0,  # PNGs of 128 px decode in microseconds; workers only cost on 2 cores
    "eval_every": 0,  # no val data in training: each phase is evaluated once, at the end
    # Random flips only: Deformable DETR's multi-scale resize and crop resample the image,
    # which turns the 1-px textures that *are* the classes of the synthetic data into others.
    "augmentation": "hflip",
}

_FULL = {
    **_COMMON,
    "model_overrides": {"num_queries": 12, "with_box_refine": True},
    "batch_size": 8,
    "lr": 1e-3,
    "lr_backbone": 1e-3,
    "lr_drop": 24,
    "stage1_epochs": 2,
}


def _phases(teacher_epochs: int, student_epochs: int) -> dict[str, dict[str, Any]]:
    students = {"epochs": student_epochs}
    return {
        "teacher": {"mode": "teacher", "epochs": teacher_epochs},
        "bicubic_4x": {"mode": "bicubic", **students},
        "thumbdet_4x": {"mode": "thumbdet", **students},
    }


RECIPES: dict[str, DemoRecipe] = {
    "full": DemoRecipe(
        data=SyntheticSpec(image_size=128, num_train=512, num_val=128),
        settings=_FULL,
        phases=_phases(teacher_epochs=30, student_epochs=30),
    ),
    "quick": DemoRecipe(
        data=SyntheticSpec(image_size=64, num_train=16, num_val=8, seed=1),
        settings={
            **_FULL,
            "model_overrides": {"num_queries": 10, "dec_layers": 1},
            "lr_drop": 100,
            "stage1_epochs": 1,
        },
        phases=_phases(teacher_epochs=1, student_epochs=2),
        figure_images=2,
        latency_repeats=2,
    ),
}
"""``full`` is what ``thumbdet demo`` runs; ``quick`` the same pipeline at toy size."""


def phase_config(
    recipe: DemoRecipe, data: Any, output: Path, phase: str, **changes: Any
) -> TrainConfig:
    """The ``TrainConfig`` of one demo phase.

    Args:
        recipe: the demo recipe.
        data: a :class:`~thumbdet.data.synthetic.SyntheticDataset`.
        output: the phase's folder.
        phase: a key of ``recipe.phases`` (the ablations' variants start from one).
        **changes: any other setting by name (``teacher=``, ``logit_weight=0``...).
    """
    size = recipe.data.image_size
    return TrainConfig.from_dict(
        {
            "train_images": str(data.train_images),
            "train_ann": str(data.train_ann),
            "output": str(output),
            "short_side": [size],
            "max_size": size,
            **recipe.settings,
            **recipe.phases[phase],
            **changes,
        }
    )


def prepare_recipe(
    quick: bool, data_dir: str | os.PathLike | None = None, progress: bool = True
) -> tuple[str, DemoRecipe, SyntheticDataset]:
    """The recipe's name (``"quick"`` or ``"full"``), the recipe, and its dataset, generated
    into ``data_dir`` (default: ``demo-NAME`` in the thumbdet cache folder) unless there."""
    name = "quick" if quick else "full"
    recipe = RECIPES[name]
    root = Path(data_dir) if data_dir is not None else default_cache_dir() / f"demo-{name}"
    return name, recipe, generate_synthetic_dataset(root, recipe.data, progress=progress)
