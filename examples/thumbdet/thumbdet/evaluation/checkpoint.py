"""COCO box AP of a checkpoint or pretrained folder: :func:`evaluate_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from thumbdet.checkpoints import from_pretrained, is_pretrained_folder, load_checkpoint
from thumbdet.checkpoints.loading import load_detector, require_entries
from thumbdet.data import CocoDetection, DetectionCollator, make_transforms
from thumbdet.evaluation.coco import write_metrics
from thumbdet.evaluation.loop import evaluate
from thumbdet.models.postprocess import PostProcess
from thumbdet.settings import check_ranges
from thumbdet.training.config import DataSettings, TrainConfig
from thumbdet.validation import check_device, check_output_file, check_short_sides

__all__ = ["evaluate_checkpoint"]


def _check_loading(
    batch_size: int, num_workers: int, short_side: list[int] | None, max_size: int | None
) -> None:
    """The loading settings within the ranges ``DataSettings`` declares, and consistent."""
    settings = DataSettings(
        batch_size=batch_size, num_workers=num_workers, short_side=short_side, max_size=max_size
    )
    check_ranges(settings)
    check_short_sides(short_side, max_size)


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
    skip_bad_images: bool = False,
) -> dict[str, float]:
    """COCO box AP of a checkpoint on a COCO-format dataset (full-size images in).

    Args:
        checkpoint: A checkpoint from :func:`thumbdet.training.trainer.train` (any mode), or a
            folder
            written by :func:`thumbdet.checkpoints.pretrained.save_pretrained`.
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
        skip_bad_images: Leave out images whose file is missing or cannot be decoded (AP is
            then over the other images; a warning counts them) instead of raising.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in percent.

    Raises:
        ValueError: A setting out of range, an unknown or unavailable device, an ``output``
            that is a folder or cannot be written, an incomplete checkpoint, other categories
            than the checkpoint's, unreadable images (each one line, checked before the
            evaluation runs).
    """
    _check_loading(batch_size, num_workers, short_side, max_size)
    device = str(check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    if output is not None:
        check_output_file(output)
    model: nn.Module | None = None
    if is_pretrained_folder(checkpoint):
        model = from_pretrained(checkpoint, device=device)
        meta = model.checkpoint_meta
        trained = model.pretrained_config.get("preprocessing") or {}
        # A folder saved without its training sizes is evaluated at thumbdet's defaults.
        defaults = DataSettings()
        trained_short_side = trained.get("short_side") or defaults.short_side
        trained_max_size = trained.get("max_size") or defaults.max_size
    else:
        state = load_checkpoint(checkpoint, training_state=False)
        require_entries(state, checkpoint)
        data = TrainConfig.from_dict(state["config"]).data
        meta = state["meta"]
        trained_short_side, trained_max_size = data.short_side, data.max_size
    short_side = short_side if short_side is not None else trained_short_side
    max_size = max_size if max_size is not None else trained_max_size
    _check_loading(batch_size, num_workers, short_side, max_size)
    dataset = CocoDetection(
        images_dir,
        annotation_file,
        make_transforms("val", short_side, max_size),
        skip_bad_images=skip_bad_images,
    )
    if list(dataset.category_ids) != list(meta["category_ids"]):
        raise ValueError(
            f"{annotation_file} has category ids {dataset.category_ids}, but {checkpoint} was "
            f"trained on {meta['category_ids']}"
        )
    if model is None:
        model = load_detector(state, device)
    divisibility = meta["scale"] or 1  # students' images are padded to multiples of the scale
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
        PostProcess(),
        dataset,
        torch.device(device),
        verbose=verbose,
        show_progress=show_progress,
    )
    if output is not None:
        write_metrics(metrics, output)
    return metrics
