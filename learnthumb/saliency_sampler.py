"""Content-adaptive thumbnails: a saliency map drives a non-uniform, invertible sampling grid.

Recasens et al., "Learning to Zoom: a Saliency-Based Sampling Layer for Neural Networks"
(ECCV 2018), let a small network look at a low-resolution copy of the image, predict a saliency
map, and sample the image more densely where the saliency is high, so small objects get more
pixels of the network's input. Thavamani et al., "Learning to Zoom and Unzoom" (CVPR 2023),
make the warp *separable*: x and y each follow a monotone 1-D map built from the per-column and
per-row marginals of the saliency, which can be inverted exactly to bring predictions back
("unzoom"). We follow the separable form: a model's boxes, keypoints and dense outputs map back
to image coordinates exactly (:class:`learnthumb.SeparableWarp`).

Our construction of the 1-D map (the papers build it with a Gaussian-kernel average of
positions; we use the equivalent idea of an inverse cumulative distribution, which needs no
kernel width and has a closed-form inverse): the marginal of an axis, mixed with a uniform
density, is the share of the thumbnail each image cell receives. The thumbnail's pixels are the
average of ``supersample x supersample`` bilinear samples at the image positions of points
inside them, a box filter that follows the warp (antialiasing by sampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learnthumb._checks import check_int, check_ndim
from learnthumb.downsamplers._base import _check_image, _interpolate_down, _thumbnail_hw
from learnthumb.downsamplers.registry import register_downsampler
from learnthumb.warps import SeparableWarp

__all__ = ["SaliencySampler", "saliency_sample"]


def _check_uniform_weight(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"uniform_weight must be a number in (0, 1], got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"uniform_weight must lie in (0, 1], got {value}")
    return float(value)


def saliency_sample(
    images: Tensor,
    saliency: Tensor,
    scale: int,
    uniform_weight: float = 0.5,
    supersample: int | None = None,
) -> tuple[Tensor, SeparableWarp]:
    """Sample the thumbnail of ``images`` on the separable grid that ``saliency`` implies.

    The saliency logits are turned into a distribution over the image by a softmax over all
    positions; its column and row marginals, mixed with the uniform density
    (``uniform_weight``), give each image cell its share of the thumbnail along x and y
    (:meth:`SeparableWarp.from_densities`). Uniform saliency gives the uniform resize.

    Args:
        images: the images.
        saliency: saliency logits over a grid of equal cells covering the image, at any
            resolution (typically the image at ``1 / s``).
        scale: downsampling factor ``s``; the thumbnail has :func:`learnthumb.thumbnail_size`.
        uniform_weight: share of the uniform density, in ``(0, 1]``: it keeps the warp from
            collapsing, since a thumbnail pixel then spans at most ``s / uniform_weight`` image
            pixels per axis (1 gives the uniform resize whatever the saliency).
        supersample: bilinear samples per thumbnail pixel along each axis, averaged
            (antialiasing); ``scale`` by default, which for uniform saliency and sizes that are
            multiples of the scale is exactly the area average of each ``s x s`` cell.

    Shape:
        - images: :math:`(B, C, H, W)`
        - saliency: :math:`(B, 1, n_y, n_x)`
        - output: :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)` and a warp of
          batch size :math:`B`.

    Returns:
        ``(thumbnail, warp)``: the warp maps points, boxes and dense outputs between the image
        and the thumbnail.

    Example:
        >>> images = torch.rand(2, 3, 37, 50)
        >>> thumbnail, warp = saliency_sample(images, torch.zeros(2, 1, 5, 7), scale=4)
        >>> thumbnail.shape
        torch.Size([2, 3, 10, 13])
        >>> warp.points_to_thumbnail(torch.tensor([[[25.0, 18.5]], [[50.0, 37.0]]]))
        tensor([[[ 6.5000,  5.0000]],
                [[13.0000, 10.0000]]])
    """
    _check_image(images, None)
    check_int(scale, "scale", minimum=1)
    check_ndim(saliency, 4, "saliency", "(B, 1, n_y, n_x)")
    if saliency.shape[0] != images.shape[0] or saliency.shape[1] != 1:
        raise ValueError(
            f"saliency must have shape (B, 1, n_y, n_x) with B = {images.shape[0]}, "
            f"got {tuple(saliency.shape)}"
        )
    uniform_weight = _check_uniform_weight(uniform_weight)
    supersample = scale if supersample is None else check_int(supersample, "supersample", minimum=1)
    batch, _, cells_y, cells_x = saliency.shape
    # Float32 at least: the knots accumulate the marginals.
    logits = saliency.to(torch.promote_types(saliency.dtype, torch.float32))
    probability = torch.softmax(logits.flatten(1), dim=1)  # flatten: also for B = 0
    probability = probability.reshape(batch, cells_y, cells_x)  # (B, n_y, n_x)
    thumb_h, thumb_w = _thumbnail_hw(images, scale)
    # Softmax marginals are >= 0 and sum to 1, and uniform_weight > 0: no check of the values.
    warp = SeparableWarp._from_valid_densities(
        probability.sum(1),  # (B, n_x): column marginals
        probability.sum(2),  # (B, n_y): row marginals
        (images.shape[-2], images.shape[-1]),
        (thumb_h, thumb_w),
        uniform_weight,
    )
    thumbnail = warp._resample_to_thumbnail(images, thumb_h, thumb_w, "bilinear", supersample)
    return thumbnail, warp


class SaliencySampler(nn.Module):
    """A learned saliency-based sampler (Recasens et al. 2018, separable as Thavamani et al.).

    A tiny CNN (``3x3 conv -> ReLU -> 3x3 conv`` to one channel) predicts saliency logits on a
    bilinear, antialiased copy of the image at ``1 / saliency_stride``; :func:`saliency_sample`
    turns them into a separable warp and samples the thumbnail. The last convolution starts at
    zero, so at initialisation the saliency is uniform and the module is a uniform resize (the
    area average of each cell for sizes that are multiples of the scale).

    ``forward`` returns only the thumbnail, so the module is a drop-in downsampler;
    :meth:`sample` also returns the :class:`learnthumb.SeparableWarp` that maps a model's
    outputs back (``Thumbnailed(..., restore=...)`` receives it as ``warp=``).

    Args:
        scale: downsampling factor.
        hidden_channels: channels of the saliency network.
        saliency_stride: the saliency network sees the image at ``1 / saliency_stride``, the
            thumbnail's resolution by default (``scale``). ``torch.export`` and ONNX exports
            with dynamic sizes need ``saliency_stride <= scale``: a saliency map of a single
            cell is a special case the traced graph does not cover.
        uniform_weight: share of the uniform density in each axis' map, in ``(0, 1]``
            (see :func:`saliency_sample`): a thumbnail pixel spans at most
            ``scale / uniform_weight`` image pixels.
        supersample: bilinear samples per thumbnail pixel and axis; ``scale`` by default.
        in_channels: channels of the input image.

    Shape:
        - input: :math:`(B, C, H, W)`
        - output: :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`

    Example:
        >>> sampler = SaliencySampler(4)
        >>> images = torch.rand(2, 3, 37, 50)
        >>> thumbnail, warp = sampler.sample(images)
        >>> thumbnail.shape, warp.boxes_to_image(torch.tensor([[[1.0, 2.0, 5.0, 6.0]]] * 2)).shape
        (torch.Size([2, 3, 10, 13]), torch.Size([2, 1, 4]))
    """

    def __init__(
        self,
        scale: int = 4,
        hidden_channels: int = 8,
        saliency_stride: int | None = None,
        uniform_weight: float = 0.5,
        supersample: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.scale = check_int(scale, "scale", minimum=1)
        check_int(hidden_channels, "hidden_channels", minimum=1)
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        if saliency_stride is None:
            saliency_stride = scale
        self.saliency_stride = check_int(saliency_stride, "saliency_stride", minimum=1)
        self.uniform_weight = _check_uniform_weight(uniform_weight)
        if supersample is None:
            supersample = scale
        self.supersample = check_int(supersample, "supersample", minimum=1)
        self.features = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        self.head = nn.Conv2d(hidden_channels, 1, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default initialisation for the features, zeros for the head: uniform saliency."""
        self.features.reset_parameters()
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def saliency_logits(self, images: Tensor) -> Tensor:
        """Saliency logits ``(B, 1, ceil(H / t), ceil(W / t))``, ``t = saliency_stride``."""
        _check_image(images, self.in_channels)
        low = _interpolate_down(images, self.saliency_stride, "bilinear", True)
        return self.head(F.relu(self.features(low)))  # (B, 1, n_y, n_x)

    def saliency(self, images: Tensor) -> Tensor:
        """The saliency distribution (softmax over all cells), ``(B, 1, n_y, n_x)``."""
        logits = self.saliency_logits(images)
        return torch.softmax(logits.flatten(1), dim=1).reshape(logits.shape)

    def sample(self, images: Tensor) -> tuple[Tensor, SeparableWarp]:
        """The thumbnail and the warp that made it.

        Shape:
            - images: :math:`(B, C, H, W)`
            - output: :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)` and a warp.
        """
        logits = self.saliency_logits(images)
        return saliency_sample(images, logits, self.scale, self.uniform_weight, self.supersample)

    def forward(self, images: Tensor) -> Tensor:
        return self.sample(images)[0]

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, saliency_stride={self.saliency_stride}, "
            f"uniform_weight={self.uniform_weight}, supersample={self.supersample}"
        )


@register_downsampler("saliency_sampler")
def _saliency_sampler(scale: int, **kwargs: object) -> nn.Module:
    return SaliencySampler(scale, **kwargs)
