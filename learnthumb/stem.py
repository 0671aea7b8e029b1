"""Widen a model's first convolution so it takes a thumbnail with more than 3 channels.

A "wide" thumbnail (:class:`learnthumb.SpaceToDepthDownsampler` with ``out_channels > 3``)
keeps detail that a 3-channel thumbnail of the same size must average away, in extra
channels. A model trained on 3-channel images takes it after its first convolution is given
the extra input channels. The new weights of those channels start at zero, so the widened
model computes exactly what it computed before on the first three channels: a student starts
from its teacher (or from a pretrained model) and learns how much of the extra channels to
use.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from learnthumb._checks import check_int

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "find_input_conv",
    "normalize_image_channels",
    "widen_input_conv",
]

# Per-channel (R, G, B) statistics of ImageNet, for models that normalise their input with
# them (torchvision's and timm's pretrained weights): the one copy the examples import.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def find_input_conv(model: nn.Module) -> str:
    """The name of ``model``'s first ``nn.Conv2d`` in registration order.

    For the usual backbones (timm, torchvision) registration order is the order of the
    forward pass, so this is the convolution that sees the image. Models that register
    layers in another order should pass the name to :func:`widen_input_conv` themselves.

    Args:
        model: any module holding at least one ``nn.Conv2d``.

    Returns:
        The dotted name of the convolution (as in ``model.named_modules()``).
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    raise ValueError(f"model must hold an nn.Conv2d to widen, got {type(model).__name__}")


@torch.no_grad()
def widen_input_conv(model: nn.Module, in_channels: int, name: str | None = None) -> nn.Module:
    """Give ``model``'s input convolution ``in_channels`` inputs, the new ones zero-weighted.

    The convolution is replaced in place by one with the same settings and
    ``in_channels`` inputs; its first ``conv.in_channels`` input channels keep their weights
    and the others start at zero, so on an input whose extra channels hold anything the
    widened model returns exactly what the original returned on the first channels. The
    gradient of the new weights is not zero (it is the extra channels times the output's
    gradient), so training moves them.

    Args:
        model: the model to widen (changed in place and returned).
        in_channels: the new number of input channels, at least the current one.
        name: the dotted name of the convolution; by default :func:`find_input_conv`.

    Returns:
        ``model``; when ``model`` is itself the convolution, the new convolution.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> x = torch.rand(1, 3, 8, 8)
        >>> before = model(x)
        >>> model = widen_input_conv(model, 12)
        >>> model[0].in_channels
        12
        >>> torch.allclose(model(torch.cat([x, torch.rand(1, 9, 8, 8)], 1)), before)
        True
    """
    check_int(in_channels, "in_channels", minimum=1)
    name = find_input_conv(model) if name is None else name
    conv = model.get_submodule(name) if name else model
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"name must name an nn.Conv2d of model, got {name!r} ({type(conv).__name__})"
        )
    if conv.groups != 1:
        raise ValueError(f"the input convolution {name!r} must have groups=1, got {conv.groups}")
    if in_channels < conv.in_channels:
        raise ValueError(
            f"in_channels must be at least the convolution's {conv.in_channels}, got {in_channels}"
        )
    if in_channels == conv.in_channels:
        return model
    # A copy keeps the class (timm's Conv2dSame pads in forward) and every setting.
    wide = copy.deepcopy(conv)
    weight = conv.weight.new_zeros(conv.out_channels, in_channels, *conv.kernel_size)
    weight[:, : conv.in_channels] = conv.weight
    wide.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    wide.in_channels = in_channels
    if not name:
        return wide
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, wide)
    return model


def normalize_image_channels(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Normalise the image channels of a (possibly wide) thumbnail; pass the others unchanged.

    A model that normalises its input itself (``(x - mean) / std``, usually with
    :data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`) must leave the learned channels of a wide
    thumbnail (:class:`learnthumb.WideDownsampler`) as they are.

    Args:
        images: the model's input.
        mean: per-channel mean of the image channels.
        std: per-channel standard deviation of the image channels.

    Shape:
        - images: :math:`(B, C + E, H, W)` with ``E >= 0`` extra channels.
        - mean, std: :math:`(1, C, 1, 1)`.
        - output: like ``images``.

    Example:
        >>> x = torch.ones(1, 5, 2, 2)
        >>> mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
        >>> out = normalize_image_channels(x, mean, std)
        >>> out[0, :, 0, 0].tolist()
        [2.0, 2.0, 2.0, 1.0, 1.0]
    """
    channels = mean.shape[1]
    if images.shape[1] == channels:
        return (images - mean) / std
    return torch.cat([(images[:, :channels] - mean) / std, images[:, channels:]], dim=1)
