"""Tests of learnthumb.wrappers: Thumbnailed and the helpers that map outputs back to full size."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from learnthumb import (
    ConvDownsampler,
    InterpolateDownsampler,
    SaliencySampler,
    Thumbnailed,
    downsample_padding_mask,
    rescale_boxes,
    rescale_keypoints,
    thumbnail_size,
    upsample_padded,
    upsample_to,
)
from tests.onnx_helpers import export_legacy_onnx

sizes = st.tuples(st.integers(1, 300), st.integers(1, 300))


class _ScaleBy(nn.Module):
    """A toy model with an extra positional and keyword argument."""

    def forward(self, images, factor, *, offset=0.0):
        return images * factor + offset


# ----------------------------------------------------------------------------------- Thumbnailed
def test_thumbnailed_runs_model_on_thumbnail_and_forwards_arguments():
    downsampler = ConvDownsampler(4)
    net = Thumbnailed(_ScaleBy(), downsampler)
    images = torch.rand(2, 3, 37, 50)
    output = net(images, 2.0, offset=1.0)
    torch.testing.assert_close(output, downsampler(images) * 2.0 + 1.0)
    assert output.shape == (2, 3, *thumbnail_size((37, 50), 4))
    torch.testing.assert_close(net.thumbnail(images), downsampler(images))


def test_thumbnailed_restore_receives_sizes_and_maps_back():
    seen = {}

    def restore(logits, thumbnail_hw, image_hw):
        seen["sizes"] = (thumbnail_hw, image_hw)
        return upsample_to(logits, image_hw)

    net = Thumbnailed(nn.Conv2d(3, 5, 1), InterpolateDownsampler(4), restore=restore)
    output = net(torch.rand(2, 3, 37, 50))
    assert output.shape == (2, 5, 37, 50)
    assert seen["sizes"] == ((10, 13), (37, 50))


def test_thumbnailed_gradients_reach_the_downsampler():
    # Seeded: some initialisations of the paper's module start with a dead ReLU channel, which
    # gets no gradient at all (see tests/test_health.py); the test depended on earlier tests'
    # random state and failed once in CI.
    torch.manual_seed(0)
    downsampler = ConvDownsampler(4)
    net = Thumbnailed(nn.Conv2d(3, 2, 3, padding=1), downsampler)
    net(torch.rand(2, 3, 16, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in downsampler.parameters())


def test_thumbnailed_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        Thumbnailed(lambda x: x, nn.Identity())
    with pytest.raises(TypeError, match="downsampler"):
        Thumbnailed(nn.Identity(), "bicubic")
    with pytest.raises(TypeError, match="restore"):
        Thumbnailed(nn.Identity(), nn.Identity(), restore=3)
    net = Thumbnailed(nn.Identity(), nn.Identity())
    with pytest.raises(ValueError, match=r"images must have shape \(B, C, H, W\), got \(3, 8, 8\)"):
        net(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="images"):
        net([torch.rand(1, 3, 8, 8)])


class _MaskedModel(nn.Module):
    """A DETR-like toy: takes a padding mask by keyword and remembers what it got."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, images, padding_mask=None):
        self.seen.append(padding_mask)
        return images.mean()


class _PoolNoScale(nn.Module):
    """A downsampler without a ``scale`` attribute (the factor comes from the sizes)."""

    def forward(self, images):
        return F.avg_pool2d(images, 4, ceil_mode=True)


@pytest.mark.parametrize("downsampler", [InterpolateDownsampler(4), _PoolNoScale()])
def test_thumbnailed_reduces_the_padding_mask_to_the_thumbnail(downsampler):
    model = _MaskedModel()
    net = Thumbnailed(model, downsampler, mask_argument="padding_mask")
    mask = torch.zeros(2, 37, 50, dtype=torch.bool)
    mask[1, 20:, :] = True
    net(torch.rand(2, 3, 37, 50), padding_mask=mask)
    assert torch.equal(model.seen[-1], downsample_padding_mask(mask, 4))  # (2, 10, 13)
    net(torch.rand(2, 3, 37, 50), padding_mask=None)  # None passes through
    net(torch.rand(2, 3, 37, 50))
    assert model.seen[-2:] == [None, None]
    # Without mask_argument every argument reaches the model untouched.
    Thumbnailed(model, downsampler)(torch.rand(2, 3, 37, 50), padding_mask=mask)
    assert model.seen[-1] is mask


