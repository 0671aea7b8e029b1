"""The ``thumbdet`` command: ``train``, ``eval`` and ``convert`` here, others from their modules.

``demo``, ``ablate``, ``thumbnail``, ``export`` and ``bench`` live in
:mod:`thumbdet.experiments.demo`, :mod:`thumbdet.experiments.ablations`,
:mod:`thumbdet.thumbnails` and :mod:`thumbdet.fastpath`; each exposes
``add_parser(subparsers)`` that registers its subcommands with ``set_defaults(func=...)``,
``func(args) -> int``. Those modules import torch and the models, so only the module of the
subcommand being run is imported (``thumbdet --help`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Sequence

from thumbdet import __version__
from thumbdet.training.config import MODES, TrainConfig, parse_model_overrides, read_config_file

__all__ = ["build_parser", "config_from_args", "main"]

#: Subcommands defined in other modules: name -> (module, one-line help shown by
#: ``thumbdet --help`` without importing the module; a test checks it equals the module's).
PLUGIN_COMMANDS = {
    "demo": (
        "thumbdet.experiments.demo",
        "train teacher, bicubic and ThumbDet students on generated data (CPU)",
    ),
    "ablate": (
        "thumbdet.experiments.ablations",
        "the paper's ablations (Tables 3-6) at demo scale",
    ),
    "thumbnail": (
        "thumbdet.thumbnails",
        "save the learned thumbnails of images (student checkpoint)",
    ),
    "export": ("thumbdet.thumbnails", "export a checkpoint's detector to ONNX"),
    "bench": ("thumbdet.fastpath", "time detector inference with optional fast paths"),
}
_DEFAULTS = TrainConfig()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default; ``None`` defaults are not shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The parser of ``thumbdet`` and of each subcommand: help with defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _field_help() -> dict[str, str]:
    """``TrainConfig`` field -> its description in the class docstring's Args section (the
    help of a flag that gives none itself, so each setting is described once)."""
    helps: dict[str, str] = {}
    name = None
    for line in (TrainConfig.__doc__ or "").split("Args:", 1)[-1].splitlines():
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            name, text = match.groups()
            helps[name] = text
        elif name and line.startswith(" " * 12):
            helps[name] += " " + line.strip()
        elif line.strip():
            name = None
    helps = {key: text.replace("``", "").rstrip(".") for key, text in helps.items()}
    # Flag help starts in lower case, as argparse's own; "AdamW", "COCO" keep theirs.
    return {
        key: text[:1].lower() + text[1:] if text.split(" ", 1)[0][1:].islower() else text
        for key, text in helps.items()
    }


def _fill_help(parser: argparse.ArgumentParser) -> None:
    """Give flags without a help text the description of their ``TrainConfig`` field."""
    helps = _field_help()
    for action in parser._actions:
        if action.help is None and action.dest in helps:
            action.help = helps[action.dest]


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
        help="short side(s) for multi-scale resizing; evaluation uses the largest; unset: "
        "480 512 ... 800 (small datasets: e.g. 96 112 128)",
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
    data.add_argument(
        "--batch-size", type=int, default=_DEFAULTS.batch_size, help="images per process and step"
    )
    data.add_argument(
        "--num-workers",
        type=int,
        default=_DEFAULTS.num_workers,
        help="data loader worker processes per process",
    )
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
        "--config",
        metavar="FILE",
        help="JSON (or YAML, with PyYAML) file of settings: keys are the flags' names with "
        "underscores (batch_size, no_moment, model: {num_queries: 12}); flags given here win",
    )
    parser.add_argument(
        "--preset", default=_DEFAULTS.preset, help="detector preset (tiny, paper_r50)"
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="set a field of the preset's DetectorConfig, repeatable: e.g. --model "
        "num_queries=12 --model with_box_refine=true (also enc_layers, dec_layers, d_model, "
        "nheads, backbone, two_stage, ...; booleans true/false, tuples 1,1,1,1, none; an "
        "unknown KEY lists them all)",
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
    modes.add_argument(
        "--teacher",
        help="teacher checkpoint, run folder or pretrained folder (required by --mode thumbdet)",
    )
    modes.add_argument(
        "--downsampler",
        default=_DEFAULTS.downsampler,
        help="learned downsampler from learnthumb's registry (thumbdet: the paper's)",
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
    _fill_help(parser)
    parser.set_defaults(func=_run_train)


def _add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="COCO box AP of a checkpoint (any mode) on a COCO-format dataset",
        description="Evaluate a checkpoint with pycocotools. Students get the full-size images "
        "and run their own downsampler; boxes are scored in original image coordinates.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint file, run folder or pretrained folder (OUTPUT/pretrained) of any mode",
    )
    parser.add_argument("--output", help="JSON file for AP, AP50, AP75, APs, APm, APl (percent)")
    parser.add_argument("--verbose", action="store_true", help="print pycocotools' summary")
    _add_data_flags(parser, train=False)
    _fill_help(parser)
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
        model_overrides=parse_model_overrides(args.model),
    )


def _config_value(action: argparse.Action, value: object, where: str) -> object:
    """A ``--config`` value for ``action``, converted and checked as its flag would be."""
    name = f"{where}: {action.dest} ({action.option_strings[0]})"
    if action.dest == "model":  # {key: value} or ["key=value"]: parsed like --model flags
        if isinstance(value, dict):
            return [f"{key}={_model_text(item)}" for key, item in value.items()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ValueError(f"{name}: expected a mapping of KEY: VALUE, got {value!r}")
    if action.nargs == 0:  # store_true
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if value is None:
        return None
    if action.nargs == "+":
        if not isinstance(value, list) or not value:
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return [_config_scalar(action, item, name) for item in value]
    return _config_scalar(action, value, name)


def _model_text(value: object) -> str:
    """A JSON/YAML value as the text of ``--model KEY=TEXT``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _config_scalar(action: argparse.Action, value: object, name: str) -> object:
    kind = action.type or str
    expected = {int: "an integer", float: "a number", str: "a string"}.get(kind, "a value")
    if isinstance(value, str) and kind is not str:
        try:
            value = kind(value)
        except ValueError:
            raise ValueError(f"{name}: expected {expected}, got {value!r}") from None
    numeric = (int,) if kind is int else (int, float) if kind is float else (str,)
    if isinstance(value, bool) or not isinstance(value, numeric):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return kind(value)


