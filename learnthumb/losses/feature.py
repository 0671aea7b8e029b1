"""Feature-map distillation across a resolution mismatch (Eq. (8) of ThumbDet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb._checks import check_bool_mask, check_choice, check_floating, check_int, check_ndim

__all__ = ["FeatureDistillationLoss", "align_feature_maps", "feature_distillation_loss"]

_ALIGN_MODES = ("bilinear", "bicubic", "nearest", "area", "pool_teacher")

FeatureMaps = Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | torch.Tensor


def align_feature_maps(
    student: torch.Tensor, teacher: torch.Tensor, align: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring a student map and a teacher map to one spatial size.

    Args:
        student: the student's feature map.
        teacher: the teacher's feature map (usually larger: it saw the full image).
        align: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` or ``"area"`` resize the student
            to the teacher's size (``align_corners=False``); ``"pool_teacher"`` average-pools
            the teacher down to the student's size instead.

    Shape:
        - student: :math:`(B, C, h, w)`; teacher: :math:`(B, C, H, W)`
        - output: two maps of one size, :math:`(H, W)` or :math:`(h, w)` for ``pool_teacher``.
    """
    if student.shape[-2:] == teacher.shape[-2:]:
        return student, teacher
    if align == "pool_teacher":
        return student, F.adaptive_avg_pool2d(teacher, student.shape[-2:])
    size = teacher.shape[-2:]
    if align in ("bilinear", "bicubic"):
        return F.interpolate(student, size=size, mode=align, align_corners=False), teacher
    return F.interpolate(student, size=size, mode=align), teacher


def _as_list(features: FeatureMaps, name: str) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        return [features]
    if isinstance(features, Mapping):
        return list(features.values())
    if isinstance(features, Sequence):
        return list(features)
    raise TypeError(
        f"{name} must be a tensor, a sequence or a mapping of tensors, "
        f"got {type(features).__name__}"
    )


def _check_pair(student: torch.Tensor, teacher: torch.Tensor, level: str) -> None:
    check_ndim(student, 4, f"student_features[{level}]", "(B, C, h, w)")
    check_ndim(teacher, 4, f"teacher_features[{level}]", "(B, C, H, W)")
    check_floating(student, f"student_features[{level}]")
    check_floating(teacher, f"teacher_features[{level}]")
    if student.shape[0] != teacher.shape[0]:
        # Adapters map channels, not images: a batch mismatch is a pairing error upstream.
        raise ValueError(
            f"student_features[{level}] and teacher_features[{level}] must agree in (B, C): "
            f"expected the same batch size B, got student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)}; pass the features of the same images"
        )
    if student.shape[0] == 0:
        raise ValueError(f"student_features[{level}]: expected a non-empty batch, got B=0")
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"student_features[{level}] and teacher_features[{level}] must agree in (B, C): "
            f"expected the same channels C, got student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)}; use FeatureDistillationLoss(student_channels, "
            "teacher_channels) for 1x1 adapters"
        )


def _check_adapter_input(student: torch.Tensor, adapter: nn.Module, level: str, index: int) -> None:
    """A map that its 1x1 adapter cannot take is named before the convolution fails on it."""
    name = f"student_features[{level}]"
    check_ndim(student, 4, name, "(B, C, h, w)")
    if isinstance(adapter, nn.Conv2d) and student.shape[1] != adapter.in_channels:
        raise ValueError(
            f"{name}: expected {adapter.in_channels} channels (student_channels[{index}] of "
            f"the loss), got shape {tuple(student.shape)}"
        )


def _level_mse(
    student: torch.Tensor, teacher: torch.Tensor, padding_mask: torch.Tensor | None
) -> torch.Tensor:
    # In float32 (float64 stays float64): a half-precision sum of squares, or the count of
    # valid positions times C, overflows float16 on detector-sized maps.
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    with torch.autocast(student.device.type, enabled=False):
        squared = (student.to(dtype) - teacher.to(dtype)).square()  # (B, C, H, W)
        if padding_mask is None:
            return squared.mean()
        valid = ~F.interpolate(padding_mask[:, None].float(), size=squared.shape[-2:]).bool()
        valid = valid.to(dtype)  # (B, 1, H, W)
        count = (valid.sum() * squared.shape[1]).clamp(min=1.0)
        return (squared * valid).sum() / count


