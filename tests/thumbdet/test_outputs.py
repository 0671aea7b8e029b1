"""No lost outputs: one run per ``--output`` folder, distinct thumbnail names."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import thumbdet.training.trainer
from tests.thumbdet.helpers import tiny_train_config, write_tiny_coco
from thumbdet.cli import main
from thumbdet.thumbnails import load_image, save_thumbnails, thumbnail_names
from thumbdet.training.output_lock import LOCK_NAME, OutputLock, OutputLockedError
from thumbdet.training.trainer import Trainer, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("data"), num_images=4, size=(40, 48))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------ the output lock
def test_a_second_run_into_the_same_output_is_refused_naming_the_first(data, tmp_path, capsys):
    output = tmp_path / "run"
    with Trainer(tiny_train_config(data, output)):
        assert (output / LOCK_NAME).exists()
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            Trainer(tiny_train_config(data, output))
        images_dir, annotation_file = data
        argv = ["train", "--preset", "tiny", "--output", str(output), "--epochs", "1"]
        argv += ["--train-images", str(images_dir), "--train-ann", str(annotation_file)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{output} is in use by another thumbdet train (pid {os.getpid()}" in err
        assert len(err.strip().splitlines()) == 1
    assert not (output / LOCK_NAME).exists()  # released
    with Trainer(tiny_train_config(data, output)):
        pass


def test_the_lock_is_held_by_a_live_process_of_another_run(tmp_path):
    folder = tmp_path / "run"
    code = (
        "import sys, time; from thumbdet.training.output_lock import OutputLock; "
        f"lock = OutputLock({str(folder)!r}); print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
            OutputLock(folder)
    finally:
        holder.kill()  # like kill -9: the lock file stays behind
        holder.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid
    with OutputLock(folder) as lock:  # taken over: that run is gone
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_stale_lock_is_taken_over_with_a_notice(data, tmp_path, caplog):
    output = tmp_path / "run"
    output.mkdir()
    pid = _dead_pid()
    (output / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": "x", "started": "t"}))
    with caplog.at_level(logging.WARNING), Trainer(tiny_train_config(data, output)):
        pass
    notices = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(notices) == 1 and f"pid {pid}" in notices[0]
    assert not (output / LOCK_NAME).exists()


def test_the_lock_is_released_when_a_run_fails(data, tmp_path, monkeypatch):
    output = tmp_path / "run"
    train(tiny_train_config(data, output))
    assert not (output / LOCK_NAME).exists()  # released after a normal end
    # refused in the constructor, after the lock was taken
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_train_config(data, output))
    assert not (output / LOCK_NAME).exists()

    def fail(*_args, **_kwargs):
        assert (output / LOCK_NAME).exists()  # held while training
        raise RuntimeError("training failed")

    monkeypatch.setattr(thumbdet.training.trainer, "train_one_epoch", fail)
    with pytest.raises(RuntimeError, match="training failed"):
        train(tiny_train_config(data, output, epochs=2, resume=True))
    assert not (output / LOCK_NAME).exists()


def test_a_refused_run_leaves_no_output_folder(data, tmp_path):
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(b"not a checkpoint")  # refused after the lock was taken
    output = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        Trainer(tiny_train_config(data, output, mode="thumbdet", teacher=str(teacher), scale=2))
    assert not (tmp_path / "new").exists()


def test_temp_files_of_an_interrupted_save_are_removed_at_start(data, tmp_path, caplog):
    output = tmp_path / "run"
    output.mkdir()
    temp = output / ".checkpoint.pth.x1y2z3.tmp"  # what save_checkpoint leaves after kill -9
    temp.write_bytes(b"\0" * 1024)
    other = output / "notes.tmp"
    other.write_text("not ours")
    with (
        caplog.at_level(logging.WARNING, logger="thumbdet.training.trainer"),
        Trainer(tiny_train_config(data, output)),
    ):
        assert not temp.exists() and other.exists()
    assert any(temp.name in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ thumbnail names
def _write_image(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 12, 3), value, dtype=np.uint8)).save(path)


def test_thumbnails_of_images_with_the_same_stem_do_not_overwrite(tmp_path):
    inputs = [
        tmp_path / "cam1" / "img.png",
        tmp_path / "cam2" / "img.png",
        tmp_path / "cam2" / "img.jpg",
        tmp_path / "other.png",
    ]
    for value, path in enumerate(inputs):
        _write_image(path, 40 * value + 20)
    output = tmp_path / "thumbs"
    written = save_thumbnails(torch.nn.AvgPool2d(2), inputs, output)
    assert len(set(written)) == len(inputs)
    assert [path.relative_to(output).as_posix() for path in written] == [
        "cam1/img_thumbnail.png",
        "cam2/img_png_thumbnail.png",
        "cam2/img_jpg_thumbnail.png",
        "other_thumbnail.png",
    ]
    for source, target in zip(inputs, written, strict=True):
        expected = torch.nn.functional.avg_pool2d(load_image(source)[None], 2)[0]
        pixels = torch.from_numpy(np.array(Image.open(target))).permute(2, 0, 1) / 255.0
        assert torch.allclose(pixels, expected, atol=1 / 255)  # its own image's thumbnail


def test_thumbnail_names_stay_flat_and_distinct():
    # unique stems: <stem>_thumbnail.png in the output folder, as before
    assert thumbnail_names(["a/x.png", "b/y.png"]) == [
        Path("x_thumbnail.png"),
        Path("y_thumbnail.png"),
    ]
    names = thumbnail_names(["img.png", "img.jpg", "img_png.bmp", "img.png"])
    assert len(set(names[:3])) == 3 and names[3] == names[0]  # the same file: the same name
