"""Health checks and safeguards of ThumbnailDistillation; the recommended downsampler's channels."""

import dataclasses
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F

from learnthumb import (
    ConvDownsampler,
    ResidualDownsampler,
    Safeguards,
    ThumbnailDistillation,
    ThumbnailHealthWarning,
    TwoStageSchedule,
    check_thumbnail_health,
    constant_channel_fraction,
    create_downsampler,
    logit_distillation_loss,
    widen_input_conv,
)
from learnthumb.downsamplers import RECOMMENDED_DOWNSAMPLER


def _classifier(classes=5):
    return timm.create_model("test_efficientnet", num_classes=classes, pretrained=False)


_NO_HEALTH = Safeguards(check_health=False)


def _distill(downsampler=None, **kwargs):
    teacher, student = _classifier(), _classifier()
    downsampler = ConvDownsampler(4) if downsampler is None else downsampler
    return ThumbnailDistillation(
        downsampler, teacher, student, logits=lambda output: output, **kwargs
    )


def test_constant_channel_fraction_finds_dead_and_saturated_channels():
    # Random values stay below 0.9, away from the saturated 1.0 (equality is within atol).
    thumbnail = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.9
    thumbnail[:, 1] = 0.0
    thumbnail[:, 2, :, :6] = 1.0  # 75% saturated
    fraction = constant_channel_fraction(thumbnail)
    assert fraction[0] < 0.1 and fraction[1] == 1.0 and fraction[2] == pytest.approx(0.75)
    report = check_thumbnail_health(thumbnail)
    assert report.constant_channels == [1] and not report.healthy
    assert "channel 1 is 100.0% constant" in report.message
    # Padding is left out: a channel constant only in the padded area is healthy.
    padded = torch.rand(1, 3, 8, 8)
    padded[:, :, :, 4:] = 0.0
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :, 4:] = True
    assert check_thumbnail_health(padded, mask).healthy
    assert check_thumbnail_health(padded, threshold=0.45).constant_channels == [0, 1, 2]


def test_health_check_errors_name_the_argument():
    with pytest.raises(ValueError, match="thumbnail must be 4-D"):
        constant_channel_fraction(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="threshold"):
        check_thumbnail_health(torch.rand(1, 3, 4, 4), threshold=1.5)


def test_warns_once_when_a_channel_stays_dead():
    down = ConvDownsampler(4)
    with torch.no_grad():
        down.convs[-1].bias[1] = -100.0  # the final ReLU zeroes channel 1 everywhere
    distill = _distill(down, safeguards=Safeguards(health_patience=3)).train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            distill(torch.rand(2, 3, 32, 32))
        assert not [w for w in caught if w.category is ThumbnailHealthWarning]
        for _ in range(3):
            distill(torch.rand(2, 3, 32, 32))
    health = [w for w in caught if w.category is ThumbnailHealthWarning]
    assert len(health) == 1 and "channel 1 is 100.0% constant" in str(health[0].message)
    # A healthy downsampler never warns.
    distill = _distill(ResidualDownsampler(4), safeguards=Safeguards(health_patience=1)).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThumbnailHealthWarning)
        distill(torch.rand(2, 3, 32, 32))


def test_warns_when_a_schedule_gets_no_counter():
    distill = _distill(schedule=TwoStageSchedule(stage1_steps=10), safeguards=_NO_HEALTH).train()
    with pytest.warns(UserWarning, match="neither epoch= nor step="):
        out = distill(torch.rand(2, 3, 32, 32))
    assert "logit" in out.losses  # stage two, as announced
    assert set(distill(torch.rand(2, 3, 32, 32), step=3).losses) == {"moment"}


def test_warns_when_stage_one_is_too_short():
    distill = _distill(schedule=TwoStageSchedule(stage1_steps=5), safeguards=_NO_HEALTH).train()
    with pytest.warns(UserWarning, match="ended after 5 optimiser step"):
        distill(torch.rand(2, 3, 32, 32), step=5)
    # Counted in epochs: the steps this instance saw in stage one.
    distill = _distill(
        schedule=TwoStageSchedule(stage1_epochs=1),
        safeguards=Safeguards(min_stage1_steps=3, check_health=False),
    ).train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            distill(torch.rand(2, 3, 32, 32), epoch=0)
        distill(torch.rand(2, 3, 32, 32), epoch=1)
    assert not [w for w in caught if "ended after" in str(w.message)]


