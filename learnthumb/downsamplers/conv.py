"""The learned downsampling module of ThumbDet: a stack of strided convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnthumb._checks import check_ints
from learnthumb.downsamplers._base import _check_odd_kernel, _CheckedDownsampler


def _split_scale(scale: int, num_layers: int) -> list[int]:
    """Per-layer strides whose product is ``scale``: factors of 2 first, then the rest."""
    strides = []
    remaining = scale
    for layer in range(num_layers):
        if layer == num_layers - 1:
            strides.append(remaining)
        elif remaining % 2 == 0 and remaining > 1:
            strides.append(2)
            remaining //= 2
        else:
            strides.append(remaining)
            remaining = 1
    return strides


class ConvDownsampler(_CheckedDownsampler):
    """The learned downsampling module of ThumbDet (Fig. 3, Sec. 3.3 of the paper).

    A stack of strided convolutions, each followed by a ReLU: ``conv -> ReLU -> conv -> ReLU``
    by default, 12 hidden channels, strides that multiply to ``scale`` (2 and 2 for 4x), 3x3
    kernels for 4x and 5x5 kernels for 2x (Sec. 4.2). Padding ``(k - 1) / 2`` makes every
    layer map ``n`` pixels to ``ceil(n / stride)``, so the output is exactly
    :func:`thumbnail_size`. Table 4's ablation variants are ``num_layers=1, kernel_size=5``
    (one stride-4 conv) and ``num_layers=5, kernel_size=(7, 5, 3, 1, 1)``.

    Args:
        scale: downsampling factor (product of the strides).
        hidden_channels: channels between layers (12 in the paper).
        num_layers: number of convolutions (2 in the paper).
        kernel_size: one odd kernel size for every layer, or one per layer. ``None`` picks the
            paper's default: 3 when ``scale >= 4``, else 5.
        in_channels: channels of the input image.
        out_channels: channels of the thumbnail; defaults to ``in_channels``.
        final_activation: apply a ReLU after the last convolution (the paper does).
        centred: put every output pixel at the centre of the input cell it stands for, as an
            interpolation does. The paper's layers (``False``) pad ``(k - 1) / 2``, so a
            stride-2 layer's output pixel sits on the top-left pixel of its 2x2 cell: half an
            input pixel up and left of the cell's centre, 1.5 input pixels after two layers
            at 4x. With ``True``, a layer of even stride takes one more tap than
            ``kernel_size`` says (3x3 becomes 4x4) and every layer pads ``(k - s) / 2`` on
            the top and left, and what keeps the output size exact on the bottom and right.

    Shape:
        - input: :math:`(B, C_{in}, H, W)`, :math:`C_{in}` = ``in_channels``.
        - output: :math:`(B, C_{out}, \\lceil H/s \\rceil, \\lceil W/s \\rceil)`,
          :math:`C_{out}` = ``out_channels``; non-negative with ``final_activation``.

    Example:
        >>> down = ConvDownsampler(scale=4, out_channels=8)
        >>> [conv.stride for conv in down.convs]
        [(2, 2), (2, 2)]
        >>> thumbnail = down(torch.rand(2, 3, 37, 50))
        >>> thumbnail.shape  # 8 channels; a partial border cell still gives a pixel
        torch.Size([2, 8, 10, 13])
        >>> bool((thumbnail >= 0).all())  # the final ReLU
        True
    """

    def __init__(
        self,
        scale: int = 4,
        hidden_channels: int = 12,
        num_layers: int = 2,
        kernel_size: int | Sequence[int] | None = None,
        in_channels: int = 3,
        out_channels: int | None = None,
        final_activation: bool = True,
        centred: bool = False,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        check_ints(
            scale=scale,
            hidden_channels=hidden_channels,
            num_layers=num_layers,
            in_channels=in_channels,
            out_channels=out_channels,
        )
        if not isinstance(centred, bool):
            raise TypeError(f"centred must be a bool, got {type(centred).__name__} ({centred!r})")
        if kernel_size is None:
            kernel_size = 3 if scale >= 4 else 5
        kernels = [kernel_size] * num_layers if isinstance(kernel_size, int) else list(kernel_size)
        if len(kernels) != num_layers:
            raise ValueError(
                f"kernel_size must give one size per layer ({num_layers}), got {kernels}"
            )
        for k in kernels:
            _check_odd_kernel(k)
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.final_activation = final_activation
        self.centred = centred
        strides = _split_scale(scale, num_layers)
        if centred:
            kernels = [k + (stride % 2 == 0) for k, stride in zip(kernels, strides, strict=True)]
        # Plain ints for _centring_pad, which TorchScript compiles with forward.
        self._kernels: list[int] = kernels
        self._strides: list[int] = strides
        channels = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(
                channels[i], channels[i + 1], kernels[i], strides[i],
                0 if centred else (kernels[i] - 1) // 2,
            )
            for i in range(num_layers)
        )  # fmt: skip

    def reset_parameters(self) -> None:
        """Re-initialise every convolution with PyTorch's default initialisation."""
        for conv in self.convs:
            conv.reset_parameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check_input(images)
        x = images
        last = len(self.convs) - 1
        for index, conv in enumerate(self.convs):
            if self.centred:
                x = _centring_pad(x, self._kernels[index], self._strides[index])
            x = conv(x)
            if index < last or self.final_activation:
                x = F.relu(x)
        return x

    def extra_repr(self) -> str:
        # Only a departure from the paper's module is named, so its repr stays as it was.
        return (
            f"scale={self.scale}"
            + ", final_activation=False" * (not self.final_activation)
            + ", centred=True" * self.centred
        )


def _centring_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad ``x`` so that a layer with no padding of its own centres each output on its cell.

    An output pixel ``m`` of a ``k``-tap, stride-``s`` layer reads input pixels ``s m - b`` to
    ``s m - b + k - 1``: centred on the cell ``s m .. s m + s - 1`` when ``b = (k - s) / 2``. The
    bottom and right take what makes the output ``ceil(n / s)`` pixels long.
    """
    before = (kernel - stride) // 2
    bottom = _centring_pad_after(x.shape[-2], kernel, stride, before)
    right = _centring_pad_after(x.shape[-1], kernel, stride, before)
    return F.pad(x, [before, right, before, bottom])


def _centring_pad_after(size: int, kernel: int, stride: int, before: int) -> int:
    # The input that ceil(size / stride) outputs read, less what is there and padded before.
    return stride * ((size + stride - 1) // stride - 1) + kernel - size - before