def _trained_saliency_sampler() -> SaliencySampler:
    """A sampler whose warp is far from uniform, counting its ``sample`` calls."""
    torch.manual_seed(0)
    down = SaliencySampler(4)
    with torch.no_grad():
        for parameter in down.parameters():
            parameter.normal_(0, 1.0)
    down.calls = 0
    sample = down.sample

    def counted(images):
        down.calls += 1
        return sample(images)

    down.sample = counted
    return down


@pytest.mark.parametrize("with_restore", [False, True])
def test_thumbnailed_reduces_the_padding_mask_through_a_warping_downsampler(with_restore):
    down = _trained_saliency_sampler()
    model = _MaskedModel()
    restore = (lambda output, _, __, *, warp: (output, warp)) if with_restore else None
    net = Thumbnailed(model, down, restore=restore, mask_argument="padding_mask")
    images = torch.rand(1, 3, 32, 32)
    images[..., 16:] = 0
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, :, 16:] = True
    net(images, padding_mask=mask)
    assert down.calls == 1  # the thumbnail and its mask come from one sampler call
    _, warp = down.sample(images)
    expected = warp.padding_mask_to_thumbnail(mask)
    assert not torch.equal(expected, downsample_padding_mask(mask, 4))  # the warp is not uniform
    assert torch.equal(model.seen[-1], expected)


def test_thumbnailed_mask_argument_bad_input():
    net = Thumbnailed(_MaskedModel(), InterpolateDownsampler(4), mask_argument="padding_mask")
    with pytest.raises(ValueError, match=r"padding_mask must have shape \(2, 16, 16\)"):
        net(torch.rand(2, 3, 16, 16), padding_mask=torch.zeros(2, 8, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match="padding_mask must be a bool tensor"):
        net(torch.rand(2, 3, 16, 16), padding_mask=torch.zeros(2, 16, 16))
    with pytest.raises(TypeError, match="mask_argument must be a keyword name"):
        Thumbnailed(nn.Identity(), nn.Identity(), mask_argument=1)
    odd = Thumbnailed(_MaskedModel(), nn.AdaptiveAvgPool2d(5), mask_argument="padding_mask")
    with pytest.raises(ValueError, match="has no `scale` attribute"):
        odd(torch.rand(1, 3, 16, 16), padding_mask=torch.zeros(1, 16, 16, dtype=torch.bool))


def test_thumbnailed_under_torch_compile():
    torch.manual_seed(0)
    net = Thumbnailed(nn.Conv2d(3, 4, 1), ConvDownsampler(4))
    images = torch.rand(2, 3, 32, 24)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(images), net(images))
    compiled(images).sum().backward()  # the compiled graph is differentiable too
    assert net.downsampler.convs[0].weight.grad is not None


def test_thumbnailed_with_restore_compiles_with_dynamic_shapes():
    torch.manual_seed(0)
    net = Thumbnailed(
        nn.Conv2d(3, 4, 1),
        ConvDownsampler(4),
        restore=lambda logits, _, image_size: upsample_to(logits, image_size),
    )
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True, dynamic=True)
    for size in [(32, 24), (40, 52)]:
        images = torch.rand(2, 3, *size)
        output = compiled(images)
        assert output.shape == (2, 4, *size)
        torch.testing.assert_close(output, net(images))


# ------------------------------------------------------------------ export of the downsampler
@pytest.mark.parametrize(
    ("make_downsampler", "compile_jit", "shape"),
    [
        # A conv trace generalises to other sizes (and batch sizes).
        pytest.param(ConvDownsampler, "trace", (2, 3, 24, 36), id="conv-trace-other-size"),
        # The output size is computed in Python, so a trace is only valid for the traced H, W.
        pytest.param(InterpolateDownsampler, "trace", (2, 3, 32, 40), id="bicubic-trace-same-size"),
        pytest.param(ConvDownsampler, "script", (1, 3, 21, 30), id="conv-script"),
        pytest.param(
            functools.partial(ConvDownsampler, centred=True),
            "script",
            (1, 3, 21, 30),
            id="conv-centred-script",
        ),
    ],
)
def test_downsampler_jit_matches_eager(make_downsampler, compile_jit, shape):
    downsampler = make_downsampler(4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if compile_jit == "trace":
            compiled = torch.jit.trace(downsampler, torch.rand(1, 3, 32, 40))
        else:
            compiled = torch.jit.script(downsampler)
    images = torch.rand(shape)
    torch.testing.assert_close(compiled(images), downsampler(images))


def test_conv_downsampler_onnx_export_matches_pytorch():
    import onnx
    from onnx.reference import ReferenceEvaluator

    torch.manual_seed(0)
    downsampler = ConvDownsampler(4).eval()
    model = export_legacy_onnx(downsampler)
    onnx.checker.check_model(model)
    images = torch.rand(2, 3, 37, 50)  # another batch and size: the axes are dynamic
    (thumbnail,) = ReferenceEvaluator(model).run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(thumbnail), downsampler(images).detach())


