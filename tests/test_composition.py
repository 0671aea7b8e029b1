"""FeatureTap, TwoStageSchedule, DistillWeights, Safeguards and ThumbnailDistillation end to end."""

import copy

import pytest
import timm
import torch
from torch import nn

from learnthumb import (
    ConvDownsampler,
    DistillWeights,
    FeatureDistillationLoss,
    FeatureTap,
    LogitDistillationLoss,
    MomentMatchingLoss,
    QueryFilter,
    Safeguards,
    SaliencySampler,
    ThumbnailDistillation,
    TwoStageSchedule,
    downsample_padding_mask,
    logit_distillation_loss,
    moment_matching_loss,
    query_filter,
)


def _tiny_resnet(num_classes=4):
    # A narrow timm ResNet: the real architecture, small enough for a CPU test.
    return timm.create_model(
        "resnet18", num_classes=num_classes, pretrained=False, channels=(8, 16, 32, 64)
    )


def test_feature_tap_records_and_removes():
    model = _tiny_resnet().eval()
    tap = FeatureTap(model, ["layer2", "layer4"])
    model(torch.rand(1, 3, 32, 32))
    shapes = [tuple(f.shape) for f in tap.values()]
    assert shapes == [(1, 16, 4, 4), (1, 64, 1, 1)]
    tap.remove()
    model(torch.rand(1, 3, 32, 32))
    assert tap.features == {}
    with FeatureTap(model, ["layer3"]) as tap:
        model(torch.rand(1, 3, 32, 32))
        assert tap["layer3"].shape == (1, 32, 2, 2)
    assert not model.layer3._forward_hooks


def test_feature_tap_errors():
    model = _tiny_resnet()
    with pytest.raises(ValueError, match="no submodule named 'layer9'"):
        FeatureTap(model, ["layer9"])
    with pytest.raises(ValueError, match="at least one"):
        FeatureTap(model, [])
    with pytest.raises(TypeError, match="sequence of names"):
        FeatureTap(model, "layer2")
    tap = FeatureTap(model, ["layer2"])
    with pytest.raises(RuntimeError, match="run the model first"):
        tap.values()


def test_schedule_and_weights():
    schedule = TwoStageSchedule(2)
    assert [schedule.stage(e) for e in range(4)] == [1, 1, 2, 2]
    assert TwoStageSchedule(0).stage(0) == 2
    with pytest.raises(ValueError, match="stage1_epochs must be >= 0"):
        TwoStageSchedule(-1)
    with pytest.raises(ValueError, match="epoch"):
        schedule.stage(-1)
    weights = DistillWeights()
    assert (weights.moment, weights.logit, weights.feature) == (1.0, 0.5, 0.1)
    with pytest.raises(ValueError, match="DistillWeights.logit"):
        DistillWeights(logit=-1)
    with pytest.raises(TypeError):
        DistillWeights(lam=0.1)  # the losses' hyper-parameters live in their modules


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_distill_weights_refuse_non_finite(value):
    with pytest.raises(ValueError, match=r"DistillWeights.feature must be a finite number >= 0"):
        DistillWeights(feature=value)


def test_safeguards_defaults_and_checks():
    assert Safeguards() == Safeguards(
        check_finite=True, check_health=True, health_patience=100, min_stage1_steps=100
    )
    with pytest.raises(TypeError, match="Safeguards.check_health must be a bool, got int"):
        Safeguards(check_health=1)
    with pytest.raises(ValueError, match="Safeguards.health_patience must be >= 1, got 0"):
        Safeguards(health_patience=0)
    with pytest.raises(ValueError, match="Safeguards.min_stage1_steps must be >= 0, got -1"):
        Safeguards(min_stage1_steps=-1)


class _SetPredictor(nn.Module):
    """A toy DETR-like head on a timm trunk: (B, N, C) logits and a padding-mask argument."""

    def __init__(self, queries=5, classes=4):
        super().__init__()
        self.trunk = _tiny_resnet(num_classes=0)
        self.head = nn.Linear(64, queries * classes)
        self.queries, self.classes = queries, classes
        self.seen_masks = []

    def forward(self, images, padding_mask=None):
        self.seen_masks.append(padding_mask)
        pooled = self.trunk(images)  # (B, 64)
        logits = self.head(pooled).view(-1, self.queries, self.classes)  # (B, N, C)
        return {"pred_logits": logits * 3}


