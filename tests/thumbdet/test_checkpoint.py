"""Atomic checkpoints, refusal of incompatible checkpoints, and exact resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import thumbdet.checkpoints.format
from tests.thumbdet.helpers import tiny_train_config, write_tiny_coco
from thumbdet.checkpoints import (
    IncompatibleCheckpointError,
    capture_rng_state,
    check_compatible,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from thumbdet.training.trainer import Trainer, train


class _Unstorable:
    pass


def test_save_is_atomic_and_keeps_the_old_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": {}}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"cannot store the _Unstorable at state\['bad'\]"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "config": {}, "bad": _Unstorable()}, path)

    def interrupted_write(tensors, filename, metadata=None):  # noqa: ARG001 (save_file's signature)
        with open(filename, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(thumbdet.checkpoints.format, "save_file", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]  # no temp file left
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_load_rejects_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "x.pth")
    torch.save({"weights": 1}, tmp_path / "y.pth")
    with pytest.raises(ValueError, match="not a thumbdet checkpoint"):
        load_checkpoint(tmp_path / "y.pth")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pth")


def test_load_reads_a_folder_and_any_header_length(tmp_path):
    # A safetensors header length whose low byte is 0x80 starts the file like a pickle.
    for size in range(256):
        path = save_checkpoint({"model": {}, "config": {}, "pad": "x" * size}, tmp_path / "c.pth")
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert load_checkpoint(path)["pad"] == "x" * size
    (tmp_path / "run").mkdir()
    save_checkpoint({"model": {}, "config": {}}, tmp_path / "run" / "checkpoint.pth")
    assert load_checkpoint(tmp_path / "run")["model"] == {}
    with pytest.raises(FileNotFoundError, match="a folder without checkpoint.pth"):
        load_checkpoint(tmp_path)


def test_check_compatible_names_every_mismatch():
    checkpoint = {"meta": {"preset": "tiny", "num_classes": 2}}
    check_compatible(checkpoint, "c.pth", "resume", preset="tiny", num_classes=2)
    with pytest.raises(IncompatibleCheckpointError, match="preset.*'tiny'.*'paper_r50'") as error:
        check_compatible(checkpoint, "c.pth", "resume", preset="paper_r50", num_classes=3)
    assert "num_classes" in str(error.value)


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("data"), num_images=5, size=(40, 48))


def _config(data, output, **overrides):
    """Two whole epochs of the default tiny detector (resume crosses an epoch boundary)."""
    settings = {"epochs": 2, "short_side": [32, 40], "seed": 3, "max_steps_per_epoch": 0}
    return tiny_train_config(data, output, model_overrides={}, **{**settings, **overrides})


def _weights(path):
    checkpoint = load_checkpoint(path)
    weights = dict(checkpoint["model"])
    for key, value in (checkpoint["downsampler"] or {}).items():
        weights["downsampler." + key] = value
    return weights, checkpoint


def _assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.fixture
def one_thread():
    # Bit-exact comparisons need one thread: with several, the CPU convolution backward sums
    # partial weight gradients in an order that varies from run to run.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["teacher", "thumbdet"])
def test_kill_and_resume_gives_the_same_weights(tiny_data, tmp_path, mode):
    extra = {}
    if mode == "thumbdet":
        teacher = train(_config(tiny_data, tmp_path / "teacher", epochs=1))
        # stage one is epoch 0: the resume crosses the stage boundary
        extra = dict(mode="thumbdet", teacher=str(teacher), stage1_epochs=1, scale=2)
    straight, _ = _weights(train(_config(tiny_data, tmp_path / "straight", **extra)))

    interrupted = tmp_path / "interrupted"
    train(_config(tiny_data, interrupted, epochs=1, **extra))  # "killed" after epoch 1
    resumed_path = train(_config(tiny_data, interrupted, resume=True, **extra))
    resumed, checkpoint = _weights(resumed_path)
    assert checkpoint["epoch"] == 2
    _assert_same_weights(straight, resumed)
    start_weights, _ = _weights(train(_config(tiny_data, tmp_path / "one", epochs=1, **extra)))
    assert any(not torch.equal(start_weights[k], resumed[k]) for k in resumed)  # it trained
    log = (interrupted / "log.jsonl").read_text().splitlines()
    assert sum('"event": "epoch"' in line for line in log) == 2


def test_refuses_to_overwrite_or_resume_another_preset(tiny_data, tmp_path):
    output = tmp_path / "run"
    path = train(_config(tiny_data, output, epochs=1))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(_config(tiny_data, output, epochs=2))
    checkpoint = load_checkpoint(path)
    meta = dict(checkpoint["meta"])
    checkpoint["meta"]["preset"] = "paper_r50"
    save_checkpoint(checkpoint, path)
    with pytest.raises(IncompatibleCheckpointError, match="preset"):
        Trainer(_config(tiny_data, output, epochs=2, resume=True))
    checkpoint["meta"].update(preset="tiny", num_classes=5)
    save_checkpoint(checkpoint, path)
    with pytest.raises(IncompatibleCheckpointError, match="num_classes"):
        Trainer(_config(tiny_data, output, epochs=2, resume=True))
    # Saved by two processes (torchrun), resumed by one: the data order would differ.
    checkpoint["meta"] = meta
    checkpoint["rng"] = checkpoint["rng"] * 2
    save_checkpoint(checkpoint, path)
    with pytest.raises(
        ValueError, match=r"expected a checkpoint of 1 process\(es\) like this run, got one of 2"
    ):
        Trainer(_config(tiny_data, output, epochs=2, resume=True))
    assert load_checkpoint(path)["epoch"] == 1 and len(before) > 0
