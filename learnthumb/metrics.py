"""Accuracy drop rate (Eq. (11) of ThumbDet), multiply-accumulate counts and latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter

__all__ = [
    "LatencyStats",
    "accuracy_drop_rate",
    "count_macs",
    "measure_latency",
    "register_mac_formula",
]


def accuracy_drop_rate(teacher_metric: float, student_metric: float) -> float:
    """Accuracy drop rate of Eq. (11) of ThumbDet, as a fraction (lower is better).

    ``(A_teacher - A_student) / A_teacher``. Negative when the student is better.

    Args:
        teacher_metric: the teacher's metric (e.g. mAP), > 0.
        student_metric: the student's metric, in the same unit.

    Example:
        >>> round(accuracy_drop_rate(43.8, 32.3), 4)
        0.2626
    """
    for name, value in (("teacher_metric", teacher_metric), ("student_metric", student_metric)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not teacher_metric > 0:
        raise ValueError(f"teacher_metric must be > 0 to divide by it, got {teacher_metric}")
    return (float(teacher_metric) - float(student_metric)) / float(teacher_metric)


def register_mac_formula(op: Any) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator: teach :func:`count_macs` (and ``FlopCounterMode``) the cost of a custom op.

    The decorated function receives the shapes of the op's arguments, like the formulas of
    :mod:`torch.utils.flop_counter` (tensors replaced by their shapes, plus ``out_shape=``),
    and returns multiply-accumulates; FLOPs are registered as twice that. Registering the same
    op again is an error, as in PyTorch.

    Args:
        op: the operator overload packet, e.g. ``torch.ops.thumbdet.ms_deform_attn``.

    Example:
        >>> @torch.library.custom_op("doc_example::scale", mutates_args=())
        ... def scale(x: torch.Tensor) -> torch.Tensor:
        ...     return x * 2
        >>> @scale.register_fake
        ... def _(x):
        ...     return torch.empty_like(x)
        >>> @register_mac_formula(torch.ops.doc_example.scale)
        ... def _(x_shape, *, out_shape=None):
        ...     return x_shape.numel()
        >>> count_macs(lambda x: scale(x), torch.rand(8))
        8
    """

    def decorator(mac_formula: Callable[..., int]) -> Callable[..., int]:
        def flop_formula(*args: Any, **kwargs: Any) -> int:
            return 2 * int(mac_formula(*args, **kwargs))

        flop_counter.register_flop_formula(op)(flop_formula)
        return mac_formula

    return decorator


def count_macs(
    model: nn.Module | Callable[..., Any],
    *inputs: Any,
    exclude: Iterable[Any] = (),
    **kwargs: Any,
) -> int:
    """Multiply-accumulates of one forward pass, counted by ``torch.utils.flop_counter``.

    Counts what :class:`~torch.utils.flop_counter.FlopCounterMode` knows (convolutions,
    matrix products, attention) plus the ops registered with :func:`register_mac_formula`;
    element-wise ops, pooling and interpolation are not counted, as in common practice
    (the reference Deformable-DETR figures are counted this way). MACs are FLOPs / 2.

    Args:
        model: a module or any callable.
        *inputs: positional inputs of the forward.
        exclude: operator overload packets not to count (e.g. a custom attention op, to
            compare with a reference counted without it).
        **kwargs: keyword inputs of the forward.

    Returns:
        The number of multiply-accumulates (an int).

    Example:
        >>> count_macs(nn.Linear(10, 20), torch.rand(4, 10))
        800
    """
    custom_mapping = {op: (lambda *_args, **_kwargs: 0) for op in exclude}
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=custom_mapping)
    with torch.no_grad(), counter:
        model(*inputs, **kwargs)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of one call, over repeated runs, in seconds.

    Attributes:
        median: median time.
        iqr: inter-quartile range (spread); 0 with fewer than 2 runs.
        minimum: fastest run.
        mean: mean time.
        repeats: number of timed runs.
    """

    median: float
    iqr: float
    minimum: float
    mean: float
    repeats: int

    @classmethod
    def from_times(cls, times: Sequence[float]) -> LatencyStats:
        """The statistics of timed runs: the one estimator of learnthumb and the benchmarks.

        Quartiles by linear interpolation between order statistics
        (``statistics.quantiles(method="inclusive")``, NumPy's default percentile), the
        estimator of ``torch.utils.benchmark``'s ``Measurement.iqr``.

        Args:
            times: seconds of each timed run, at least one.

        Example:
            >>> LatencyStats.from_times([1.0, 2.0, 3.0, 4.0, 5.0])
            LatencyStats(median=3.0, iqr=2.0, minimum=1.0, mean=3.0, repeats=5)
        """
        times = [float(t) for t in times]
        if not times:
            raise ValueError("times must hold at least one timed run, got none")
        if len(times) >= 2:
            quartiles = statistics.quantiles(times, n=4, method="inclusive")
            iqr = quartiles[2] - quartiles[0]
        else:
            iqr = 0.0
        return cls(
            median=statistics.median(times),
            iqr=iqr,
            minimum=min(times),
            mean=statistics.fmean(times),
            repeats=len(times),
        )


def _check_counts(warmup: object, repeats: object) -> None:
    """Raise ``ValueError`` naming the argument unless warmup >= 0 and repeats >= 1 are ints.

    The contract of :func:`measure_latency` and of the benchmark harness's timers.
    """
    for name, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")


def _synchronize(inputs: tuple[Any, ...]) -> None:
    for value in inputs:
        if isinstance(value, torch.Tensor) and value.device.type == "cuda":
            torch.cuda.synchronize(value.device)
            return


def measure_latency(
    model: nn.Module | Callable[..., Any],
    *inputs: Any,
    warmup: int = 3,
    repeats: int = 10,
    **kwargs: Any,
) -> LatencyStats:
    """Time ``model(*inputs, **kwargs)`` under ``torch.inference_mode`` after a warm-up.

    CUDA work is synchronised before each clock read when an input lives on a GPU. For a
    benchmark that reports figures, prefer the harness in ``benchmarks/``; this is a quick
    measurement for notebooks and demos.

    Args:
        model: a module or any callable.
        *inputs: positional inputs.
        warmup: untimed runs first (>= 0).
        repeats: timed runs (>= 1).
        **kwargs: keyword inputs.

    Returns:
        :class:`LatencyStats` in seconds.
    """
    _check_counts(warmup, repeats)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs, **kwargs)
        _synchronize(inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs, **kwargs)
            _synchronize(inputs)
            times.append(time.perf_counter() - start)
    return LatencyStats.from_times(times)