# --------------------------------------------------------------------------------------- boxes
@pytest.mark.parametrize("box_format", ["xyxy", "xywh", "cxcywh"])
def test_rescale_boxes_known_values(box_format):
    boxes = torch.tensor([[2.0, 4.0, 10.0, 12.0]])
    out = rescale_boxes(boxes, (25, 50), (100, 200), box_format=box_format)
    torch.testing.assert_close(out, torch.tensor([[8.0, 16.0, 40.0, 48.0]]))


def test_rescale_boxes_anisotropic_and_format_consistent():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    xywh = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    cxcywh = torch.tensor([[3.0, 6.0, 4.0, 8.0]])
    out_xyxy = rescale_boxes(xyxy, (10, 20), (30, 40))  # y x3, x x2
    torch.testing.assert_close(out_xyxy, torch.tensor([[2.0, 6.0, 10.0, 30.0]]))
    x0, y0, x1, y1 = out_xyxy[0]
    torch.testing.assert_close(
        rescale_boxes(xywh, (10, 20), (30, 40), box_format="xywh")[0],
        torch.stack([x0, y0, x1 - x0, y1 - y0]),
    )
    torch.testing.assert_close(
        rescale_boxes(cxcywh, (10, 20), (30, 40), box_format="cxcywh")[0],
        torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]),
    )


def test_rescale_boxes_normalised_pass_through():
    boxes = torch.rand(3, 4)
    assert rescale_boxes(boxes, (10, 10), (40, 40), normalized=True) is boxes


def test_rescale_boxes_per_image_sizes():
    boxes = torch.ones(2, 3, 4)
    from_size = torch.tensor([[10, 10], [10, 20]])
    to_size = torch.tensor([[40, 40], [20, 20]])
    out = rescale_boxes(boxes, from_size, to_size)
    torch.testing.assert_close(out[0], torch.full((3, 4), 4.0))
    torch.testing.assert_close(out[1], torch.tensor([[1.0, 2.0, 1.0, 2.0]]).expand(3, 4))
    # one size for all images on one side is broadcast
    torch.testing.assert_close(rescale_boxes(boxes, (10, 10), to_size)[0], out[0])


@settings(max_examples=60, deadline=None)
@given(
    from_size=sizes,
    to_size=sizes,
    box_format=st.sampled_from(["xyxy", "xywh", "cxcywh"]),
    seed=st.integers(0, 2**16),
)
def test_rescale_boxes_round_trip_is_identity(from_size, to_size, box_format, seed):
    generator = torch.Generator().manual_seed(seed)
    boxes = torch.rand(5, 4, generator=generator, dtype=torch.float64) * 400
    there = rescale_boxes(boxes, from_size, to_size, box_format=box_format)
    back = rescale_boxes(there, to_size, from_size, box_format=box_format)
    torch.testing.assert_close(back, boxes)


def test_rescale_boxes_bad_input():
    with pytest.raises(ValueError, match=r"boxes must have shape \(\*, 4\), got \(3, 5\)"):
        rescale_boxes(torch.zeros(3, 5), (4, 4), (8, 8))
    with pytest.raises(TypeError, match="boxes must have a floating"):
        rescale_boxes(torch.zeros(3, 4, dtype=torch.long), (4, 4), (8, 8))
    with pytest.raises(TypeError, match="boxes must be a torch.Tensor"):
        rescale_boxes([[0, 0, 1, 1]], (4, 4), (8, 8))
    with pytest.raises(ValueError, match="box_format"):
        rescale_boxes(torch.zeros(3, 4), (4, 4), (8, 8), box_format="yxyx")
    with pytest.raises(ValueError, match="from_size"):
        rescale_boxes(torch.zeros(3, 4), (4, 0), (8, 8))
    with pytest.raises(ValueError, match="to_size"):
        rescale_boxes(torch.zeros(3, 4), (4, 4), (8, 8, 3))
    with pytest.raises(ValueError, match=r"describe 3 images but boxes has shape \(2, 5, 4\)"):
        rescale_boxes(torch.zeros(2, 5, 4), torch.full((3, 2), 4), (8, 8))
    with pytest.raises(ValueError, match="from_size has 2 per-image sizes but to_size has 3"):
        rescale_boxes(torch.zeros(2, 5, 4), torch.full((2, 2), 4), torch.full((3, 2), 8))
    with pytest.raises(ValueError, match=r"from_size must be a \(H, W\) pair or a \(B, 2\)"):
        rescale_boxes(torch.zeros(2, 5, 4), torch.full((2, 3), 4), (8, 8))