def test_stage_one_runs_only_the_moment_loss():
    teacher, student = _SetPredictor(), _SetPredictor()
    distill = ThumbnailDistillation(
        ConvDownsampler(4),
        teacher,
        student,
        logits="pred_logits",
        schedule=TwoStageSchedule(1),
        mask_argument="padding_mask",
        safeguards=Safeguards(min_stage1_steps=0),
    )
    thumbnail, output, losses = distill(torch.rand(2, 3, 32, 32), epoch=0)
    assert output is None and set(losses) == {"moment"}
    assert thumbnail.shape == (2, 3, 8, 8)
    assert teacher.seen_masks == [] and student.seen_masks == []
    _, output, losses = distill(torch.rand(2, 3, 32, 32), epoch=1)
    assert set(losses) == {"moment", "logit"} and output["pred_logits"].shape == (2, 5, 4)


def test_masks_reach_both_models_at_their_sizes():
    teacher, student = _SetPredictor(), _SetPredictor()
    distill = ThumbnailDistillation(
        ConvDownsampler(4), teacher, student, logits="pred_logits", mask_argument="padding_mask"
    )
    mask = torch.zeros(2, 32, 40, dtype=torch.bool)
    mask[1, :, 20:] = True
    distill(torch.rand(2, 3, 32, 40), mask)
    assert teacher.seen_masks[0] is mask
    assert student.seen_masks[0].shape == (2, 8, 10)
    assert student.seen_masks[0][1, :, 5:].all() and not student.seen_masks[0][1, :, :5].any()


def _tapped_distillation(weights: DistillWeights) -> ThumbnailDistillation:
    return ThumbnailDistillation(
        ConvDownsampler(4),
        _SetPredictor(),
        _SetPredictor(),
        feature_layers=["trunk.layer3"],
        logits="pred_logits",
        weights=weights,
    )


def test_zero_weights_switch_terms_off():
    distill = _tapped_distillation(DistillWeights(moment=0.0, feature=0.0))
    _, _, losses = distill(torch.rand(2, 3, 32, 32))
    assert set(losses) == {"logit"}
    with pytest.raises(ValueError, match="weights.moment must be > 0"):
        ThumbnailDistillation(
            ConvDownsampler(4),
            _SetPredictor(),
            _SetPredictor(),
            weights=DistillWeights(moment=0.0),
            schedule=TwoStageSchedule(1),
        )
    with pytest.raises(ValueError, match="distinct"):
        model = _SetPredictor()
        ThumbnailDistillation(ConvDownsampler(4), model, model)


def test_taps_keep_nothing_when_the_teacher_runs_for_logits_only():
    distill = _tapped_distillation(DistillWeights(feature=0.0))
    _, _, losses = distill(torch.rand(2, 3, 32, 32))
    assert set(losses) == {"moment", "logit"}
    # No full-resolution teacher batch (nor student one) stays referenced after forward.
    assert distill._teacher_tap.features == {} and distill._student_tap.features == {}


