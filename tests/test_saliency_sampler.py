"""The saliency sampler (Recasens et al. 2018, separable as Thavamani et al. 2023) and its warp.

Size contract (hypothesis), uniform at initialisation, module == function, float64 gradients,
exact coordinate round trips (hypothesis) and their Jacobian bound, dense maps both ways, the
padding mask, zooming on a salient region, Thumbnailed's restore with the warp, exports and
bad input.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from learnthumb import (
    InterpolateDownsampler,
    SaliencySampler,
    SeparableWarp,
    Thumbnailed,
    create_downsampler,
    downsample_padding_mask,
    list_downsamplers,
    rescale_boxes,
    rescale_keypoints,
    saliency_sample,
    thumbnail_size,
    upsample_to,
)
from learnthumb.warps import _thumbnail_to_image_1d, _thumbnail_to_image_at_centres

PROPERTY = settings(max_examples=30, deadline=None)


def _random_warp(
    seed: int,
    image_size: tuple[int, int],
    thumb_size: tuple[int, int],
    cells: tuple[int, int] = (5, 7),
    uniform_weight: float = 0.2,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
) -> SeparableWarp:
    generator = torch.Generator().manual_seed(seed)
    density_x = torch.rand(batch, cells[1], generator=generator, dtype=dtype) ** 4
    density_y = torch.rand(batch, cells[0], generator=generator, dtype=dtype) ** 4
    return SeparableWarp.from_densities(
        density_x, density_y, image_size, thumb_size, uniform_weight
    )


def _salient_sampler(scale: int = 4, seed: int = 0) -> SaliencySampler:
    """A sampler whose head is no longer zero, so its warp is not uniform."""
    torch.manual_seed(seed)
    sampler = SaliencySampler(scale)
    with torch.no_grad():
        sampler.head.weight.normal_(std=1.0)
    return sampler


def _supersampled_bilinear(images: torch.Tensor, scale: int, samples: int) -> torch.Tensor:
    """Independent reference of the uniform sampler: bilinear resize to k times the thumbnail
    size (the same sample positions), then the mean of each k x k block."""
    height, width = thumbnail_size(images.shape[-2:], scale)
    dense = F.interpolate(
        images, size=(height * samples, width * samples), mode="bilinear", align_corners=False
    )
    return F.avg_pool2d(dense, samples)


# --------------------------------------------------------------------------------- registry
def test_registered_and_built_by_name():
    assert "saliency_sampler" in list_downsamplers()
    sampler = create_downsampler("saliency_sampler", 2, hidden_channels=4, uniform_weight=0.25)
    assert isinstance(sampler, SaliencySampler)
    assert sampler.features.out_channels == 4
    assert sampler.saliency_stride == 2 and sampler.supersample == 2
    assert "uniform_weight=0.25" in repr(sampler)


# ---------------------------------------------------------------------------- size contract
@PROPERTY
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    scale=st.integers(1, 5),
    batch=st.integers(1, 3),
)
def test_output_size_is_the_thumbnail_size(height, width, scale, batch):
    sampler = _salient_sampler(scale)
    thumbnail, warp = sampler.sample(torch.rand(batch, 3, height, width))
    assert thumbnail.shape == (batch, 3, *thumbnail_size((height, width), scale))
    assert thumbnail.dtype == torch.float32
    assert warp.image_size == (height, width)
    assert warp.thumbnail_size == thumbnail_size((height, width), scale)
    assert warp.batch_size == batch


# ------------------------------------------------------------------------ uniform at init
@PROPERTY
@given(height=st.integers(1, 40), width=st.integers(1, 40), scale=st.integers(1, 4))
def test_at_initialisation_the_sampler_is_a_uniform_resize(height, width, scale):
    images = torch.rand(2, 3, height, width)
    thumbnail, warp = SaliencySampler(scale).sample(images)
    torch.testing.assert_close(thumbnail, _supersampled_bilinear(images, scale, scale))
    points = torch.rand(2, 6, 2) * torch.tensor([width, height])
    thumb_hw = thumbnail_size((height, width), scale)
    torch.testing.assert_close(
        warp.points_to_thumbnail(points), rescale_keypoints(points, (height, width), thumb_hw)
    )


@pytest.mark.parametrize("scale", [2, 4])
def test_at_initialisation_and_multiples_of_the_scale_it_is_the_area_average(scale):
    images = torch.rand(2, 3, 8 * scale, 5 * scale)
    expected = InterpolateDownsampler(scale, mode="area")(images)
    torch.testing.assert_close(SaliencySampler(scale)(images), expected)


def test_saliency_is_uniform_at_initialisation():
    saliency = SaliencySampler(4).saliency(torch.rand(2, 3, 37, 50))
    assert saliency.shape == (2, 1, 10, 13)
    torch.testing.assert_close(saliency, torch.full_like(saliency, 1 / 130))


def test_uniform_weight_one_is_uniform_whatever_the_saliency():
    images = torch.rand(1, 3, 32, 24)
    thumbnail, _ = saliency_sample(images, torch.randn(1, 1, 4, 3) * 5, 4, uniform_weight=1.0)
    torch.testing.assert_close(thumbnail, InterpolateDownsampler(4, mode="area")(images))


def test_module_equals_function():
    sampler = _salient_sampler()
    images = torch.rand(2, 3, 37, 50)
    thumbnail, warp = sampler.sample(images)
    expected, expected_warp = saliency_sample(
        images, sampler.saliency_logits(images), 4, sampler.uniform_weight, sampler.supersample
    )
    torch.testing.assert_close(thumbnail, expected)
    torch.testing.assert_close(sampler(images), expected)
    torch.testing.assert_close(warp.knots_x, expected_warp.knots_x)


# ------------------------------------------------------------------------------ gradients
def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 2, 7, 9, dtype=torch.float64, generator=generator)
    saliency = torch.randn(1, 1, 3, 4, dtype=torch.float64, generator=generator)
    images.requires_grad_(True)
    saliency.requires_grad_(True)

    def sample(images, saliency):
        return saliency_sample(images, saliency, 2, uniform_weight=0.3, supersample=2)[0]

    assert torch.autograd.gradcheck(sample, (images, saliency))

    def points_back(saliency):
        _, warp = saliency_sample(images.detach(), saliency, 2, uniform_weight=0.3)
        points = torch.tensor([[[1.3, 0.7], [3.1, 2.2]]], dtype=torch.float64)
        return warp.points_to_image(points)

    assert torch.autograd.gradcheck(points_back, (saliency,))


def test_gradients_reach_the_saliency_network():
    torch.manual_seed(0)
    sampler = SaliencySampler(4)
    images = torch.rand(2, 3, 32, 32)
    sampler(images).var().backward()
    assert sampler.head.weight.grad.abs().sum() > 0
    assert sampler.features.weight.grad is not None


# ---------------------------------------------------------------------- coordinate maps
@PROPERTY
@given(
    seed=st.integers(0, 10_000),
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    scale=st.integers(1, 8),
)
def test_points_round_trip_exactly(seed, height, width, scale):
    thumb_hw = thumbnail_size((height, width), scale)
    warp = _random_warp(seed, (height, width), thumb_hw, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    # Beyond the image too: both maps continue linearly there.
    points = (torch.rand(2, 9, 2, generator=generator, dtype=torch.float64) * 1.2 - 0.1) * (
        torch.tensor([width, height], dtype=torch.float64)
    )
    back = warp.points_to_image(warp.points_to_thumbnail(points))
    torch.testing.assert_close(back, points, atol=1e-9, rtol=0)
    thumb_points = points / torch.tensor([width, height]) * torch.tensor(thumb_hw[::-1])
    again = warp.points_to_thumbnail(warp.points_to_image(thumb_points))
    torch.testing.assert_close(again, thumb_points, atol=1e-9, rtol=0)


@PROPERTY
@given(seed=st.integers(0, 10_000), height=st.integers(4, 300), width=st.integers(4, 300))
def test_boxes_round_trip_and_stay_ordered_in_float32(seed, height, width):
    warp = _random_warp(seed, (height, width), thumbnail_size((height, width), 4))
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(2, 5, 2, 2, generator=generator) * torch.tensor([width, height])
    boxes = torch.cat([corners.min(2).values, corners.max(2).values], dim=-1)  # (B, N, 4) xyxy
    thumb_boxes = warp.boxes_to_thumbnail(boxes)
    assert torch.all(thumb_boxes[..., 2:] >= thumb_boxes[..., :2])
    # Float32: well within a thousandth of a pixel (half a thumbnail pixel would be 2 pixels).
    torch.testing.assert_close(warp.boxes_to_image(thumb_boxes), boxes, atol=1e-3, rtol=0)


@PROPERTY
@given(seed=st.integers(0, 10_000), uniform_weight=st.floats(0.05, 1.0))
def test_half_a_thumbnail_pixel_costs_at_most_the_jacobian_bound(seed, uniform_weight):
    # An error of half a thumbnail pixel moves a point by at most 0.5 * (W / w) / uniform_weight
    # image pixels: the tolerance of a round trip through a model's thumbnail-level answer.
    image_hw, thumb_hw = (120, 90), (30, 23)
    warp = _random_warp(seed, image_hw, thumb_hw, uniform_weight=uniform_weight)
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(2, 20, 2, generator=generator) * torch.tensor(thumb_hw[::-1])
    moved = warp.points_to_image(points + 0.5) - warp.points_to_image(points)
    bound = 0.5 * torch.tensor([90 / 23, 120 / 30]) / uniform_weight
    assert torch.all(moved > 0)
    assert torch.all(moved <= bound * (1 + 1e-4))


def test_uniform_warp_is_the_plain_rescale():
    warp = SeparableWarp.uniform((37, 50), (10, 13), batch_size=2)
    boxes = torch.tensor([[[1.0, 2.0, 30.0, 20.0]], [[0.0, 0.0, 50.0, 37.0]]])
    keypoints = torch.tensor([[[3.0, 4.0, 1.0]], [[49.0, 36.0, 0.0]]])
    torch.testing.assert_close(
        warp.boxes_to_thumbnail(boxes), rescale_boxes(boxes, (37, 50), (10, 13))
    )
    torch.testing.assert_close(
        warp.points_to_image(keypoints), rescale_keypoints(keypoints, (10, 13), (37, 50))
    )
    logits = torch.randn(2, 4, 10, 13)
    torch.testing.assert_close(warp.masks_to_image(logits), upsample_to(logits, (37, 50)))


@PROPERTY
@given(seed=st.integers(0, 10_000), count=st.integers(1, 200))
def test_the_grid_inverse_agrees_with_the_general_inverse(seed, count):
    warp = _random_warp(seed, (64, 64), (16, 16), cells=(1 + seed % 9, 1 + seed % 13))
    for knots in (warp.knots_x, warp.knots_y):
        centres = ((torch.arange(count) + 0.5) / count).expand(2, count)
        torch.testing.assert_close(
            _thumbnail_to_image_at_centres(count, knots), _thumbnail_to_image_1d(centres, knots)
        )


# ------------------------------------------------------------------------------ dense maps
def test_masks_go_back_to_the_image_size():
    sampler = _salient_sampler()
    images = torch.rand(2, 3, 37, 50)
    _, warp = sampler.sample(images)
    assert warp.masks_to_image(torch.randn(2, 5, 10, 13)).shape == (2, 5, 37, 50)
    # Stride-2 logits of the thumbnail cover it too; any output size may be asked for.
    assert warp.masks_to_image(torch.randn(2, 5, 5, 7), size=(74, 100)).shape == (2, 5, 74, 100)
    assert warp.masks_to_thumbnail(torch.rand(2, 1, 37, 50)).shape == (2, 1, 10, 13)


def test_a_mask_taken_to_the_thumbnail_and_back_is_kept():
    sampler = _salient_sampler()
    images = torch.rand(2, 3, 64, 80)
    _, warp = sampler.sample(images)
    mask = torch.zeros(2, 1, 64, 80)
    mask[:, :, 10:40, 20:70] = 1
    back = warp.masks_to_image(warp.masks_to_thumbnail(mask, supersample=4)) > 0.5
    agreement = (back == (mask > 0.5)).float().mean()
    assert agreement > 0.97


@pytest.mark.parametrize("size", [(32, 40), (16, 8)])
def test_padding_mask_of_the_uniform_warp_is_downsample_padding_mask(size):
    mask = torch.zeros(2, *size, dtype=torch.bool)
    mask[0, :, 13:] = True
    mask[1, 5:, :] = True
    warp = SeparableWarp.uniform(size, thumbnail_size(size, 4), batch_size=2)
    assert torch.equal(warp.padding_mask_to_thumbnail(mask), downsample_padding_mask(mask, 4))


def test_padding_mask_follows_the_warp():
    _, warp = _salient_sampler().sample(torch.rand(1, 3, 40, 48))
    mask = torch.zeros(1, 40, 48, dtype=torch.bool)
    mask[:, :, 30:] = True  # valid columns: x < 30
    thumb_mask = warp.padding_mask_to_thumbnail(mask)
    # Thumbnail column j is valid iff its left edge maps left of x = 30.
    left = torch.arange(12.0).view(1, 12, 1).expand(1, 12, 2)
    left_x = warp.points_to_image(left)[0, :, 0]
    assert torch.equal(thumb_mask[0, 0], left_x >= 30 - 1e-3)
    assert not thumb_mask[0, :, 0].any()


# ------------------------------------------------------------------------------ zooming
def test_a_salient_region_gets_more_thumbnail_pixels():
    images = torch.rand(1, 3, 64, 64)
    saliency = torch.zeros(1, 1, 16, 16)
    saliency[:, :, 2:6, 10:14] = 4.0  # the image region x in [40, 56], y in [8, 24]
    _, warp = saliency_sample(images, saliency, 4)
    box = warp.boxes_to_thumbnail(torch.tensor([[[40.0, 8.0, 56.0, 24.0]]]))[0, 0]
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert area > 2 * 4 * 4  # more than twice its uniform share of 4 x 4 thumbnail pixels


def test_a_few_optimisation_steps_zoom_on_the_detailed_region():
    torch.manual_seed(0)
    images = torch.full((2, 3, 48, 48), 0.5)
    images[:, :, 4:16, 30:44] = torch.rand(2, 3, 12, 14)
    detail = torch.tensor([[[30.0, 4.0, 44.0, 16.0]]] * 2)
    sampler = SaliencySampler(4)

    def detail_area() -> float:
        with torch.no_grad():
            boxes = sampler.sample(images)[1].boxes_to_thumbnail(detail)
        return float(((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).mean())

    before = detail_area()
    optimizer = torch.optim.Adam(sampler.parameters(), lr=0.05)
    for _ in range(20):
        loss = -sampler(images).var(dim=(2, 3)).mean()  # keep as much detail as possible
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert detail_area() > 2 * before


# ---------------------------------------------------------------------------- Thumbnailed
def test_thumbnailed_restore_receives_the_warp():
    sampler = _salient_sampler()
    seen = {}

    def restore(boxes, _thumbnail_hw, _image_hw, *, warp):
        seen["warp"] = warp
        return warp.boxes_to_image(boxes)

    class BoxModel(nn.Module):
        def forward(self, thumbnail):
            return torch.tensor([[[1.0, 2.0, 5.0, 7.0]]]).expand(thumbnail.shape[0], 1, 4)

    images = torch.rand(2, 3, 37, 50)
    boxes = Thumbnailed(BoxModel(), sampler, restore=restore)(images)
    expected = sampler.sample(images)[1].boxes_to_image(torch.tensor([[[1.0, 2.0, 5.0, 7.0]]] * 2))
    torch.testing.assert_close(boxes, expected)
    assert isinstance(seen["warp"], SeparableWarp)


def test_thumbnailed_gives_plain_downsamplers_the_uniform_warp():
    def restore(logits, _thumbnail_hw, _image_hw, *, warp):
        return warp.masks_to_image(logits)

    net = Thumbnailed(nn.Conv2d(3, 5, 1), InterpolateDownsampler(4), restore=restore)
    images = torch.rand(2, 3, 37, 50)
    expected = upsample_to(net.model(net.thumbnail(images)), (37, 50))
    torch.testing.assert_close(net(images), expected)


def test_thumbnailed_refuses_a_restore_without_the_warp_for_a_warping_downsampler():
    with pytest.raises(TypeError, match="restore must take a warp= argument"):
        Thumbnailed(nn.Identity(), SaliencySampler(4), restore=lambda y, _, s: upsample_to(y, s))
    net = Thumbnailed(nn.Identity(), SaliencySampler(4))  # no restore: the thumbnail as is
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 4, 4)


# -------------------------------------------------------------------------------- exports
def test_torch_compile_with_dynamic_shapes():
    sampler = _salient_sampler().eval()
    compiled = torch.compile(sampler, backend="aot_eager", fullgraph=True, dynamic=True)
    for size in [(32, 24), (37, 50)]:
        images = torch.rand(2, 3, *size)
        torch.testing.assert_close(compiled(images), sampler(images))


def test_torch_export_is_dynamic_in_height_and_width():
    from learnthumb import export_program

    sampler = _salient_sampler().eval()
    program = export_program(sampler, multiple_of_scale=False)
    for size in [(9, 30), (37, 50)]:
        images = torch.rand(3, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(images), sampler(images))


# ------------------------------------------------------------------------------ bad input
def test_bad_arguments():
    with pytest.raises(ValueError, match="scale must be >= 1, got 0"):
        SaliencySampler(0)
    with pytest.raises(TypeError, match="scale must be an int, got float"):
        SaliencySampler(2.0)
    with pytest.raises(ValueError, match=r"uniform_weight must lie in \(0, 1\], got 0"):
        SaliencySampler(4, uniform_weight=0)
    with pytest.raises(TypeError, match="uniform_weight must be a number"):
        SaliencySampler(4, uniform_weight="0.5")
    with pytest.raises(ValueError, match="supersample must be >= 1"):
        SaliencySampler(4, supersample=0)
    with pytest.raises(ValueError, match="saliency_stride must be >= 1"):
        SaliencySampler(4, saliency_stride=0)


def test_bad_images_and_saliency():
    sampler = SaliencySampler(4)
    with pytest.raises(ValueError, match=r"images must have 3 channels"):
        sampler(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"images must be 4-D \(B, C, H, W\)"):
        sampler(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="images must have a floating-point dtype"):
        sampler(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"saliency must have shape \(B, 1, n_y, n_x\)"):
        saliency_sample(torch.rand(2, 3, 16, 16), torch.zeros(1, 1, 4, 4), 4)
    with pytest.raises(ValueError, match=r"saliency must be 4-D"):
        saliency_sample(torch.rand(2, 3, 16, 16), torch.zeros(2, 4, 4), 4)
    # Sizes smaller than the scale still give a thumbnail pixel.
    assert sampler(torch.rand(1, 3, 1, 2)).shape == (1, 3, 1, 1)


def test_bad_warp_arguments():
    warp = SeparableWarp.uniform((16, 16), (4, 4), batch_size=2)
    with pytest.raises(ValueError, match=r"points must have shape \(B, \*, 2\) .* with B = 2"):
        warp.points_to_image(torch.rand(3, 5, 2))
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, \*, 4\) in xyxy"):
        warp.boxes_to_image(torch.rand(2, 5, 3))
    with pytest.raises(TypeError, match="points must have a floating-point dtype"):
        warp.points_to_thumbnail(torch.zeros(2, 5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"maps must be 4-D \(B, C, h, w\)"):
        warp.masks_to_image(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="mode must be one of"):
        warp.masks_to_image(torch.rand(2, 1, 4, 4), mode="bicubic")
    with pytest.raises(ValueError, match="size must be"):
        warp.masks_to_image(torch.rand(2, 1, 4, 4), size=(0, 4))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        warp.padding_mask_to_thumbnail(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 16, 16\)"):
        warp.padding_mask_to_thumbnail(torch.zeros(2, 16, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="knots_x and knots_y must describe the same batch"):
        SeparableWarp(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]] * 2), (4, 4), (2, 2))
    with pytest.raises(ValueError, match="uniform_weight must lie in"):
        SeparableWarp.from_densities(torch.ones(1, 2), torch.ones(1, 2), (4, 4), (2, 2), 1.5)


def test_from_densities_refuses_densities_that_break_the_warp():
    ones = torch.ones(1, 3)
    for bad, rule in [
        (torch.tensor([[1.0, 0.0, 1.0]]), r"> 0 \(uniform_weight=0\), got 0.0"),  # NaN before
        (torch.tensor([[1.0, -0.5, 1.0]]), r">= 0, got -0.5"),  # non-monotone knots before
        (torch.tensor([[1.0, float("nan"), 1.0]]), ">= 0, got nan"),
        (torch.tensor([[1.0, float("inf"), 1.0]]), ">= 0, got inf"),
    ]:
        weight = 0.0 if "uniform_weight=0" in rule else 0.5
        with pytest.raises(ValueError, match=f"density_x must be finite and {rule}"):
            SeparableWarp.from_densities(bad, ones, (30, 30), (10, 10), weight)
        with pytest.raises(ValueError, match=f"density_y must be finite and {rule}"):
            SeparableWarp.from_densities(ones, bad, (30, 30), (10, 10), weight)
    with pytest.raises(ValueError, match="density_x must have a positive sum in every row"):
        SeparableWarp.from_densities(torch.zeros(1, 3), ones, (30, 30), (10, 10), 0.5)
    # A zero is fine with a uniform share: every cell keeps part of the thumbnail.
    warp = SeparableWarp.from_densities(
        torch.tensor([[1.0, 0.0, 1.0]]), ones, (30, 30), (10, 10), 0.5
    )
    assert (warp.knots_x.diff(dim=1) > 0).all()
    assert torch.isfinite(warp.points_to_image(torch.tensor([[[5.0, 5.0]]]))).all()
