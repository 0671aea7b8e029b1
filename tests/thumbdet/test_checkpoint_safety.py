"""Checkpoints cannot run code, damage is detected, and writes behave like normal files."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import stat

import numpy as np
import pytest
import torch

from tests.thumbdet.helpers import tiny_train_config, write_tiny_coco
from thumbdet.checkpoints import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_torch_file,
    save_checkpoint,
)
from thumbdet.cli import main
from thumbdet.training.trainer import Trainer, train


class _RunsCommand:
    """Pickles as a call of ``os.system(command)``: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("data"), num_images=4, size=(40, 48))


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    return train(tiny_train_config(data, tmp_path_factory.mktemp("runs") / "teacher"))


# ------------------------------------------------------------------ pickles cannot run code
def _write_malicious(path, marker, form):
    payload = {"model": _RunsCommand(f"touch {marker}"), "config": {}}
    if form == "torch":
        torch.save(payload, path)  # zip file with a pickle inside
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # bare pickle


def _cli_argv(entry, evil, data, tmp_path):
    images_dir, annotation_file = data
    common = ["--device", "cpu", "--num-workers", "0"]
    data_flags = ["--train-images", str(images_dir), "--train-ann", str(annotation_file)]
    sizes = [
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--short-side",
        "32",
        "--max-size",
        "64",
    ]
    train_argv = ["train", *data_flags, *sizes, *common]
    if entry == "eval":
        val = ["--val-images", str(images_dir), "--val-ann", str(annotation_file)]
        return ["eval", "--checkpoint", str(evil), *val, *common]
    if entry == "train --teacher":
        student = ["--mode", "thumbdet", "--scale", "2"]
        return [*train_argv, "--output", str(tmp_path / "s"), *student, "--teacher", str(evil)]
    if entry == "train --resume":
        output = tmp_path / "resumed"
        output.mkdir()
        os.replace(evil, output / "checkpoint.pth")
        return [*train_argv, "--output", str(output), "--resume"]
    if entry == "train --backbone-weights":
        return [*train_argv, "--output", str(tmp_path / "b"), "--backbone-weights", str(evil)]
    if entry == "thumbnail":
        image = str(next(images_dir.glob("*.png")))
        return ["thumbnail", "--checkpoint", str(evil), image, "--output", str(tmp_path / "t")]
    assert entry == "export"
    return ["export", "--checkpoint", str(evil), "--output", str(tmp_path / "onnx")]


@pytest.mark.parametrize("form", ["torch", "pickle"])
def test_load_checkpoint_refuses_a_pickle_that_runs_code(tmp_path, form):
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    _write_malicious(evil, marker, form)
    for load in (load_checkpoint, load_torch_file):
        with pytest.raises(UnsafeCheckpointError, match="refused") as error:
            load(evil)
        assert not marker.exists(), "the checkpoint's pickle ran its command"
        assert str(evil) in str(error.value) and "\n" not in str(error.value)
    if form == "torch":
        assert "posix.system" in str(error.value) or "nt.system" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry",
    [
        "eval",
        "train --teacher",
        "train --resume",
        "train --backbone-weights",
        "thumbnail",
        "export",
    ],
)
def test_every_cli_loader_refuses_a_pickle_that_runs_code(data, tmp_path, entry, capsys):
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    _write_malicious(evil, marker, "torch")
    assert main(_cli_argv(entry, evil, data, tmp_path)) == 1
    assert not marker.exists(), "the checkpoint's pickle ran its command"
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("thumbdet ")]
    assert len(errors) == 1 and "refused to load" in errors[0], err
    assert "Traceback" not in err


