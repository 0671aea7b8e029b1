"""Seed statistics of the quality suite: mean, standard deviation, paired differences."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["paired_difference", "summarize"]


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
    verdict = "better" if low > 0 else "worse" if high < 0 else "tie"
    return {"mean": mean, "low": low, "high": high, "n": len(differences), "verdict": verdict}
