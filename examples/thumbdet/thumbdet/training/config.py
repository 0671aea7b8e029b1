"""Training configuration: one dataclass holding every option of ``thumbdet train``."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thumbdet.validation import check_data_settings, check_device, check_number, flag

__all__ = [
    "MODEL_KEYS_SET_ELSEWHERE",
    "MODES",
    "TrainConfig",
    "check_model_overrides",
    "model_keys",
    "parse_model_overrides",
    "read_config_file",
]

#: Training modes of ``thumbdet train --mode``: the full-size teacher, the detector on bicubic
#: thumbnails, and the paper's learned thumbnails with distillation.
MODES = ("teacher", "bicubic", "thumbdet")


@dataclass
class TrainConfig:
    """Every option of a training run; serialisable to JSON and stored in each checkpoint.

    Defaults follow Deformable DETR and Sec. 4.1 of ThumbDet (AdamW, lr 2e-4, backbone lr 2e-5,
    weight decay 1e-4, step decay x0.1, gradient clipping 0.1, short side 480-800, max 1333).

    Args:
        preset: Model preset passed to ``thumbdet.build_model`` (``"paper_r50"``, ``"tiny"``).
        train_images: Folder with the training images.
        train_ann: COCO-format annotation file of the training images.
        val_images: Folder with the validation images (optional).
        val_ann: COCO-format annotation file of the validation images (optional).
        coco_root: Root of the official COCO 2017 layout; fills the four paths above when set.
        output: Folder for ``checkpoint.pth``, ``log.jsonl`` and ``config.json``.
        epochs: Total number of epochs (for ``thumbdet`` mode including stage one).
        resume: Continue from ``output/checkpoint.pth`` exactly where it stopped.
        batch_size: Images per process and step.
        lr: Learning rate of the transformer, heads and downsampler.
        lr_backbone: Learning rate of the backbone.
        weight_decay: AdamW weight decay.
        lr_drop: The learning rate is multiplied by 0.1 every ``lr_drop`` epochs.
        clip_max_norm: Gradient clipping norm (0 disables clipping).
        num_workers: Data loader workers per process.
        short_side: Short sides for multi-scale training; the largest is used for evaluation.
            ``None`` means Deformable DETR's 480, 512, ..., 800.
        max_size: Longest side after resizing.
        augmentation: Training augmentation: ``"deformable_detr"`` (flip, multi-scale resize,
            random crop), ``"flip"`` (flip and multi-scale resize) or ``"none"``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). Under torchrun each
            process takes the GPU of its ``LOCAL_RANK``.
        seed: Seed of every random number generator.
        pretrained_backbone: Load ImageNet weights for the backbone (timm download).
        backbone_weights: Local file with backbone weights (implies pretrained weights).
        eval_every: Evaluate on the validation set every this many epochs (0: never; the last
            epoch is always evaluated when validation data is given).
        mode: ``"teacher"``, ``"bicubic"`` or ``"thumbdet"``.
        scale: Thumbnail scale for ``bicubic`` and ``thumbdet`` (2 or 4).
        teacher: Teacher checkpoint for ``thumbdet`` mode.
        downsampler: Registry name of the learned downsampler (``thumbdet`` mode).
        stage1_epochs: Epochs of stage one (only the downsampler, on the moment loss).
        moment: Use the moment-matching loss L_mm.
        logit: Use the logit distillation loss L_cls (with the Query Filter).
        feature: Use the feature distillation loss L_fm on the backbone maps.
        gamma: Weight of L_mm (Eq. 10).
        lam: Weight of the standard-deviation term inside L_mm (lambda of Eq. 5).
        alpha: Weight of L_cls (Eq. 9).
        beta: Weight of L_fm (Eq. 9).
        temperature: Temperature T of the logit distillation (Eq. 7).
        threshold: Query Filter threshold on the teacher's top class probability.
        logit_pairing: Which student query is compared with which teacher query in L_cls:
            ``"index"`` (same slot, as Algorithm 1 of the paper) or ``"hungarian"`` (optimal
            one-to-one pairing by class distribution, for separately initialised students).
        student_init: ``"random"`` (the paper) or ``"teacher"`` (start from the teacher weights).
        freeze_downsampler_stage2: Keep the downsampler fixed in stage two (Table 5).
        one_stage: Skip stage one (Table 5, "one-stage").
        max_steps_per_epoch: Stop each epoch after this many steps (0: whole epoch); for
            smoke tests.
        skip_bad_images: Leave out images whose file is missing or cannot be decoded (counted
            in a warning) instead of refusing to start.
        model_overrides: Keyword overrides passed to ``build_model``/``build_criterion``.
    """

    preset: str = "tiny"
    train_images: str | None = None
    train_ann: str | None = None
    val_images: str | None = None
    val_ann: str | None = None
    coco_root: str | None = None
    output: str = "runs/thumbdet"
    epochs: int = 50
    resume: bool = False
    batch_size: int = 2
    lr: float = 2e-4
    lr_backbone: float = 2e-5
    weight_decay: float = 1e-4
    lr_drop: int = 40
    clip_max_norm: float = 0.1
    num_workers: int = 2
    short_side: list[int] | None = None
    max_size: int = 1333
    augmentation: str = "deformable_detr"
    device: str | None = None
    seed: int = 42
    pretrained_backbone: bool = False
    backbone_weights: str | None = None
    eval_every: int = 1
    mode: str = "teacher"
    scale: int = 4
    teacher: str | None = None
    downsampler: str = "thumbdet"
    stage1_epochs: int = 5
    moment: bool = True
    logit: bool = True
    feature: bool = True
    gamma: float = 1.0
    lam: float = 0.1
    alpha: float = 0.5
    beta: float = 0.1
    temperature: float = 1.0
    threshold: float = 0.5
    logit_pairing: str = "index"
    student_init: str = "random"
    freeze_downsampler_stage2: bool = False
    one_stage: bool = False
    max_steps_per_epoch: int = 0
    skip_bad_images: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.coco_root is not None:
            root = Path(self.coco_root)
            self.train_images = self.train_images or str(root / "train2017")
            self.train_ann = self.train_ann or str(root / "annotations/instances_train2017.json")
            self.val_images = self.val_images or str(root / "val2017")
            self.val_ann = self.val_ann or str(root / "annotations/instances_val2017.json")
        if self.short_side is not None:
            self.short_side = [int(side) for side in self.short_side]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option for an inconsistent configuration."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "thumbdet" and not self.teacher:
            raise ValueError("--mode thumbdet needs --teacher CKPT (a trained teacher checkpoint)")
        if self.student_init not in ("random", "teacher"):
            raise ValueError(
                f"student_init must be 'random' or 'teacher', got {self.student_init!r}"
            )
        if self.augmentation not in ("deformable_detr", "flip", "none"):
            raise ValueError(
                "augmentation must be 'deformable_detr', 'flip' or 'none', "
                f"got {self.augmentation!r}"
            )
        if self.logit_pairing not in ("index", "hungarian"):
            raise ValueError(
                f"logit_pairing must be 'index' or 'hungarian', got {self.logit_pairing!r}"
            )
        if self.student_init == "teacher" and self.mode != "thumbdet":
            raise ValueError("--student-init teacher needs --mode thumbdet and --teacher")
        if not self.train_images or not self.train_ann:
            raise ValueError("train_images and train_ann are required (or coco_root)")
        if (self.val_images is None) != (self.val_ann is None):
            raise ValueError("val_images and val_ann must be given together")
        self._check_numbers()
        check_device(self.device)
        self._check_model()

    def _check_model(self) -> None:
        """The preset exists and the overrides give a valid detector (``d_model % nheads``...)."""
        from thumbdet.models import get_config

        check_model_overrides(self.model_overrides)
        try:
            get_config(self.preset, **self.model_overrides)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--preset {self.preset} with --model overrides: {error}") from None

    def _check_numbers(self) -> None:
        """Every numeric setting in its range (one line naming the flag)."""
        check_data_settings(self.batch_size, self.num_workers, self.short_side, self.max_size)
        for name in ("epochs", "lr_drop", "scale"):
            check_number(flag(name), getattr(self, name), minimum=1, integer=True)
        for name in ("seed", "eval_every", "max_steps_per_epoch", "stage1_epochs"):
            check_number(flag(name), getattr(self, name), minimum=0, integer=True)
        for name in ("lr", "temperature"):
            check_number(flag(name), getattr(self, name), positive=True)
        non_negative = ("lr_backbone", "weight_decay", "clip_max_norm", "gamma", "lam")
        for name in (*non_negative, "alpha", "beta"):
            check_number(flag(name), getattr(self, name), minimum=0)
        check_number("--threshold", self.threshold, minimum=0, maximum=1)

    @property
    def stage1(self) -> int:
        """Epochs of stage one actually used (0 for ``--one-stage`` and non-thumbdet modes)."""
        if self.mode != "thumbdet" or self.one_stage:
            return 0
        return self.stage1_epochs

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The configuration as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a configuration from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}")
        return cls(**values)


#: ``DetectorConfig`` fields that ``--model`` does not set, and what sets them instead.
MODEL_KEYS_SET_ELSEWHERE = {
    "preset": "--preset",
    "num_classes": "the training data's categories",
    "pretrained_backbone": "--pretrained-backbone",
    "backbone_weights": "--backbone-weights",
    "lr": "--lr",
    "lr_backbone": "--lr-backbone",
    "weight_decay": "--weight-decay",
    "clip_max_norm": "--clip-max-norm",
}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _detector_fields() -> dict[str, Any]:
    """``DetectorConfig`` field name -> its type (imported here: the CLI's help stays fast)."""
    from thumbdet.models.presets import DetectorConfig

    return typing.get_type_hints(DetectorConfig)


def model_keys() -> list[str]:
    """The ``DetectorConfig`` fields ``thumbdet train --model KEY=VALUE`` sets."""
    return sorted(set(_detector_fields()) - set(MODEL_KEYS_SET_ELSEWHERE))


def _model_value(key: str, value: Any, kind: Any) -> Any:
    """``value`` (text from the command line, or a JSON/YAML value) as a value of type ``kind``.

    Raises:
        ValueError: one line naming ``--model KEY`` with what was expected and what was given.
    """
    options = typing.get_args(kind) if typing.get_origin(kind) is not None else ()
    if type(None) in options:  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = next(option for option in options if option is not type(None))
    if typing.get_origin(kind) is tuple:  # tuple[int, ...]: "1,2,2,2" or a list
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError(f"--model {key}: expected comma-separated integers, got {value!r}")
        return tuple(_model_value(key, item, int) for item in items)
    if kind is bool:
        text = str(value).strip().lower() if isinstance(value, (str, bool)) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"--model {key}: expected true or false, got {value!r}")
    if kind in (int, float):
        name = "an integer" if kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"--model {key}: expected {name}, got {value!r}")
        try:
            number = kind(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"--model {key}: expected {name}, got {value!r}") from None
        if kind is int and number != int(number):
            raise ValueError(f"--model {key}: expected {name}, got {value!r}")
        return kind(number)
    if not isinstance(value, str) or not value:
        raise ValueError(f"--model {key}: expected a name, got {value!r}")
    return value


