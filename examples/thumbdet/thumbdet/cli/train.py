"""``thumbdet train``: every flag generated from :class:`~thumbdet.training.config.TrainConfig`."""

from __future__ import annotations

import argparse
import os

from thumbdet.cli.flags import add_settings, settings_from_args
from thumbdet.training.config import TrainConfig

__all__ = ["add_parser"]

HELP = "train a teacher, a bicubic student or a ThumbDet student"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``thumbdet train``."""
    parser = subparsers.add_parser(
        "train",
        help=HELP,
        description="Train Deformable DETR (teacher), the same detector on bicubic thumbnails "
        "(bicubic) or on learned thumbnails distilled from a teacher (thumbdet). Works under "
        "torchrun for multi-GPU / multi-node runs.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="JSON (or YAML, with PyYAML) file of settings: a run's config.json, or setting "
        "names (batch_size, logit_weight, model_overrides: {num_queries: 12}); flags given "
        "here win",
    )
    add_settings(parser, TrainConfig, required=("output",))
    parser.set_defaults(func=_run, settings=TrainConfig, interrupt_note=_interrupt_note)


def _run(args: argparse.Namespace) -> int:
    from thumbdet.training.trainer import train

    path = train(settings_from_args(args, TrainConfig))
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


def _interrupt_note(args: argparse.Namespace) -> str:
    """Where a run can be continued from after Ctrl-C."""
    from thumbdet.checkpoints import CHECKPOINT_NAME

    checkpoint = os.path.join(args.output, CHECKPOINT_NAME)
    if not os.path.isfile(checkpoint):
        return " before the first checkpoint was written"
    return f"; the last checkpoint {checkpoint} is intact, --resume continues from it"
