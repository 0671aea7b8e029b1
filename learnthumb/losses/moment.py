"""Moment-matching loss between an image and its thumbnail (Eq. (5) of ThumbDet)."""

from __future__ import annotations

import torch
from torch import nn

from learnthumb._checks import (
    check_bool_mask,
    check_choice,
    check_floating,
    check_ndim,
    check_non_negative,
)
from learnthumb.downsamplers._base import _scale_between, downsample_padding_mask

__all__ = ["MomentMatchingLoss", "channel_moments", "moment_matching_loss"]

_STATISTICS = ("std", "var")
_REDUCTIONS = ("mean", "sum", "none")


def _safe_sqrt(value: torch.Tensor) -> torch.Tensor:
    # sqrt has an infinite derivative at 0: a constant image would give NaN gradients.
    # Where the variance is exactly 0 we return 0 with a zero gradient instead.
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), 0.0)


def channel_moments(
    images: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and population variance over the valid pixels.

    Args:
        images: floating-point images.
        padding_mask: bool, True = padded pixel (excluded). ``None``: every pixel is valid.

    Shape:
        - images: :math:`(B, C, H, W)`
        - padding_mask: :math:`(B, H, W)`
        - output: two tensors of shape :math:`(B, C)`

    Returns:
        ``(mean, variance)``. An image with no valid pixel has mean and variance 0.
    """
    if padding_mask is None:
        mean = images.mean(dim=(2, 3))  # (B, C)
        variance = images.var(dim=(2, 3), correction=0)  # (B, C)
        return mean, variance
    valid = (~padding_mask).unsqueeze(1).to(images.dtype)  # (B, 1, H, W)
    count = valid.sum(dim=(2, 3)).clamp(min=1.0)  # (B, 1)
    mean = (images * valid).sum(dim=(2, 3)) / count  # (B, C)
    centred = (images - mean[:, :, None, None]) * valid  # (B, C, H, W)
    variance = centred.square().sum(dim=(2, 3)) / count  # (B, C)
    return mean, variance


def _infer_thumbnail_mask(
    original_padding_mask: torch.Tensor, thumbnail_shape: tuple[int, int]
) -> torch.Tensor:
    height, width = original_padding_mask.shape[-2:]
    scale = _scale_between((height, width), thumbnail_shape, original_padding_mask)
    if scale is None:
        raise ValueError(
            "thumbnail_padding_mask is needed: the thumbnail size "
            f"{tuple(thumbnail_shape)} is not ceil((H, W) / s) of the original {(height, width)} "
            "for an integer scale s"
        )
    return downsample_padding_mask(original_padding_mask, scale)


def moment_matching_loss(
    original: torch.Tensor,
    thumbnail: torch.Tensor,
    lam: float = 0.1,
    *,
    statistic: str = "std",
    original_padding_mask: torch.Tensor | None = None,
    thumbnail_padding_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Moment-matching loss of Eq. (5) of ThumbDet.

    For each image and channel ``i``:
    ``(mu(x_i) - mu(y_i))^2 + lam * (sigma(x_i) - sigma(y_i))^2`` with population statistics
    over the valid (unpadded) pixels, averaged over channels, then reduced over the batch.
    The thumbnail may have any spatial size: only its statistics are compared.

    Computed in float32 (float64 inputs stay float64) even under autocast, because the
    moments of half-precision images lose the small differences the loss is about.

    Args:
        original: the full-size images ``x``.
        thumbnail: their thumbnails ``y``.
        lam: weight ``lambda`` of the second-moment term (0.1 in the paper).
        statistic: ``"std"`` matches standard deviations, as Eq. (5) writes;
            ``"var"`` matches variances, as the official code does.
        original_padding_mask: bool, True = padded pixel of ``original``.
        thumbnail_padding_mask: bool, True = padded pixel of ``thumbnail``. When omitted and
            ``original_padding_mask`` is given, it is derived with
            :func:`~learnthumb.downsample_padding_mask` from the size ratio.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the batch.

    Shape:
        - original: :math:`(B, C, H, W)`
        - thumbnail: :math:`(B, C, h, w)`
        - original_padding_mask: :math:`(B, H, W)`; thumbnail_padding_mask: :math:`(B, h, w)`
        - output: scalar, or :math:`(B,)` with ``reduction="none"``.

    Returns:
        The loss, non-negative, 0 exactly when the moments agree.

    Raises:
        ValueError: for an empty batch (``B = 0``), whose moments are undefined.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> y = x[:, :, ::4, ::4]
        >>> moment_matching_loss(x, y).item() >= 0
        True
    """
    check_ndim(original, 4, "original", "(B, C, H, W)")
    check_ndim(thumbnail, 4, "thumbnail", "(B, C, h, w)")
    check_floating(original, "original")
    check_floating(thumbnail, "thumbnail")
    if original.shape[:2] != thumbnail.shape[:2]:
        raise ValueError(
            "original and thumbnail must agree in batch and channels (B, C), got "
            f"original {tuple(original.shape)} and thumbnail {tuple(thumbnail.shape)}"
        )
    if original.shape[0] == 0:
        # The moments of no image are 0/0: refuse rather than return NaN.
        raise ValueError("original: expected a non-empty batch, got B=0")
    check_non_negative(lam, "lam")
    check_choice(statistic, "statistic", _STATISTICS)
    check_choice(reduction, "reduction", _REDUCTIONS)
    batch = original.shape[0]
    if original_padding_mask is not None:
        check_bool_mask(
            original_padding_mask, "original_padding_mask", (batch, *original.shape[-2:])
        )
    if thumbnail_padding_mask is not None:
        check_bool_mask(
            thumbnail_padding_mask, "thumbnail_padding_mask", (batch, *thumbnail.shape[-2:])
        )
    elif original_padding_mask is not None:
        thumbnail_padding_mask = _infer_thumbnail_mask(
            original_padding_mask, tuple(thumbnail.shape[-2:])
        )

    dtype = torch.promote_types(torch.promote_types(original.dtype, thumbnail.dtype), torch.float32)
    with torch.autocast(original.device.type, enabled=False):
        mean_x, var_x = channel_moments(original.to(dtype), original_padding_mask)
        mean_y, var_y = channel_moments(thumbnail.to(dtype), thumbnail_padding_mask)
        if statistic == "std":
            spread_x, spread_y = _safe_sqrt(var_x), _safe_sqrt(var_y)
        else:
            spread_x, spread_y = var_x, var_y
        per_channel = (mean_x - mean_y).square() + lam * (spread_x - spread_y).square()  # (B, C)
        per_image = per_channel.mean(dim=1)  # (B,)
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


class MomentMatchingLoss(nn.Module):
    """Module form of :func:`moment_matching_loss` (Eq. (5) of ThumbDet).

    Args:
        lam: weight of the second-moment term.
        statistic: ``"std"`` (Eq. (5)) or ``"var"`` (official code).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        See :func:`moment_matching_loss`.

    Example:
        >>> loss = MomentMatchingLoss(lam=0.1)
        >>> loss(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4)).shape
        torch.Size([])
    """

    def __init__(self, lam: float = 0.1, statistic: str = "std", reduction: str = "mean") -> None:
        super().__init__()
        self.lam = check_non_negative(lam, "lam")
        self.statistic = check_choice(statistic, "statistic", _STATISTICS)
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)

    def forward(
        self,
        original: torch.Tensor,
        thumbnail: torch.Tensor,
        original_padding_mask: torch.Tensor | None = None,
        thumbnail_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return moment_matching_loss(
            original,
            thumbnail,
            self.lam,
            statistic=self.statistic,
            original_padding_mask=original_padding_mask,
            thumbnail_padding_mask=thumbnail_padding_mask,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"lam={self.lam}, statistic={self.statistic!r}, reduction={self.reduction!r}"