def check_model_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides of ``DetectorConfig`` fields, each converted to its field's type.

    Raises:
        ValueError: one line naming the key: unknown (listing the valid ones), set by another
            flag, or a value of the wrong type.
    """
    if not overrides:
        return {}
    fields = _detector_fields()
    checked = {}
    for key, value in overrides.items():
        if key in MODEL_KEYS_SET_ELSEWHERE:
            raise ValueError(f"--model {key}: set by {MODEL_KEYS_SET_ELSEWHERE[key]}")
        if key not in fields:
            raise ValueError(f"--model {key}: unknown key; valid keys: {', '.join(model_keys())}")
        checked[key] = _model_value(key, value, fields[key])
    return checked


def parse_model_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["num_queries=12", "with_box_refine=true"]`` -> ``{"num_queries": 12, ...}``, typed and
    checked by :func:`check_model_overrides`; a later item wins over an earlier one.

    Example:
        >>> parse_model_overrides(["num_queries=12", "with_box_refine=true"])
        {'num_queries': 12, 'with_box_refine': True}
    """
    overrides = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--model {item}: expected KEY=VALUE, e.g. num_queries=100")
        overrides[key.strip()] = value
    return check_model_overrides(overrides)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON file, or a YAML file (``.yaml``/``.yml``, needs PyYAML).

    Raises:
        ValueError: unreadable or not a mapping, or YAML without PyYAML (one line, naming it).
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise ValueError(
                f"--config {path}: YAML needs PyYAML (pip install pyyaml), or use JSON"
            ) from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not valid YAML: {error}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path}: not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings, got {values!r:.80}")
    return values