def apply_config_file(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the settings of a ``--config`` file the defaults of ``parser`` (a subcommand's), so
    that flags on the command line override them.

    Raises:
        ValueError: one line naming the file and the key: unknown keys (listing the valid
            ones) and values that the flag would refuse.
    """
    actions = {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "config")
    }
    defaults = {}
    for key, value in read_config_file(path).items():
        if key not in actions:
            raise ValueError(
                f"--config {path}: unknown key {key!r}; valid keys: {', '.join(sorted(actions))}"
            )
        defaults[key] = _config_value(actions[key], value, f"--config {path}")
        actions[key].required = False
    parser.set_defaults(**defaults)


def _run_train(args: argparse.Namespace) -> int:
    from thumbdet.training.trainer import train

    path = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from thumbdet.evaluation import evaluate_checkpoint

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
    from thumbdet.checkpoints.convert import (
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``thumbdet`` argument parser.

    Args:
        command: the subcommand about to run. Of the subcommands in :data:`PLUGIN_COMMANDS`,
            only its module is imported; the others are listed with their one-line help.
            ``None``: every subcommand in full.
    """
    parser = _Parser(
        prog="thumbdet",
        description="ThumbDet: object detection on learned thumbnails (Deformable DETR).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train_parser(subparsers)
    _add_eval_parser(subparsers)
    _add_convert_parser(subparsers)
    # Full parsers first (a module may register several subcommands), then placeholders.
    for name, (module_name, _) in PLUGIN_COMMANDS.items():
        if command in (None, name) and name not in subparsers.choices:
            if importlib.util.find_spec(module_name) is not None:
                importlib.import_module(module_name).add_parser(subparsers)
    for name, (module_name, help_text) in PLUGIN_COMMANDS.items():
        if name in subparsers.choices or importlib.util.find_spec(module_name) is None:
            continue  # registered in full, or not part of this installation
        subparsers.add_parser(name, help=help_text, description=help_text)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Name -> parser of each subcommand of :func:`build_parser`'s parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _requested_command(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv`` (the first word that is not an option), or ``""``."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thumbdet`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _requested_command(argv)
    parser = build_parser(command)
    # The --config file first: its settings become the defaults that the other flags override
    # (a full parse now would already refuse a required flag that the file gives).
    config_reader = argparse.ArgumentParser(add_help=False)
    config_reader.add_argument("--config")
    config_file = config_reader.parse_known_args(argv)[0].config
    if config_file is not None and command == "train":
        try:
            apply_config_file(subcommand_parsers(parser)[command], config_file)
        except (ValueError, OSError) as error:
            print(f"thumbdet {command}: error: {_one_line(error)}", file=sys.stderr)
            return 1
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
    from thumbdet.training.trainer import CHECKPOINT_NAME

    checkpoint = os.path.join(args.output, CHECKPOINT_NAME)
    if not os.path.isfile(checkpoint):
        return " before the first checkpoint was written"
    return f"; the last checkpoint {checkpoint} is intact, --resume continues from it"


if __name__ == "__main__":
    sys.exit(main())
