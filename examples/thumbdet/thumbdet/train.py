"""Programmatic training: ``train(config)``, ``evaluate_checkpoint``, ``load_detector``.

Three modes (``TrainConfig.mode``):

- ``teacher``: Deformable DETR on full-size images;
- ``bicubic``: the same detector on fixed bicubic thumbnails (the paper's "Bicubic" row);
- ``thumbdet``: a learned downsampler + student, distilled from a frozen teacher checkpoint
  with :class:`learnthumb.ThumbnailDistillation` (two stages, Algorithm 2 of the paper).

Every checkpoint holds the detector (and for students the downsampler), so
:func:`load_detector` rebuilds a model that takes *full-size* images in every mode.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from learnthumb import (
    DistillWeights,
    InterpolateDownsampler,
    ThumbnailDistillation,
    TwoStageSchedule,
    create_downsampler,
    thumbnail_size,
)
from thumbdet.checkpoint import (
    capture_rng_state,
    check_compatible,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from thumbdet.config import TrainConfig
from thumbdet.data import CocoDetection, DetectionCollator, make_transforms
from thumbdet.distributed import (
    DistributedContext,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from thumbdet.engine import evaluate, train_one_epoch
from thumbdet.evaluation import write_metrics
from thumbdet.models import DetectorConfig, build_model
from thumbdet.thumbnail_detector import ThumbnailDetector

__all__ = [
    "CHECKPOINT_NAME",
    "Trainer",
    "evaluate_checkpoint",
    "load_detector",
    "train",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pth"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"


def _build_criterion(model_config: DetectorConfig) -> Any:
    from thumbdet.criterion import build_criterion

    return build_criterion(model_config)


def _build_postprocess() -> Any:
    from thumbdet.postprocess import PostProcess

    return PostProcess()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may use the global state)
    torch.manual_seed(seed)


def _make_downsampler(name: str, scale: int) -> nn.Module:
    """A registry downsampler, checked to produce exact ``scale`` thumbnails."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    try:
        downsampler = create_downsampler(name, scale=scale)
        probe_size = (4 * scale + 1, 4 * scale + 3)
        with torch.no_grad():
            probe = downsampler(torch.rand(1, 3, *probe_size))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"downsampler {name!r} cannot produce scale-{scale} thumbnails: {error}"
        ) from error
    expected = thumbnail_size(probe_size, scale)
    if tuple(probe.shape) != (1, 3, *expected):
        raise ValueError(
            f"downsampler {name!r} cannot produce scale-{scale} thumbnails: a "
            f"{probe_size} image gave shape {tuple(probe.shape[-2:])}, expected {expected}"
        )
    return downsampler


def _checkpoint_meta(config: TrainConfig, dataset: CocoDetection) -> dict[str, Any]:
    student = config.mode != "teacher"
    downsampler = {"bicubic": "bicubic", "thumbdet": config.downsampler}.get(config.mode)
    return {
        "preset": config.preset,
        "num_classes": dataset.num_classes,
        "mode": config.mode,
        "scale": config.scale if student else None,
        "downsampler": downsampler,
        "category_ids": list(dataset.category_ids),
        "category_names": list(dataset.category_names),
    }


