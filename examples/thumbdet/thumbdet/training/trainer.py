"""A training run: :class:`Trainer` and ``train(config)``.

The run's mode (:mod:`thumbdet.training.modes`: ``teacher``, ``bicubic``, ``thumbdet``)
builds what is trained; the trainer owns everything around it: the output folder and its
lock, the data, the optimiser and scheduler, resuming, checkpoints, the log and evaluation.
Every checkpoint holds the detector (and for students the downsampler), so
:func:`thumbdet.checkpoints.load_detector` rebuilds a model that takes *full-size* images in
every mode. With the final checkpoint, the model is also written as ``OUTPUT/pretrained``
(:func:`thumbdet.checkpoints.save_pretrained`: ``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from thumbdet.checkpoints import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    remove_interrupted_saves,
    restore_rng_state,
    save_checkpoint,
)
from thumbdet.checkpoints.pretrained import PRETRAINED_DIR, save_pretrained
from thumbdet.data import CocoDetection, DetectionCollator
from thumbdet.data.images import IMAGE_CHECK_CACHE_NAME, write_image_check_cache
from thumbdet.distributed import (
    DistributedContext,
    all_gather_objects,
    barrier,
    cleanup_distributed,
    init_distributed,
    launch_rank,
)
from thumbdet.evaluation import evaluate
from thumbdet.files import write_json
from thumbdet.models.postprocess import PostProcess
from thumbdet.training.config import TrainConfig
from thumbdet.training.criterion import build_criterion
from thumbdet.training.data import build_datasets, dataset_record, make_loader
from thumbdet.training.engine import check_model_outputs_finite, train_one_epoch
from thumbdet.training.modes import get_mode
from thumbdet.training.output_lock import OutputLock
from thumbdet.training.resume import RESUMABLE_SETTINGS, changed_settings, check_resumable
from thumbdet.training.signals import deferred_interrupt, epoch_seed, seed_everything
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
        if launch_rank() == 0:  # the rank that writes
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
        if self.checkpoint_path.exists() and not config.resume:
            raise FileExistsError(
                f"{self.checkpoint_path} already exists; pass --resume to continue that run or "
                "choose another --output (nothing was overwritten)"
            )
        self.context: DistributedContext = init_distributed(config.device)
        seed_everything(config.seed + self.context.rank)
        self.mode = get_mode(config.mode)
        self.collator = DetectionCollator(self.mode.thumbnail_scale(config) or 1)
        self.train_set, self.val_set = build_datasets(config.data, self.output)
        self.meta = self.mode.checkpoint_meta(
            config, self.train_set.category_ids, self.train_set.category_names
        )
        model = config.detector
        overrides = dict(model.model_overrides)
        overrides.update(
            num_classes=self.train_set.num_classes,
            pretrained_backbone=model.pretrained_backbone or bool(model.backbone_weights),
            backbone_weights=model.backbone_weights,
        )
        self.parts = self.mode.build(config, self.train_set.category_ids, overrides)
        self.model_config = self.parts.detector.config
        self.criterion = build_criterion(self.model_config)
        self.postprocess = PostProcess()
        device = self.context.device
        self.parts.step.to(device)
        self.parts.inference.to(device)
        self.optimizer = torch.optim.AdamW(
            self.parts.param_groups, lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.optim.lr_drop, 0.1)
        self.step: nn.Module = self.parts.step
        if self.context.enabled:
            self.step = nn.parallel.DistributedDataParallel(
                self.parts.step,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.mode.has_unused_parameters,
            )
        self.start_epoch = 0
        if config.resume and self.checkpoint_path.exists():
            self._resume()
        elif config.resume:
            logger.warning("--resume: no %s yet, starting from scratch", self.checkpoint_path)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.checkpoint_path)
        check_resumable(checkpoint, self.checkpoint_path, self.meta, self.config)
        rng = checkpoint["rng"]  # one state per process of the run that saved it
        processes = self.context.world_size
        if isinstance(rng, list) and len(rng) != processes:
            raise ValueError(
                f"cannot --resume {self.checkpoint_path} exactly: expected a checkpoint of "
                f"{processes} process(es) like this run, got one of {len(rng)} (resume with "
                f"{len(rng)} processes, or train into a new --output)"
            )
        self.parts.detector.load_state_dict(checkpoint["model"])
        if self.parts.downsampler is not None and checkpoint.get("downsampler") is not None:
            self.parts.downsampler.load_state_dict(checkpoint["downsampler"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
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
        config = self.config
        return make_loader(
            dataset, config.data, config.seed, self.context, self.collator, epoch, train
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
            write_json(self.output / CONFIG_NAME, config.to_dict(), sort_keys=True)
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
                    **dataset_record(self.train_set, self.val_set),
                    "meta": self.meta,
                }
            )
        show = context.is_main
        # Stage one trains the downsampler alone: a run that ends there has no student to
        # evaluate or publish (--resume with more --epochs continues into stage two).
        ends_in_stage2 = self.mode.stage(config, config.schedule.epochs - 1) == 2
        if not ends_in_stage2 and show:
            logger.warning(
                "--epochs %d ends in stage one (--stage1-epochs %d): only the downsampler "
                "trains, nothing is evaluated and no pretrained folder is written; --resume "
                "with more --epochs continues into stage two",
                config.schedule.epochs,
                config.schedule.stage1_epochs,
            )
        for epoch in range(self.start_epoch, config.schedule.epochs):
            started = time.perf_counter()
            # Augmentation draws from python's `random`; seed it per epoch and rank.
            random.seed(epoch_seed(config.seed, epoch, context.rank))
            stage = self.mode.stage(config, epoch)
            stats = train_one_epoch(
                self.step,
                self.criterion,
                self._loader(self.train_set, epoch, train=True),
                self.optimizer,
                context.device,
                epoch,
                clip_max_norm=config.optim.clip_max_norm,
                frozen_parameters=self.mode.frozen(self.parts, stage),
                max_steps=config.schedule.max_steps_per_epoch,
                show_progress=show,
            )
            # Finite but overflowing weights (e.g. --lr 1e30) must not reach the checkpoint.
            check_model_outputs_finite(self.parts.inference, context.device, epoch)
            self.scheduler.step()
            metrics = None
            last = epoch + 1 == config.schedule.epochs
            every = config.schedule.eval_every
            due = every > 0 and (epoch + 1) % every == 0
            if self.val_set is not None and stage == 2 and (due or last):
                metrics = self.evaluate()
            rng_states = _gather_rng_states()
            # Ctrl-C waits for the checkpoint and its log record (one line, exit 130).
            with deferred_interrupt():
                if context.is_main:
                    save_checkpoint(
                        self._checkpoint_state(epoch + 1, rng_states), self.checkpoint_path
                    )
                    if last and ends_in_stage2:
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
            short_side=self.config.data.short_side,
            max_size=self.config.data.max_size,
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
