"""Official or Hugging Face Deformable-DETR weights as a teacher.

Converts the weights of the official code (a .pth file with 'model' and 'args') or of Hugging
Face transformers (a save_pretrained folder of DeformableDetrForObjectDetection with a timm
ResNet backbone) into a thumbdet teacher checkpoint, OUTPUT/checkpoint.pth, that
'thumbdet eval --checkpoint OUTPUT' and 'thumbdet train --mode thumbdet --teacher OUTPUT'
read. Keys that do not map are refused, all listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbdet.cli.command import Command
from thumbdet.settings import setting

__all__ = ["COMMAND", "ConvertOptions"]


@dataclass
class ConvertOptions:
    """What ``thumbdet convert`` reads and writes."""

    source: str = setting("", "the checkpoint file or folder", flag="source", metavar="PATH")
    source_format: str = setting(
        "official",
        "official: fundamentalvision/Deformable-DETR checkpoint file; transformers: "
        "save_pretrained folder",
        flag="--from",
        choices=("official", "transformers"),
    )
    output: str | None = setting(None, "folder for checkpoint.pth")
    categories: str | None = setting(
        None,
        "COCO annotation file whose category ids select the class logits (a logit's index is "
        "its category id, as in the COCO models: pass instances_val2017.json to evaluate and "
        "distil on COCO); default: keep every logit, ids 0..K-1",
        metavar="ANN_FILE",
    )


def _run(options: ConvertOptions) -> int:
    from thumbdet.checkpoints.convert import (
        convert_official,
        convert_transformers,
        read_coco_categories,
        save_converted,
    )

    ids = names = None
    if options.categories is not None:
        ids, names = read_coco_categories(options.categories)
    convert = convert_official if options.source_format == "official" else convert_transformers
    converted = convert(options.source, category_ids=ids, category_names=names)
    print(save_converted(converted, options.output))
    return 0


COMMAND = Command("convert", __doc__, ConvertOptions, _run, required=("source_format", "output"))