def load_detector(
    checkpoint: str | Path | dict[str, Any], device: str | torch.device = "cpu"
) -> nn.Module:
    """The model for inference from a training checkpoint, in eval mode.

    It takes *full-size* images in [0, 1] and a padding mask (``model(images,
    padding_mask=None)``) in every mode: a teacher is the detector itself, a bicubic or
    ThumbDet student is a :class:`~thumbdet.thumbnail_detector.ThumbnailDetector` (its
    downsampler, then the detector; ``.downsampler`` and ``.detector`` attributes). Boxes are
    normalised, so post-processing with each image's original size gives original coordinates.
    The checkpoint's ``"meta"`` (mode, scale, category ids and names) is attached as
    ``model.checkpoint_meta``.

    Args:
        checkpoint: Path of a checkpoint written by :func:`train`, or the loaded dict.
        device: Device to put the model on.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    meta = checkpoint["meta"]
    model_config = DetectorConfig.from_dict(
        dict(checkpoint["model_config"], pretrained_backbone=False, backbone_weights=None)
    )
    detector = build_model(model_config)
    detector.load_state_dict(checkpoint["model"])
    model: nn.Module = detector
    if meta["mode"] != "teacher":
        downsampler = create_downsampler(meta["downsampler"], scale=meta["scale"])
        if checkpoint.get("downsampler") is not None:
            downsampler.load_state_dict(checkpoint["downsampler"])
        model = ThumbnailDetector(detector, downsampler, meta["scale"])
    model.checkpoint_meta = dict(meta)
    return model.to(device).eval()


@dataclass
class _Parts:
    """What a training run trains, evaluates and saves."""

    trained: nn.Module  # what the engine calls (detector, ThumbnailDetector or distillation)
    detector: nn.Module  # the (student) detector whose weights are saved under "model"
    downsampler: nn.Module | None  # saved under "downsampler" for students
    inference: nn.Module  # full-size images in, for evaluation
    param_groups: list[dict[str, Any]]
    stage2_frozen: list[nn.Parameter] = field(default_factory=list)


class Trainer:
    """One training run of :class:`~thumbdet.config.TrainConfig`; :meth:`fit` runs it.

    Everything that can be wrong with the configuration, the data or the teacher checkpoint
    is reported when the trainer is built, before any training step.

    Args:
        config: The run's configuration.
    """

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        self.output = Path(config.output)
        self.checkpoint_path = self.output / CHECKPOINT_NAME
        if self.checkpoint_path.exists() and not config.resume:
            raise FileExistsError(
                f"{self.checkpoint_path} already exists; pass --resume to continue that run or "
                "choose another --output (nothing was overwritten)"
            )
        self.context: DistributedContext = init_distributed(config.device)
        _seed_everything(config.seed + self.context.rank)
        divisibility = config.scale if config.mode != "teacher" else 1
        self.collator = DetectionCollator(divisibility)
        self.train_set = CocoDetection(
            config.train_images,
            config.train_ann,
            make_transforms("train", config.short_side, config.max_size),
        )
        self.val_set = None
        if config.val_images is not None:
            self.val_set = CocoDetection(
                config.val_images,
                config.val_ann,
                make_transforms("val", config.short_side, config.max_size),
            )
            if self.val_set.category_ids != self.train_set.category_ids:
                raise ValueError(
                    f"val annotation file {config.val_ann} has category ids "
                    f"{self.val_set.category_ids}, train has {self.train_set.category_ids}"
                )
        self.meta = _checkpoint_meta(config, self.train_set)
        overrides = dict(config.model_overrides)
        overrides.update(
            num_classes=self.train_set.num_classes,
            pretrained_backbone=config.pretrained_backbone or bool(config.backbone_weights),
            backbone_weights=config.backbone_weights,
        )
        self.parts = self._build_parts(overrides)
        self.model_config = self.parts.detector.config
        self.criterion = _build_criterion(self.model_config)
        self.postprocess = _build_postprocess()
        device = self.context.device
        self.parts.trained.to(device)
        self.parts.inference.to(device)
        self.optimizer = torch.optim.AdamW(
            self.parts.param_groups, lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_drop, 0.1)
        self.trained: nn.Module = self.parts.trained
        if self.context.enabled:
            self.trained = nn.parallel.DistributedDataParallel(
                self.parts.trained,
                device_ids=[device.index] if device.type == "cuda" else None,
                # Stage one of ThumbDet never runs the student.
                find_unused_parameters=config.mode == "thumbdet",
            )
        self.start_epoch = 0
        if config.resume and self.checkpoint_path.exists():
            self._resume()
        elif config.resume:
            logger.warning("--resume: no %s yet, starting from scratch", self.checkpoint_path)

    # ------------------------------------------------------------------ building the model
    def _build_parts(self, overrides: dict[str, Any]) -> _Parts:
        config = self.config
        if config.mode == "teacher":
            detector = build_model(config.preset, **overrides)
            groups = detector.param_groups(config.lr, config.lr_backbone)
            return _Parts(detector, detector, None, detector, groups)
        if config.mode == "bicubic":
            detector = build_model(config.preset, **overrides)
            downsampler = InterpolateDownsampler(config.scale)
            student = ThumbnailDetector(detector, downsampler, config.scale)
            groups = detector.param_groups(config.lr, config.lr_backbone)
            return _Parts(student, detector, downsampler, student, groups)

        teacher = self._load_teacher()
        downsampler = _make_downsampler(config.downsampler, config.scale)
        student = build_model(config.preset, **overrides)
        if config.student_init == "teacher":
            student.load_state_dict(teacher.state_dict())
        weights = DistillWeights(
            moment=config.gamma if config.moment else 0.0,
            logit=config.alpha if config.logit else 0.0,
            feature=config.beta if config.feature else 0.0,
            lam=config.lam,
            temperature=config.temperature,
            threshold=config.threshold,
        )
        distillation = ThumbnailDistillation(
            downsampler,
            teacher,
            student,
            features="backbone_features",
            logits="pred_logits",
            weights=weights,
            schedule=TwoStageSchedule(config.stage1),
            logit_activation="sigmoid",  # Deformable DETR classifies with a sigmoid focal loss
            mask_argument="padding_mask",
            scale=config.scale,
        )
        groups = student.param_groups(config.lr, config.lr_backbone)
        groups.append({"params": list(downsampler.parameters()), "lr": config.lr})
        groups = [group for group in groups if group["params"]]
        frozen = list(downsampler.parameters()) if config.freeze_downsampler_stage2 else []
        inference = ThumbnailDetector(student, downsampler, config.scale)
        return _Parts(distillation, student, downsampler, inference, groups, frozen)

    def _load_teacher(self) -> nn.Module:
        config = self.config
        path = Path(config.teacher)
        checkpoint = load_checkpoint(path)
        check_compatible(
            checkpoint,
            path,
            "teacher",
            mode="teacher",
            preset=config.preset,
            num_classes=self.train_set.num_classes,
            category_ids=list(self.train_set.category_ids),
        )
        teacher = load_detector(checkpoint)
        teacher.requires_grad_(False)
        return teacher

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.checkpoint_path)
        expected = {key: self.meta[key] for key in ("preset", "num_classes", "mode", "scale")}
        expected["downsampler"] = self.meta["downsampler"]
        expected["category_ids"] = self.meta["category_ids"]
        check_compatible(checkpoint, self.checkpoint_path, "resume", **expected)
        self.parts.detector.load_state_dict(checkpoint["model"])
        if self.parts.downsampler is not None and checkpoint.get("downsampler") is not None:
            self.parts.downsampler.load_state_dict(checkpoint["downsampler"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        rng = checkpoint["rng"]
        restore_rng_state(rng[self.context.rank] if isinstance(rng, list) else rng)
        self.start_epoch = int(checkpoint["epoch"])
        logger.info("resumed %s at epoch %d", self.checkpoint_path, self.start_epoch)

    def _checkpoint_state(self, epoch: int, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        downsampler = self.parts.downsampler
        return {
            "model": self.parts.detector.state_dict(),
            "downsampler": downsampler.state_dict() if downsampler is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "rng": rng_states,
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "meta": self.meta,
        }

    # ------------------------------------------------------------------ data
    def _loader(self, dataset: CocoDetection, epoch: int, train: bool) -> DataLoader:
        context = self.context
        # A DistributedSampler with one replica is a seeded shuffle: the order of an epoch
        # depends on (seed, epoch) only, so a resumed run sees the same batches.
        sampler = DistributedSampler(
            dataset,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=train,
            seed=self.config.seed,
        )
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(
            self.config.seed * 100_003 + epoch * 1_009 + context.rank
        )
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size if train else max(1, self.config.batch_size),
            sampler=sampler,
            num_workers=self.config.num_workers,
            collate_fn=self.collator,
            generator=generator,
            pin_memory=context.device.type == "cuda",
        )

    # ------------------------------------------------------------------ the loop
    def _log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        with (self.output / LOG_NAME).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def fit(self) -> Path:
        """Train from :attr:`start_epoch` to ``config.epochs``; returns the checkpoint path."""
        config, context = self.config, self.context
        if context.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / CONFIG_NAME).write_text(config.to_json() + "\n")
            self._log(
                {
                    "event": "start",
                    "start_epoch": self.start_epoch,
                    "world_size": context.world_size,
                    "train_images": len(self.train_set),
                    "train_degenerate_boxes_dropped": self.train_set.num_degenerate_boxes,
                    "val_images": len(self.val_set) if self.val_set is not None else 0,
                    "val_degenerate_boxes_dropped": (
                        self.val_set.num_degenerate_boxes if self.val_set is not None else 0
                    ),
                    "meta": self.meta,
                }
            )
        show = context.is_main
        for epoch in range(self.start_epoch, config.epochs):
            started = time.perf_counter()
            # Augmentation draws from python's `random`; seed it per epoch and rank.
            random.seed(config.seed * 100_003 + epoch * 1_009 + context.rank)
            stage = self.parts.trained.stage(epoch) if config.mode == "thumbdet" else 2
            frozen = self.parts.stage2_frozen if stage == 2 else []
            stats = train_one_epoch(
                self.trained,
                self.criterion,
                self._loader(self.train_set, epoch, train=True),
                self.optimizer,
                context.device,
                epoch,
                clip_max_norm=config.clip_max_norm,
                frozen_parameters=frozen,
                max_steps=config.max_steps_per_epoch,
                show_progress=show,
            )
            self.scheduler.step()
            metrics = None
            last = epoch + 1 == config.epochs
            due = config.eval_every > 0 and (epoch + 1) % config.eval_every == 0
            if self.val_set is not None and stage == 2 and (due or last):
                metrics = self.evaluate()
            rng_states = _gather_rng_states()
            if context.is_main:
                save_checkpoint(self._checkpoint_state(epoch + 1, rng_states), self.checkpoint_path)
                record = {
                    "event": "epoch",
                    "epoch": epoch,
                    "stage": stage,
                    "train": stats,
                    "val": metrics,
                    "epoch_seconds": time.perf_counter() - started,
                }
                self._log(record)
                summary = f"epoch {epoch} (stage {stage}) loss {stats.get('loss', 0.0):.4f}"
                if metrics is not None:
                    summary += f" | val AP {metrics['AP']:.2f} AP50 {metrics['AP50']:.2f}"
                logger.info(summary)
            barrier()
        return self.checkpoint_path

    def evaluate(self, verbose: bool = False) -> dict[str, float]:
        """COCO AP of the current model on the validation set (full-size images in)."""
        if self.val_set is None:
            raise ValueError("no validation data: set val_images and val_ann")
        return evaluate(
            self.parts.inference,
            self._loader(self.val_set, 0, train=False),
            self.postprocess,
            self.val_set,
            self.context.device,
            verbose=verbose,
            show_progress=self.context.is_main,
        )

    def close(self) -> None:
        """Tear down the process group (if this trainer started one)."""
        cleanup_distributed()


def _gather_rng_states() -> list[dict[str, Any]]:
    from thumbdet.distributed import all_gather_objects

    return all_gather_objects(capture_rng_state())


def train(config: TrainConfig) -> Path:
    """Train as ``config`` says and return the path of the final checkpoint.

    Works in one process or under ``torchrun`` (one process per GPU, or gloo on CPU); only
    rank 0 writes. ``config.resume`` continues from ``config.output/checkpoint.pth``.

    Example:
        >>> path = train(TrainConfig(preset="tiny", train_images="imgs", train_ann="a.json",
        ...                          epochs=1, output="runs/x"))  # doctest: +SKIP
    """
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def evaluate_checkpoint(
    checkpoint: str | Path,
    images_dir: str | Path,
    annotation_file: str | Path,
    output: str | Path | None = None,
    batch_size: int = 2,
    num_workers: int = 0,
    short_side: list[int] | None = None,
    max_size: int | None = None,
    device: str | None = None,
    verbose: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    """COCO box AP of a checkpoint on a COCO-format dataset (full-size images in).

    Args:
        checkpoint: A checkpoint from :func:`train` (any mode).
        images_dir: Folder of the images.
        annotation_file: COCO-format annotation file; its categories must be the checkpoint's.
        output: Optional JSON file for the metrics.
        batch_size: Images per batch.
        num_workers: Data loader workers.
        short_side: Resize sizes (the largest is used); default: the training run's.
        max_size: Longest side; default: the training run's.
        device: ``"cpu"``/``"cuda"``/``None`` (CUDA when available).
        verbose: Let pycocotools print its summary.
        show_progress: Show a tqdm bar.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in percent.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    state = load_checkpoint(checkpoint)
    train_config = TrainConfig.from_dict(state["config"])
    meta = state["meta"]
    dataset = CocoDetection(
        images_dir,
        annotation_file,
        make_transforms(
            "val",
            short_side if short_side is not None else train_config.short_side,
            max_size if max_size is not None else train_config.max_size,
        ),
    )
    if list(dataset.category_ids) != list(meta["category_ids"]):
        raise ValueError(
            f"{annotation_file} has category ids {dataset.category_ids}, but {checkpoint} was "
            f"trained on {meta['category_ids']}"
        )
    model = load_detector(state, device)
    divisibility = meta["scale"] if meta["mode"] != "teacher" else 1
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=DetectionCollator(divisibility),
    )
    metrics = evaluate(
        model,
        loader,
        _build_postprocess(),
        dataset,
        torch.device(device),
        verbose=verbose,
        show_progress=show_progress,
    )
    if output is not None:
        write_metrics(metrics, output)
    return metrics