# ----------------------------------------------------------------------------------- keypoints
def test_rescale_keypoints_keeps_visibility():
    keypoints = torch.tensor([[[1.5, 2.5, 1.0], [0.0, 4.0, 0.0]]])
    out = rescale_keypoints(keypoints, (16, 8), (64, 16))
    torch.testing.assert_close(out, torch.tensor([[[3.0, 10.0, 1.0], [0.0, 16.0, 0.0]]]))


def test_rescale_keypoints_pixel_centres_follow_interpolation_grid():
    # pixel j of a w-wide map has its centre at j + 0.5; upsampling by s puts it at s * (j + 0.5).
    centre = torch.tensor([[3.5, 1.5]])
    torch.testing.assert_close(
        rescale_keypoints(centre, (4, 8), (16, 32)), torch.tensor([[14.0, 6.0]])
    )


@settings(max_examples=60, deadline=None)
@given(from_size=sizes, to_size=sizes, last=st.sampled_from([2, 3]), seed=st.integers(0, 2**16))
def test_rescale_keypoints_round_trip_is_identity(from_size, to_size, last, seed):
    generator = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(2, 7, last, generator=generator, dtype=torch.float64) * 300
    back = rescale_keypoints(rescale_keypoints(keypoints, from_size, to_size), to_size, from_size)
    torch.testing.assert_close(back, keypoints)


@pytest.mark.parametrize("last", [1, 4])
def test_rescale_keypoints_wrong_last_dimension(last):
    with pytest.raises(ValueError, match=rf"keypoints must have shape .*got \(5, {last}\)"):
        rescale_keypoints(torch.zeros(5, last), (4, 4), (8, 8))


def test_rescale_keypoints_bad_dtype_and_batch():
    with pytest.raises(TypeError, match="keypoints must have a floating"):
        rescale_keypoints(torch.zeros(5, 2, dtype=torch.int32), (4, 4), (8, 8))
    with pytest.raises(ValueError, match="describe 2 images but keypoints"):
        rescale_keypoints(torch.zeros(3, 5, 2), torch.full((2, 2), 4), (8, 8))


# -------------------------------------------------------------------------------- dense maps
def test_upsample_to_shape_and_matches_interpolate():
    maps = torch.rand(2, 5, 10, 13)
    out = upsample_to(maps, (37, 50))
    assert out.shape == (2, 5, 37, 50)
    expected = F.interpolate(maps, size=(37, 50), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)
    assert upsample_to(maps, torch.Size([20, 26]), mode="nearest").shape == (2, 5, 20, 26)


@pytest.mark.parametrize("shape", [(5, 10, 13), (1, 2, 5, 10, 13), (13,)])
def test_upsample_to_rejects_non_4d(shape):
    with pytest.raises(
        ValueError, match=r"maps \(logits or heatmaps\) must have shape \(B, C, h, w\)"
    ):
        upsample_to(torch.rand(shape), (37, 50))


def test_upsample_to_bad_arguments():
    with pytest.raises(TypeError, match="maps must have a floating"):
        upsample_to(torch.zeros(1, 2, 3, 3, dtype=torch.long), (6, 6))
    with pytest.raises(ValueError, match="mode must be one of"):
        upsample_to(torch.rand(1, 2, 3, 3), (6, 6), mode="lanczos")
    with pytest.raises(ValueError, match=r"size must be a \(H, W\) pair"):
        upsample_to(torch.rand(1, 2, 3, 3), (6,))
    with pytest.raises(ValueError, match=r"size must be a \(H, W\) pair"):
        upsample_to(torch.rand(1, 2, 3, 3), (6.0, 6.0))


