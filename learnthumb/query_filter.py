"""The Query Filter of ThumbDet (Algorithm 1): which teacher queries are worth distilling.

A tool for DETR-style set predictors, whose ``N`` queries are mostly "no object": it keeps the
few the teacher is confident about. A classifier's :math:`(B, C)` logits have nothing to filter
(:class:`~learnthumb.ThumbnailDistillation` leaves the filter off for them by default).
"""

from __future__ import annotations

import torch
from torch import nn

from learnthumb._checks import check_choice, check_floating, check_in_open_interval, check_ndim
from learnthumb.losses.logit import _ACTIVATIONS  # the logit loss's: the two must agree

__all__ = ["QueryFilter", "class_probabilities", "query_filter"]


def class_probabilities(
    logits: torch.Tensor, activation: str, background_index: int | None = None
) -> torch.Tensor:
    """Class probabilities of DETR-style logits, without the background column if any.

    Args:
        logits: raw class scores.
        activation: ``"sigmoid"`` (focal-loss detectors such as Deformable-DETR) or
            ``"softmax"`` (DETR with a no-object class).
        background_index: with softmax, the no-object column to drop after normalising.

    Shape:
        - logits: :math:`(B, N, C)`
        - output: :math:`(B, N, C)`, or :math:`(B, N, C - 1)` without the background.
    """
    check_choice(activation, "activation", _ACTIVATIONS)
    if activation == "sigmoid":
        if background_index is not None:
            raise ValueError("background_index only applies to activation='softmax'")
        return logits.sigmoid()
    probabilities = logits.softmax(dim=-1)
    if background_index is None:
        return probabilities
    num_classes = logits.shape[-1]
    if not -num_classes <= background_index < num_classes:
        raise ValueError(
            f"background_index must index the {num_classes} classes, got {background_index}"
        )
    index = background_index % num_classes
    return torch.cat([probabilities[..., :index], probabilities[..., index + 1 :]], dim=-1)


def query_filter(
    teacher_logits: torch.Tensor,
    threshold: float = 0.5,
    activation: str = "softmax",
    background_index: int | None = None,
) -> torch.Tensor:
    """Algorithm 1 of ThumbDet: keep the queries the teacher is confident about.

    A query is kept when the teacher's highest class probability exceeds ``threshold``
    (Step 1 of Algorithm 1: the first entry of the descending sort is the maximum).

    The default ``activation="softmax"`` is that of :func:`~learnthumb.logit_distillation_loss`
    (classifiers, DETR with a no-object class); the paper's detector, Deformable-DETR (focal
    loss), needs ``activation="sigmoid"``. Give both the activation your model was trained with:
    :class:`~learnthumb.ThumbnailDistillation` refuses a filter and a logit loss that disagree.

    Args:
        teacher_logits: the teacher's class logits.
        threshold: probability threshold in (0, 1); 0.5 in the paper.
        activation: ``"softmax"`` or ``"sigmoid"``.
        background_index: with softmax, a no-object class ignored when taking the maximum.

    Shape:
        - teacher_logits: :math:`(B, N, C)`
        - output: :math:`(B, N)`, bool.

    Example:
        >>> logits = torch.tensor([[[3.0, -2.0], [-3.0, -1.0]]])
        >>> query_filter(logits, activation="sigmoid")  # Deformable-DETR's per-class sigmoid
        tensor([[ True, False]])
        >>> query_filter(logits)  # softmax: the second query's class 1 has probability 0.88
        tensor([[True, True]])
    """
    check_ndim(teacher_logits, 3, "teacher_logits", "(B, N, C)")
    check_floating(teacher_logits, "teacher_logits")
    check_in_open_interval(threshold, "threshold")
    with torch.no_grad():
        probabilities = class_probabilities(teacher_logits, activation, background_index)
        return probabilities.amax(dim=-1) > threshold  # (B, N)


class QueryFilter(nn.Module):
    """Module form of :func:`query_filter`; :class:`~learnthumb.ThumbnailDistillation` takes one.

    Args:
        threshold: probability threshold in (0, 1).
        activation: ``"softmax"`` or ``"sigmoid"`` (the paper's Deformable-DETR).
        background_index: with softmax, the no-object class.

    Shape:
        - input: :math:`(B, N, C)`
        - output: :math:`(B, N)`, bool.

    Example:
        >>> QueryFilter(threshold=0.3, activation="sigmoid")
        QueryFilter(threshold=0.3, activation='sigmoid', background_index=None)
    """

    def __init__(
        self,
        threshold: float = 0.5,
        activation: str = "softmax",
        background_index: int | None = None,
    ) -> None:
        super().__init__()
        self.threshold = check_in_open_interval(threshold, "threshold")
        check_choice(activation, "activation", _ACTIVATIONS)
        if background_index is not None and activation != "softmax":
            raise ValueError(
                "background_index only applies to activation='softmax', got "
                f"activation={activation!r} and background_index={background_index!r}"
            )
        self.activation = activation
        self.background_index = background_index

    def forward(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        return query_filter(teacher_logits, self.threshold, self.activation, self.background_index)

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, activation={self.activation!r}, "
            f"background_index={self.background_index!r}"
        )
