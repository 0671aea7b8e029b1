"""train_one_epoch: loss assembly, gradient clipping, frozen parameters, ThumbDet's stages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.thumbdet.helpers import write_tiny_coco
from thumbdet.training.config import TrainConfig
from thumbdet.training.engine import train_one_epoch
from thumbdet.training.modes import DetectorStep
from thumbdet.training.trainer import Trainer, train


class _Linear(nn.Module):
    """A 'detector' whose logits are a linear function of the mean pixel."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, images, padding_mask=None):  # noqa: ARG002 (the detector interface)
        mean = images.mean(dim=(2, 3))  # (B, 3)
        return {"pred_logits": (mean * self.weight).sum(-1)}


class _Criterion:
    def __init__(self, scale=1000.0):
        self.scale = scale
        self.weight_dict = {"loss_ce": 2.0}

    def __call__(self, outputs, targets):  # noqa: ARG002 (the criterion interface)
        return {"loss_ce": self.scale * outputs["pred_logits"].sum(), "ignored": torch.tensor(5.0)}


def _batches(count=2, value=1.0):
    images = torch.full((2, 3, 4, 4), value)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    targets = [{"labels": torch.tensor([0]), "boxes": torch.rand(1, 4)} for _ in range(2)]
    return [(images, mask, targets)] * count


def test_loss_is_the_weighted_sum_and_gradients_are_clipped():
    model = _Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = train_one_epoch(
        DetectorStep(model), _Criterion(), _batches(1), optimizer, torch.device("cpu"), 0,
        clip_max_norm=0.1, show_progress=False,
    )  # fmt: skip
    # loss = 2 * 1000 * sum over 2 images of (1 * 3): only weighted keys count
    assert stats["loss"] == pytest.approx(12000.0)
    assert stats["loss_ce"] == pytest.approx(6000.0)
    step = model.weight.detach() - torch.ones(3)
    assert step.norm().item() == pytest.approx(0.1, rel=1e-4)  # one SGD step of a clipped grad
    assert {"lr", "images_per_s"} <= set(stats)


def test_frozen_parameters_do_not_move_and_max_steps_stops_early():
    model = _Linear()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    stats = train_one_epoch(
        DetectorStep(model), _Criterion(), _batches(5), optimizer, torch.device("cpu"), 0,
        frozen_parameters=[model.weight], max_steps=2, show_progress=False,
    )  # fmt: skip
    assert torch.equal(model.weight.detach(), torch.ones(3))
    assert stats["images_per_s"] > 0


def test_non_finite_loss_stops_training():
    model = _Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(FloatingPointError, match="non-finite loss at epoch 0, iteration 0"):
        train_one_epoch(
            DetectorStep(model), _Criterion(float("nan")), _batches(1), optimizer,
            torch.device("cpu"), 0, show_progress=False,
        )  # fmt: skip
    assert torch.equal(model.weight.detach(), torch.ones(3))


class _SqrtCriterion(_Criterion):
    """A finite loss with an infinite gradient: d sqrt(u) / du at u = 0."""

    def __call__(self, outputs, targets):  # noqa: ARG002 (the criterion interface)
        logits = outputs["pred_logits"]
        return {"loss_ce": (logits - logits.detach()).sqrt().sum()}


class _Broken(_Linear):
    def forward(self, images, padding_mask=None):  # noqa: ARG002 (the detector interface)
        return {"pred_logits": super().forward(images)["pred_logits"] * float("nan")}


@pytest.mark.parametrize(
    ("model", "criterion", "lr", "message"),
    [
        (_Linear, _Criterion, float("inf"), "non-finite parameter at epoch 0, iteration 0: weight"),
        (_Linear, _SqrtCriterion, 1.0, "non-finite gradient at epoch 0, iteration 0: gradient of"),
        (_Broken, _Criterion, 1.0, "non-finite model outputs at epoch 0, iteration 0: pred_log"),
    ],
)
def test_non_finite_gradient_parameter_or_output_stops_training(model, criterion, lr, message):
    model = model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with pytest.raises(FloatingPointError, match=message) as error:
        train_one_epoch(
            DetectorStep(model), criterion(), _batches(2), optimizer, torch.device("cpu"), 0,
            show_progress=False,
        )  # fmt: skip
    text = str(error.value)
    assert "\n" not in text and "learning rate too high" in text
    if "outputs" not in text:
        assert "loss=" in text and "loss_ce=" in text  # the loss terms and their values


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    images_dir, annotation_file = write_tiny_coco(root, num_images=4, size=(40, 48))
    config = dict(
        preset="tiny", train_images=str(images_dir), train_ann=str(annotation_file),
        epochs=1, batch_size=2, num_workers=0, short_side=[32], max_size=64, device="cpu",
        eval_every=0,
    )  # fmt: skip
    teacher = train(TrainConfig.from_dict(dict(output=str(root / "teacher"), **config)))
    return root, config, teacher


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


def test_thumbdet_stage_one_trains_only_the_downsampler(teacher_run):
    root, config, teacher = teacher_run
    trainer = Trainer(
        TrainConfig.from_dict(dict(
            output=str(root / "s1"), mode="thumbdet", teacher=str(teacher), scale=4,
            stage1_epochs=1, freeze_downsampler_stage2=True, **config,
        ))
    )  # fmt: skip
    parts, device = trainer.parts, torch.device("cpu")
    loader = trainer._loader(trainer.train_set, 0, train=True)
    student, downsampler = _snapshot(parts.detector), _snapshot(parts.downsampler)
    teacher = parts.step.distillation.teacher
    teacher_before = _snapshot(teacher)

    stats = train_one_epoch(
        parts.step, trainer.criterion, loader, trainer.optimizer, device, 0, show_progress=False
    )
    assert set(stats) == {"loss", "moment", "lr", "images_per_s"}  # stage one: L_mm only
    assert _changed(student, parts.detector) == []
    assert _changed(downsampler, parts.downsampler) != []

    downsampler = _snapshot(parts.downsampler)
    stats = train_one_epoch(
        parts.step, trainer.criterion, loader, trainer.optimizer, device, 1,
        frozen_parameters=parts.frozen_in_stage2, show_progress=False,
    )  # fmt: skip
    assert {"loss_ce", "loss_bbox", "loss_giou", "moment", "feature", "logit"} <= set(stats)
    assert _changed(student, parts.detector) != []
    assert _changed(downsampler, parts.downsampler) == []  # frozen in stage two
    assert _changed(teacher_before, teacher) == []  # the teacher never moves
