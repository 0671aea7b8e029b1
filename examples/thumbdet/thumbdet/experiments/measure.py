"""Measuring a trained model for the demo's table, and the thread count it runs with.

:func:`measure_model` gives the speed columns of Table 2 (parameters, GMACs, images/s);
:func:`use_threads` fixes PyTorch's intra-op threads for a block, as the demo and the
ablations train and time with one thread by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from learnthumb import count_macs, measure_latency

__all__ = ["measure_model", "use_threads"]


def measure_model(model: nn.Module, image: torch.Tensor, repeats: int) -> dict[str, float]:
    """Parameters, GMACs and images/s of a model on one full-size image.

    Args:
        model: full-size images in (a teacher, or a student with its downsampler).
        image: ``(1, 3, H, W)``.
        repeats: timed runs (median taken) after 3 warm-up runs.
    """
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, image)
    latency = measure_latency(model, image, warmup=3, repeats=repeats)
    return {"params": params, "gmacs": macs / 1e9, "images_per_s": 1.0 / latency.median}


@contextlib.contextmanager
def use_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``0``: PyTorch's default), then restore.

    The tiny models parallelise poorly; measured on a 2-core machine shared with other jobs,
    two OpenMP threads ran a training step 8-20x slower than one (threads spinning against
    other processes), while on an idle machine they were about 1.8x faster.
    """
    if threads < 0:
        raise ValueError(f"threads: expected >= 0, got {threads}")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
