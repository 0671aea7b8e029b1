"""Query Filter (Algorithm 1) and logit distillation (Eq. (7))."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learnthumb import LogitDistillationLoss, QueryFilter, logit_distillation_loss, query_filter

PROPERTY = settings(max_examples=40, deadline=None)

shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(2, 5))


def _logits(shape, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _kl_reference(s, t, temperature, activation):
    # KL(teacher || student) per query, written out with probabilities.
    if activation == "softmax":
        pt, ps = (t / temperature).softmax(-1), (s / temperature).softmax(-1)
        return (pt * (pt.log() - ps.log())).sum(-1) * temperature**2
    pt, ps = (t / temperature).sigmoid(), (s / temperature).sigmoid()
    kl = pt * (pt.log() - ps.log()) + (1 - pt) * ((1 - pt).log() - (1 - ps).log())
    return kl.sum(-1) * temperature**2


@PROPERTY
@given(shapes, st.integers(0, 10**6), st.floats(0.5, 4.0), st.sampled_from(["softmax", "sigmoid"]))
def test_matches_reference_and_is_non_negative(shape, seed, temperature, activation):
    s, t = _logits(shape, seed), _logits(shape, seed + 1)
    got = logit_distillation_loss(s, t, temperature=temperature, activation=activation)
    expected = _kl_reference(s, t, temperature, activation).mean()
    torch.testing.assert_close(got, expected)
    assert got >= 0


@PROPERTY
@given(shapes, st.integers(0, 10**6), st.sampled_from(["softmax", "sigmoid"]))
def test_zero_when_distributions_agree(shape, seed, activation):
    t = _logits(shape, seed)
    loss = logit_distillation_loss(t.clone(), t, activation=activation)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    other = logit_distillation_loss(t + _logits(shape, seed + 1), t, activation=activation)
    assert other.item() > 0


@PROPERTY
@given(shapes, st.integers(0, 10**6), st.floats(-20, 20))
def test_softmax_invariant_to_a_constant_per_query(shape, seed, constant):
    s, t = _logits(shape, seed), _logits(shape, seed + 1)
    shift = _logits((*shape[:2], 1), seed + 2) + constant  # one constant per query
    base = logit_distillation_loss(s, t)
    torch.testing.assert_close(logit_distillation_loss(s + shift, t), base)
    torch.testing.assert_close(logit_distillation_loss(s, t - shift), base)


@PROPERTY
@given(shapes, st.integers(0, 10**6), st.sampled_from(["softmax", "sigmoid"]))
def test_keep_equals_computing_on_the_kept_subset(shape, seed, activation):
    s, t = _logits(shape, seed), _logits(shape, seed + 1)
    keep = torch.rand(shape[:2], generator=torch.Generator().manual_seed(seed)) > 0.5
    got = logit_distillation_loss(s, t, keep=keep, activation=activation)
    if keep.any():
        subset = logit_distillation_loss(s[keep][None], t[keep][None], activation=activation)
        torch.testing.assert_close(got, subset)
    else:
        assert got.item() == 0.0


def test_no_kept_query_gives_an_exact_zero_that_backpropagates():
    s = torch.randn(2, 4, 3, requires_grad=True)
    t = torch.randn(2, 4, 3)
    loss = logit_distillation_loss(s, t, keep=torch.zeros(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_gradcheck(activation):
    s = _logits((2, 3, 4), 0).requires_grad_()
    t = _logits((2, 3, 4), 1)
    keep = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.autograd.gradcheck(
        lambda x: logit_distillation_loss(x, t, temperature=1.5, keep=keep, activation=activation),
        (s,),
    )


def test_teacher_is_detached_and_module_equals_function():
    s = torch.randn(1, 5, 4, requires_grad=True)
    t = torch.randn(1, 5, 4, requires_grad=True)
    LogitDistillationLoss(temperature=2.0)(s, t).backward()
    assert t.grad is None and s.grad is not None
    torch.testing.assert_close(
        LogitDistillationLoss(2.0, "sigmoid")(s, t),
        logit_distillation_loss(s, t, temperature=2.0, activation="sigmoid"),
    )


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_hungarian_pairing_undoes_a_query_permutation(activation):
    t = _logits((2, 6, 5), 3, scale=5.0)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    s = t[:, perm]  # the same predictions in another query order
    assert logit_distillation_loss(s, t, activation=activation) > 0
    paired = logit_distillation_loss(s, t, activation=activation, pairing="hungarian")
    assert paired.item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_hungarian_leaves_teacher_queries_without_a_student_query_out(activation):
    from learnthumb.losses import match_queries

    torch.manual_seed(0)
    t = torch.tensor([[[5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, 5.0]]])  # (1, 4, 2)
    s = t[:, :2].clone().requires_grad_()  # 2 student queries, a perfect match for 2 of 4
    paired = match_queries(s, t, activation=activation)
    assert sorted(paired[0].tolist()) == [-1, -1, 0, 1]  # each student query used once
    loss = logit_distillation_loss(s, t, activation=activation, pairing="hungarian")
    assert loss.item() == 0.0  # the 2 pairs only: the 2 left over are not compared to anything
    # With keep: the average runs over the kept teacher queries that found a student query.
    s2 = torch.randn(3, 2, 5)
    t2 = torch.randn(3, 4, 5)
    keep = torch.tensor([[True, True, True, False], [False, True, False, False], [True] * 4])
    paired = match_queries(s2, t2, activation=activation, keep=keep)
    assert ((paired >= 0) <= keep).all() and ((paired >= 0).sum(1) == torch.tensor([2, 1, 2])).all()
    gathered = s2.gather(1, paired.clamp(min=0)[..., None].expand(-1, -1, 5))
    got = logit_distillation_loss(s2, t2, keep=keep, activation=activation, pairing="hungarian")
    want = logit_distillation_loss(gathered, t2, keep=paired >= 0, activation=activation)
    torch.testing.assert_close(got, want)
    # No student query at all: nothing is paired, an exact 0 that still back-propagates.
    empty = torch.zeros(1, 0, 2, requires_grad=True)
    assert (match_queries(empty, t) == -1).all()
    loss = logit_distillation_loss(empty, t, pairing="hungarian", activation=activation)
    assert loss.item() == 0.0
    loss.backward()


def test_query_filter_algorithm_1():
    # sigmoid: independent class probabilities (Deformable-DETR's focal loss, the paper)
    logits = torch.logit(torch.tensor([[[0.9, 0.1], [0.3, 0.4], [0.2, 0.51]]]))
    assert query_filter(logits, activation="sigmoid").tolist() == [[True, False, True]]
    assert query_filter(logits, 0.6, "sigmoid").tolist() == [[True, False, False]]
    sigmoid_filter = QueryFilter(0.6, activation="sigmoid")
    assert torch.equal(sigmoid_filter(logits), query_filter(logits, 0.6, "sigmoid"))
    # softmax is the default of the filter, as of the logit loss
    assert QueryFilter().activation == LogitDistillationLoss().activation == "softmax"
    assert torch.equal(query_filter(logits), query_filter(logits, activation="softmax"))
    with pytest.raises(ValueError, match="background_index only applies to activation='softmax'"):
        QueryFilter(activation="sigmoid", background_index=0)
    # softmax with a no-object class that must not count as a confident class
    probs = torch.tensor([[[0.05, 0.05, 0.9], [0.7, 0.1, 0.2]]])
    keep = query_filter(probs.log(), activation="softmax", background_index=-1)
    assert keep.tolist() == [[False, True]]
    assert query_filter(probs.log(), activation="softmax").tolist() == [[True, True]]


def test_bad_input():
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match=r"threshold must lie in the open interval \(0.0, 1.0\)"):
        query_filter(t, threshold=1.0)
    with pytest.raises(ValueError, match="threshold"):
        QueryFilter(threshold=0.0)
    with pytest.raises(ValueError, match="teacher_logits must be 3-D"):
        query_filter(t[0])
    with pytest.raises(ValueError, match="same batch size"):
        logit_distillation_loss(s, t[:1])
    with pytest.raises(ValueError, match="number of classes"):
        logit_distillation_loss(s, t[..., :2])
    with pytest.raises(ValueError, match="same shape"):
        logit_distillation_loss(s, t[:, :2])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        logit_distillation_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match=r"keep must have shape \(2, 4\)"):
        logit_distillation_loss(s, t, keep=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="keep must be a bool"):
        logit_distillation_loss(s, t, keep=torch.ones(2, 4))
    with pytest.raises(TypeError, match="student_logits must have a floating-point dtype"):
        logit_distillation_loss(s.long(), t)
