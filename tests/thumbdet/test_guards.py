"""What ``thumbdet`` refuses, end to end: broken models, bad settings, bad images, interrupts.

Each failure must be one line on stderr with a non-zero exit status, and leave no checkpoint
behind that a later command would trust.
"""

from __future__ import annotations

import json

import pytest
import torch

from thumbdet.checkpoint import load_checkpoint
from thumbdet.cli import main
from thumbdet.testing import write_tiny_coco

_SIZES = ["--short-side", "32", "40", "--max-size", "64"]
_FAST = ["--batch-size", "2", "--num-workers", "0", "--device", "cpu", *_SIZES]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    images_dir, annotation_file = write_tiny_coco(root, num_images=4, size=(40, 48))
    return root, [
        "--train-images", str(images_dir), "--train-ann", str(annotation_file),
        "--val-images", str(images_dir), "--val-ann", str(annotation_file),
    ]  # fmt: skip


def _train(output, flags, *extra):
    argv = ["train", "--preset", "tiny", "--output", str(output), "--epochs", "1", *_FAST]
    return main([*argv, *flags, *extra])


def _val_flags(flags):
    return flags[flags.index("--val-images") :]


@pytest.fixture(scope="module")
def teacher(data):
    root, flags = data
    assert _train(root / "teacher", flags) == 0
    return root / "teacher" / "checkpoint.pth"


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
