"""Moment-matching loss (Eq. (5)): invariants as properties, gradients, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learnthumb import MomentMatchingLoss, moment_matching_loss

PROPERTY = settings(max_examples=40, deadline=None)

images = st.builds(
    lambda seed, b, c, h, w: torch.rand(
        b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    ),
    st.integers(0, 2**31 - 1),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 9),
    st.integers(1, 9),
)


def _thumbnail_of(x: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(
        x.shape[0], x.shape[1], max(1, x.shape[2] // 2), 3, generator=generator, dtype=x.dtype
    )


def _reference(x, y, lam, statistic="std"):
    # Direct transcription of Eq. (5), one image and one channel at a time.
    losses = []
    for b in range(x.shape[0]):
        per_channel = []
        for c in range(x.shape[1]):
            xs, ys = x[b, c].flatten(), y[b, c].flatten()
            if statistic == "std":
                sx, sy = xs.std(correction=0), ys.std(correction=0)
            else:
                sx, sy = xs.var(correction=0), ys.var(correction=0)
            per_channel.append((xs.mean() - ys.mean()) ** 2 + lam * (sx - sy) ** 2)
        losses.append(torch.stack(per_channel).mean())
    return torch.stack(losses)


@PROPERTY
@given(images, st.integers(0, 1000), st.floats(0.0, 2.0), st.sampled_from(["std", "var"]))
def test_matches_equation_5(x, seed, lam, statistic):
    y = _thumbnail_of(x, seed)
    got = moment_matching_loss(x, y, lam, statistic=statistic, reduction="none")
    torch.testing.assert_close(got, _reference(x, y, lam, statistic))


@PROPERTY
@given(images, st.integers(0, 1000))
def test_non_negative_and_symmetric(x, seed):
    y = _thumbnail_of(x, seed)
    forward = moment_matching_loss(x, y, 0.3, reduction="none")
    backward = moment_matching_loss(y, x, 0.3, reduction="none")
    assert (forward >= 0).all()
    torch.testing.assert_close(forward, backward)


@PROPERTY
@given(images, st.integers(0, 1000))
def test_zero_for_a_pixel_permutation(x, seed):
    # A thumbnail that is any rearrangement of the original's pixels has the same moments.
    generator = torch.Generator().manual_seed(seed)
    flat = x.flatten(2)
    permuted = flat[:, :, torch.randperm(flat.shape[-1], generator=generator)]
    loss = moment_matching_loss(x, permuted.reshape(x.shape), 0.1, reduction="none")
    torch.testing.assert_close(loss, torch.zeros_like(loss), atol=1e-12, rtol=0)


@PROPERTY
@given(images, st.integers(0, 1000), st.floats(-5, 5))
def test_invariant_to_permutation_and_shared_shift(x, seed, shift):
    y = _thumbnail_of(x, seed)
    base = moment_matching_loss(x, y, 0.1, reduction="none")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[-1], generator=generator)
    torch.testing.assert_close(moment_matching_loss(x[..., perm], y, 0.1, reduction="none"), base)
    shifted = moment_matching_loss(x + shift, y + shift, 0.1, reduction="none")
    torch.testing.assert_close(shifted, base, atol=1e-9, rtol=1e-6)


@PROPERTY
@given(images, st.integers(0, 1000), st.floats(0.1, 10))
def test_scaling_law(x, seed, k):
    # Both moments scale with k: the std form scales by k^2, the var form's second term by k^4.
    y = _thumbnail_of(x, seed)
    std = moment_matching_loss(x, y, 0.1, reduction="none")
    torch.testing.assert_close(
        moment_matching_loss(k * x, k * y, 0.1, reduction="none"), k**2 * std, rtol=1e-6, atol=0
    )
    mean_only = moment_matching_loss(x, y, 0.0, statistic="var", reduction="none")
    var_only = moment_matching_loss(x, y, 1.0, statistic="var", reduction="none") - mean_only
    scaled = moment_matching_loss(k * x, k * y, 1.0, statistic="var", reduction="none")
    torch.testing.assert_close(scaled, k**2 * mean_only + k**4 * var_only, rtol=1e-6, atol=1e-12)


@PROPERTY
@given(images, st.integers(0, 1000), st.integers(1, 8), st.integers(1, 8))
def test_padding_equals_cropping(x, seed, pad_h, pad_w):
    # Padding an image (any values) and masking the padding gives the loss of the image itself.
    y = _thumbnail_of(x, seed)
    b, c, h, w = x.shape
    padded = torch.rand(b, c, h + pad_h, w + pad_w, dtype=x.dtype) * 100
    padded[:, :, :h, :w] = x
    mask = torch.ones(b, h + pad_h, w + pad_w, dtype=torch.bool)
    mask[:, :h, :w] = False
    thumb_mask = torch.zeros(b, *y.shape[-2:], dtype=torch.bool)
    got = moment_matching_loss(
        padded,
        y,
        0.1,
        original_padding_mask=mask,
        thumbnail_padding_mask=thumb_mask,
        reduction="none",
    )
    torch.testing.assert_close(got, moment_matching_loss(x, y, 0.1, reduction="none"))


def test_thumbnail_mask_is_derived_from_the_original_mask():
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    mask = torch.zeros(2, 16, 20, dtype=torch.bool)
    mask[:, :, 12:] = True
    y = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    y[..., 3:] = 50.0  # lies under the derived thumbnail padding: must not matter
    got = moment_matching_loss(x, y, original_padding_mask=mask)
    expected = moment_matching_loss(x[..., :12], y[..., :3])
    torch.testing.assert_close(got, expected)


def test_reductions_and_module():
    x, y = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 2, 2)
    per_image = moment_matching_loss(x, y, reduction="none")
    assert per_image.shape == (3,)
    torch.testing.assert_close(moment_matching_loss(x, y), per_image.mean())
    torch.testing.assert_close(moment_matching_loss(x, y, reduction="sum"), per_image.sum())
    module = MomentMatchingLoss(lam=0.2, statistic="var")
    torch.testing.assert_close(module(x, y), moment_matching_loss(x, y, 0.2, statistic="var"))


@pytest.mark.parametrize("statistic", ["std", "var"])
def test_gradcheck(statistic):
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: moment_matching_loss(a, b, 0.3, statistic=statistic), (x, y)
    )


def test_finite_gradient_for_a_constant_image():
    x = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    y = torch.full((1, 3, 2, 2), 0.2, requires_grad=True)
    moment_matching_loss(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_float32_under_autocast():
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = moment_matching_loss(x.bfloat16(), y.bfloat16())
    assert loss.dtype == torch.float32


def test_bad_input():
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 2, 2)
    with pytest.raises(ValueError, match=r"original must be 4-D"):
        moment_matching_loss(x[0], y)
    with pytest.raises(ValueError, match=r"agree in batch and channels"):
        moment_matching_loss(x, y[:1])
    with pytest.raises(ValueError, match=r"agree in batch and channels"):
        moment_matching_loss(x, y[:, :2])
    with pytest.raises(TypeError, match="thumbnail must have a floating-point dtype"):
        moment_matching_loss(x, (y * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="statistic"):
        moment_matching_loss(x, y, statistic="kurtosis")
    with pytest.raises(ValueError, match="lam"):
        moment_matching_loss(x, y, -1.0)
    with pytest.raises(ValueError, match=r"original_padding_mask must have shape \(2, 8, 8\)"):
        moment_matching_loss(x, y, original_padding_mask=torch.zeros(2, 8, 7, dtype=torch.bool))
    with pytest.raises(TypeError, match="original_padding_mask must be a bool"):
        moment_matching_loss(x, y, original_padding_mask=torch.zeros(2, 8, 8))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_is_refused(reduction):
    # The moments of no image are 0/0; a NaN loss would poison training silently.
    with pytest.raises(ValueError, match="expected a non-empty batch, got B=0"):
        moment_matching_loss(torch.rand(0, 3, 8, 8), torch.rand(0, 3, 2, 2), reduction=reduction)
    with pytest.raises(ValueError, match="B=0"):
        MomentMatchingLoss()(torch.rand(0, 3, 8, 8), torch.rand(0, 3, 2, 2))


def test_lam_is_checked_alike_by_the_function_and_the_module():
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 2, 2)
    assert MomentMatchingLoss(lam=0).lam == 0.0  # lambda = 0: the means alone
    for make in (lambda lam: moment_matching_loss(x, y, lam), MomentMatchingLoss):
        with pytest.raises(ValueError, match=r"lam must be >= 0, got -1"):
            make(-1.0)
        with pytest.raises(TypeError, match=r"lam must be a number, got str"):
            make("0.1")


def test_an_ambiguous_size_needs_no_thumbnail_mask_when_every_scale_reduces_alike():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 9, 9, generator=generator)  # 9 -> 3 at s = 3 and at s = 4
    y = torch.rand(1, 3, 3, 3, generator=generator)
    unpadded = torch.zeros(1, 9, 9, dtype=torch.bool)
    masked = moment_matching_loss(x, y, original_padding_mask=unpadded)
    torch.testing.assert_close(masked, moment_matching_loss(x, y))  # the masked sums round apart
    padded = unpadded.clone()
    padded[..., 8:] = True  # a whole cell at s = 4, part of one at s = 3
    with pytest.raises(ValueError, match=r"thumbnail_padding_mask must be given.*\(3, 4\)"):
        moment_matching_loss(x, y, original_padding_mask=padded)
