"""The ``thumbdet`` command: ``train``, ``eval`` and ``convert`` here, others from their modules.

``demo``, ``ablate``, ``thumbnail`` and ``export`` live in :mod:`thumbdet.demo`,
:mod:`thumbdet.ablate` and :mod:`thumbdet.tools`; each exposes ``add_parser(subparsers)``
that registers its subcommands with ``set_defaults(func=...)``, ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence

from thumbdet.config import MODES, TrainConfig

__all__ = ["build_parser", "config_from_args", "main"]

_PLUGIN_MODULES = ("thumbdet.demo", "thumbdet.ablate", "thumbdet.tools", "thumbdet.bench")
_DEFAULTS = TrainConfig()


def _add_data_flags(parser: argparse.ArgumentParser, train: bool) -> None:
    data = parser.add_argument_group("data (COCO format)")
    if train:
        data.add_argument("--train-images", help="folder of the training images")
        data.add_argument("--train-ann", help="COCO annotation file of the training images")
    data.add_argument("--val-images", help="folder of the validation images")
    data.add_argument("--val-ann", help="COCO annotation file of the validation images")
    data.add_argument(
        "--coco-root",
        help="root of the official COCO 2017 layout (train2017/, val2017/, annotations/)",
    )
    data.add_argument(
        "--short-side",
        type=int,
        nargs="+",
        default=None,
        help="short side(s) for multi-scale resizing; evaluation uses the largest "
        "(default: 480 512 ... 800; small datasets: e.g. 96 112 128)",
    )
    data.add_argument(
        "--max-size",
        type=int,
        default=_DEFAULTS.max_size if train else None,
        help="longest side after resizing",
    )
    if train:
        data.add_argument(
            "--augmentation",
            choices=("deformable_detr", "flip", "none"),
            default=_DEFAULTS.augmentation,
            help="deformable_detr: flip + multi-scale resize + random crop; flip: no crop",
        )
    data.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    data.add_argument("--num-workers", type=int, default=_DEFAULTS.num_workers)
    data.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out images whose file is missing or cannot be decoded (counted in a "
        "warning) instead of refusing to start",
    )
    data.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a teacher, a bicubic student or a ThumbDet student",
        description="Train Deformable DETR (teacher), the same detector on bicubic thumbnails "
        "(bicubic) or on learned thumbnails distilled from a teacher (thumbdet). Works under "
        "torchrun for multi-GPU / multi-node runs.",
    )
    parser.add_argument(
        "--preset", default=_DEFAULTS.preset, help="detector preset (tiny, paper_r50)"
    )
    parser.add_argument("--output", required=True, help="folder for checkpoint.pth and log.jsonl")
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUTPUT/checkpoint.pth exactly"
    )
    _add_data_flags(parser, train=True)

    optim = parser.add_argument_group("optimisation (Deformable DETR / paper Sec. 4.1)")
    optim.add_argument("--lr", type=float, default=_DEFAULTS.lr)
    optim.add_argument("--lr-backbone", type=float, default=_DEFAULTS.lr_backbone)
    optim.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay)
    optim.add_argument(
        "--lr-drop",
        type=int,
        default=_DEFAULTS.lr_drop,
        help="multiply the lr by 0.1 every N epochs",
    )
    optim.add_argument("--clip-max-norm", type=float, default=_DEFAULTS.clip_max_norm)
    optim.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    optim.add_argument(
        "--pretrained-backbone", action="store_true", help="ImageNet backbone weights from timm"
    )
    optim.add_argument("--backbone-weights", help="local file with backbone weights")
    optim.add_argument(
        "--eval-every", type=int, default=_DEFAULTS.eval_every, help="0: only after the last epoch"
    )
    optim.add_argument(
        "--max-steps-per-epoch", type=int, default=0, help="cut epochs short (smoke tests)"
    )

    modes = parser.add_argument_group("training mode (paper Sec. 3.4-3.5)")
    modes.add_argument("--mode", choices=MODES, default=_DEFAULTS.mode)
    modes.add_argument(
        "--scale", type=int, default=_DEFAULTS.scale, help="thumbnail scale (2 or 4)"
    )
    modes.add_argument("--teacher", help="teacher checkpoint (required by --mode thumbdet)")
    modes.add_argument(
        "--downsampler",
        default=_DEFAULTS.downsampler,
        help="learned downsampler from learnthumb's registry (default: the paper's)",
    )
    modes.add_argument("--stage1-epochs", type=int, default=_DEFAULTS.stage1_epochs)
    modes.add_argument("--one-stage", action="store_true", help="skip stage one (Table 5)")
    modes.add_argument(
        "--freeze-downsampler-stage2",
        action="store_true",
        help="keep the downsampler fixed in stage two (Table 5)",
    )
    modes.add_argument("--no-moment", action="store_true", help="switch off L_mm")
    modes.add_argument("--no-logit", action="store_true", help="switch off L_cls")
    modes.add_argument("--no-feature", action="store_true", help="switch off L_fm")
    modes.add_argument("--gamma", type=float, default=_DEFAULTS.gamma, help="weight of L_mm")
    modes.add_argument("--lam", type=float, default=_DEFAULTS.lam, help="lambda of Eq. (5)")
    modes.add_argument("--alpha", type=float, default=_DEFAULTS.alpha, help="weight of L_cls")
    modes.add_argument("--beta", type=float, default=_DEFAULTS.beta, help="weight of L_fm")
    modes.add_argument("--temperature", type=float, default=_DEFAULTS.temperature)
    modes.add_argument(
        "--threshold", type=float, default=_DEFAULTS.threshold, help="Query Filter threshold"
    )
    modes.add_argument(
        "--logit-pairing",
        choices=("index", "hungarian"),
        default=_DEFAULTS.logit_pairing,
        help="pair student and teacher queries in L_cls by slot (paper) or by Hungarian matching",
    )
    modes.add_argument(
        "--student-init", choices=("random", "teacher"), default=_DEFAULTS.student_init
    )
    parser.set_defaults(func=_run_train)


def _add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="COCO box AP of a checkpoint (any mode) on a COCO-format dataset",
        description="Evaluate a checkpoint with pycocotools. Students get the full-size images "
        "and run their own downsampler; boxes are scored in original image coordinates.",
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--output", help="JSON file for AP, AP50, AP75, APs, APm, APl (percent)")
    parser.add_argument("--verbose", action="store_true", help="print pycocotools' summary")
    _add_data_flags(parser, train=False)
    parser.set_defaults(func=_run_eval)


def _add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn an official or Hugging Face Deformable-DETR checkpoint into a teacher",
        description="Convert Deformable-DETR weights of the official code (a .pth file with "
        "'model' and 'args') or of Hugging Face transformers (a save_pretrained folder of "
        "DeformableDetrForObjectDetection with a timm ResNet backbone) into a thumbdet teacher "
        "checkpoint, OUTPUT/checkpoint.pth, that 'thumbdet eval --checkpoint OUTPUT' and "
        "'thumbdet train --mode thumbdet --teacher OUTPUT' read. Keys that do not map are "
        "refused, all listed.",
    )
    parser.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=("official", "transformers"),
        help="official: fundamentalvision/Deformable-DETR checkpoint file; transformers: "
        "save_pretrained folder",
    )
    parser.add_argument("source", metavar="PATH", help="the checkpoint file or folder")
    parser.add_argument("--output", required=True, help="folder for checkpoint.pth")
    parser.add_argument(
        "--categories",
        metavar="ANN_FILE",
        help="COCO annotation file whose category ids select the class logits (a logit's "
        "index is its category id, as in the COCO models: pass instances_val2017.json to "
        "evaluate and distil on COCO); default: keep every logit, ids 0..K-1",
    )
    parser.set_defaults(func=_run_convert)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``thumbdet train`` arguments."""
    return TrainConfig(
        preset=args.preset,
        train_images=args.train_images,
        train_ann=args.train_ann,
        val_images=args.val_images,
        val_ann=args.val_ann,
        coco_root=args.coco_root,
        output=args.output,
        epochs=args.epochs,
        resume=args.resume,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_backbone=args.lr_backbone,
        weight_decay=args.weight_decay,
        lr_drop=args.lr_drop,
        clip_max_norm=args.clip_max_norm,
        num_workers=args.num_workers,
        short_side=args.short_side,
        max_size=args.max_size,
        augmentation=args.augmentation,
        device=args.device,
        seed=args.seed,
        pretrained_backbone=args.pretrained_backbone,
        backbone_weights=args.backbone_weights,
        eval_every=args.eval_every,
        mode=args.mode,
        scale=args.scale,
        teacher=args.teacher,
        downsampler=args.downsampler,
        stage1_epochs=args.stage1_epochs,
        moment=not args.no_moment,
        logit=not args.no_logit,
        feature=not args.no_feature,
        gamma=args.gamma,
        lam=args.lam,
        alpha=args.alpha,
        beta=args.beta,
        temperature=args.temperature,
        threshold=args.threshold,
        logit_pairing=args.logit_pairing,
        student_init=args.student_init,
        freeze_downsampler_stage2=args.freeze_downsampler_stage2,
        one_stage=args.one_stage,
        max_steps_per_epoch=args.max_steps_per_epoch,
        skip_bad_images=args.skip_bad_images,
    )


