"""Logit distillation for DETR-style set predictors and classifiers (Eq. (6)-(7) of ThumbDet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb._checks import (
    check_bool_mask,
    check_choice,
    check_floating,
    check_ndim,
    check_positive,
)

__all__ = ["PAIRINGS", "LogitDistillationLoss", "logit_distillation_loss", "match_queries"]

_ACTIVATIONS = ("softmax", "sigmoid")
#: How student queries are paired with teacher queries (see :func:`logit_distillation_loss`).
PAIRINGS = ("index", "hungarian")


def _per_query_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, activation: str
) -> torch.Tensor:
    """KL(teacher || student) of one query's class distribution, for every query: (B, N)."""
    if activation == "softmax":
        log_p_teacher = F.log_softmax(teacher_logits, dim=-1)
        log_p_student = F.log_softmax(student_logits, dim=-1)
        return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    # One Bernoulli per class (focal-loss detectors): the KL of each, summed over classes.
    p_teacher = teacher_logits.sigmoid()
    positive = F.logsigmoid(teacher_logits) - F.logsigmoid(student_logits)
    negative = F.logsigmoid(-teacher_logits) - F.logsigmoid(-student_logits)
    return (p_teacher * positive + (1.0 - p_teacher) * negative).sum(dim=-1)


def match_queries(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    activation: str = "softmax",
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hungarian pairing of student queries with teacher queries by class distribution.

    The cost of pairing teacher query ``i`` with student query ``j`` is the cross-entropy of
    the student's distribution under the teacher's (KL up to a per-teacher constant). Only
    kept teacher queries are matched; each gets a distinct student query. With fewer student
    queries than kept teacher queries, only ``N_s`` of them are paired (those whose pairing
    costs least in total) and the others get ``-1``.

    Args:
        student_logits: the student's class logits (already divided by the temperature).
        teacher_logits: the teacher's class logits (likewise).
        activation: ``"softmax"`` or ``"sigmoid"``.
        keep: bool, teacher queries to match; ``None`` matches all.

    Shape:
        - student_logits: :math:`(B, N_s, C)`; teacher_logits: :math:`(B, N_t, C)`
        - keep: :math:`(B, N_t)`
        - output: :math:`(B, N_t)`, int64: the student query paired with each teacher query,
          ``-1`` where none is (the teacher query is not kept, or is left over when there are
          fewer student queries than kept teacher queries).
    """
    # scipy only for this optional pairing: `import learnthumb` must not pay for it.
    from scipy.optimize import linear_sum_assignment

    batch, num_teacher, _ = teacher_logits.shape
    num_student = student_logits.shape[1]
    with torch.no_grad():
        s = student_logits.detach().float()
        t = teacher_logits.detach().float()
        if activation == "softmax":
            cost = -torch.einsum("btc,bsc->bts", t.softmax(-1), F.log_softmax(s, -1))
        else:
            p = t.sigmoid()
            cost = -(
                torch.einsum("btc,bsc->bts", p, F.logsigmoid(s))
                + torch.einsum("btc,bsc->bts", 1 - p, F.logsigmoid(-s))
            )  # (B, N_t, N_s)
        rows_kept = (
            keep.cpu() if keep is not None else torch.ones(batch, num_teacher, dtype=torch.bool)
        )
        cost = cost.cpu()
    paired = torch.full((batch, num_teacher), -1, dtype=torch.long)  # (B, N_t)
    for b in range(batch):
        rows = rows_kept[b].nonzero().flatten()
        if rows.numel() == 0 or num_student == 0:
            continue
        teacher_rows, student_cols = linear_sum_assignment(cost[b, rows].numpy())
        paired[b, rows[torch.as_tensor(teacher_rows)]] = torch.as_tensor(
            student_cols, dtype=torch.long
        )
    return paired.to(student_logits.device)


def logit_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    keep: torch.Tensor | None = None,
    activation: str = "softmax",
    pairing: str = "index",
) -> torch.Tensor:
    """Logit distillation of Eq. (7) of ThumbDet, over the queries kept by the Query Filter.

    ``T^2 * KL(softmax(t / T) || softmax(s / T))`` summed over classes, averaged over the kept
    queries. With ``activation="sigmoid"`` each class is an independent Bernoulli (the
    classification of focal-loss detectors such as Deformable-DETR) and the binary KLs are
    summed over classes. The teacher's logits are detached.

    Classifiers' :math:`(B, C)` logits are one query per image: the loss equals that of the
    :math:`(B, 1, C)` logits (classic knowledge distillation, averaged over the batch). For them
    ``keep`` (if any) selects images, and ``pairing="hungarian"`` is refused (nothing to pair).

    The default ``activation="softmax"`` suits classifiers and DETR (a no-object class), and is
    :func:`~learnthumb.query_filter`'s default too; the paper's Deformable-DETR needs
    ``"sigmoid"`` in both (``ThumbnailDistillation`` refuses a filter and a loss that disagree).

    The official code uses a cross-entropy of softmax probabilities without a filter; we follow
    the paper: a KL divergence, with temperature, over the kept queries only.

    Args:
        student_logits: the student's class logits.
        teacher_logits: the teacher's class logits.
        temperature: ``T > 0``; 1 in the paper.
        keep: bool, queries (images, for :math:`(B, C)` logits) to distil
            (:func:`~learnthumb.query_filter`); ``None`` keeps all. When none is kept the loss
            is an exact 0 that still back-propagates.
        activation: ``"softmax"`` or ``"sigmoid"``.
        pairing: ``"index"`` compares query ``i`` with query ``i`` (a student initialised from
            its teacher); ``"hungarian"`` first pairs each kept teacher query with the student
            query whose distribution is closest (:func:`match_queries`); with fewer student
            queries than kept teacher queries, those left unpaired are left out of the loss,
            as if not kept.

    Shape:
        - student_logits, teacher_logits: :math:`(B, N, C)`, or :math:`(B, C)` for classifiers
        - keep: :math:`(B, N)`, or :math:`(B,)` with :math:`(B, C)` logits
        - output: scalar.

    Example:
        >>> s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
        >>> logit_distillation_loss(s, t, keep=torch.ones(2, 5, dtype=torch.bool)) >= 0
        tensor(True)
        >>> s, t = torch.randn(8, 10), torch.randn(8, 10)  # a classifier's (B, C) logits
        >>> one_query = logit_distillation_loss(s[:, None], t[:, None])  # (B, 1, C)
        >>> torch.equal(logit_distillation_loss(s, t), one_query)
        True
    """
    check_ndim(student_logits, (3, 2), "student_logits", "(B, N, C) or (B, C)")
    check_ndim(teacher_logits, (3, 2), "teacher_logits", "(B, N, C) or (B, C)")
    check_floating(student_logits, "student_logits")
    check_floating(teacher_logits, "teacher_logits")
    if student_logits.dim() != teacher_logits.dim():
        raise ValueError(
            "student_logits and teacher_logits must both be (B, N, C) or both (B, C): got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            "student_logits and teacher_logits must have the same batch size: got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            "student_logits and teacher_logits must have the same number of classes C: got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    check_choice(pairing, "pairing", PAIRINGS)
    if pairing == "hungarian" and student_logits.dim() == 2:
        raise ValueError(
            "pairing='hungarian' pairs the queries of (B, N, C) set predictions; (B, C) logits "
            "hold one prediction per image: expected pairing='index', got 'hungarian'"
        )
    if pairing == "index" and student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "with pairing='index', student_logits and teacher_logits must have the same shape "
            f"(B, N, C): got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    check_choice(activation, "activation", _ACTIVATIONS)
    check_positive(temperature, "temperature")
    if keep is not None:
        check_bool_mask(keep, "keep", teacher_logits.shape[:-1])
    if student_logits.dim() == 2:
        # A classifier: one prediction per image, i.e. a set of one query.
        student_logits, teacher_logits = student_logits[:, None], teacher_logits[:, None]
        keep = keep[:, None] if keep is not None else None  # (B, 1)

    student = student_logits / temperature
    teacher = teacher_logits.detach() / temperature
    if pairing == "hungarian":
        paired = match_queries(student, teacher, activation=activation, keep=keep)  # (B, N_t)
        matched = paired >= 0
        if not bool(matched.all()):
            # Unkept or left over (N_s < kept N_t): out of the loss. Kept and matched ones stay.
            keep = matched
        # The unpaired point at an appended row of zeros: a valid index even when N_s = 0.
        num_student = student.shape[1]
        student = torch.cat([student, student.new_zeros(student.shape[0], 1, student.shape[2])], 1)
        index = paired.where(matched, num_student).unsqueeze(-1).expand(-1, -1, student.shape[-1])
        student = student.gather(1, index)  # (B, N_t, C)
    per_query = _per_query_kl(student, teacher, activation)  # (B, N)
    if keep is None:
        return per_query.mean() * temperature**2
    weights = keep.to(per_query.dtype)
    # Masking (not indexing) keeps shapes static and gives an exact, differentiable 0.
    return (per_query * weights).sum() / weights.sum().clamp(min=1.0) * temperature**2


class LogitDistillationLoss(nn.Module):
    """Module form of :func:`logit_distillation_loss`.

    Args:
        temperature: ``T > 0``.
        activation: ``"softmax"`` or ``"sigmoid"``.
        pairing: ``"index"`` or ``"hungarian"``.

    Shape:
        See :func:`logit_distillation_loss`: :math:`(B, N, C)` or :math:`(B, C)` logits.

    Example:
        >>> loss = LogitDistillationLoss(temperature=2.0)
        >>> loss(torch.zeros(4, 10), torch.zeros(4, 10))
        tensor(0.)
    """

    def __init__(
        self, temperature: float = 1.0, activation: str = "softmax", pairing: str = "index"
    ) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.activation = check_choice(activation, "activation", _ACTIVATIONS)
        self.pairing = check_choice(pairing, "pairing", PAIRINGS)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return logit_distillation_loss(
            student_logits,
            teacher_logits,
            temperature=self.temperature,
            keep=keep,
            activation=self.activation,
            pairing=self.pairing,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, activation={self.activation!r}, "
            f"pairing={self.pairing!r}"
        )
