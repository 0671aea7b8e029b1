"""Statistics of the quality suite: mean, standard deviation, paired differences.

Two sources of error are measured apart. :func:`paired_difference` takes the training seeds:
the test images are held fixed. :func:`image_interval` takes the test images: it resamples
them (the same resample for both arms, so the comparison stays paired) with the trained models
held fixed. :func:`combined_difference` adds the two half-widths in quadrature, as independent
errors add, and gives the verdict the suite reports.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from benchmarks.quality.imagewise import ImageStats

__all__ = [
    "combined_difference",
    "image_interval",
    "image_resamples",
    "paired_difference",
    "resampled_scores",
    "summarize",
]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) of a metric over seeds."""
    if not values:
        raise ValueError("values must hold at least one number, got none")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def paired_difference(
    values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> dict[str, float | str]:
    """Mean of ``values[i] - baseline[i]`` with its Student-t confidence interval.

    The pairs share everything but the arm (seed, batches, teacher), so the interval of the
    paired difference is much narrower than that of two independent means.

    Args:
        values: an arm's metric per seed.
        baseline: the baseline's metric for the same seeds, in the same order.
        confidence: coverage of the interval (0.95).

    Returns:
        ``mean``, ``low``, ``high``, ``n`` and a ``verdict``: ``"better"`` (interval above 0),
        ``"worse"`` (below 0) or ``"tie"``; with one pair the interval is unknown (NaN, tie).
    """
    if len(values) != len(baseline):
        raise ValueError(
            f"values and baseline must pair up seed by seed: got {len(values)} and {len(baseline)}"
        )
    if not values:
        raise ValueError("values must hold at least one pair, got none")
    differences = [a - b for a, b in zip(values, baseline, strict=True)]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1, "verdict": "tie"}
    from scipy.stats import t

    half = t.ppf((1 + confidence) / 2, len(differences) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(differences))
    low, high = mean - half, mean + half
    return {
        "mean": mean,
        "low": low,
        "high": high,
        "n": len(differences),
        "verdict": _verdict(low, high),
    }


def image_resamples(num_images: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of ``num_images`` test images, as draw counts: ``(resamples, N)``.

    Each row draws ``num_images`` images with replacement; ``counts[r, i]`` is how many times
    resample ``r`` drew image ``i``. Seeded: every arm of a table sees the same resamples.
    """
    if num_images < 1 or resamples < 1:
        raise ValueError(
            f"num_images and resamples must be at least 1, got {num_images} and {resamples}"
        )
    draws = np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))
    counts = np.zeros((resamples, num_images), dtype=np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return counts


def resampled_scores(runs: Sequence[ImageStats], counts: np.ndarray) -> np.ndarray:
    """An arm's metric averaged over its seeds' runs, on every resample of ``counts``: ``(R,)``."""
    if not runs:
        raise ValueError("runs must hold at least one run, got none")
    return np.mean([[run.score(row) for row in counts] for run in runs], axis=0)


def image_interval(
    scores: np.ndarray, baseline: np.ndarray, confidence: float = 0.95
) -> dict[str, float]:
    """Bootstrap interval over test images of the seed-averaged paired difference.

    Args:
        scores: the arm's :func:`resampled_scores`.
        baseline: the baseline's, on the same resamples.
        confidence: coverage of the interval (0.95).

    Returns:
        ``low`` and ``high`` (percentile interval), ``std`` of the resampled differences (the
        standard error the images add) and the number of ``resamples``.
    """
    if scores.shape != baseline.shape:
        raise ValueError(
            f"scores and baseline must share the resamples: got {scores.shape} and {baseline.shape}"
        )
    differences = scores - baseline
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "low": float(low),
        "high": float(high),
        "std": float(differences.std(ddof=1)) if len(differences) > 1 else 0.0,
        "resamples": len(differences),
    }


def combined_difference(
    seeds: dict, images: dict, confidence: float = 0.95
) -> dict[str, float | str]:
    """The paired difference with both errors: seeds' and images' half-widths in quadrature.

    Args:
        seeds: :func:`paired_difference` (its t half-width is the training seeds' error).
        images: :func:`image_interval` (``z * std`` is the test images' error).
        confidence: coverage of the interval (0.95).

    Returns:
        ``mean``, ``low``, ``high``, ``n`` and a ``verdict`` as :func:`paired_difference`
        gives them; with one seed the interval is unknown (NaN, tie).
    """
    from scipy.stats import norm

    mean = seeds["mean"]
    seed_half = (seeds["high"] - seeds["low"]) / 2
    image_half = norm.ppf((1 + confidence) / 2) * images["std"]
    half = math.hypot(seed_half, image_half)
    low, high = mean - half, mean + half
    return {"mean": mean, "low": low, "high": high, "n": seeds["n"], "verdict": _verdict(low, high)}


def _verdict(low: float, high: float) -> str:
    """``"better"`` (interval above 0), ``"worse"`` (below 0) or ``"tie"`` (NaN included)."""
    return "better" if low > 0 else "worse" if high < 0 else "tie"
