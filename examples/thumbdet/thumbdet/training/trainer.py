"""Programmatic training: ``train(config)``, ``evaluate_checkpoint``, ``load_detector``.

Three modes (``TrainConfig.mode``):

- ``teacher``: Deformable DETR on full-size images;
- ``bicubic``: the same detector on fixed bicubic thumbnails (the paper's "Bicubic" row);
- ``thumbdet``: a learned downsampler + student, distilled from a frozen teacher checkpoint
  with :class:`learnthumb.ThumbnailDistillation` (two stages, Algorithm 2 of the paper).

Every checkpoint holds the detector (and for students the downsampler), so
:func:`load_detector` rebuilds a model that takes *full-size* images in every mode
(:func:`load_detector` and :func:`evaluate_checkpoint` live in :mod:`thumbdet.checkpoints.loading`).
With the final checkpoint, the model is also written as ``OUTPUT/pretrained``
(:func:`thumbdet.checkpoints.pretrained.save_pretrained`: ``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from thumbdet.checkpoints.format import (
    CHECKPOINT_NAME,
    capture_rng_state,
    check_compatible,
    load_checkpoint,
    remove_interrupted_saves,
    restore_rng_state,
    save_checkpoint,
)
from thumbdet.checkpoints.pretrained import PRETRAINED_DIR, save_pretrained
from thumbdet.data import CocoDetection, DetectionCollator, make_transforms
from thumbdet.data.images import IMAGE_CHECK_CACHE_NAME, write_image_check_cache
from thumbdet.evaluation import evaluate
from thumbdet.models.postprocess import PostProcess
from thumbdet.training.config import TrainConfig
from thumbdet.training.criterion import build_criterion
from thumbdet.training.distributed import (
    DistributedContext,
    all_gather_objects,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from thumbdet.training.engine import check_model_outputs_finite, train_one_epoch
from thumbdet.training.modes import build_training_parts, checkpoint_meta
from thumbdet.training.output_lock import OutputLock
from thumbdet.validation import check_output_folder

__all__ = [
    "CHECKPOINT_NAME",
    "RESUMABLE_SETTINGS",
    "Trainer",
    "changed_settings",
    "train",
]

logger = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"

#: Settings a ``--resume`` may change: where the data and outputs are, how long to train, how
#: often to evaluate, and how the data is loaded. Any other difference from the checkpoint's
#: recorded configuration is refused (the optimizer and scheduler state would keep the old
#: values while ``config.json`` recorded the new ones).
RESUMABLE_SETTINGS = (
    "epochs",
    "resume",
    "output",
    "device",
    "num_workers",
    "eval_every",
    "train_images",
    "train_ann",
    "val_images",
    "val_ann",
    "coco_root",
    "skip_bad_images",
)


def changed_settings(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """``"name: checkpoint has A, this run has B"`` for each setting a resume cannot change.

    Args:
        recorded: The checkpoint's ``"config"`` (a :meth:`TrainConfig.to_dict`).
        config: The resuming run's configuration.
    """
    try:
        before = json.loads(TrainConfig.from_dict(dict(recorded)).to_json())
    except (TypeError, ValueError) as error:
        return [f"config: the checkpoint's recorded configuration is unreadable ({error})"]
    after = json.loads(config.to_json())
    return [
        f"{name}: checkpoint has {before[name]!r}, this run has {after[name]!r}"
        for name in sorted(after)
        if name not in RESUMABLE_SETTINGS and before.get(name) != after[name]
    ]


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise ``KeyboardInterrupt``.

    A checkpoint save interrupted inside ``torch.save`` surfaces as a ``RuntimeError`` from
    the C++ writer instead of a ``KeyboardInterrupt``; deferring the signal lets the save
    finish (the previous checkpoint is replaced atomically) and exits cleanly right after.
    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code may use the global state)
    torch.manual_seed(seed)


class Trainer:
    """One training run of :class:`~thumbdet.training.config.TrainConfig`; :meth:`fit` runs it.

    Everything that can be wrong with the configuration, the data or the teacher checkpoint
    is reported when the trainer is built, before any training step.

    The trainer holds the lock of its output folder
    (:class:`~thumbdet.training.output_lock.OutputLock`,
    rank 0 of a distributed run) from its creation until :meth:`close`, so a second run into
    the same folder is refused; it releases it itself when its creation fails. Use it as a
    context manager or call :meth:`close`.

    Args:
        config: The run's configuration.

    Raises:
        OutputLockedError: Another run trains into ``config.output``.
    """

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        check_output_folder(config.output)
        self.config = config
        self.output = Path(config.output)
        self.checkpoint_path = self.output / CHECKPOINT_NAME
        self._lock: OutputLock | None = None
        if int(os.environ.get("RANK", "0")) == 0:  # the rank that writes
            self._lock = OutputLock(self.output)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        config = self.config
        for temp in remove_interrupted_saves(self.checkpoint_path) if self._lock else []:
            logger.warning("removed %s, left by an interrupted checkpoint save", temp)
        image_cache = self.output / IMAGE_CHECK_CACHE_NAME
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
            make_transforms("train", config.short_side, config.max_size, config.augmentation),
            skip_bad_images=config.skip_bad_images,
            image_check_cache=image_cache,
        )
        self.val_set = None
        if config.val_images is not None:
            self.val_set = CocoDetection(
                config.val_images,
                config.val_ann,
                make_transforms("val", config.short_side, config.max_size),
                skip_bad_images=config.skip_bad_images,
                image_check_cache=image_cache,
            )
            if self.val_set.category_ids != self.train_set.category_ids:
                raise ValueError(
                    f"val annotation file {config.val_ann} has category ids "
                    f"{self.val_set.category_ids}, train has {self.train_set.category_ids}"
                )
        self.meta = checkpoint_meta(
            config, self.train_set.category_ids, self.train_set.category_names
        )
        overrides = dict(config.model_overrides)
        overrides.update(
            num_classes=self.train_set.num_classes,
            pretrained_backbone=config.pretrained_backbone or bool(config.backbone_weights),
            backbone_weights=config.backbone_weights,
        )
        self.parts = build_training_parts(config, self.train_set.category_ids, overrides)
        self.model_config = self.parts.detector.config
        self.criterion = build_criterion(self.model_config)
        self.postprocess = PostProcess()
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

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.checkpoint_path)
        expected = {key: self.meta[key] for key in ("preset", "num_classes", "mode", "scale")}
        expected["downsampler"] = self.meta["downsampler"]
        expected["category_ids"] = self.meta["category_ids"]
        check_compatible(checkpoint, self.checkpoint_path, "resume", **expected)
        changed = changed_settings(checkpoint.get("config") or {}, self.config)
        if changed:
            raise ValueError(
                f"cannot --resume {self.checkpoint_path} with changed settings: "
                + "; ".join(changed)
                + f" (only {', '.join(RESUMABLE_SETTINGS)} may change; resume with the "
                "recorded values, see config.json, or train into a new --output)"
            )
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
            datasets = [self.train_set] + ([self.val_set] if self.val_set is not None else [])
            write_image_check_cache(
                [path for dataset in datasets for path in dataset.image_paths()],
                self.output / IMAGE_CHECK_CACHE_NAME,
            )
            self._log(
                {
                    "event": "start",
                    "start_epoch": self.start_epoch,
                    "world_size": context.world_size,
                    "train_images": len(self.train_set),
                    "train_degenerate_boxes_dropped": self.train_set.num_degenerate_boxes,
                    "train_images_skipped": self.train_set.num_skipped_images,
                    "val_images_skipped": (
                        self.val_set.num_skipped_images if self.val_set is not None else 0
                    ),
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
            # Finite but overflowing weights (e.g. --lr 1e30) must not reach the checkpoint.
            check_model_outputs_finite(self.parts.inference, context.device, epoch)
            self.scheduler.step()
            metrics = None
            last = epoch + 1 == config.epochs
            due = config.eval_every > 0 and (epoch + 1) % config.eval_every == 0
            if self.val_set is not None and stage == 2 and (due or last):
                metrics = self.evaluate()
            rng_states = _gather_rng_states()
            # Ctrl-C waits for the checkpoint and its log record (one line, exit 130).
            with _deferred_interrupt():
                if context.is_main:
                    save_checkpoint(
                        self._checkpoint_state(epoch + 1, rng_states), self.checkpoint_path
                    )
                    if last:
                        self._save_pretrained()
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

    def _save_pretrained(self) -> None:
        """The trained model as ``OUTPUT/pretrained``, each file replaced atomically."""
        save_pretrained(
            self.parts.inference,
            self.output / PRETRAINED_DIR,
            category_ids=self.meta["category_ids"],
            category_names=self.meta["category_names"],
            short_side=self.config.short_side,
            max_size=self.config.max_size,
        )

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
        """Release the output folder's lock and tear down the process group (if started)."""
        if self._lock is not None:
            self._lock.release()
        cleanup_distributed()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _gather_rng_states() -> list[dict[str, Any]]:
    return all_gather_objects(capture_rng_state())


def train(config: TrainConfig) -> Path:
    """Train as ``config`` says and return the path of the final checkpoint.

    Works in one process or under ``torchrun`` (one process per GPU, or gloo on CPU); only
    rank 0 writes. ``config.resume`` continues from ``config.output/checkpoint.pth``.

    Example:
        >>> path = train(TrainConfig(preset="tiny", train_images="imgs", train_ann="a.json",
        ...                          epochs=1, output="runs/x"))  # doctest: +SKIP
    """
    # Trainer releases the lock and the process group itself when it refuses the config.
    with Trainer(config) as trainer:
        return trainer.fit()
