"""The demo's recipes: what it trains with, and the ``TrainConfig`` of each of its phases.

``RECIPES["full"]`` is what ``thumbdet demo`` runs, ``RECIPES["quick"]`` the same pipeline at
toy size; :func:`phase_config` turns a recipe into the configuration of one phase (the
teacher, a student, an ablation variant).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thumbdet.data.synthetic import SyntheticSpec
from thumbdet.training.config import TrainConfig

__all__ = ["RECIPES", "DemoRecipe", "phase_config"]


@dataclass(frozen=True)
class DemoRecipe:
    """Everything the demo trains with; chosen by measuring on a 2-core CPU (docs/results.md).

    Args:
        data: the synthetic dataset.
        model_overrides: ``build_model("tiny", **model_overrides)``.
        teacher_epochs: epochs of the full-size teacher.
        student_epochs: epochs of each student (for ThumbDet including stage one).
        stage1_epochs: ThumbDet's stage one (downsampler alone, on the moment loss).
        batch_size: images per step.
        lr: AdamW learning rate of transformer, heads and downsampler.
        lr_backbone: learning rate of the backbone (trained from scratch here).
        lr_drop: the learning rate is multiplied by 0.1 after this many epochs.
        student_init: ``"random"`` (the paper) or ``"teacher"``.
        figure_images: val images shown in Figs. 5 and 6.
        latency_repeats: timed runs per model for images/s.
    """

    data: SyntheticSpec
    model_overrides: dict[str, Any] = field(default_factory=dict)
    teacher_epochs: int = 30
    student_epochs: int = 30
    stage1_epochs: int = 2
    batch_size: int = 8
    lr: float = 2e-4
    lr_backbone: float = 2e-4
    lr_drop: int = 25
    student_init: str = "random"
    figure_images: int = 4
    latency_repeats: int = 20


RECIPES: dict[str, DemoRecipe] = {
    "full": DemoRecipe(
        data=SyntheticSpec(image_size=128, num_train=512, num_val=128),
        model_overrides={"num_queries": 12, "with_box_refine": True},
        teacher_epochs=30,
        student_epochs=30,
        stage1_epochs=2,
        batch_size=8,
        lr=1e-3,
        lr_backbone=1e-3,
        lr_drop=24,
    ),
    "quick": DemoRecipe(
        data=SyntheticSpec(image_size=64, num_train=16, num_val=8, seed=1),
        model_overrides={"num_queries": 10, "dec_layers": 1},
        teacher_epochs=1,
        student_epochs=2,
        stage1_epochs=1,
        batch_size=8,
        lr=1e-3,
        lr_backbone=1e-3,
        lr_drop=100,
        figure_images=2,
        latency_repeats=2,
    ),
}
"""``full`` is what ``thumbdet demo`` runs; ``quick`` the same pipeline at toy size."""


def phase_config(
    recipe: DemoRecipe, data: Any, output: Path, mode: str, **changes: Any
) -> TrainConfig:
    """The ``TrainConfig`` of one demo phase (``mode`` teacher, bicubic or thumbdet).

    Args:
        recipe: the demo recipe.
        data: a :class:`~thumbdet.data.synthetic.SyntheticDataset`.
        output: the phase's folder.
        mode: the training mode.
        **changes: any other ``TrainConfig`` field (``teacher=``, ``logit=False``...).
    """
    size = recipe.data.image_size
    epochs = recipe.teacher_epochs if mode == "teacher" else recipe.student_epochs
    config = TrainConfig(
        preset="tiny",
        train_images=str(data.train_images),
        train_ann=str(data.train_ann),
        output=str(output),
        epochs=epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        lr_backbone=recipe.lr_backbone,
        lr_drop=recipe.lr_drop,
        num_workers=0,  # PNGs of 128 px decode in microseconds; workers only cost on 2 cores
        short_side=[size],
        max_size=size,
        device="cpu",
        eval_every=0,  # no val data in training: each phase is evaluated once, at the end
        mode=mode,
        scale=4,
        downsampler="thumbdet",
        stage1_epochs=recipe.stage1_epochs,
        model_overrides=dict(recipe.model_overrides),
    )
    if mode == "thumbdet":
        config.student_init = recipe.student_init
    return dataclasses.replace(config, **changes)
