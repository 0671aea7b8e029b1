"""Downsamplers: modules that turn an image into its thumbnail.

Every downsampler maps ``(B, C, H, W)`` to ``(B, C, ceil(H / s), ceil(W / s))`` for any
``H, W >= 1`` (see :func:`thumbnail_size`), so they are interchangeable in front of a model.

- :class:`ConvDownsampler` is the learned module of ThumbDet (Fig. 3 of the paper) and the
  variants of its Table 4.
- :class:`InterpolateDownsampler` is the fixed baseline (bicubic, bilinear, area, nearest).
- :class:`ResidualDownsampler` is bicubic plus a learned residual that starts at zero, so at
  initialisation it *is* the bicubic baseline.
- :class:`LearnedResizer` is the learned resizer of Talebi & Milanfar (ICCV 2021): a resize
  plus a residual CNN at the target resolution, equal to its interpolation at initialisation.
- :class:`SpaceToDepthDownsampler` is the "wide" thumbnail: ``pixel_unshuffle`` plus a learned
  channel mixing, equal to the area average at initialisation.
- :class:`WideDownsampler` is bicubic plus learned extra channels of each cell's pixels, for a
  model whose first convolution takes them (:func:`learnthumb.widen_input_conv`).

Names usable from strings (CLI flags, configs) live in a registry: :func:`create_downsampler`,
:func:`list_downsamplers`, :func:`register_downsampler`.
"""

from learnthumb.downsamplers._base import downsample_padding_mask, thumbnail_size
from learnthumb.downsamplers.conv import ConvDownsampler
from learnthumb.downsamplers.interpolate import InterpolateDownsampler
from learnthumb.downsamplers.registry import (
    RECOMMENDED_DOWNSAMPLER,
    create_downsampler,
    list_downsamplers,
    register_downsampler,
)
from learnthumb.downsamplers.residual import ResidualDownsampler
from learnthumb.downsamplers.resizer import LearnedResizer
from learnthumb.downsamplers.space_to_depth import SpaceToDepthDownsampler
from learnthumb.downsamplers.wide import WideDownsampler

__all__ = [
    "RECOMMENDED_DOWNSAMPLER",
    "ConvDownsampler",
    "InterpolateDownsampler",
    "LearnedResizer",
    "ResidualDownsampler",
    "SpaceToDepthDownsampler",
    "WideDownsampler",
    "create_downsampler",
    "downsample_padding_mask",
    "list_downsamplers",
    "register_downsampler",
    "thumbnail_size",
]
