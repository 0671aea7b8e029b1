"""Downsamplers: shapes on odd sizes, registry, masks, gradients, bad input."""

import math

import pytest
import torch

from learnthumb import (
    ConvDownsampler,
    InterpolateDownsampler,
    ResidualDownsampler,
    create_downsampler,
    downsample_padding_mask,
    list_downsamplers,
    thumbnail_size,
)

SIZES = [(1, 1), (5, 7), (37, 50)]
PAPER_NAMES = [
    "thumbdet",
    "single_conv",
    "five_layer",
    "residual",
    "bicubic",
    "bilinear",
    "area",
    "nearest",
]


def test_registry_has_the_paper_names():
    assert set(PAPER_NAMES) <= set(list_downsamplers())


@pytest.mark.parametrize("name", PAPER_NAMES)
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", SIZES)
def test_every_downsampler_gives_the_thumbnail_size(name, scale, size):
    down = create_downsampler(name, scale=scale)
    out = down(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *thumbnail_size(size, scale))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (5, 7), (37, 50), (800, 1333)])
@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_thumbnail_size_is_ceil(size, scale):
    assert thumbnail_size(size, scale) == (math.ceil(size[0] / scale), math.ceil(size[1] / scale))


def test_thumbnail_size_rejects_bad_input():
    with pytest.raises(ValueError, match="scale"):
        thumbnail_size((4, 4), 0)
    with pytest.raises(TypeError, match="scale"):
        thumbnail_size((4, 4), 2.0)
    with pytest.raises(ValueError, match="size"):
        thumbnail_size((0, 4), 2)


def test_paper_module_structure():
    # Fig. 3: 3x3 stride-2 conv to 12 channels, ReLU, 3x3 stride-2 conv to 3 channels, ReLU.
    down = ConvDownsampler(scale=4)
    assert [c.kernel_size for c in down.convs] == [(3, 3), (3, 3)]
    assert [c.stride for c in down.convs] == [(2, 2), (2, 2)]
    assert [c.out_channels for c in down.convs] == [12, 3]
    assert (down(torch.randn(1, 3, 16, 16)) >= 0).all()  # final ReLU
    # Sec. 4.2: two 5x5 layers for 2x.
    down2 = ConvDownsampler(scale=2)
    assert [c.kernel_size for c in down2.convs] == [(5, 5), (5, 5)]
    assert [c.stride for c in down2.convs] == [(2, 2), (1, 1)]


def test_table4_variants():
    single = create_downsampler("single_conv", 4)
    assert [(c.kernel_size, c.stride) for c in single.convs] == [((5, 5), (4, 4))]
    five = create_downsampler("five_layer", 4)
    assert [c.kernel_size[0] for c in five.convs] == [7, 5, 3, 1, 1]
    assert math.prod(c.stride[0] for c in five.convs) == 4


def _box_centres(down: ConvDownsampler, size: int) -> torch.Tensor:
    """Where each output row of ``down`` looks, with every kernel a box filter: the mean of
    the input rows' centres (``i + 0.5``) that reach it, on a single-channel column."""
    with torch.no_grad():
        for conv in down.convs:
            conv.weight.fill_(1.0 / conv.weight[0, 0].numel())
            conv.bias.zero_()
        rows = torch.arange(size, dtype=torch.float32).add(0.5).view(1, 1, size, 1)
        out = down(rows.expand(1, 1, size, size))
        return out[0, 0, :, out.shape[-1] // 2]


@pytest.mark.parametrize(("scale", "num_layers"), [(4, 2), (2, 1), (4, 1), (3, 1), (8, 3), (6, 2)])
def test_centred_layers_put_each_output_pixel_on_its_cell_centre(scale, num_layers):
    kwargs = {"in_channels": 1, "hidden_channels": 1, "final_activation": False}
    size = 8 * scale
    cells = torch.arange(size // scale, dtype=torch.float32) * scale + scale / 2
    centred = _box_centres(
        ConvDownsampler(scale, num_layers=num_layers, centred=True, **kwargs), size
    )
    paper = _box_centres(ConvDownsampler(scale, num_layers=num_layers, **kwargs), size)
    inner = slice(1, -1)  # the zero padding pulls the border pixels
    torch.testing.assert_close(centred[inner], cells[inner])
    assert (paper[inner] - cells[inner]).max() < -0.4  # the paper's layers look up and left
    if (scale, num_layers) == (4, 2):
        torch.testing.assert_close(paper[inner] - cells[inner], torch.full((6,), -1.5))


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (37, 50)])
def test_centred_layers_keep_the_thumbnail_size(size):
    x = torch.rand(2, 3, *size)
    for scale in (2, 3, 4):
        down = ResidualDownsampler(scale, centred=True)
        assert [c.kernel_size[0] for c in down.residual.convs] == [
            k + (c.stride[0] % 2 == 0)
            for k, c in zip([3 if scale >= 4 else 5] * 2, down.residual.convs, strict=True)
        ]
        assert down(x).shape[-2:] == thumbnail_size(size, scale)
        assert torch.equal(down(x), InterpolateDownsampler(scale)(x))  # starts as bicubic
    with pytest.raises(TypeError, match=r"centred must be a bool, got str \('yes'\)"):
        ResidualDownsampler(4, centred="yes")
    assert "centred=True" in repr(ConvDownsampler(4, centred=True))
    assert "centred" not in repr(ConvDownsampler(4))


