"""Health checks of a thumbnail: find dead (constant) channels before they ruin a run.

A downsampler whose last layer is a ReLU can lose a channel for good: once a channel's
pre-activation is negative everywhere it outputs 0 and receives no gradient, and the student
then trains on a two-channel image. A channel clipped at a saturation value is as bad. Both
show up as a channel that takes *one value* at almost every pixel of a batch, which natural
images never do. :func:`constant_channel_fraction` measures that; :func:`check_thumbnail_health`
turns it into a report, and :class:`~learnthumb.ThumbnailDistillation` warns with a
:class:`ThumbnailHealthWarning` when training produces such a channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnthumb._checks import check_bool_mask, check_floating, check_in_open_interval, check_ndim

__all__ = [
    "ThumbnailHealthReport",
    "ThumbnailHealthWarning",
    "check_thumbnail_health",
    "constant_channel_fraction",
]

# Half an 8-bit grey level of an image in [0, 1]: two thumbnail values closer than this would
# be stored as the same pixel value.
DEFAULT_ATOL = 0.5 / 255


class ThumbnailHealthWarning(UserWarning):
    """A thumbnail channel is (almost) constant: dead (e.g. a ReLU stuck at 0) or saturated.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("error", ThumbnailHealthWarning)  # make it fatal
        ...     issubclass(ThumbnailHealthWarning, UserWarning)
        True
    """


def constant_channel_fraction(
    thumbnail: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    atol: float = DEFAULT_ATOL,
) -> torch.Tensor:
    """Per channel, the fraction of the batch's valid pixels that equal the channel's median.

    "Equal" means within ``atol``. The median is taken over all valid pixels of the channel in
    the whole batch. Whenever one value holds more than half of the pixels it *is* the median,
    so for any result above 0.5 this is the share of the channel's most common value: 1.0 for a
    dead ReLU channel (all 0) or a channel clipped at one value, a few percent for a natural
    image channel, even a low-contrast one, whose values spread over many grey levels.
    Non-finite values never count as equal.

    Args:
        thumbnail: the images to inspect, usually a downsampler's output (any floating dtype).
        mask: bool, True = padded: pixels left out of the median and of the fraction.
        atol: absolute tolerance, in the thumbnail's units; the default is half an 8-bit grey
            level of images in [0, 1]. Scale it with the data, e.g. ``atol / 0.226`` for
            thumbnails normalised with the ImageNet standard deviation.

    Shape:
        - thumbnail: :math:`(B, C, h, w)`; mask: :math:`(B, h, w)`
        - output: :math:`(C,)`, float32 in [0, 1]; NaN for a channel without a valid pixel.

    Example:
        >>> thumbnail = torch.linspace(0, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8)  # all distinct
        >>> thumbnail[:, 1] = 0.0  # a dead channel
        >>> constant_channel_fraction(thumbnail)
        tensor([0.0078, 1.0000, 0.0078])
    """
    check_ndim(thumbnail, 4, "thumbnail", "(B, C, h, w)")
    check_floating(thumbnail, "thumbnail")
    if mask is not None:
        check_bool_mask(mask, "mask", (thumbnail.shape[0], *thumbnail.shape[-2:]))
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    with torch.no_grad():
        channels = thumbnail.shape[1]
        values = thumbnail.detach().float().transpose(0, 1).reshape(channels, -1)  # (C, B*h*w)
        # (B*h*w,)
        valid = torch.ones_like(values[0], dtype=torch.bool) if mask is None else ~mask.reshape(-1)
        # nanmedian skips padding (set to NaN) and the thumbnail's own NaNs alike.
        centre = values.masked_fill(~valid, float("nan")).nanmedian(dim=1).values  # (C,)
        equal = ((values - centre[:, None]).abs() <= atol) & valid  # (C, B*h*w)
        return equal.sum(dim=1).float() / valid.sum().float()  # (C,)


@dataclass(frozen=True)
class ThumbnailHealthReport:
    """What :func:`check_thumbnail_health` found.

    Attributes:
        constant_fraction: per channel, :func:`constant_channel_fraction`, a float list.
        threshold: the fraction from which a channel counts as constant.
        constant_channels: indices of the channels at or above ``threshold``.
    """

    constant_fraction: list[float]
    threshold: float
    constant_channels: list[int]

    @property
    def healthy(self) -> bool:
        """True when no channel is constant."""
        return not self.constant_channels

    @property
    def message(self) -> str:
        """One line naming each constant channel and its fraction, and what to try."""
        if self.healthy:
            return "every thumbnail channel varies"
        found = ", ".join(
            f"channel {c} is {self.constant_fraction[c]:.1%} constant"
            for c in self.constant_channels
        )
        return (
            f"{found} over the batch (threshold {self.threshold:.0%}): the downsampler has a "
            "dead or saturated output channel. A ReLU that outputs 0 everywhere gets no "
            "gradient and stays dead; try another seed, a lower learning rate for the "
            "downsampler, a longer stage one, no final activation (ConvDownsampler("
            "final_activation=False)) or a ResidualDownsampler"
        )


def check_thumbnail_health(
    thumbnail: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    threshold: float = 0.95,
    atol: float = DEFAULT_ATOL,
) -> ThumbnailHealthReport:
    """Flag the thumbnail channels that are (almost) constant over a batch.

    A channel is flagged when at least ``threshold`` of its valid pixels equal its median
    within ``atol`` (:func:`constant_channel_fraction`). Costs one median per channel and one
    device-to-host copy of ``C`` numbers.

    Args:
        thumbnail: the images to inspect, usually a downsampler's output.
        mask: bool, True = padded: pixels left out.
        threshold: fraction in (0, 1) from which a channel counts as constant (0.95).
        atol: tolerance of "equal", see :func:`constant_channel_fraction`.

    Shape:
        - thumbnail: :math:`(B, C, h, w)`; mask: :math:`(B, h, w)`

    Returns:
        A :class:`ThumbnailHealthReport`; warn with
        ``warnings.warn(report.message, ThumbnailHealthWarning)`` when it is not ``healthy``.

    Example:
        >>> thumbnail = torch.linspace(0, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8)
        >>> check_thumbnail_health(thumbnail).healthy
        True
        >>> thumbnail[:, 2] = thumbnail[:, 2].clamp(max=0.34)  # saturated: 98.4% at 0.34
        >>> report = check_thumbnail_health(thumbnail)
        >>> report.constant_channels, round(report.constant_fraction[2], 3)
        ([2], 0.984)
    """
    check_in_open_interval(threshold, "threshold")
    fraction = constant_channel_fraction(thumbnail, mask, atol=atol).tolist()
    return _report(fraction, threshold)


def _report(fraction: list[float], threshold: float) -> ThumbnailHealthReport:
    """The report of already computed (and already copied to the host) fractions."""
    constant = [c for c, value in enumerate(fraction) if value >= threshold]
    return ThumbnailHealthReport(fraction, float(threshold), constant)
