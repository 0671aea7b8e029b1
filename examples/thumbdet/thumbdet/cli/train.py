"""Train a teacher, a bicubic student or a ThumbDet student.

Trains Deformable DETR (teacher), the same detector on bicubic thumbnails (bicubic) or on
learned thumbnails distilled from a teacher (thumbdet). Works under torchrun for multi-GPU /
multi-node runs.
"""

from __future__ import annotations

import argparse
import os

from thumbdet.cli.command import Command
from thumbdet.training.config import TrainConfig

__all__ = ["COMMAND"]


def _run(config: TrainConfig) -> int:
    from thumbdet.distributed import launch_rank
    from thumbdet.training.trainer import train

    path = train(config)
    if launch_rank() == 0:
        print(path)
    return 0


def _interrupt_note(args: argparse.Namespace) -> str:
    """Where a run can be continued from after Ctrl-C."""
    from thumbdet.checkpoints import CHECKPOINT_NAME

    checkpoint = os.path.join(args.output, CHECKPOINT_NAME)
    if not os.path.isfile(checkpoint):
        return " before the first checkpoint was written"
    return f"; the last checkpoint {checkpoint} is intact, --resume continues from it"


COMMAND = Command(
    "train",
    __doc__,
    TrainConfig,
    _run,
    required=("output",),
    config_file=True,
    interrupt_note=_interrupt_note,
)
