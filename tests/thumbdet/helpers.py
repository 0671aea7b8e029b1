"""Helpers for tests and smoke runs: a tiny COCO-format dataset written with PIL."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["distributed_train_worker", "tiny_train_config", "write_tiny_coco"]

_COLOURS = ((230, 40, 40), (40, 200, 60), (40, 80, 230))

# The smallest detector that still trains: one decoder layer, five queries.
TINY_MODEL = {"num_queries": 5, "dec_layers": 1}


def tiny_train_config(data: tuple[Path, Path], output: Path | str, **overrides):
    """A ``TrainConfig`` of one CPU step on ``write_tiny_coco`` data; ``overrides`` win.

    Args:
        data: ``(images_dir, annotation_file)`` from :func:`write_tiny_coco`.
        output: the run's output folder.
        **overrides: any other ``TrainConfig`` field.
    """
    from thumbdet.training.config import TrainConfig

    images_dir, annotation_file = data
    values = dict(
        preset="tiny",
        train_images=str(images_dir),
        train_ann=str(annotation_file),
        output=str(output),
        epochs=1,
        batch_size=2,
        num_workers=0,
        short_side=[32],
        max_size=64,
        device="cpu",
        eval_every=0,
        max_steps_per_epoch=1,
        model_overrides=TINY_MODEL,
    )
    values.update(overrides)
    return TrainConfig.from_dict(values)


#: ``thumbdet train`` flags of a fast CPU run on :func:`write_tiny_coco`'s images.
FAST_TRAIN_FLAGS = [
    "--batch-size", "2", "--num-workers", "0", "--device", "cpu",
    "--short-side", "32", "40", "--max-size", "64",
]  # fmt: skip


def tiny_train_argv(output: Path | str, epochs: int = 1) -> list[str]:
    """``thumbdet train`` arguments of a fast CPU run of the tiny preset (no data flags)."""
    return ["train", "--preset", "tiny", "--output", str(output), "--epochs", str(epochs),
            *FAST_TRAIN_FLAGS]  # fmt: skip


def tiny_coco_flags(root: Path) -> list[str]:
    """Write four 40x48 images with annotations under ``root``; the ``thumbdet train`` flags
    that use them as the training and the validation set."""
    images_dir, annotation_file = write_tiny_coco(root, num_images=4, size=(40, 48))
    return [
        "--train-images", str(images_dir), "--train-ann", str(annotation_file),
        "--val-images", str(images_dir), "--val-ann", str(annotation_file),
    ]  # fmt: skip


def write_tiny_coco(
    root: str | Path,
    num_images: int = 6,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
    category_ids: tuple[int, ...] = (3, 7),
    empty_images: int = 1,
    name: str = "tiny",
) -> tuple[Path, Path]:
    """Write ``num_images`` PNGs with coloured rectangles and a COCO annotation file.

    Category ``category_ids[k]`` is drawn in colour ``k``; ids are deliberately not
    contiguous so that the id <-> label mapping is exercised. The last ``empty_images``
    images have no annotation.

    Args:
        root: Folder to write into (``root/images/*.png`` and ``root/<name>.json``).
        num_images: Number of images.
        size: ``(height, width)`` of the images; odd images are one pixel narrower.
        seed: Seed of the layout.
        category_ids: COCO category ids to use (at most 3).
        empty_images: How many images carry no object.
        name: Stem of the annotation file.

    Returns:
        ``(images_dir, annotation_file)``.
    """
    rng = random.Random(seed)
    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    height, width = size
    for image_id in range(1, num_images + 1):
        image_width = width - (image_id % 2)
        image = Image.new("RGB", (image_width, height), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        if image_id <= num_images - empty_images:
            for _ in range(rng.randint(1, 2)):
                label = rng.randrange(len(category_ids))
                box_w, box_h = rng.randint(10, image_width // 2), rng.randint(10, height // 2)
                x, y = rng.randint(0, image_width - box_w), rng.randint(0, height - box_h)
                draw.rectangle([x, y, x + box_w - 1, y + box_h - 1], fill=_COLOURS[label])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_ids[label],
                        "bbox": [x, y, box_w, box_h],
                        "area": box_w * box_h,
                        "iscrowd": 0,
                    }
                )
        file_name = f"{image_id:04d}.png"
        image.save(images_dir / file_name)
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_width, "height": height}
        )
    categories = [{"id": cat, "name": f"class{cat}"} for cat in category_ids]
    annotation_file = root / f"{name}.json"
    annotation_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return images_dir, annotation_file


def distributed_train_worker(
    rank: int, world_size: int, port: int, config: dict, weights_dir: str
) -> None:
    """Body of one process of a CPU/gloo DDP test run (``torch.multiprocessing.spawn``).

    Sets the environment ``torchrun`` would set, trains ``TrainConfig.from_dict(config)`` and saves
    this rank's final detector and downsampler weights to ``weights_dir/rank{rank}.pt``.
    """
    import os

    import torch

    from thumbdet.training.config import TrainConfig
    from thumbdet.training.trainer import Trainer

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig.from_dict(config))
    try:
        trainer.fit()
        weights = {f"model.{k}": v for k, v in trainer.parts.detector.state_dict().items()}
        if trainer.parts.downsampler is not None:
            for key, value in trainer.parts.downsampler.state_dict().items():
                weights[f"downsampler.{key}"] = value
        torch.save(weights, Path(weights_dir) / f"rank{rank}.pt")
    finally:
        trainer.close()