def test_older_torch_checkpoints_still_load(tmp_path):
    """thumbdet 0.1 checkpoints (torch pickles with numpy RNG states), official DETR files."""
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    old = tmp_path / "old.pth"
    state = {"model": weights, "config": {"lr": 1e-4}, "rng": [capture_rng_state()]}
    torch.save(dict(state, version=1), old)  # what thumbdet 0.1's save_checkpoint wrote
    loaded = load_checkpoint(old)
    assert torch.equal(loaded["model"]["w"], weights["w"]) and loaded["version"] == 1
    assert isinstance(loaded["rng"][0]["numpy"][1], np.ndarray)

    official = tmp_path / "r50_deformable_detr-checkpoint.pth"
    namespace = argparse.Namespace(lr=2e-4, backbone="resnet50", two_stage=False)
    torch.save({"model": weights, "optimizer": {}, "epoch": 49, "args": namespace}, official)
    assert load_torch_file(official)["args"].backbone == "resnet50"
    with pytest.raises(ValueError, match="not a thumbdet checkpoint"):
        load_checkpoint(official)


def test_checkpoint_is_safetensors_with_json_metadata(teacher):
    header_size = int.from_bytes(teacher.read_bytes()[:8], "little")
    header = json.loads(teacher.read_bytes()[8 : 8 + header_size])
    state = json.loads(header["__metadata__"]["thumbdet.state"])
    assert state["meta"]["mode"] == "teacher" and state["epoch"] == 1
    tensors = {key for key in header if key != "__metadata__"}
    assert any(key.startswith("model/") for key in tensors)
    assert any(key.startswith("optimizer/") for key in tensors)


# ------------------------------------------------------------------ damage is detected
def _overwrite_inside(path, prefix):
    """Overwrite 64 bytes in the middle of the largest tensor whose name starts with prefix."""
    raw = bytearray(path.read_bytes())
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])
    name, entry = max(
        ((key, value) for key, value in header.items() if key.startswith(prefix)),
        key=lambda item: item[1]["data_offsets"][1] - item[1]["data_offsets"][0],
    )
    begin, end = (8 + header_size + offset for offset in entry["data_offsets"])
    assert end - begin >= 64
    start = (begin + end) // 2 - 32
    raw[start : start + 64] = bytes(255 - byte for byte in raw[start : start + 64])
    path.write_bytes(bytes(raw))
    return name


def test_damaged_weights_are_refused_naming_the_file(teacher, tmp_path, data, capsys):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(teacher.read_bytes())
    name = _overwrite_inside(path, "model/")
    for training_state in (True, False):
        with pytest.raises(CorruptCheckpointError, match="damaged") as error:
            load_checkpoint(path, training_state=training_state)
        assert str(path) in str(error.value) and name in str(error.value)
    images_dir, annotation_file = data
    argv = ["eval", "--checkpoint", str(path), "--val-images", str(images_dir), "--val-ann"]
    assert main([*argv, str(annotation_file), "--device", "cpu", "--num-workers", "0"]) == 1
    assert f"{path} is damaged" in capsys.readouterr().err


def test_damaged_optimizer_state_is_refused_on_resume(teacher, tmp_path, data):
    output = tmp_path / "run"
    output.mkdir()
    path = output / "checkpoint.pth"
    path.write_bytes(teacher.read_bytes())
    name = _overwrite_inside(path, "optimizer/")
    with pytest.raises(CorruptCheckpointError, match="damaged") as error:
        Trainer(tiny_train_config(data, output, epochs=2, resume=True))
    assert str(path) in str(error.value) and name in str(error.value)
    # evaluation and export read the weights only, which are intact
    assert "optimizer" not in load_checkpoint(path, training_state=False)


def test_damaged_metadata_is_refused(teacher, tmp_path):
    path = tmp_path / "checkpoint.pth"
    raw = teacher.read_bytes()
    assert raw.count(b'\\"epoch\\": 1,') == 1
    path.write_bytes(raw.replace(b'\\"epoch\\": 1,', b'\\"epoch\\": 7,'))
    with pytest.raises(CorruptCheckpointError, match="metadata"):
        load_checkpoint(path)


def test_non_finite_weights_are_never_saved(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}}, path)
    before = path.read_bytes()
    bad = {"model": {"w": torch.tensor([1.0, float("nan"), 2.0])}, "config": {}}
    with pytest.raises(FloatingPointError, match="'w'.*NaN or Inf"):
        save_checkpoint(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


# ------------------------------------------------------------------ files like normal files
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_mode_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = save_checkpoint({"model": {}, "config": {}}, tmp_path / "checkpoint.pth")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
