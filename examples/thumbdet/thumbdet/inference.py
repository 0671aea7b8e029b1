"""Models and metrics from checkpoints: ``load_detector`` and ``evaluate_checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from learnthumb import create_downsampler
from thumbdet.checkpoint import load_checkpoint
from thumbdet.config import TrainConfig
from thumbdet.data import CocoDetection, DetectionCollator, make_transforms
from thumbdet.engine import evaluate
from thumbdet.evaluation import write_metrics
from thumbdet.models import DetectorConfig, build_model
from thumbdet.postprocess import PostProcess
from thumbdet.pretrained import from_pretrained, is_pretrained_folder
from thumbdet.thumbnail_detector import ThumbnailDetector, widen_stem
from thumbdet.validation import check_data_settings, check_device, check_output_file

__all__ = ["evaluate_checkpoint", "load_detector", "require_entries"]


#: Entries of a training checkpoint that inference needs, and the ``meta`` keys it reads.
_REQUIRED_ENTRIES = ("model", "model_config", "meta", "config")
_REQUIRED_META = ("mode", "scale", "downsampler", "category_ids")


def require_entries(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint without the entries :func:`load_detector` reads (one line)."""
    missing = [key for key in _REQUIRED_ENTRIES if key not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} is not a complete thumbdet checkpoint: missing {missing} (expected "
            f"{list(_REQUIRED_ENTRIES)}, as written by thumbdet train)"
        )
    meta = checkpoint["meta"]
    if not isinstance(meta, dict) or any(key not in meta for key in _REQUIRED_META):
        found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(
            f"{path} is not a complete thumbdet checkpoint: 'meta' has {found}, expected the "
            f"keys {list(_REQUIRED_META)}"
        )
    if not isinstance(checkpoint["model_config"], dict):
        raise ValueError(
            f"{path} is not a complete thumbdet checkpoint: 'model_config' is "
            f"{type(checkpoint['model_config']).__name__}, expected a dict"
        )


def load_detector(
    checkpoint: str | Path | dict[str, Any], device: str | torch.device = "cpu"
) -> nn.Module:
    """The model for inference from a training checkpoint or a pretrained folder, in eval mode.

    It takes *full-size* images in [0, 1] and a padding mask (``model(images,
    padding_mask=None)``) in every mode: a teacher is the detector itself, a bicubic or
    ThumbDet student is a :class:`~thumbdet.thumbnail_detector.ThumbnailDetector` (its
    downsampler, then the detector; ``.downsampler`` and ``.detector`` attributes). Boxes are
    normalised, so post-processing with each image's original size gives original coordinates.
    The checkpoint's ``"meta"`` (mode, scale, category ids and names) is attached as
    ``model.checkpoint_meta``.

    Args:
        checkpoint: Path of a checkpoint written by :func:`thumbdet.train.train` (file or run
            folder), the loaded dict, or a folder written by
            :func:`thumbdet.pretrained.save_pretrained` (one holding ``model.safetensors``).
        device: Device to put the model on.

    Example:
        >>> model = load_detector("runs/thumbdet4/checkpoint.pth")  # doctest: +SKIP
        >>> outputs = model(torch.rand(1, 3, 128, 128))  # doctest: +SKIP
    """
    if not isinstance(checkpoint, dict) and is_pretrained_folder(checkpoint):
        return from_pretrained(checkpoint, device=device)
    source = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint, training_state=False)
    require_entries(checkpoint, source)
    meta = checkpoint["meta"]
    # The weights come from the checkpoint: never download or read backbone weights again.
    model_config = DetectorConfig.from_dict(
        dict(checkpoint["model_config"], pretrained_backbone=False, backbone_weights=None)
    )
    detector = build_model(model_config)
    downsampler = None
    if meta["mode"] != "teacher":
        downsampler = create_downsampler(meta["downsampler"], scale=meta["scale"])
        widen_stem(detector, downsampler)  # a wide thumbnail's student has a wider stem
    detector.load_state_dict(checkpoint["model"])
    model: nn.Module = detector
    if downsampler is not None:
        if checkpoint.get("downsampler") is not None:
            downsampler.load_state_dict(checkpoint["downsampler"])
        model = ThumbnailDetector(detector, downsampler, meta["scale"])
    model.checkpoint_meta = dict(meta)
    return model.to(device).eval()


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
        checkpoint: A checkpoint from :func:`thumbdet.train.train` (any mode), or a folder
            written by :func:`thumbdet.pretrained.save_pretrained`.
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
    check_data_settings(batch_size, num_workers, short_side, max_size)
    device = str(check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    if output is not None:
        check_output_file(output)
    model: nn.Module | None = None
    if is_pretrained_folder(checkpoint):
        model = from_pretrained(checkpoint, device=device)
        meta = model.checkpoint_meta
        trained = model.pretrained_config.get("preprocessing") or {}
        # A folder saved without its training sizes is evaluated at thumbdet's defaults.
        train_config = TrainConfig()
        trained_short_side = trained.get("short_side") or train_config.short_side
        trained_max_size = trained.get("max_size") or train_config.max_size
    else:
        state = load_checkpoint(checkpoint, training_state=False)
        require_entries(state, checkpoint)
        train_config = TrainConfig.from_dict(state["config"])
        meta = state["meta"]
        trained_short_side, trained_max_size = train_config.short_side, train_config.max_size
    short_side = short_side if short_side is not None else trained_short_side
    max_size = max_size if max_size is not None else trained_max_size
    check_data_settings(batch_size, num_workers, short_side, max_size)
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
        PostProcess(),
        dataset,
        torch.device(device),
        verbose=verbose,
        show_progress=show_progress,
    )
    if output is not None:
        write_metrics(metrics, output)
    return metrics
