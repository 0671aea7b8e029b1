"""Input checks used at the public boundary of learnthumb.

Every public function validates its arguments once, here, and raises an error that names the
argument, what was expected and what it got ("expected ..., got ..."). Inner code trusts its
inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

__all__ = [
    "check_bool_mask",
    "check_choice",
    "check_finite",
    "check_floating",
    "check_in_open_interval",
    "check_int",
    "check_ints",
    "check_keyword_name",
    "check_ndim",
    "check_non_negative",
    "check_positive",
    "check_tensor",
]

_T = TypeVar("_T")


def check_tensor(value: object, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_ndim(
    tensor: torch.Tensor, ndim: int | Sequence[int], name: str, layout: str = ""
) -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``ndim`` dimensions (one of them, if several)."""
    check_tensor(tensor, name)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if tensor.dim() not in allowed:
        expected = " or ".join(f"{n}-D" for n in allowed)
        hint = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must be {expected}{hint}, got shape {tuple(tensor.shape)} ({tensor.dim()}-D)"
        )


def check_floating(tensor: torch.Tensor, name: str) -> None:
    """Raise ``TypeError`` unless ``tensor`` has a floating-point dtype."""
    check_tensor(tensor, name)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {tensor.dtype}")


def check_bool_mask(mask: torch.Tensor, name: str, shape: Sequence[int]) -> None:
    """Raise unless ``mask`` is a boolean tensor of exactly ``shape``."""
    check_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = padded), got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")


def check_int(value: object, name: str, minimum: int) -> int:
    """Raise unless ``value`` is an ``int`` (not a bool) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_ints(*, minimum: int = 1, **values: object) -> None:
    """:func:`check_int` on each keyword argument, in order: ``check_ints(scale=scale)``."""
    for name, value in values.items():
        check_int(value, name, minimum)


def check_keyword_name(value: object, name: str) -> str | None:
    """Raise ``TypeError`` unless ``value`` is ``None`` or a keyword name (a non-empty str)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{name} must be a keyword name (str) or None, got {value!r}")
    return value


def check_choice(value: _T, name: str, choices: Sequence[object]) -> _T:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``; return ``value``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``FloatingPointError`` unless every value of ``tensor`` is finite.

    Costs one reduction and one device-to-host copy; the counts are only computed on failure.
    """
    if bool(torch.isfinite(tensor).all()):
        return
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    raise FloatingPointError(
        f"{name} must be finite, got {nan} NaN and {inf} Inf values "
        f"among {tensor.numel()} (shape {tuple(tensor.shape)})"
    )


def _check_number(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")


def check_positive(value: float, name: str) -> float:
    """Raise ``ValueError`` unless ``value`` is a number > 0 (``TypeError``: not a number)."""
    _check_number(value, name)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_non_negative(value: float, name: str) -> float:
    """Raise ``ValueError`` unless ``value`` is a number >= 0 (``TypeError``: not a number)."""
    _check_number(value, name)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def check_in_open_interval(value: float, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """Raise ``ValueError`` unless ``low < value < high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not low < value < high:
        raise ValueError(f"{name} must lie in the open interval ({low}, {high}), got {value}")
    return float(value)