class _TwoLevels(nn.Module):
    """Returns its two feature maps as a dict (``kind="dict"``) or its last one alone."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, images):
        first = torch.relu(self.a(images))
        second = self.b(first)
        return {"feats": {"p1": first, "p2": second} if self.kind == "dict" else second}


@pytest.mark.parametrize("kind", ["dict", "tensor"])
def test_selected_features_reach_the_loss_as_the_model_returns_them(kind):
    torch.manual_seed(0)
    teacher = _TwoLevels(kind)
    distill = ThumbnailDistillation(
        ConvDownsampler(4), teacher, _TwoLevels(kind), features="feats"
    ).eval()
    images = torch.rand(2, 3, 32, 32)
    _, student_output, losses = distill(images)
    with torch.no_grad():
        expected = distill.feature_loss(student_output["feats"], teacher(images)["feats"])
    torch.testing.assert_close(losses["feature"], distill.weights.feature * expected)


def test_feature_layers_reach_a_mapping_loss_by_name():
    torch.manual_seed(0)
    teacher, student = _TwoLevels("tensor"), _TwoLevels("tensor")
    distill = ThumbnailDistillation(
        ConvDownsampler(4),
        teacher,
        student,
        feature_layers={"a": "b"},
        feature_loss=FeatureDistillationLoss(mapping={"a": "b"}),
    ).eval()
    images = torch.rand(2, 3, 32, 32)
    thumbnail, _, losses = distill(images)
    with torch.no_grad():
        student_a = student.a(thumbnail)  # what the tap on "a" records
        teacher_b = teacher.b(torch.relu(teacher.a(images)))
        expected = distill.feature_loss({"a": student_a}, {"b": teacher_b})
    torch.testing.assert_close(losses["feature"], distill.weights.feature * expected)


def test_end_to_end_training_moves_student_and_downsampler_not_teacher():
    torch.manual_seed(0)
    teacher = _SetPredictor()
    student = _SetPredictor()
    distill = ThumbnailDistillation(
        ConvDownsampler(4),
        teacher,
        student,
        feature_layers={"trunk.layer2": "trunk.layer3"},  # different strides on purpose
        feature_loss=FeatureDistillationLoss([16], [32]),
        logits="pred_logits",
        schedule=TwoStageSchedule(1),
        logit_loss=LogitDistillationLoss(activation="sigmoid"),
        query_filter=QueryFilter(threshold=0.3, activation="sigmoid"),
        safeguards=Safeguards(min_stage1_steps=0, check_health=False),
    )
    distill.train()
    assert not teacher.training
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    down_before = copy.deepcopy(distill.downsampler.state_dict())
    optimizer = torch.optim.AdamW(distill.trainable_parameters(), lr=1e-2)
    assert all(not p.requires_grad for p in teacher.parameters())
    images = torch.rand(4, 3, 64, 64)
    labels = torch.randint(0, 4, (4, 5))
    history = []
    for epoch in range(3):
        _, output, losses = distill(images, epoch=epoch)
        total = sum(losses.values())
        if output is not None:
            task = nn.functional.cross_entropy(
                output["pred_logits"].flatten(0, 1), labels.flatten()
            )
            total = total + task
        history.append(set(losses))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert history == [{"moment"}, {"moment", "feature", "logit"}, {"moment", "feature", "logit"}]
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), name  # running stats too
    changed = [not torch.equal(v, student_before[k]) for k, v in student.state_dict().items()]
    assert any(changed)
    assert not torch.equal(distill.downsampler.convs[0].weight, down_before["convs.0.weight"])


def test_query_filter_can_be_switched_off():
    torch.manual_seed(0)
    teacher, student = _SetPredictor(), _SetPredictor()
    images = torch.rand(2, 3, 32, 32)
    kwargs = dict(logits="pred_logits", weights=DistillWeights(moment=0.0))
    filtered = ThumbnailDistillation(
        ConvDownsampler(4), teacher, student, query_filter=QueryFilter(0.99), **kwargs
    )
    everything = ThumbnailDistillation(
        filtered.downsampler, teacher, student, query_filter=False, **kwargs
    )
    filtered.eval(), everything.eval()
    # A random teacher is never 99% sure: the filter keeps nothing, the unfiltered loss is > 0.
    assert filtered(images).losses["logit"].item() == 0.0
    assert everything(images).losses["logit"].item() > 0.0


def test_query_filter_settings():
    teacher, student = _SetPredictor(), _SetPredictor()
    sigmoid = LogitDistillationLoss(activation="sigmoid")

    def build(**kwargs):
        return ThumbnailDistillation(ConvDownsampler(4), teacher, student, **kwargs)

    # Automatic and True: a default filter with the logit loss's activation.
    for setting in (None, True):
        distill = build(logit_loss=sigmoid, query_filter=setting)
        assert distill.query_filter.activation == "sigmoid"
        assert distill.query_filter.threshold == 0.5
    assert build().query_filter.activation == "softmax"  # one default everywhere
    assert build(query_filter=False).query_filter is None
    configured = QueryFilter(0.3, activation="sigmoid")
    assert build(logit_loss=sigmoid, query_filter=configured).query_filter is configured
    with pytest.raises(ValueError, match="expected 'sigmoid', got 'softmax'"):
        build(logit_loss=sigmoid, query_filter=QueryFilter(0.3))
    with pytest.raises(TypeError, match="query_filter must be a QueryFilter, a bool or None"):
        build(query_filter=0.5)
    with pytest.raises(TypeError, match="logit_loss must be a LogitDistillationLoss or None"):
        build(logit_loss=logit_distillation_loss)
    with pytest.raises(TypeError, match="safeguards must be a Safeguards or None, got dict"):
        build(safeguards={"check_health": False})
    with pytest.raises(ValueError, match="expected reduction 'mean' or 'sum', got 'none'"):
        build(moment_loss=MomentMatchingLoss(reduction="none"))


def test_configured_losses_compute_what_the_functions_compute():
    """The modules' settings reach the losses: same values, bit for bit, as the functions."""
    torch.manual_seed(0)
    teacher, student = _SetPredictor(), _SetPredictor()
    weights = DistillWeights(moment=0.7, logit=0.3, feature=0.0)
    distill = ThumbnailDistillation(
        ConvDownsampler(4),
        teacher,
        student,
        logits="pred_logits",
        weights=weights,
        moment_loss=MomentMatchingLoss(lam=0.2, statistic="var"),
        logit_loss=LogitDistillationLoss(
            temperature=2.0, activation="sigmoid", pairing="hungarian"
        ),
        query_filter=QueryFilter(0.4, activation="sigmoid"),
        mask_argument="padding_mask",
    ).eval()
    images = torch.rand(2, 3, 32, 40)
    mask = torch.zeros(2, 32, 40, dtype=torch.bool)
    mask[1, :, 30:] = True
    thumbnail, output, losses = distill(images, mask)
    moment = weights.moment * moment_matching_loss(
        images, thumbnail, 0.2, statistic="var", original_padding_mask=mask
    )
    assert torch.equal(losses["moment"], moment)
    with torch.no_grad():
        teacher_logits = teacher(images, padding_mask=mask)["pred_logits"]
    keep = query_filter(teacher_logits, 0.4, "sigmoid")
    logit = weights.logit * logit_distillation_loss(
        output["pred_logits"],
        teacher_logits,
        temperature=2.0,
        keep=keep,
        activation="sigmoid",
        pairing="hungarian",
    )
    assert torch.equal(losses["logit"], logit)


