"""A run's data: the train and val sets of its configuration, their loaders, and what the
log records about them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from thumbdet.data import CocoDetection, make_transforms
from thumbdet.data.images import IMAGE_CHECK_CACHE_NAME
from thumbdet.distributed import DistributedContext
from thumbdet.training.groups import DataSettings
from thumbdet.training.signals import epoch_seed

__all__ = ["build_datasets", "dataset_record", "make_loader"]


def build_datasets(data: DataSettings, output: Path) -> tuple[CocoDetection, CocoDetection | None]:
    """The training set and, when configured, the validation set (same categories).

    Raises:
        ValueError: The validation annotations have other category ids than the training
            ones, or an image cannot be read (see :class:`~thumbdet.data.CocoDetection`).
    """
    image_cache = output / IMAGE_CHECK_CACHE_NAME
    train_set = CocoDetection(
        data.train_images,
        data.train_ann,
        make_transforms("train", data.short_side, data.max_size, data.augmentation),
        skip_bad_images=data.skip_bad_images,
        image_check_cache=image_cache,
    )
    if data.val_images is None:
        return train_set, None
    val_set = CocoDetection(
        data.val_images,
        data.val_ann,
        make_transforms("val", data.short_side, data.max_size),
        skip_bad_images=data.skip_bad_images,
        image_check_cache=image_cache,
    )
    if val_set.category_ids != train_set.category_ids:
        raise ValueError(
            f"val annotation file {data.val_ann} has category ids "
            f"{val_set.category_ids}, train has {train_set.category_ids}"
        )
    return train_set, val_set


def make_loader(
    dataset: CocoDetection,
    data: DataSettings,
    seed: int,
    context: DistributedContext,
    collate_fn: Any,
    epoch: int,
    train: bool,
) -> DataLoader:
    """The loader of one epoch: the same batches for the same ``(seed, epoch, rank)``.

    A ``DistributedSampler`` with one replica is a seeded shuffle: the order of an epoch
    depends on (seed, epoch) only, so a resumed run sees the same batches.
    """
    sampler = DistributedSampler(
        dataset,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=train,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, context.rank))
    return DataLoader(
        dataset,
        batch_size=data.batch_size,
        sampler=sampler,
        num_workers=data.num_workers,
        collate_fn=collate_fn,
        generator=generator,
        pin_memory=context.device.type == "cuda",
    )


def dataset_record(train_set: CocoDetection, val_set: CocoDetection | None) -> dict[str, int]:
    """Image counts and what was left out of each set, for the run's ``start`` log record."""
    return {
        "train_images": len(train_set),
        "train_degenerate_boxes_dropped": train_set.num_degenerate_boxes,
        "train_images_skipped": train_set.num_skipped_images,
        "val_images_skipped": val_set.num_skipped_images if val_set is not None else 0,
        "val_images": len(val_set) if val_set is not None else 0,
        "val_degenerate_boxes_dropped": val_set.num_degenerate_boxes if val_set is not None else 0,
    }