def test_a_centred_residual_round_trips_through_save_pretrained(tmp_path):
    from learnthumb import from_pretrained, save_pretrained

    torch.manual_seed(0)
    down = create_downsampler("residual", 4, centred=True)
    torch.nn.init.normal_(down.residual.convs[-1].weight)
    save_pretrained(down, tmp_path / "down")
    loaded = from_pretrained(tmp_path / "down")
    assert loaded.residual.centred
    x = torch.rand(1, 3, 37, 50)
    torch.testing.assert_close(loaded(x), down(x))


def test_residual_starts_as_bicubic_and_learns():
    x = torch.rand(2, 3, 37, 50)
    down = ResidualDownsampler(4)
    assert torch.equal(down(x), InterpolateDownsampler(4)(x))
    down(x).square().mean().backward()
    assert down.residual.convs[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "area", "nearest"])
def test_interpolation_preserves_constant_images(mode):
    x = torch.full((1, 3, 37, 50), 0.25)
    out = InterpolateDownsampler(4, mode=mode)(x)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))


def test_area_is_block_average_when_divisible():
    x = torch.rand(1, 3, 8, 12)
    out = InterpolateDownsampler(4, mode="area")(x)
    expected = x.reshape(1, 3, 2, 4, 3, 4).mean(dim=(3, 5))
    torch.testing.assert_close(out, expected)


