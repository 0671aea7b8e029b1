"""COCO box AP of a checkpoint on a COCO-format dataset.

Evaluates a checkpoint file, run folder or pretrained folder with pycocotools. Students get the
full-size images and run their own downsampler; boxes are scored in original image
coordinates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from thumbdet.cli.command import Command, SettingsGroup
from thumbdet.settings import setting
from thumbdet.training.groups import DataSettings

__all__ = ["COMMAND", "DATA_SETTINGS", "LOADING_SETTINGS", "EvalOptions"]

#: The data settings of ``train`` that ``eval`` hands on to ``evaluate_checkpoint`` by name.
LOADING_SETTINGS = ("short_side", "max_size", "batch_size", "num_workers", "skip_bad_images")
#: The data settings of ``train`` that ``eval`` takes: the dataset, and how it is loaded.
DATA_SETTINGS = ("val_images", "val_ann", "coco_root", *LOADING_SETTINGS)


@dataclass
class EvalOptions:
    """What ``thumbdet eval`` evaluates, and where the result goes."""

    checkpoint: str | None = setting(
        None, "checkpoint file, run folder or pretrained folder (OUTPUT/pretrained) of any mode"
    )
    output: str | None = setting(None, "JSON file for AP, AP50, AP75, APs, APm, APl (percent)")
    verbose: bool = setting(False, "print pycocotools' summary")
    device: str | None = setting(None, "cpu, cuda or cuda:N (default: cuda if available)")


def _run(options: EvalOptions, data: DataSettings) -> int:
    from thumbdet.evaluation import evaluate_checkpoint

    if not data.val_images or not data.val_ann:
        raise ValueError("eval needs --val-images and --val-ann (or --coco-root)")
    metrics = evaluate_checkpoint(
        options.checkpoint,
        data.val_images,
        data.val_ann,
        output=options.output,
        device=options.device,
        verbose=options.verbose,
        **{name: getattr(data, name) for name in LOADING_SETTINGS},
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


#: Unset sizes: the checkpoint's training sizes.
_DATA = SettingsGroup(DataSettings, DATA_SETTINGS, {"max_size": None}, "Data (COCO format)")
COMMAND = Command("eval", __doc__, EvalOptions, _run, required=("checkpoint",), groups=(_DATA,))
