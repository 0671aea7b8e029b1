"""``thumbdet thumbnail`` and ``thumbdet export``: learned thumbnails and ONNX graphs."""

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from PIL import Image

from tests.thumbdet.helpers import tiny_train_config, write_tiny_coco
from thumbdet.checkpoints import load_detector
from thumbdet.cli import main
from thumbdet.export import export_onnx
from thumbdet.thumbnails import find_downsampler, load_image, save_thumbnails
from thumbdet.training.trainer import train


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    images, annotations = write_tiny_coco(root / "data", num_images=4, size=(40, 52))

    def run(name, **changes):
        config = tiny_train_config((images, annotations), root / name, short_side=[40], **changes)
        return train(config)

    teacher = run("teacher")
    student = run("student", mode="thumbdet", teacher=str(teacher), stage1_epochs=0)
    return {"teacher": teacher, "student": student, "images": images}


def test_thumbnail_command_writes_the_downsampler_output(checkpoints, tmp_path):
    paths = sorted(checkpoints["images"].glob("*.png"))[:2]
    argv = ["thumbnail", "--checkpoint", str(checkpoints["student"]), *map(str, paths)]
    assert main([*argv, "--output", str(tmp_path)]) == 0
    downsampler = load_detector(checkpoints["student"]).downsampler
    for path in paths:
        written = np.asarray(Image.open(tmp_path / f"{path.stem}_thumbnail.png"))
        image = load_image(path)
        assert written.shape == (-(-image.shape[1] // 4), -(-image.shape[2] // 4), 3)
        with torch.no_grad():
            expected = downsampler(image[None])[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255
        assert np.abs(written.astype(float) - expected).max() <= 0.51


def test_thumbnail_refuses_a_teacher_checkpoint(checkpoints, tmp_path, capsys):
    image = next(checkpoints["images"].glob("*.png"))
    argv = ["thumbnail", "--checkpoint", str(checkpoints["teacher"]), str(image)]
    assert main([*argv, "--output", str(tmp_path)]) == 1
    assert "downsampler" in capsys.readouterr().err
    with pytest.raises(ValueError, match="downsampler"):
        find_downsampler(load_detector(checkpoints["teacher"]))
    with pytest.raises(ValueError, match="image_paths"):
        save_thumbnails(torch.nn.AvgPool2d(4), [], tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_export_downsampler_matches_pytorch(checkpoints, tmp_path):
    argv = ["export", "--checkpoint", str(checkpoints["student"]), "--format", "onnx"]
    argv += ["--parts", "downsampler", "--output", str(tmp_path), "--image-size", "40", "48"]
    assert main(argv) == 0
    assert not (tmp_path / "detector.onnx").exists()
    graph = onnx.load(tmp_path / "downsampler.onnx")
    onnx.checker.check_model(graph)
    image = torch.rand(1, 3, 40, 48)
    (thumbnail,) = ReferenceEvaluator(graph).run(None, {"images": image.numpy()})
    with torch.no_grad():
        expected = load_detector(checkpoints["student"]).downsampler(image)
    assert thumbnail.shape == (1, 3, 10, 12)
    assert np.allclose(thumbnail, expected.numpy(), atol=1e-5)


def test_export_refuses_a_downsampler_of_a_teacher(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="downsampler"):
        export_onnx(load_detector(checkpoints["teacher"]), tmp_path, (40, 48), ["downsampler"])
    with pytest.raises(ValueError, match="parts"):
        export_onnx(load_detector(checkpoints["teacher"]), tmp_path, (40, 48), ["head"])


@pytest.mark.slow
def test_export_detector_with_downsampler_matches_pytorch(checkpoints, tmp_path):
    student = load_detector(checkpoints["student"])
    written = export_onnx(student, tmp_path, (40, 48))
    assert [path.name for path in written] == ["detector.onnx", "downsampler.onnx"]
    graph = onnx.load(tmp_path / "detector.onnx")
    onnx.checker.check_model(graph)
    assert [o.name for o in graph.graph.output] == ["pred_logits", "pred_boxes"]
    image = torch.rand(1, 3, 40, 48)
    logits, boxes = ReferenceEvaluator(graph).run(None, {"images": image.numpy()})
    with torch.no_grad():
        expected = student(image)
    assert np.allclose(logits, expected["pred_logits"].numpy(), atol=1e-4)
    assert np.allclose(boxes, expected["pred_boxes"].numpy(), atol=1e-4)