def _pair_levels(
    student_features: FeatureMaps,
    teacher_features: FeatureMaps,
    mapping: Mapping[str, str] | None,
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    if mapping is not None:
        if not mapping:
            raise ValueError("mapping must pair at least one student and teacher feature, got {}")
        if not isinstance(student_features, Mapping) or not isinstance(teacher_features, Mapping):
            raise TypeError("with a mapping, student_features and teacher_features must be dicts")
        pairs = []
        for student_name, teacher_name in mapping.items():
            if student_name not in student_features:
                raise ValueError(
                    f"mapping names student feature {student_name!r}, "
                    f"student_features has {sorted(student_features)}"
                )
            if teacher_name not in teacher_features:
                raise ValueError(
                    f"mapping names teacher feature {teacher_name!r}, "
                    f"teacher_features has {sorted(teacher_features)}"
                )
            pairs.append(
                (student_name, student_features[student_name], teacher_features[teacher_name])
            )
        return pairs
    students = _as_list(student_features, "student_features")
    teachers = _as_list(teacher_features, "teacher_features")
    if not students:
        raise ValueError("student_features must hold at least one feature map, got none")
    if len(students) != len(teachers):
        raise ValueError(
            "student_features and teacher_features must have as many levels: "
            f"got {len(students)} and {len(teachers)}"
        )
    return [(str(index), s, t) for index, (s, t) in enumerate(zip(students, teachers, strict=True))]


def _distill(
    pairs: list[tuple[str, torch.Tensor, torch.Tensor]],
    align: str,
    padding_mask: torch.Tensor | None,
    adapters: Sequence[nn.Module] | None = None,
) -> torch.Tensor:
    check_choice(align, "align", _ALIGN_MODES)
    if padding_mask is not None:
        check_ndim(padding_mask, 3, "padding_mask", "(B, H, W)")
        batch = pairs[0][2].shape[0]
        check_bool_mask(padding_mask, "padding_mask", (batch, *padding_mask.shape[-2:]))
    losses = []
    for index, (level, student_map, teacher_map) in enumerate(pairs):
        adapted = student_map if adapters is None else adapters[index](student_map)
        _check_pair(adapted, teacher_map, level)
        # The teacher is a fixed target: no gradient may reach it through the loss.
        student, teacher = align_feature_maps(adapted, teacher_map.detach(), align)
        losses.append(_level_mse(student, teacher, padding_mask))
    return torch.stack(losses).mean()


def feature_distillation_loss(
    student_features: FeatureMaps,
    teacher_features: FeatureMaps,
    *,
    align: str = "bilinear",
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feature-map distillation of Eq. (8) of ThumbDet, across a resolution mismatch.

    Each student map is resized to its teacher map's size (or, with ``"pool_teacher"``, the
    teacher is pooled down), then the squared error is averaged over ``C * H * W`` (and the
    batch) per level, then over levels. The teacher maps are detached. The squared errors are
    summed in float32 (float64 inputs stay float64) even under autocast, so half-precision
    maps cannot overflow.

    Args:
        student_features: one map, a sequence of maps, or a dict (paired in order).
        teacher_features: the teacher's maps, as many as the student's.
        align: ``"bilinear"`` (the paper), ``"bicubic"``, ``"nearest"``, ``"area"`` or
            ``"pool_teacher"``.
        padding_mask: bool, True = padded, at any resolution (usually the teacher's input);
            resized with nearest interpolation to each compared map; padded positions are
            excluded from the mean.

    Shape:
        - student_features: :math:`[(B, C_l, h_l, w_l)]`
        - teacher_features: :math:`[(B, C_l, H_l, W_l)]`
        - padding_mask: :math:`(B, H, W)`
        - output: scalar.

    Example:
        >>> student = [torch.rand(2, 8, 4, 4), torch.rand(2, 16, 2, 2)]
        >>> teacher = [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
        >>> feature_distillation_loss(student, teacher).shape
        torch.Size([])
    """
    return _distill(_pair_levels(student_features, teacher_features, None), align, padding_mask)


class FeatureDistillationLoss(nn.Module):
    """Module form of :func:`feature_distillation_loss`, with optional 1x1 adapters.

    When the student and the teacher have different channel counts (different architectures,
    e.g. a ResNet-18 student of a ResNet-50 teacher), pass both channel lists: the module owns
    one 1x1 convolution per level that maps the student's channels to the teacher's (identity
    where they agree). The adapters are trained with the student.

    Args:
        student_channels: channels of each student level, in pairing order.
        teacher_channels: channels of each teacher level, in pairing order.
        align: see :func:`feature_distillation_loss`.
        mapping: explicit pairing ``{student_name: teacher_name}`` when features are dicts
            (e.g. from :class:`~learnthumb.FeatureTap`); pairs are taken in its order.

    Shape:
        See :func:`feature_distillation_loss`.

    Example:
        >>> loss = FeatureDistillationLoss([64, 128], [256, 512])
        >>> student = [torch.rand(1, 64, 4, 4), torch.rand(1, 128, 2, 2)]
        >>> teacher = [torch.rand(1, 256, 16, 16), torch.rand(1, 512, 8, 8)]
        >>> loss(student, teacher).shape
        torch.Size([])
    """

    def __init__(
        self,
        student_channels: Sequence[int] | None = None,
        teacher_channels: Sequence[int] | None = None,
        *,
        align: str = "bilinear",
        mapping: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        check_choice(align, "align", _ALIGN_MODES)
        if (student_channels is None) != (teacher_channels is None):
            raise ValueError("give both student_channels and teacher_channels, or neither")
        self.align = align
        self.mapping = dict(mapping) if mapping is not None else None
        self.adapters: nn.ModuleList | None = None
        if student_channels is not None and teacher_channels is not None:
            if len(student_channels) != len(teacher_channels):
                raise ValueError(
                    "student_channels and teacher_channels must have one entry per level: got "
                    f"{list(student_channels)} and {list(teacher_channels)}"
                )
            if self.mapping is not None and len(self.mapping) != len(student_channels):
                raise ValueError(
                    f"mapping has {len(self.mapping)} pairs but {len(student_channels)} "
                    "channel entries were given"
                )
            adapters = []
            for s, t in zip(student_channels, teacher_channels, strict=True):
                check_int(s, "student_channels", minimum=1)
                check_int(t, "teacher_channels", minimum=1)
                adapters.append(nn.Identity() if s == t else nn.Conv2d(s, t, kernel_size=1))
            self.adapters = nn.ModuleList(adapters)

    def forward(
        self,
        student_features: FeatureMaps,
        teacher_features: FeatureMaps,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pairs = _pair_levels(student_features, teacher_features, self.mapping)
        if self.adapters is not None:
            if len(self.adapters) != len(pairs):
                raise ValueError(
                    f"the loss has {len(self.adapters)} adapters but {len(pairs)} levels were given"
                )
            for index, (level, student, _) in enumerate(pairs):
                _check_adapter_input(student, self.adapters[index], level, index)
        return _distill(pairs, self.align, padding_mask, self.adapters)

    def extra_repr(self) -> str:
        return f"align={self.align!r}, mapping={self.mapping}"