def _run_train(args: argparse.Namespace) -> int:
    from thumbdet.train import train

    path = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from thumbdet.train import evaluate_checkpoint

    config = TrainConfig(
        train_images="-",
        train_ann="-",
        val_images=args.val_images,
        val_ann=args.val_ann,
        coco_root=args.coco_root,
    )
    if not config.val_images or not config.val_ann:
        raise ValueError("eval needs --val-images and --val-ann (or --coco-root)")
    metrics = evaluate_checkpoint(
        args.checkpoint,
        config.val_images,
        config.val_ann,
        output=args.output,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        short_side=args.short_side,
        max_size=args.max_size,
        device=args.device,
        verbose=args.verbose,
        skip_bad_images=args.skip_bad_images,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    from thumbdet.convert import (
        convert_official,
        convert_transformers,
        read_coco_categories,
        save_converted,
    )

    ids = names = None
    if args.categories is not None:
        ids, names = read_coco_categories(args.categories)
    if args.source_format == "official":
        converted = convert_official(args.source, category_ids=ids, category_names=names)
    else:
        converted = convert_transformers(args.source, category_ids=ids, category_names=names)
    print(save_converted(converted, args.output))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``thumbdet`` argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="thumbdet",
        description="ThumbDet: object detection on learned thumbnails (Deformable DETR).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_eval_parser(subparsers)
    _add_convert_parser(subparsers)
    for module_name in _PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # that subcommand is not part of this installation
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thumbdet`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"thumbdet {args.command}: interrupted{_interrupt_note(args)}", file=sys.stderr)
        return _INTERRUPTED
    except (ValueError, OSError, FloatingPointError) as error:
        # OSError: missing files, read-only or full disks, paths below a file...
        print(f"thumbdet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
_INTERRUPTED = 130


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line.

    An error raised in a DataLoader worker comes back with the worker's traceback appended;
    its last line holds the original message.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and "Traceback" in str(error):
        # "thumbdet.data.images.ImageReadError: image file ... cannot be read: ..."
        return re.sub(r"^[\w.]+: ", "", lines[-1], count=1)
    return " ".join(lines)


def _interrupt_note(args: argparse.Namespace) -> str:
    """Where a ``train`` run can be continued from after Ctrl-C."""
    if args.command != "train" or not getattr(args, "output", None):
        return ""
    from thumbdet.train import CHECKPOINT_NAME

    checkpoint = os.path.join(args.output, CHECKPOINT_NAME)
    if not os.path.isfile(checkpoint):
        return " before the first checkpoint was written"
    return f"; the last checkpoint {checkpoint} is intact, --resume continues from it"


if __name__ == "__main__":
    sys.exit(main())
