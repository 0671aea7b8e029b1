"""Deformable-DETR weights of other code bases in thumbdet's format.

Two sources are read:

- the official code (fundamentalvision/Deformable-DETR): a torch file ``{"model":
  state_dict, "args": argparse.Namespace, ...}``, read with :func:`~thumbdet.checkpoints.
  torch_files.load_torch_file` (``weights_only=True``, nothing in it can run code);
- Hugging Face transformers' ``DeformableDetrForObjectDetection`` with a timm ResNet backbone:
  the model itself, a state dict with its config, or a folder written by ``save_pretrained``
  (``config.json`` + ``model.safetensors``); transformers need not be installed for folders.

Both keep Deformable DETR's architecture, so converting renames keys (and, for transformers,
merges the decoder's separate q/k/v projections into ``nn.MultiheadAttention``'s
``in_proj``) and reads the :class:`~thumbdet.models.DetectorConfig` from the source's
arguments (the rename rules are in :mod:`thumbdet.checkpoints._conversion_keys`, each source's
settings in :mod:`._official` and :mod:`._transformers`). Whatever has no place in our model,
or is missing from the source, is refused with one :class:`ConversionError` listing the keys.
:func:`save_converted` writes a teacher checkpoint that ``thumbdet eval --checkpoint`` and
``thumbdet train --teacher`` read.

Example:
    >>> converted = convert_official("r50_deformable_detr-checkpoint.pth")  # doctest: +SKIP
    >>> save_converted(converted, "teachers/coco")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from thumbdet.checkpoints._conversion import ConversionError, ConvertedDetector
from thumbdet.checkpoints._official import convert_official
from thumbdet.checkpoints._transformers import convert_transformers
from thumbdet.checkpoints.format import CHECKPOINT_NAME, save_checkpoint
from thumbdet.training.config import TrainConfig

__all__ = [
    "ConversionError",
    "ConvertedDetector",
    "convert_official",
    "convert_transformers",
    "read_coco_categories",
    "save_converted",
]


def read_coco_categories(annotation_file: str | Path) -> tuple[list[int], list[str]]:
    """Category ids (increasing, as :class:`thumbdet.data.CocoDetection` orders them) and names.

    Args:
        annotation_file: A COCO-format annotation file, e.g. ``instances_val2017.json``.

    Raises:
        ValueError: The file holds no ``categories`` list with ``id`` entries.
    """
    path = Path(annotation_file)
    try:
        categories = json.loads(path.read_text())["categories"]
        by_id = {int(entry["id"]): str(entry.get("name", entry["id"])) for entry in categories}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: expected a COCO annotation file with a 'categories' list of "
            f"{{'id', 'name'}} entries ({type(error).__name__}: {error})"
        ) from error
    if not by_id:
        raise ValueError(f"{path}: its 'categories' list is empty")
    ids = sorted(by_id)
    return ids, [by_id[value] for value in ids]


# ---------------------------------------------------------------------------------- writing
def save_converted(converted: ConvertedDetector, output: str | Path) -> Path:
    """Write a converted detector as a thumbdet teacher checkpoint ``output/checkpoint.pth``.

    The file is the format ``thumbdet train`` writes (safetensors with SHA-256 checksums):
    ``thumbdet eval --checkpoint output`` evaluates it and ``thumbdet train --mode thumbdet
    --preset paper_r50 --teacher output`` distils from it. The weights are loaded strictly
    into the detector before anything is written.

    Args:
        converted: From :func:`convert_official` or :func:`convert_transformers`.
        output: Folder to write into (created when missing).

    Returns:
        The checkpoint file.
    """
    if not isinstance(converted, ConvertedDetector):
        raise TypeError(f"converted must be a ConvertedDetector, got {type(converted).__name__}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output must be a folder, got the file {output}")
    converted.build()  # strict load: refuses before writing anything
    config = converted.config
    train_config = TrainConfig.from_dict(
        {"preset": config.preset, "output": str(output), "mode": "teacher"}
    )
    meta = {
        "preset": config.preset,
        "num_classes": config.num_classes,
        "mode": "teacher",
        "scale": None,
        "downsampler": None,
        "category_ids": list(converted.category_ids),
        "category_names": list(converted.category_names),
        "converted_from": converted.source,
    }
    state = {
        "model": converted.state_dict,
        "downsampler": None,
        "config": train_config.to_dict(),
        "model_config": config.to_dict(),
        "meta": meta,
    }
    return save_checkpoint(state, output / CHECKPOINT_NAME)
