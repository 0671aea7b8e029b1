"""``thumbdet.checkpoints.pretrained``: detectors and students as ``model.safetensors`` +
``config.json``."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from learnthumb import InterpolateDownsampler, create_downsampler
from learnthumb import save_pretrained as save_downsampler
from tests.thumbdet.helpers import TINY_MODEL, tiny_train_config, write_tiny_coco
from thumbdet.checkpoints import load_detector
from thumbdet.checkpoints.pretrained import (
    FORMAT_VERSION,
    PRETRAINED_DIR,
    from_pretrained,
    is_pretrained_folder,
    load_pretrained_config,
    save_pretrained,
)
from thumbdet.cli import main
from thumbdet.evaluation import evaluate_checkpoint
from thumbdet.models import build_model
from thumbdet.models.thumbnail_detector import ThumbnailDetector, widen_stem
from thumbdet.training.trainer import train


def _outputs(model, images, mask=None):
    with torch.no_grad():
        return model(images, mask)


def _assert_same_outputs(model, loaded, size=(40, 52)):
    images = torch.rand(2, 3, *size)
    mask = torch.zeros(2, *size, dtype=torch.bool)
    mask[1, :, size[1] // 2 :] = True  # the second image is padded on the right
    for padding in (None, mask):
        expected, got = _outputs(model.eval(), images, padding), _outputs(loaded, images, padding)
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def _detector():
    torch.manual_seed(0)
    return build_model("tiny", num_classes=2, **TINY_MODEL)


def test_teacher_round_trip_gives_identical_outputs(tmp_path):
    teacher = _detector()
    folder = save_pretrained(teacher, tmp_path / "teacher", category_ids=[3, 7],
                             category_names=["cat", "dog"])  # fmt: skip
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert is_pretrained_folder(folder)
    config = load_pretrained_config(folder)
    assert config["format"] == "thumbdet.checkpoints.pretrained"
    assert config["format_version"] == FORMAT_VERSION
    assert config["kind"] == "detector" and "downsampler" not in config
    assert config["detector"]["preset"] == "tiny"
    assert config["detector"]["pretrained_backbone"] is False
    assert config["category_names"] == ["cat", "dog"]
    keys = load_file(str(folder / "model.safetensors"))
    assert keys and all(key.startswith("detector.") for key in keys)

    loaded = from_pretrained(str(folder))
    assert not loaded.training
    assert loaded.checkpoint_meta["mode"] == "teacher"
    assert loaded.checkpoint_meta["category_ids"] == [3, 7]
    _assert_same_outputs(teacher, loaded)


@pytest.mark.parametrize("name", ["thumbdet", "wide"])
def test_student_round_trip_gives_identical_outputs(tmp_path, name):
    detector = _detector()
    torch.manual_seed(1)
    downsampler = create_downsampler(name, 4)
    widen_stem(detector, downsampler)  # a no-op for the 3-channel thumbdet downsampler
    student = ThumbnailDetector(detector, downsampler)
    folder = save_pretrained(student, tmp_path / name)
    config = load_pretrained_config(folder)
    assert config["kind"] == "student"
    assert config["downsampler"] == {"name": name, "scale": 4, "kwargs": {}}
    assert config["category_ids"] == [0, 1]  # nothing recorded: 0..K-1
    keys = load_file(str(folder / "model.safetensors"))
    assert {key.split(".", 1)[0] for key in keys} == {"detector", "downsampler"}

    loaded = from_pretrained(folder)
    assert isinstance(loaded, ThumbnailDetector) and loaded.scale == 4
    channels = downsampler.out_channels if name == "wide" else 3
    assert loaded.detector.backbone.body.conv1.in_channels == channels
    assert loaded.checkpoint_meta["downsampler"] == name
    _assert_same_outputs(student, loaded)


def test_train_writes_pretrained_that_eval_teacher_and_thumbnail_accept(tmp_path, capsys, caplog):
    data = write_tiny_coco(tmp_path / "data", num_images=4, size=(40, 52))
    teacher_run = tiny_train_config(data, tmp_path / "teacher")
    checkpoint = train(teacher_run)
    folder = tmp_path / "teacher" / PRETRAINED_DIR
    assert is_pretrained_folder(folder)
    assert load_pretrained_config(folder)["preprocessing"] == {"short_side": [32], "max_size": 64}
    from_checkpoint, from_folder = load_detector(checkpoint), load_detector(folder)
    assert from_folder.checkpoint_meta == {
        key: from_checkpoint.checkpoint_meta[key] for key in from_folder.checkpoint_meta
    }
    _assert_same_outputs(from_checkpoint, from_folder)

    # eval: same AP from the folder as from the checkpoint (same sizes, recorded in config.json)
    images, annotations = data
    from_run = evaluate_checkpoint(checkpoint, images, annotations, show_progress=False)
    assert evaluate_checkpoint(folder, images, annotations, show_progress=False) == from_run
    argv = ["eval", "--checkpoint", str(folder), "--val-images", str(images)]
    assert main([*argv, "--val-ann", str(annotations), "--device", "cpu"]) == 0
    assert '"AP50"' in capsys.readouterr().out

    # --teacher accepts the folder; the student's run writes its own folder.
    student_run = tiny_train_config(
        data, tmp_path / "student", mode="thumbdet", teacher=str(folder), stage1_epochs=0
    )
    student_checkpoint = train(student_run)
    student_folder = tmp_path / "student" / PRETRAINED_DIR
    assert load_pretrained_config(student_folder)["downsampler"]["name"] == "thumbdet"
    _assert_same_outputs(load_detector(student_checkpoint), load_detector(student_folder))
    argv = ["thumbnail", "--checkpoint", str(student_folder), str(next(images.iterdir()))]
    assert main([*argv, "--output", str(tmp_path / "thumbnails")]) == 0
    assert len(list((tmp_path / "thumbnails").iterdir())) == 1

    # A run that ends inside stage one has no trained student: it warns and publishes none;
    # resumed with more epochs it reaches stage two and writes its folder.
    stage_one = tiny_train_config(
        data, tmp_path / "stage_one", mode="thumbdet", teacher=str(folder), stage1_epochs=1
    )
    with caplog.at_level("WARNING", logger="thumbdet.training.trainer"):
        train(stage_one)
    assert "--epochs 1 ends in stage one (--stage1-epochs 1)" in caplog.text
    assert not (tmp_path / "stage_one" / PRETRAINED_DIR).exists()
    train(stage_one.replace(epochs=2, resume=True))
    assert is_pretrained_folder(tmp_path / "stage_one" / PRETRAINED_DIR)

    # A student is no teacher: refused in one line, as a student checkpoint is.
    refused = tiny_train_config(
        data, tmp_path / "refused", mode="thumbdet", teacher=str(student_folder)
    )
    with pytest.raises(ValueError, match="as teacher checkpoint: mode: checkpoint has 'thumbdet'"):
        train(refused)


def test_bicubic_student_is_saved_with_its_registry_downsampler(tmp_path):
    data = write_tiny_coco(tmp_path / "data", num_images=2, size=(40, 52), empty_images=0)
    checkpoint = train(tiny_train_config(data, tmp_path / "bicubic", mode="bicubic"))
    folder = tmp_path / "bicubic" / PRETRAINED_DIR
    assert load_pretrained_config(folder)["downsampler"] == {
        "name": "bicubic", "scale": 4, "kwargs": {},
    }  # fmt: skip
    assert from_pretrained(folder).checkpoint_meta["mode"] == "bicubic"
    _assert_same_outputs(load_detector(checkpoint), load_detector(folder))


# ---------------------------------------------------------------------------- bad folders
@pytest.fixture
def saved(tmp_path):
    return save_pretrained(_detector(), tmp_path / "saved")


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_files_are_named(saved, tmp_path):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        from_pretrained(saved)
    with pytest.raises(FileNotFoundError, match="no folder at"):
        from_pretrained(str(tmp_path / "nowhere" / "x" / "y"))


def test_other_formats_are_refused_with_a_hint(saved, tmp_path):
    _edit_config(saved, format=None)
    with pytest.raises(ValueError, match="thumbdet convert --from transformers"):
        from_pretrained(saved)
    folder = save_downsampler(create_downsampler("thumbdet", 4), tmp_path / "downsampler")
    with pytest.raises(ValueError, match="learnthumb.from_pretrained"):
        from_pretrained(folder)


def test_bad_versions_kinds_and_json_are_refused(saved):
    _edit_config(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="format_version"):
        from_pretrained(saved)
    _edit_config(saved, format_version=FORMAT_VERSION, kind="tokenizer")
    with pytest.raises(ValueError, match="kind must be one of"):
        from_pretrained(saved)
    _edit_config(saved, kind="detector", detector={"d_model": 64, "no_such_field": 1})
    with pytest.raises(ValueError, match='"detector"'):
        from_pretrained(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        from_pretrained(saved)


def test_weights_that_do_not_fit_are_refused(saved):
    path = str(saved / "model.safetensors")
    state = load_file(path)
    key = next(iter(state))
    save_file({name: value for name, value in state.items() if name != key}, path)
    with pytest.raises(ValueError, match=f"missing {key[len('detector.') :]}"):
        from_pretrained(saved)
    save_file(dict(state, stray=torch.zeros(1)), path)
    with pytest.raises(ValueError, match="keys outside 'detector.' and 'downsampler.'"):
        from_pretrained(saved)
    save_file(dict(state, **{"downsampler.weight": torch.zeros(1)}), path)
    with pytest.raises(ValueError, match="holds downsampler weights"):
        from_pretrained(saved)
    (saved / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="unreadable"):
        from_pretrained(saved)


def test_cli_reports_a_bad_folder_in_one_line(saved, capsys):
    _edit_config(saved, format_version=99)
    argv = ["eval", "--checkpoint", str(saved), "--val-images", "x", "--val-ann", "y.json"]
    assert main([*argv, "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("thumbdet eval: error:") and "format_version 99" in err
    assert len(err.splitlines()) == 1


def test_what_cannot_be_saved_is_refused(tmp_path):
    with pytest.raises(TypeError, match="thumbdet detector"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "linear")
    student = ThumbnailDetector(_detector(), InterpolateDownsampler(4))  # not from the registry
    with pytest.raises(ValueError, match="create_downsampler"):
        save_pretrained(student, tmp_path / "student")
    with pytest.raises(ValueError, match="one name per category id"):
        save_pretrained(_detector(), tmp_path / "names", category_names=["only one"])
    assert not (tmp_path / "student").exists() and not (tmp_path / "names").exists()