@settings(max_examples=40, deadline=None)
@given(
    region_rows=st.integers(1, 4),
    region_cols=st.integers(1, 4),
    cell=st.integers(2, 4),
    scale=st.integers(1, 5),
    num_classes=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_upsampling_preserves_argmax_regions(
    region_rows, region_cols, cell, scale, num_classes, seed
):
    """Logits constant per region (blocks of ``cell`` thumbnail pixels): after bilinear
    upsampling, every pixel whose source neighbourhood lies in one region keeps that region's
    class, and no pixel takes a class absent from its neighbourhood."""
    generator = torch.Generator().manual_seed(seed)
    regions = torch.randint(num_classes, (region_rows, region_cols), generator=generator)
    labels = regions.repeat_interleave(cell, 0).repeat_interleave(cell, 1)  # (h, w)
    height, width = labels.shape
    strength = torch.rand(num_classes, generator=generator) + 0.5
    logits = F.one_hot(labels, num_classes).permute(2, 0, 1).float() * strength[:, None, None]
    up = upsample_to(logits[None], (height * scale, width * scale))[0].argmax(0)  # (H, W)

    nearest = labels.repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # source pixel label
    # classes present in each source pixel's 3x3 neighbourhood (bilinear reads at most that far)
    present = F.max_pool2d(
        F.one_hot(labels, num_classes).permute(2, 0, 1).float()[None], 3, stride=1, padding=1
    )[0]  # (K, h, w)
    present_up = present.repeat_interleave(scale, 1).repeat_interleave(scale, 2).bool()
    assert present_up.gather(0, up[None]).all()
    uniform = present_up.sum(0) == 1  # pixels far from any region boundary
    assert torch.equal(up[uniform], nearest[uniform])


def test_nearest_upsampling_is_exact_on_label_maps():
    labels = torch.randint(4, (6, 7))
    logits = F.one_hot(labels, 4).permute(2, 0, 1).float()[None]
    up = upsample_to(logits, (18, 21), mode="nearest")[0].argmax(0)
    assert torch.equal(up, labels.repeat_interleave(3, 0).repeat_interleave(3, 1))


# ------------------------------------------------------------------------------ padded batches
def test_upsample_padded_crops_each_valid_region():
    scale = 4
    downsampler = InterpolateDownsampler(scale, mode="area")
    images = [torch.rand(3, 32, 20), torch.rand(3, 16, 32)]
    padded = torch.zeros(2, 3, 32, 32)
    for index, image in enumerate(images):
        padded[index, :, : image.shape[1], : image.shape[2]] = image
    maps = downsampler(padded)  # (2, 3, 8, 8): the "prediction" is the thumbnail itself
    outputs = upsample_padded(maps, [tuple(i.shape[1:]) for i in images], (32, 32))
    for image, output in zip(images, outputs, strict=True):
        assert output.shape == image.shape
        # away from the padding the result equals processing the image on its own
        alone = upsample_to(downsampler(image[None]), image.shape[1:])[0]
        interior = (slice(None), slice(0, image.shape[1] - scale), slice(0, image.shape[2] - scale))
        torch.testing.assert_close(output[interior], alone[interior])


def test_upsample_padded_accepts_tensor_sizes_and_matches_full_upsampling():
    maps = torch.rand(2, 4, 8, 8)
    sizes = torch.tensor([[30, 17], [32, 32]])
    outputs = upsample_padded(maps, sizes, (32, 32), mode="bicubic")
    full = upsample_to(maps, (32, 32), mode="bicubic")
    torch.testing.assert_close(outputs[0], full[0, :, :30, :17])
    torch.testing.assert_close(outputs[1], full[1])


def test_upsample_padded_bad_input():
    maps = torch.rand(2, 4, 8, 8)
    with pytest.raises(ValueError, match="image_sizes holds 3 sizes but maps has batch size 2"):
        upsample_padded(maps, [(8, 8)] * 3, (32, 32))
    with pytest.raises(
        ValueError, match=r"image_sizes\[1\] = \(40, 8\) does not fit in padded_size"
    ):
        upsample_padded(maps, [(8, 8), (40, 8)], (32, 32))
    with pytest.raises(ValueError, match=r"maps of spatial size \(8, 8\) do not match padded_size"):
        upsample_padded(maps, [(32, 32), (32, 64)], (32, 64))  # 4x along H, 8x along W
    with pytest.raises(ValueError, match=r"image_sizes must have shape \(B, 2\)"):
        upsample_padded(maps, torch.zeros(2, 3, dtype=torch.long), (32, 32))
    with pytest.raises(ValueError, match=r"maps \(logits or heatmaps\) must have shape"):
        upsample_padded(maps[0], [(8, 8)], (32, 32))