class _NoScale(nn.Module):
    """A downsampler without a ``scale`` attribute."""

    def forward(self, images):
        return nn.functional.avg_pool2d(images, 4, ceil_mode=True)


def test_mask_factor_from_sizes_without_a_scale_attribute():
    teacher, student = _SetPredictor(), _SetPredictor()
    distill = ThumbnailDistillation(
        _NoScale(), teacher, student, logits="pred_logits", mask_argument="padding_mask"
    ).eval()
    mask = torch.zeros(1, 30, 40, dtype=torch.bool)
    mask[:, :, 36:] = True
    distill(torch.rand(1, 3, 30, 40), mask)
    assert student.seen_masks[0].shape == (1, 8, 10)
    assert student.seen_masks[0][:, :, 9:].all() and not student.seen_masks[0][:, :, :9].any()


def test_a_warping_downsampler_reduces_the_mask_through_its_warp():
    torch.manual_seed(0)
    down = SaliencySampler(4)
    with torch.no_grad():
        for parameter in down.parameters():
            parameter.normal_(0, 1.0)  # a trained, far from uniform, warp
    calls = []
    sample = down.sample
    down.sample = lambda images: calls.append(1) or sample(images)
    moment_masks = []
    moment_loss = MomentMatchingLoss()
    moment_loss.register_forward_pre_hook(lambda _, args: moment_masks.append(args[3]))
    teacher, student = _SetPredictor(), _SetPredictor()
    distill = ThumbnailDistillation(
        down,
        teacher,
        student,
        logits="pred_logits",
        moment_loss=moment_loss,
        mask_argument="padding_mask",
        safeguards=Safeguards(check_health=False),
    ).eval()
    images = torch.rand(1, 3, 32, 32)
    images[..., 16:] = 0
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, :, 16:] = True
    distill(images, mask)
    assert len(calls) == 1  # the thumbnail and its mask come from one sampler call
    expected = sample(images)[1].padding_mask_to_thumbnail(mask)
    assert not torch.equal(expected, downsample_padding_mask(mask, 4))  # the warp is not uniform
    assert torch.equal(student.seen_masks[0], expected)
    assert torch.equal(moment_masks[0], expected)


def test_an_empty_batch_is_refused_naming_the_argument():
    distill = ThumbnailDistillation(ConvDownsampler(4), _SetPredictor(), _SetPredictor())
    with pytest.raises(ValueError, match="images: expected a non-empty batch, got B=0"):
        distill(torch.rand(0, 3, 32, 32))
