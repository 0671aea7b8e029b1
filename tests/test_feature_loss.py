"""Feature distillation across a resolution mismatch (Eq. (8))."""

import pytest
import torch
import torch.nn.functional as F

from learnthumb import FeatureDistillationLoss, feature_distillation_loss


def _maps(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    student = [torch.rand(2, 4, 3, 5, generator=g, dtype=dtype) for _ in range(2)]
    teacher = [torch.rand(2, 4, 12, 20, generator=g, dtype=dtype) for _ in range(2)]
    return student, teacher


def test_matches_equation_8():
    student, teacher = _maps()
    expected = torch.stack(
        [
            (t - F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False))
            .square()
            .mean()
            for s, t in zip(student, teacher, strict=True)
        ]
    ).mean()
    torch.testing.assert_close(feature_distillation_loss(student, teacher), expected)


@pytest.mark.parametrize("align", ["bilinear", "bicubic", "nearest", "area", "pool_teacher"])
def test_zero_when_student_equals_aligned_teacher(align):
    teacher = torch.rand(1, 3, 8, 8)
    if align == "pool_teacher":
        student = F.adaptive_avg_pool2d(teacher, (2, 2))
    else:
        # A constant map survives every resize unchanged.
        teacher = torch.full((1, 3, 8, 8), 0.7)
        student = torch.full((1, 3, 2, 2), 0.7)
    loss = feature_distillation_loss([student], [teacher], align=align)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_teacher_receives_no_gradient():
    student, teacher = _maps()
    student = [s.requires_grad_() for s in student]
    teacher = [t.requires_grad_() for t in teacher]
    feature_distillation_loss(student, teacher).backward()
    assert all(s.grad is not None for s in student)
    assert all(t.grad is None for t in teacher)


def test_padding_mask_excludes_padded_positions():
    teacher = torch.zeros(1, 2, 8, 8)
    student = torch.zeros(1, 2, 8, 8)
    student[..., 4:] = 100.0  # wrong only where padded
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[..., 16:] = True
    assert feature_distillation_loss([student], [teacher], padding_mask=mask).item() == 0.0
    assert feature_distillation_loss([student], [teacher]).item() > 0


def test_float16_with_a_padding_mask_does_not_overflow():
    g = torch.Generator().manual_seed(0)
    student = torch.rand(2, 256, 25, 25, generator=g)
    teacher = torch.rand(2, 256, 100, 100, generator=g)
    mask = torch.zeros(2, 400, 400, dtype=torch.bool)
    mask[:, :, 300:] = True
    expected = feature_distillation_loss(student, teacher, padding_mask=mask)
    half = feature_distillation_loss(student.half(), teacher.half(), padding_mask=mask)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=1e-3, rtol=1e-2)


def test_gradcheck():
    student, teacher = _maps(dtype=torch.float64)
    student = [s.requires_grad_() for s in student]
    assert torch.autograd.gradcheck(
        lambda a, b: feature_distillation_loss([a, b], teacher), tuple(student)
    )


def test_module_equals_function_and_adapters():
    student, teacher = _maps()
    torch.testing.assert_close(
        FeatureDistillationLoss(align="area")(student, teacher),
        feature_distillation_loss(student, teacher, align="area"),
    )
    loss = FeatureDistillationLoss([8, 4], [16, 4])
    assert isinstance(loss.adapters[0], torch.nn.Conv2d)
    assert isinstance(loss.adapters[1], torch.nn.Identity)
    value = loss(
        [torch.rand(2, 8, 3, 3), torch.rand(2, 4, 3, 3)],
        [torch.rand(2, 16, 6, 6), torch.rand(2, 4, 6, 6)],
    )
    value.backward()
    assert loss.adapters[0].weight.grad is not None


def test_a_map_its_adapter_cannot_take_is_named():
    loss = FeatureDistillationLoss([8, 4], [16, 4])
    teacher = [torch.rand(2, 16, 6, 6), torch.rand(2, 4, 6, 6)]
    with pytest.raises(ValueError, match=r"student_features\[0\]: expected 8 channels"):
        loss([torch.rand(2, 6, 3, 3), torch.rand(2, 4, 3, 3)], teacher)
    with pytest.raises(ValueError, match=r"student_features\[0\] must be 4-D"):
        loss([torch.rand(6, 3, 3), torch.rand(2, 4, 3, 3)], teacher)
    # An identity adapter (equal channels) leaves the mismatch to the pairing check.
    with pytest.raises(ValueError, match=r"same channels C"):
        loss([torch.rand(2, 8, 3, 3), torch.rand(2, 5, 3, 3)], teacher)


def test_explicit_mapping_between_architectures():
    loss = FeatureDistillationLoss([8], [16], mapping={"layer2": "layer3"})
    student = {"layer1": torch.rand(1, 4, 2, 2), "layer2": torch.rand(1, 8, 2, 2)}
    teacher = {"layer3": torch.rand(1, 16, 8, 8), "layer4": torch.rand(1, 32, 4, 4)}
    assert loss(student, teacher).ndim == 0
    with pytest.raises(ValueError, match="mapping names teacher feature 'layer3'"):
        loss(student, {"layer4": teacher["layer4"]})


def test_bad_input():
    student, teacher = _maps()
    with pytest.raises(ValueError, match="at least one feature map"):
        feature_distillation_loss([], [])
    with pytest.raises(ValueError, match="as many levels"):
        feature_distillation_loss(student, teacher[:1])
    with pytest.raises(ValueError, match=r"agree in \(B, C\)"):
        feature_distillation_loss([torch.rand(2, 5, 3, 3)], [torch.rand(2, 4, 6, 6)])
    with pytest.raises(ValueError, match=r"agree in \(B, C\)"):
        feature_distillation_loss([torch.rand(1, 4, 3, 3)], [torch.rand(2, 4, 6, 6)])
    with pytest.raises(ValueError, match=r"student_features\[0\] must be 4-D"):
        feature_distillation_loss([torch.rand(4, 3, 3)], [torch.rand(2, 4, 6, 6)])
    with pytest.raises(TypeError, match="floating-point"):
        feature_distillation_loss([torch.ones(2, 4, 3, 3, dtype=torch.long)], [teacher[0]])
    with pytest.raises(ValueError, match="align must be one of"):
        feature_distillation_loss(student, teacher, align="lanczos")
    with pytest.raises(ValueError, match="padding_mask must be 3-D"):
        feature_distillation_loss(student, teacher, padding_mask=torch.zeros(4, 4, dtype=bool))


def test_batch_mismatch_does_not_suggest_adapters():
    # Adapters fix a channel mismatch only; a batch mismatch means unpaired images.
    with pytest.raises(ValueError, match="same batch size") as error:
        feature_distillation_loss([torch.rand(1, 4, 3, 3)], [torch.rand(2, 4, 6, 6)])
    assert "adapter" not in str(error.value)
    with pytest.raises(ValueError, match="same channels C.*adapters"):
        feature_distillation_loss([torch.rand(2, 5, 3, 3)], [torch.rand(2, 4, 6, 6)])


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="expected a non-empty batch, got B=0"):
        feature_distillation_loss([torch.rand(0, 4, 3, 3)], [torch.rand(0, 4, 6, 6)])


def test_an_empty_mapping_is_refused_in_one_line():
    maps = {"a": torch.rand(1, 2, 4, 4)}
    with pytest.raises(ValueError, match="mapping must pair at least one"):
        FeatureDistillationLoss(mapping={})(maps, maps)