def test_conv_downsampler_gradcheck():
    down = ConvDownsampler(scale=2, hidden_channels=2, final_activation=False).double()
    x = torch.rand(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(down, (x,))


def test_conv_downsampler_repr_names_a_missing_final_relu():
    assert "final_activation=False" in repr(ConvDownsampler(4, final_activation=False))
    assert "final_activation" not in repr(ConvDownsampler(4))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("thumbdet", {}),
        ("residual", {}),
        ("bicubic", {}),
        ("learned_resizer", {"channels": 4}),  # few channels: fast
        ("space_to_depth", {}),
    ],
)
def test_bad_input(name, kwargs):
    down = create_downsampler(name, 4, **kwargs)
    with pytest.raises(ValueError, match=r"images must be 4-D"):
        down(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="images must have a floating-point dtype"):
        down(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    if name != "bicubic":
        with pytest.raises(ValueError, match=r"images must have 3 channels"):
            down(torch.rand(1, 4, 16, 16))


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown downsampler 'nope'"):
        create_downsampler("nope", 4)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvDownsampler(4, kernel_size=4)
    with pytest.raises(ValueError, match="one size per layer"):
        ConvDownsampler(4, num_layers=2, kernel_size=(3, 3, 3))
    with pytest.raises(ValueError, match="mode must be one of"):
        InterpolateDownsampler(4, mode="lanczos")
    with pytest.raises(ValueError, match="scale must be >= 1"):
        ConvDownsampler(0)


def test_padding_mask_downsampling():
    mask = torch.zeros(2, 9, 10, dtype=torch.bool)
    mask[0, :, 5:] = True  # columns 5..9 padded: cells [4:8] hold valid column 4
    mask[1, 4:, :] = True  # rows 4..8 padded: the row cells [4:8] and [8:9] are all padding
    out = downsample_padding_mask(mask, 4)
    assert out.shape == (2, 3, 3)
    assert out[0].tolist() == [[False, False, True]] * 3
    assert out[1].tolist() == [[False] * 3, [True] * 3, [True] * 3]
    assert torch.equal(downsample_padding_mask(mask, 1), mask)


def test_padding_mask_errors():
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        downsample_padding_mask(torch.zeros(1, 4, 4), 2)
    with pytest.raises(ValueError, match="mask must be 3-D"):
        downsample_padding_mask(torch.zeros(4, 4, dtype=torch.bool), 2)


def test_inferred_scale_considers_every_scale_that_fits():
    from torch import nn

    from learnthumb import SpaceToDepthDownsampler, Thumbnailed, moment_matching_loss
    from learnthumb.downsamplers._base import _scale_between

    # Sizes the height alone got wrong: one integer scale fits, s = 4.
    for size, thumbnail in [((5, 7), (2, 2)), ((9, 12), (3, 3)), ((37, 50), (10, 13))]:
        assert _scale_between(size, thumbnail) == 4
    assert _scale_between((3, 5), (1, 1)) == 5  # one cell: every s >= 5 reduces alike
    assert _scale_between((5, 7), (3, 3)) is None
    # moment_matching_loss infers the thumbnail's mask instead of demanding it.
    x = torch.rand(1, 3, 5, 7)
    mask = torch.zeros(1, 5, 7, dtype=torch.bool)
    mask[:, :, 4:] = True
    y = SpaceToDepthDownsampler(4)(x)
    explicit = downsample_padding_mask(mask, 4)
    torch.testing.assert_close(
        moment_matching_loss(x, y, original_padding_mask=mask),
        moment_matching_loss(x, y, original_padding_mask=mask, thumbnail_padding_mask=explicit),
    )
    # 9 -> 3 fits s = 3 and s = 4, which cut the image differently: no guess.
    x = torch.rand(1, 3, 9, 9)
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[:, :, 4:] = True
    y = SpaceToDepthDownsampler(4)(x)
    with pytest.raises(ValueError, match=r"thumbnail_padding_mask must be given.*\(3, 4\)"):
        moment_matching_loss(x, y, original_padding_mask=mask)

    class NoScale(nn.Module):  # a downsampler without a `scale` attribute
        def __init__(self):
            super().__init__()
            self.inner = SpaceToDepthDownsampler(4)

        def forward(self, images):
            return self.inner(images)

    class MaskOut(nn.Module):
        def forward(self, _images, padding_mask=None):
            return padding_mask

    net = Thumbnailed(MaskOut(), NoScale(), mask_argument="padding_mask")
    with pytest.raises(ValueError, match="NoScale has no `scale` attribute.*several integer s"):
        net(x, padding_mask=mask)
    unpadded = torch.zeros(1, 9, 9, dtype=torch.bool)  # reduced alike at s = 3 and 4
    assert not net(x, padding_mask=unpadded).any()
    assert net(
        torch.rand(1, 3, 9, 12), padding_mask=torch.zeros(1, 9, 12, dtype=torch.bool)
    ).shape == (1, 3, 3)


@pytest.mark.parametrize("name", list_downsamplers())
def test_empty_batch_gives_an_empty_thumbnail(name):
    down = create_downsampler(name, 4).eval()
    one = down(torch.rand(1, 3, 9, 10))
    assert down(torch.rand(0, 3, 9, 10)).shape == (0, *one.shape[1:])


@pytest.mark.parametrize("name", list_downsamplers())
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_every_downsampler_runs_in_half_precision_on_the_cpu(name, dtype, tolerance):
    # The antialiased CPU resize has no half kernel: those modules resize in float32.
    torch.manual_seed(0)
    down = create_downsampler(name, 4).eval()
    images = torch.rand(2, 3, 19, 22)
    with torch.no_grad():
        reference = down(images)
        thumbnail = down.to(dtype)(images.to(dtype))
    assert thumbnail.dtype == dtype
    torch.testing.assert_close(thumbnail.float(), reference, atol=tolerance, rtol=0)


def test_saliency_sampler_warp_of_an_empty_batch_maps_points_and_boxes():
    from learnthumb import SaliencySampler

    thumbnail, warp = SaliencySampler(4).sample(torch.rand(0, 3, 9, 10))
    assert thumbnail.shape == (0, 3, 3, 3) and warp.batch_size == 0
    assert warp.points_to_thumbnail(torch.rand(0, 5, 2)).shape == (0, 5, 2)
    assert warp.boxes_to_image(torch.rand(0, 5, 4)).shape == (0, 5, 4)
