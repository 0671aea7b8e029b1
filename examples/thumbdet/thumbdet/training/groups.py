"""The groups of a run's settings: data, model, optimisation, schedule and distillation.

Each field is a :func:`thumbdet.settings.setting`, declared once with its help, range and
choices; choices come from the modules that own them, imported only when a parser is built
or a configuration validated, so nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thumbdet.settings import setting
from thumbdet.training.model_overrides import parse_model_overrides

__all__ = ["DataSettings", "DistillSettings", "ModelSettings", "OptimSettings", "ScheduleSettings"]


def _augmentations() -> dict[str, str]:
    from thumbdet.data.transforms import AUGMENTATIONS

    return AUGMENTATIONS


def _student_inits() -> dict[str, str]:
    from thumbdet.training.modes import STUDENT_INITS

    return STUDENT_INITS


def _pairings() -> tuple[str, ...]:
    from learnthumb.losses.logit import PAIRINGS

    return PAIRINGS


def _downsamplers() -> list[str]:
    from learnthumb import list_downsamplers

    return list_downsamplers()


@dataclass
class DataSettings:
    """Data (COCO format)."""

    train_images: str | None = setting(None, "folder of the training images", resumable=True)
    train_ann: str | None = setting(
        None, "COCO annotation file of the training images", resumable=True
    )
    val_images: str | None = setting(None, "folder of the validation images", resumable=True)
    val_ann: str | None = setting(
        None, "COCO annotation file of the validation images", resumable=True
    )
    coco_root: str | None = setting(
        None,
        "root of the official COCO 2017 layout (train2017/, val2017/, annotations/); fills the "
        "four paths above",
        resumable=True,
    )
    short_side: list[int] | None = setting(
        None,
        "short side(s) for multi-scale resizing; evaluation uses the largest; unset: "
        "480 512 ... 800 (small datasets: e.g. 96 112 128)",
        minimum=1,
    )
    max_size: int = setting(1333, "longest side after resizing", minimum=1)
    augmentation: str = setting("deformable_detr", "training augmentation", choices=_augmentations)
    batch_size: int = setting(2, "images per process and step", minimum=1)
    num_workers: int = setting(
        2, "data loader worker processes per process", minimum=0, resumable=True
    )
    skip_bad_images: bool = setting(
        False,
        "leave out images whose file is missing or cannot be decoded (counted in a warning) "
        "instead of refusing to start",
        resumable=True,
    )

    def __post_init__(self) -> None:
        if self.coco_root is not None:
            root = Path(self.coco_root)
            self.train_images = self.train_images or str(root / "train2017")
            self.train_ann = self.train_ann or str(root / "annotations/instances_train2017.json")
            self.val_images = self.val_images or str(root / "val2017")
            self.val_ann = self.val_ann or str(root / "annotations/instances_val2017.json")
        if self.short_side is not None:
            self.short_side = [int(side) for side in self.short_side]


@dataclass
class ModelSettings:
    """Model."""

    preset: str = setting("tiny", "detector preset (tiny, paper_r50)")
    model_overrides: dict[str, Any] = setting(
        {},
        "set a field of the preset's DetectorConfig, repeatable: e.g. --model num_queries=12 "
        "--model with_box_refine=true (also enc_layers, dec_layers, d_model, nheads, backbone, "
        "two_stage, ...; booleans true/false, tuples 1,1,1,1, none; an unknown KEY lists them "
        "all)",
        flag="--model",
        parse=parse_model_overrides,
    )
    pretrained_backbone: bool = setting(False, "ImageNet backbone weights from timm")
    backbone_weights: str | None = setting(None, "local file with backbone weights")


@dataclass
class OptimSettings:
    """Optimisation (Deformable DETR / paper Sec. 4.1)."""

    lr: float = setting(
        2e-4, "AdamW learning rate of transformer, heads and downsampler", positive=True
    )
    lr_backbone: float = setting(2e-5, "learning rate of the backbone", minimum=0)
    weight_decay: float = setting(1e-4, "AdamW weight decay", minimum=0)
    lr_drop: int = setting(40, "multiply the lr by 0.1 every N epochs", minimum=1)
    clip_max_norm: float = setting(0.1, "gradient clipping norm (0: no clipping)", minimum=0)


@dataclass
class ScheduleSettings:
    """Schedule (paper Algorithm 2)."""

    epochs: int = setting(
        50, "epochs to train (thumbdet mode: including stage one)", minimum=1, resumable=True
    )
    stage1_epochs: int = setting(
        5,
        "epochs of stage one (thumbdet mode: only the downsampler, on the moment loss; 0: one "
        "stage)",
        minimum=0,
        switches={"--one-stage": (0, "skip stage one (Table 5); same as --stage1-epochs 0")},
    )
    freeze_downsampler_stage2: bool = setting(
        False, "keep the downsampler fixed in stage two (Table 5)"
    )
    eval_every: int = setting(
        1,
        "evaluate every N epochs of stage two (0: only after the last epoch, which is always "
        "evaluated when validation data is given)",
        minimum=0,
        resumable=True,
    )
    max_steps_per_epoch: int = setting(
        0, "cut epochs short (smoke tests; 0: whole epochs)", minimum=0
    )


def _loss_weight(default: float, symbol: str, term: str, loss: str, equation: int) -> Any:
    """The weight setting of one distillation loss: ``--TERM-weight``, spelled ``--SYMBOL`` as
    in the paper too, and ``--no-TERM`` to switch the loss off."""
    name = loss.rsplit(" ", 1)[-1]
    return setting(
        default,
        f"weight {symbol} of the {loss} (Eq. {equation}; 0: off)",
        aliases=(f"--{symbol}",),
        switches={f"--no-{term}": (0.0, f"switch off {name}; same as --{term}-weight 0")},
        minimum=0,
    )


@dataclass
class DistillSettings:
    """Distillation (thumbdet mode, paper Sec. 3.4-3.5)."""

    teacher: str | None = setting(
        None, "teacher checkpoint, run folder or pretrained folder (required by --mode thumbdet)"
    )
    downsampler: str = setting(
        "thumbdet", "learned downsampler from learnthumb's registry", choices=_downsamplers
    )
    student_init: str = setting("random", "how the student starts", choices=_student_inits)
    moment_weight: float = _loss_weight(1.0, "gamma", "moment", "moment-matching loss L_mm", 10)
    logit_weight: float = _loss_weight(0.5, "alpha", "logit", "logit distillation L_cls", 9)
    feature_weight: float = _loss_weight(0.1, "beta", "feature", "feature distillation L_fm", 9)
    lam: float = setting(0.1, "lambda of Eq. (5), weight of the std term inside L_mm", minimum=0)
    temperature: float = setting(
        1.0, "temperature T of the logit distillation (Eq. 7)", positive=True
    )
    threshold: float = setting(
        0.5, "Query Filter threshold on the teacher's top class probability", minimum=0, maximum=1
    )
    logit_pairing: str = setting(
        "index",
        "pair student and teacher queries in L_cls by slot (index, the paper) or by Hungarian "
        "matching (hungarian, for separately initialised students)",
        choices=_pairings,
    )
