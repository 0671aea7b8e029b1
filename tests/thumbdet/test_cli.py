"""``thumbdet train`` in every mode and ``thumbdet eval``, end to end on a tiny dataset."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from learnthumb import list_downsamplers, register_downsampler
from tests.thumbdet.helpers import tiny_coco_flags, tiny_train_argv, write_tiny_coco
from thumbdet.checkpoints import load_checkpoint, load_detector
from thumbdet.cli import build_parser, main
from thumbdet.models.thumbnail_detector import ThumbnailDetector
from thumbdet.training.config import TrainConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return root, tiny_coco_flags(root)


def _train(root, data_flags, name, *extra):
    return main([*tiny_train_argv(root / name), *data_flags, *extra])


@pytest.fixture(scope="module")
def teacher(data):
    root, flags = data
    assert _train(root, flags, "teacher") == 0
    return root / "teacher" / "checkpoint.pth"


def _eval(root, flags, checkpoint, name):
    output = root / f"{name}.json"
    val = flags[flags.index("--val-images") :]
    argv = ["eval", "--checkpoint", str(checkpoint), "--output", str(output), *val]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 0
    return json.loads(output.read_text())


def test_train_teacher_and_eval(data, teacher, capsys):
    root, flags = data
    metrics = _eval(root, flags, teacher, "teacher")
    assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert '"AP50"' in capsys.readouterr().out  # the metrics are printed too
    log = [json.loads(line) for line in (root / "teacher" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "epoch" and set(log[-1]["val"]) == set(metrics)
    assert isinstance(load_detector(teacher), nn.Module)


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("bicubic", ["--scale", "4"]),
        ("thumbdet", ["--scale", "4", "--stage1-epochs", "0"]),
        (
            "thumbdet",
            [
                "--scale",
                "2",
                "--one-stage",
                "--no-feature",
                "--student-init",
                "teacher",
                "--logit-pairing",
                "hungarian",
            ],
        ),
    ],
)
def test_train_students_and_eval_on_full_size_images(data, teacher, mode, extra):
    root, flags = data
    name = f"{mode}_{extra[1]}_{len(extra)}"
    teacher_flags = ["--teacher", str(teacher)] if mode == "thumbdet" else []
    assert _train(root, flags, name, "--mode", mode, *extra, *teacher_flags) == 0
    checkpoint = root / name / "checkpoint.pth"
    metrics = _eval(root, flags, checkpoint, name)
    assert 0.0 <= metrics["AP50"] <= 100.0
    student = load_detector(checkpoint)
    assert isinstance(student, ThumbnailDetector) and student.scale == int(extra[1])
    outputs = student(torch.rand(1, 3, 40, 52), torch.zeros(1, 40, 52, dtype=torch.bool))
    assert outputs["pred_boxes"].shape[-1] == 4
    state = load_checkpoint(checkpoint)
    assert state["meta"]["mode"] == mode and state["meta"]["scale"] == int(extra[1])
    assert state["downsampler"] is not None  # saved with the detector ({} for bicubic)


def test_thumbdet_without_teacher_fails_before_training(data, capsys):
    root, flags = data
    assert _train(root, flags, "no_teacher", "--mode", "thumbdet") == 1
    assert "--teacher" in capsys.readouterr().err
    assert not (root / "no_teacher").exists()


def test_teacher_of_another_class_count_is_refused(teacher, tmp_path, capsys):
    images_dir, annotation_file = write_tiny_coco(tmp_path, num_images=3, category_ids=(1, 2, 5))
    flags = ["--train-images", str(images_dir), "--train-ann", str(annotation_file)]
    code = _train(tmp_path, flags, "other", "--mode", "thumbdet", "--teacher", str(teacher))
    assert code == 1
    err = capsys.readouterr().err
    assert "num_classes" in err and "teacher" in err
    assert not (tmp_path / "other").exists()


def test_scale_the_downsampler_cannot_produce_is_refused(data, teacher, capsys):
    if "test_half_only" not in list_downsamplers():

        @register_downsampler("test_half_only")
        def _half_only(scale, **_kwargs):  # noqa: ARG001 (ignores `scale`: always halves)
            return nn.AvgPool2d(2, ceil_mode=True)

    root, flags = data
    extra = ["--mode", "thumbdet", "--teacher", str(teacher), "--scale", "4"]
    assert _train(root, flags, "bad_scale", *extra, "--downsampler", "test_half_only") == 1
    assert "cannot produce scale-4 thumbnails" in capsys.readouterr().err
    assert not (root / "bad_scale").exists()


def test_parser_has_every_flag_of_the_issue():
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--preset", "tiny", "--train-images", "i", "--train-ann", "a", "--epochs", "3",
         "--output", "o", "--resume", "--lr", "1e-4", "--lr-backbone", "1e-5", "--weight-decay",
         "0.01", "--lr-drop", "2", "--clip-max-norm", "0.2", "--eval-every", "0", "--seed", "1",
         "--pretrained-backbone", "--backbone-weights", "w.pth", "--coco-root", "c",
         "--mode", "thumbdet", "--scale", "2", "--teacher", "t.pth", "--downsampler", "residual",
         "--no-moment", "--no-logit", "--no-feature", "--gamma", "2", "--lam", "0.2", "--alpha",
         "1", "--beta", "0.3", "--temperature", "2", "--threshold", "0.4", "--student-init",
         "teacher", "--freeze-downsampler-stage2", "--one-stage", "--stage1-epochs", "3",
         "--logit-pairing", "hungarian", "--augmentation", "flip"]
    )  # fmt: skip
    from thumbdet.cli.flags import settings_from_args

    config = settings_from_args(args, TrainConfig)
    distill = config.distill
    # A later flag wins: --gamma 2 after --no-moment, --stage1-epochs 3 after --one-stage.
    assert (distill.moment_weight, distill.logit_weight, distill.feature_weight) == (2, 1, 0.3)
    assert config.data.val_ann == "c/annotations/instances_val2017.json"
    assert config.schedule.stage1_epochs == 3 and config.optim.lr_drop == 2
    assert distill.downsampler == "residual" and config.scale == 2
    assert distill.logit_pairing == "hungarian" and distill.student_init == "teacher"
    assert config.data.augmentation == "flip"
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    switched = build_parser().parse_args(
        ["train", "--output", "o", "--gamma", "2", "--no-moment", "--no-logit", "--one-stage"]
    )
    switched = settings_from_args(switched, TrainConfig)
    assert (switched.distill.moment_weight, switched.distill.logit_weight) == (0, 0)
    assert switched.distill.feature_weight == 0.1 and switched.schedule.stage1_epochs == 0