def test_schedule_counts_steps():
    schedule = TwoStageSchedule(stage1_steps=100)
    assert [schedule.stage(step=s) for s in (0, 99, 100)] == [1, 1, 2]
    assert repr(schedule) == "TwoStageSchedule(stage1_steps=100)"
    assert TwoStageSchedule().stage1_epochs == 5  # the paper's default
    with pytest.raises(ValueError, match="not both"):
        TwoStageSchedule(stage1_epochs=2, stage1_steps=10)
    with pytest.raises(ValueError, match="expected step="):
        schedule.stage(epoch=3)
    with pytest.raises(ValueError, match="stage1_steps must be >= 0"):
        TwoStageSchedule(stage1_steps=-1)


def test_classifier_logits_are_distilled_without_query_filter():
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    assert torch.equal(
        logit_distillation_loss(student, teacher),
        logit_distillation_loss(student[:, None], teacher[:, None]),
    )
    with pytest.raises(ValueError, match="pairing='hungarian'"):
        logit_distillation_loss(student, teacher, pairing="hungarian")
    with pytest.raises(ValueError, match="both"):
        logit_distillation_loss(student, teacher[:, None])
    # The KL of softmax distributions, averaged over the batch (classic distillation).
    expected = (
        F.kl_div(student.log_softmax(-1), teacher.softmax(-1), reduction="none").sum(-1).mean()
    )
    assert torch.allclose(logit_distillation_loss(student, teacher), expected, atol=1e-6)
    # A random teacher is never confident: with the Query Filter nothing would be distilled.
    distill = _distill(safeguards=_NO_HEALTH).eval()
    images = torch.rand(4, 3, 32, 32)
    assert distill(images).losses["logit"] > 0
    filtered = _distill(safeguards=_NO_HEALTH, query_filter=True).eval()
    filtered.student.load_state_dict(distill.student.state_dict())
    filtered.teacher.load_state_dict(distill.teacher.state_dict())
    assert filtered(images).losses["logit"] == 0


def test_non_finite_inputs_and_weights_are_refused():
    distill = _distill(safeguards=_NO_HEALTH).train()
    images = torch.rand(2, 3, 32, 32)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="images must be finite, got 1 NaN"):
        distill(images)
    with torch.no_grad():
        distill.downsampler.convs[0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="thumbnail has non-finite values"):
        distill(torch.rand(2, 3, 32, 32))
    distill.safeguards = dataclasses.replace(_NO_HEALTH, check_finite=False)  # switchable
    distill(torch.rand(2, 3, 32, 32))


def test_recommended_downsampler_starts_as_bicubic():
    down = create_downsampler(RECOMMENDED_DOWNSAMPLER, 4)
    images = torch.rand(2, 3, 33, 47)
    assert torch.equal(down(images)[:, :3], create_downsampler("bicubic", 4)(images))


def _train_briefly(down, seed):
    """Ten steps of end-to-end training with a tiny classifier at a large learning rate."""
    torch.manual_seed(seed)
    head = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 4),
    )  # fmt: skip
    widen_input_conv(head, getattr(down, "out_channels", 3))  # a wide thumbnail's stem
    images = torch.rand(16, 3, 32, 32) * torch.rand(16, 3, 1, 1)  # varied contrast
    labels = torch.randint(0, 4, (16,))
    optimizer = torch.optim.Adam([*down.parameters(), *head.parameters()], lr=3e-2)
    for _ in range(10):
        loss = F.cross_entropy(head(down(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return down(images)


@pytest.mark.parametrize("seed", range(20))
def test_recommended_downsampler_keeps_every_channel_alive(seed):
    torch.manual_seed(seed)
    thumbnail = _train_briefly(create_downsampler(RECOMMENDED_DOWNSAMPLER, 4), seed)
    assert check_thumbnail_health(thumbnail, threshold=0.5).healthy
    assert (thumbnail.std(dim=(0, 2, 3)) > 0.02).all()


def test_the_papers_downsampler_can_start_with_a_dead_channel():
    # Why the recommended module is not the paper's: with its final ReLU, some seeds start
    # with a channel that is zero almost everywhere (the check above would catch it).
    dead = 0
    for seed in range(20):
        torch.manual_seed(seed)
        down = ConvDownsampler(4)
        with torch.no_grad():
            thumbnail = down(torch.rand(8, 3, 32, 32))
        dead += not check_thumbnail_health(thumbnail, threshold=0.9).healthy
    assert dead >= 1
