"""Downsamplers by name (CLI flags, configs): the registry and the built-in names."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from learnthumb.downsamplers._base import _INTERPOLATION_MODES
from learnthumb.downsamplers.conv import ConvDownsampler
from learnthumb.downsamplers.interpolate import InterpolateDownsampler
from learnthumb.downsamplers.residual import ResidualDownsampler
from learnthumb.downsamplers.resizer import LearnedResizer
from learnthumb.downsamplers.space_to_depth import SpaceToDepthDownsampler
from learnthumb.downsamplers.wide import WideDownsampler

#: The learned downsampler to try first (see docs/quality.md): the bicubic thumbnail plus
#: learned channels of each cell's pixels, read by a stem widened with
#: :func:`learnthumb.widen_input_conv`. The student starts exactly as on bicubic and the
#: bicubic channels cannot die. Its gains on the quality suite's test photos did not carry
#: over to photos no choice saw (ties on the unseen split; worse on segmentation on the
#: external split, as ``"residual"`` was): on natural photos, compare it with ``"bicubic"`` on
#: held-out data of your own. For a model
#: whose stem must stay 3 channels, ``"residual"`` is the 3-channel choice.
RECOMMENDED_DOWNSAMPLER = "wide"

Factory = Callable[..., nn.Module]
_REGISTRY: dict[str, Factory] = {}


def register_downsampler(name: str) -> Callable[[Factory], Factory]:
    """Decorator adding a factory ``fn(scale, **kwargs) -> nn.Module`` under ``name``.

    Example:
        >>> @register_downsampler("my_down")
        ... def _my_down(scale, **kwargs):
        ...     return InterpolateDownsampler(scale, mode="area")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"a downsampler named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_downsamplers() -> list[str]:
    """Names accepted by :func:`create_downsampler`, sorted."""
    return sorted(_REGISTRY)


def create_downsampler(name: str, scale: int = 4, **kwargs: object) -> nn.Module:
    """Build a downsampler by name, like ``timm.create_model``.

    Args:
        name: one of :func:`list_downsamplers` (``"thumbdet"``, ``"single_conv"``,
            ``"five_layer"``, ``"residual"``, ``"learned_resizer"``, ``"space_to_depth"``,
            ``"wide"``, ``"bicubic"``, ``"bilinear"``, ``"area"``, ``"nearest"`` and any
            registered later).
        scale: downsampling factor.
        **kwargs: passed to the module's constructor.

    Returns:
        The module, with ``learnthumb_config = {"name": name, "scale": scale, "kwargs":
        kwargs}`` recorded on it so :func:`learnthumb.save_pretrained` can rebuild it.

    Example:
        >>> create_downsampler("thumbdet", scale=2)
        ConvDownsampler(
          scale=2
          (convs): ModuleList(
            (0): Conv2d(3, 12, kernel_size=(5, 5), stride=(2, 2), padding=(2, 2))
            (1): Conv2d(12, 3, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
          )
        )
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown downsampler {name!r}; available: {list_downsamplers()}")
    module = _REGISTRY[name](scale, **kwargs)
    module.learnthumb_config = {"name": name, "scale": scale, "kwargs": dict(kwargs)}
    return module


# A class is itself a factory ``fn(scale, **kwargs)``: these names build it as called.
for _name, _module in (
    ("thumbdet", ConvDownsampler),
    ("residual", ResidualDownsampler),
    ("learned_resizer", LearnedResizer),
    ("space_to_depth", SpaceToDepthDownsampler),
    ("wide", WideDownsampler),
):
    register_downsampler(_name)(_module)


@register_downsampler("single_conv")
def _single_conv(scale: int, **kwargs: object) -> nn.Module:
    # Table 4, first row: one 5x5 convolution with stride `scale`.
    kwargs.setdefault("kernel_size", 5)
    return ConvDownsampler(scale, num_layers=1, **kwargs)


@register_downsampler("five_layer")
def _five_layer(scale: int, **kwargs: object) -> nn.Module:
    # Table 4, last row: kernels 7, 5, 3, 1, 1.
    kwargs.setdefault("kernel_size", (7, 5, 3, 1, 1))
    return ConvDownsampler(scale, num_layers=5, **kwargs)


def _register_interpolation(mode: str) -> None:
    def factory(scale: int, **kwargs: object) -> nn.Module:
        return InterpolateDownsampler(scale, mode=mode, **kwargs)

    register_downsampler(mode)(factory)


for _mode in _INTERPOLATION_MODES:
    _register_interpolation(_mode)
