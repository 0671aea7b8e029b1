"""What ``thumbdet`` refuses, end to end: broken models, bad settings, bad images, interrupts.

Each failure must be one line on stderr with a non-zero exit status, and leave no checkpoint
behind that a later command would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

from tests.thumbdet.helpers import (
    FAST_TRAIN_FLAGS,
    tiny_coco_flags,
    tiny_train_argv,
    write_tiny_coco,
)
from thumbdet.checkpoints import load_checkpoint, save_checkpoint
from thumbdet.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    return root, tiny_coco_flags(root)


def _train(output, flags, *extra):
    return main([*tiny_train_argv(output), *flags, *extra])


def _val_flags(flags):
    return flags[flags.index("--val-images") :]


@pytest.fixture(scope="module")
def teacher(data):
    root, flags = data
    assert _train(root / "teacher", flags) == 0
    return root / "teacher" / "checkpoint.pth"


def _files(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ A: broken models
def test_diverging_training_stops_before_saving(data, capsys):
    root, flags = data
    output = root / "diverged"
    code = _train(output, flags, "--epochs", "2", "--lr", "1e30", "--max-steps-per-epoch", "1")
    assert code == 1
    _one_error_line(capsys, "non-finite", "epoch 0", "learning rate too high")
    assert not (output / "checkpoint.pth").exists()
    log = (output / "log.jsonl").read_text().splitlines()
    assert all(json.loads(line)["event"] != "epoch" for line in log)  # no AP was reported


def test_eval_of_a_broken_checkpoint_reports_no_ap(data, teacher, tmp_path, capsys):
    _, flags = data
    state = load_checkpoint(teacher)
    # Finite but overflowing weights, as one step of lr 1e30 leaves them: outputs are NaN.
    state["model"] = {
        key: value * 1e30 if value.is_floating_point() else value
        for key, value in state["model"].items()
    }
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    metrics = tmp_path / "metrics.json"
    argv = ["eval", "--checkpoint", str(broken), "--output", str(metrics), *_val_flags(flags)]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 1
    _one_error_line(capsys, "expected finite values", "broken")
    assert not metrics.exists()


# ------------------------------------------------------------------ B: bad settings
@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--lr-backbone", "-1", "expected a number >= 0, got -1.0"),
        ("--lr", "0", "expected a number > 0"),
        ("--lr", "nan", "expected a number > 0, got nan"),
        ("--weight-decay", "-0.1", ">= 0"),
        ("--clip-max-norm", "-1", ">= 0"),
        ("--num-workers", "-1", "expected an integer >= 0"),
        ("--eval-every", "-1", "expected an integer >= 0"),
        ("--max-steps-per-epoch", "-2", "expected an integer >= 0"),
        ("--seed", "-1", "expected an integer >= 0"),
        ("--scale", "0", "expected an integer >= 1"),
        ("--stage1-epochs", "-1", "expected an integer >= 0"),
        ("--temperature", "0", "> 0"),
        ("--threshold", "1.5", "<= 1"),
        ("--moment-weight", "-1", ">= 0"),
        ("--logit-weight", "-0.5", ">= 0"),
        ("--max-size", "0", "expected an integer >= 1"),
        ("--device", "tpu", "expected cpu, cuda or cuda:N, got 'tpu'"),
    ],
)
def test_train_refuses_out_of_range_settings_naming_the_flag(
    data, tmp_path, capsys, flag, value, expected
):
    _, flags = data
    output = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--output", str(output), *FAST_TRAIN_FLAGS, *flags]
    assert main([*argv, flag, value]) == 1
    _one_error_line(capsys, flag, expected)
    assert not output.exists()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--short-side", "0", "expected an integer >= 1, got 0"),
        ("--batch-size", "0", "expected an integer >= 1, got 0"),
        ("--num-workers", "-1", "expected an integer >= 0"),
        ("--max-size", "0", "expected an integer >= 1"),
        ("--device", "tpu", "expected cpu, cuda or cuda:N"),
    ],
)
def test_eval_refuses_out_of_range_settings_naming_the_flag(
    data, teacher, tmp_path, capsys, flag, value, expected
):
    _, flags = data
    metrics = tmp_path / "metrics.json"
    argv = ["eval", "--checkpoint", str(teacher), "--output", str(metrics), *_val_flags(flags)]
    argv += ["--num-workers", "0", "--device", "cpu"]
    assert main([*argv, flag, value]) == 1
    _one_error_line(capsys, flag, expected)
    assert not metrics.exists() and '"AP"' not in capsys.readouterr().out


def test_resume_with_changed_settings_is_refused_and_nothing_recorded(
    data, teacher, tmp_path, capsys
):
    _, flags = data
    output = tmp_path / "run"
    shutil.copytree(teacher.parent, output)
    before = _files(output)
    changed = ["--lr", "1e-3", "--batch-size", "1", "--lr-drop", "5"]
    assert _train(output, flags, "--resume", "--epochs", "2", *changed) == 1
    line = _one_error_line(capsys, "cannot --resume", "with changed settings")
    for setting in ("lr: checkpoint has 0.0002, this run has 0.001", "batch_size", "lr_drop"):
        assert setting in line
    assert "epochs" not in line.split("(only")[0]  # epochs may change on resume
    assert _files(output) == before  # neither config.json nor the checkpoint changed
    # the same settings with more epochs resume
    assert _train(output, flags, "--resume", "--epochs", "2", "--max-steps-per-epoch", "0") == 0
    assert load_checkpoint(output / teacher.name)["epoch"] == 2


# ------------------------------------------------------------------ C: one line, not a traceback
def test_output_below_a_file_is_one_line(data, tmp_path, capsys):
    _, flags = data
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert _train(blocker / "run", flags) == 1
    _one_error_line(capsys, "--output", "below the file", "a_file")
    assert _train(blocker, flags) == 1
    _one_error_line(capsys, "--output", "expected a folder, but it is a file")


def test_read_only_output_is_one_line(data, tmp_path, capsys, monkeypatch):
    from thumbdet import validation

    _, flags = data
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root writes anyway: pretend the folder is read-only
        real = validation._writable
        monkeypatch.setattr(validation, "_writable", lambda p: p != read_only and real(p))
    try:
        assert _train(read_only / "run", flags) == 1
        _one_error_line(capsys, "--output", "not writable", "read_only")
        assert not (read_only / "run").exists()
    finally:
        read_only.chmod(0o755)


def _without(checkpoint, key, path):
    state = load_checkpoint(checkpoint)
    del state[key]
    save_checkpoint(state, path)
    return path


@pytest.mark.parametrize("key", ["meta", "model_config"])
def test_checkpoint_without_meta_or_model_config_is_one_line(data, teacher, tmp_path, capsys, key):
    _, flags = data
    incomplete = _without(teacher, key, tmp_path / "incomplete.pth")
    argv = ["eval", "--checkpoint", str(incomplete), *_val_flags(flags), "--num-workers", "0"]
    assert main([*argv, "--device", "cpu"]) == 1
    _one_error_line(capsys, "incomplete.pth", key)
    images_dir = flags[flags.index("--train-images") + 1]
    image = sorted(os.listdir(images_dir))[0]
    argv = ["thumbnail", "--checkpoint", str(incomplete), os.path.join(images_dir, image)]
    assert main([*argv, "--output", str(tmp_path / "thumbs")]) == 1
    _one_error_line(capsys, "incomplete.pth", key)
    if key == "model_config":  # a teacher without "meta" is refused for its meta already
        extra = ["--mode", "thumbdet", "--teacher", str(incomplete), "--scale", "2"]
        assert _train(tmp_path / "student", flags, *extra) == 1
        _one_error_line(capsys, "incomplete.pth", key)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--model", "num_queries=7"],
            ["--model num_queries", "expected the teacher's 30", "got 7"],
        ),
        (
            [
                "--model",
                "num_queries=7",
                "--logit-pairing",
                "hungarian",
                "--student-init",
                "teacher",
            ],
            ["--student-init teacher", "num_queries: teacher 30, student 7"],
        ),
        (
            ["--model", "backbone_channels=8,16,32,64"],
            ["--feature-weight 0.1", "teacher's feature channels [32, 64, 128], got [16, 32, 64]"],
        ),
    ],
)
def test_a_student_that_cannot_pair_with_its_teacher_is_refused_before_training(
    data, teacher, tmp_path, capsys, extra, expected
):
    _, flags = data
    output = tmp_path / "student"
    argv = ["--mode", "thumbdet", "--teacher", str(teacher), "--scale", "2", "--one-stage"]
    assert _train(output, flags, *argv, *extra) == 1
    _one_error_line(capsys, *expected)
    assert not (output / "checkpoint.pth").exists()


def test_eval_output_pointing_at_a_folder_is_refused_before_evaluating(
    data, teacher, tmp_path, capsys
):
    _, flags = data
    argv = ["eval", "--checkpoint", str(teacher), "--output", str(tmp_path), *_val_flags(flags)]
    assert main([*argv, "--num-workers", "0", "--device", "cpu"]) == 1
    _one_error_line(capsys, "--output", "expected a file path, but it is a folder")
    assert '"AP"' not in capsys.readouterr().out


def _main_interrupted(argv):
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped thumbdet's main (a traceback for the user)")


def _train_interrupted_after_one_epoch(output, flags, capsys):
    argv = [*tiny_train_argv(output, epochs=3), *flags, "--eval-every", "0"]
    assert _main_interrupted(argv) == 130
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "intact" in lines[0] and "--resume" in lines[0]
    state = load_checkpoint(output / "checkpoint.pth")  # the last checkpoint loads
    assert state["epoch"] == 1
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log if record["event"] == "epoch"] == [0]


def test_ctrl_c_during_training_exits_130_with_one_line(data, tmp_path, capsys, monkeypatch):
    import thumbdet.training.trainer

    _, flags = data
    real = thumbdet.training.trainer.train_one_epoch

    def interrupted_in_epoch_one(*args, **kwargs):
        if args[5] == 1:  # epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(thumbdet.training.trainer, "train_one_epoch", interrupted_in_epoch_one)
    _train_interrupted_after_one_epoch(tmp_path / "run", flags, capsys)


def test_ctrl_c_during_a_save_lets_the_checkpoint_finish(data, tmp_path, capsys, monkeypatch):
    import thumbdet.training.trainer

    _, flags = data
    real = thumbdet.training.trainer.save_checkpoint

    def save_with_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the checkpoint is being written
        return real(*args, **kwargs)

    monkeypatch.setattr(thumbdet.training.trainer, "save_checkpoint", save_with_ctrl_c)
    _train_interrupted_after_one_epoch(tmp_path / "run", flags, capsys)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


# ------------------------------------------------------------------ D: bad image files
@pytest.fixture
def damaged_data(tmp_path):
    images_dir, annotation_file = write_tiny_coco(tmp_path / "data", num_images=5, size=(40, 48))
    data = (images_dir / "0002.png").read_bytes()
    (images_dir / "0002.png").write_bytes(data[: len(data) // 2])  # truncated
    return images_dir, ["--train-images", str(images_dir), "--train-ann", str(annotation_file)]


def test_truncated_image_is_named_before_training(damaged_data, tmp_path, capsys):
    _, flags = damaged_data
    output = tmp_path / "run"
    assert _train(output, flags) == 1
    _one_error_line(capsys, "0002.png", "truncated", "image id 2", "--skip-bad-images")
    assert not output.exists()


def test_skip_bad_images_trains_on_the_others_and_counts_them(damaged_data, tmp_path, caplog):
    _, flags = damaged_data
    output = tmp_path / "run"
    assert _train(output, flags, "--skip-bad-images", "--eval-every", "0") == 0
    assert "skipped 1 of 5 images" in caplog.text
    start = json.loads((output / "log.jsonl").read_text().splitlines()[0])
    assert start["train_images"] == 4 and start["train_images_skipped"] == 1


def test_image_damaged_during_training_is_one_line_from_a_worker(tmp_path, capsys, monkeypatch):
    import thumbdet.training.trainer

    images_dir, annotation_file = write_tiny_coco(tmp_path / "data", num_images=4, size=(40, 48))
    flags = ["--train-images", str(images_dir), "--train-ann", str(annotation_file)]
    real = thumbdet.training.trainer.train_one_epoch

    def damage_then_train(*args, **kwargs):
        for path in images_dir.glob("*.png"):  # after the check, before the epoch reads them
            path.write_bytes(path.read_bytes()[:100])
        return real(*args, **kwargs)

    monkeypatch.setattr(thumbdet.training.trainer, "train_one_epoch", damage_then_train)
    assert _train(tmp_path / "run", flags, "--num-workers", "1") == 1
    line = _one_error_line(capsys, "cannot be read", ".png")
    assert "Traceback" not in line and "ImageReadError" not in line
