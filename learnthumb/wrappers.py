"""Put a downsampler in front of any model: :class:`Thumbnailed`.

``Thumbnailed(model, downsampler)`` runs ``model(downsampler(images), ...)``. The model then
answers in *thumbnail* coordinates; its ``restore`` carries them back to the original image,
with the helpers of :mod:`learnthumb.rescale` or, for a warping downsampler, the
:class:`learnthumb.SeparableWarp` it returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from learnthumb._checks import check_bool_mask, check_keyword_name, check_tensor
from learnthumb.downsamplers._base import _thumbnail_padding_mask
from learnthumb.warps import SeparableWarp

__all__ = ["Thumbnailed"]


def _accepts_warp(restore: Callable[..., Any]) -> bool:
    """Whether ``restore`` takes a ``warp`` keyword argument (named, not only ``**kwargs``)."""
    try:
        parameters = inspect.signature(restore).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    parameter = parameters.get("warp")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _warps(downsampler: nn.Module) -> bool:
    """Whether ``downsampler`` warps: it has ``sample(images) -> (thumbnail, warp)``."""
    return callable(getattr(downsampler, "sample", None))


class Thumbnailed(nn.Module):
    """Run ``model`` on learned (or interpolated) thumbnails of its input images.

    ``Thumbnailed(model, downsampler)(images, *args, **kwargs)`` is
    ``model(downsampler(images), *args, **kwargs)``: extra arguments (targets, masks, ...)
    reach the model untouched, so anything given in image coordinates must already be mapped to
    the thumbnail (e.g. with :func:`rescale_boxes`). An optional ``restore`` callable maps the
    model's output back to full size; it receives ``(output, thumbnail_size, image_size)``, and
    also ``warp=`` (a :class:`learnthumb.SeparableWarp`) when it has a parameter named ``warp``.

    The warp is how the thumbnail was made: a uniform one for every plain downsampler, the
    content-adaptive one of a warping downsampler (one with a ``sample(images) -> (thumbnail,
    warp)`` method, e.g. :class:`learnthumb.SaliencySampler`). A restore written with the warp
    (``warp.boxes_to_image``, ``warp.points_to_image``, ``warp.masks_to_image``) is right for
    every downsampler; a warping downsampler needs one, since plain rescaling would silently
    misplace its outputs.

    A model that takes a padding mask (DETR-style detectors on padded batches) names its
    keyword in ``mask_argument``: the mask given for the full-size images is then reduced to the
    thumbnail (:func:`learnthumb.downsample_padding_mask`: a thumbnail pixel is padding when its
    whole cell is) before it reaches the model, with the downsampler's ``scale`` (else the
    factor between the image and thumbnail sizes). A warping downsampler's mask goes through
    its own warp instead (:meth:`learnthumb.SeparableWarp.padding_mask_to_thumbnail`), from the
    same ``sample`` call that made the thumbnail.

    Args:
        model: any module that accepts a ``(B, C, h, w)`` image batch first.
        downsampler: any module mapping ``(B, C, H, W)`` to ``(B, C, h, w)``, e.g.
            ``learnthumb.ConvDownsampler(scale=4)``.
        restore: optional ``restore(output, thumbnail_size, image_size)`` applied to the
            model's output, e.g. ``lambda logits, _, size: upsample_to(logits, size)``, or
            ``restore(output, thumbnail_size, image_size, *, warp)``, e.g.
            ``lambda logits, _, size, *, warp: warp.masks_to_image(logits)``.
        mask_argument: keyword through which ``model`` takes a bool padding mask (True =
            padded), e.g. ``"padding_mask"``; a mask passed under that name (not ``None``) is
            reduced to the thumbnail first. ``None``: every argument reaches the model as is.

    Shape:
        - images: :math:`(B, C, H, W)`.
        - the ``mask_argument`` keyword: :math:`(B, H, W)`; the model gets :math:`(B, h, w)`.
        - output: whatever ``model`` (then ``restore``) returns.

    Example:
        >>> from torch import nn
        >>> from learnthumb import upsample_to
        >>> model = nn.Conv2d(3, 5, 1)
        >>> net = Thumbnailed(model, nn.AvgPool2d(4), restore=lambda y, _, s: upsample_to(y, s))
        >>> net(torch.rand(2, 3, 64, 48)).shape
        torch.Size([2, 5, 64, 48])
        >>> from learnthumb import SaliencySampler
        >>> def restore(logits, thumbnail_size, image_size, *, warp):
        ...     return warp.masks_to_image(logits)
        >>> Thumbnailed(model, SaliencySampler(4), restore=restore)(torch.rand(2, 3, 37, 50)).shape
        torch.Size([2, 5, 37, 50])

        A model that takes a padding mask gets the thumbnail's:

        >>> class MaskedModel(nn.Module):
        ...     def forward(self, images, padding_mask=None):
        ...         return padding_mask
        >>> net = Thumbnailed(MaskedModel(), nn.AvgPool2d(4), mask_argument="padding_mask")
        >>> mask = torch.zeros(1, 8, 12, dtype=torch.bool)
        >>> mask[:, :, 4:] = True  # the right 8 columns are padding
        >>> net(torch.rand(1, 3, 8, 12), padding_mask=mask)
        tensor([[[False,  True,  True],
                 [False,  True,  True]]])
    """

    def __init__(
        self,
        model: nn.Module,
        downsampler: nn.Module,
        *,
        restore: Callable[..., Any] | None = None,
        mask_argument: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(downsampler, nn.Module):
            raise TypeError(f"downsampler must be an nn.Module, got {type(downsampler).__name__}")
        if restore is not None and not callable(restore):
            raise TypeError(f"restore must be callable or None, got {type(restore).__name__}")
        check_keyword_name(mask_argument, "mask_argument")
        restore_takes_warp = restore is not None and _accepts_warp(restore)
        if restore is not None and not restore_takes_warp and _warps(downsampler):
            raise TypeError(
                f"restore must take a warp= argument with a warping downsampler "
                f"({type(downsampler).__name__}): restore(output, thumbnail_size, image_size, "
                "*, warp) and map back with warp.boxes_to_image / points_to_image / "
                "masks_to_image"
            )
        self.model = model
        self.downsampler = downsampler
        self.restore = restore
        self.mask_argument = mask_argument
        self._restore_takes_warp = restore_takes_warp

    def thumbnail(self, images: Tensor) -> Tensor:
        """The downsampler's output for ``images``, (B, C, H, W) -> (B, C, h, w)."""
        self._check_images(images)
        return self.downsampler(images)

    def thumbnail_and_warp(self, images: Tensor) -> tuple[Tensor, SeparableWarp]:
        """The thumbnail and the :class:`learnthumb.SeparableWarp` that maps back from it.

        Shape:
            - images: :math:`(B, C, H, W)`.
            - output: :math:`(B, C, h, w)` and a warp of batch size :math:`B`.
        """
        self._check_images(images)
        if _warps(self.downsampler):
            return self.downsampler.sample(images)
        thumbnail = self.downsampler(images)
        warp = SeparableWarp.uniform(
            (images.shape[-2], images.shape[-1]),
            (thumbnail.shape[-2], thumbnail.shape[-1]),
            batch_size=images.shape[0],
            device=images.device,
        )
        return thumbnail, warp

    @staticmethod
    def _check_images(images: Tensor) -> None:
        check_tensor(images, "images")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")

    def thumbnail_mask(self, padding_mask: Tensor, thumbnail_size: Sequence[int]) -> Tensor:
        """``padding_mask`` reduced to a thumbnail of ``thumbnail_size`` (True = padded).

        The uniform reduction of a plain downsampler; a warping downsampler's thumbnail needs
        its warp's ``padding_mask_to_thumbnail`` (what ``forward`` uses) instead.

        Shape:
            - padding_mask: :math:`(B, H, W)`, bool.
            - output: :math:`(B, h, w)` with ``(h, w) = thumbnail_size``, bool.
        """
        return _thumbnail_padding_mask(padding_mask, self.downsampler, thumbnail_size)

    def forward(self, images: Tensor, *args: Any, **kwargs: Any) -> Any:
        mask = kwargs.get(self.mask_argument) if self.mask_argument is not None else None
        warping = _warps(self.downsampler)
        # One sampler call: a warping downsampler's warp also reduces the padding mask.
        if self._restore_takes_warp or (mask is not None and warping):
            thumbnail, warp = self.thumbnail_and_warp(images)
        else:
            thumbnail = self.thumbnail(images)
        if mask is not None:
            name = self.mask_argument
            check_bool_mask(mask, name, (images.shape[0], *images.shape[-2:]))
            kwargs[name] = (  # (B, h, w)
                warp.padding_mask_to_thumbnail(mask)
                if warping
                else self.thumbnail_mask(mask, thumbnail.shape[-2:])
            )
        output = self.model(thumbnail, *args, **kwargs)
        if self.restore is None:
            return output
        thumbnail_size = (thumbnail.shape[-2], thumbnail.shape[-1])
        image_size = (images.shape[-2], images.shape[-1])
        if self._restore_takes_warp:
            return self.restore(output, thumbnail_size, image_size, warp=warp)
        return self.restore(output, thumbnail_size, image_size)
