"""accuracy_drop_rate (Eq. (11)), count_macs, measure_latency and LatencyStats."""

import pytest
import torch
from torch import nn

from learnthumb import (
    ConvDownsampler,
    LatencyStats,
    accuracy_drop_rate,
    count_macs,
    measure_latency,
    register_mac_formula,
)


def test_accuracy_drop_rate_equation_11():
    # Table 2 of the paper: teacher 43.8, ThumbDet-4x 32.3 mAP.
    assert accuracy_drop_rate(43.8, 32.3) == pytest.approx((43.8 - 32.3) / 43.8)
    assert accuracy_drop_rate(40.0, 44.0) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="teacher_metric must be > 0"):
        accuracy_drop_rate(0.0, 1.0)
    with pytest.raises(TypeError, match="student_metric must be a number"):
        accuracy_drop_rate(1.0, "0.5")


def test_count_macs_of_known_layers():
    assert count_macs(nn.Linear(10, 20, bias=False), torch.rand(3, 10)) == 3 * 10 * 20
    conv = nn.Conv2d(3, 12, 3, stride=2, padding=1)
    # output 12 x 8 x 8, each output a 3*3*3 dot product
    assert count_macs(conv, torch.rand(1, 3, 16, 16)) == 12 * 8 * 8 * 27


def test_count_macs_of_the_paper_downsampler_scales_with_pixels():
    down = ConvDownsampler(4)
    small = count_macs(down, torch.rand(1, 3, 64, 64))
    large = count_macs(down, torch.rand(1, 3, 128, 128))
    assert large == 4 * small
    # conv1: 12 outputs x 32*32 x 27 ; conv2: 3 outputs x 16*16 x 108
    assert small == 12 * 32 * 32 * 27 + 3 * 16 * 16 * 108


def test_custom_op_formula_and_exclusion():
    @torch.library.custom_op("learnthumb_test::double_it", mutates_args=())
    def double_it(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @double_it.register_fake
    def _(x):
        return torch.empty_like(x)

    @register_mac_formula(torch.ops.learnthumb_test.double_it)
    def _(x_shape, *, out_shape=None):  # noqa: ARG001 (a MAC formula's signature)
        return 5 * x_shape.numel()

    def model(x):
        return double_it(x)

    x = torch.rand(4, 3)
    assert count_macs(model, x) == 60
    assert count_macs(model, x, exclude=[torch.ops.learnthumb_test.double_it]) == 0


def test_measure_latency():
    stats = measure_latency(nn.Linear(8, 8), torch.rand(2, 8), warmup=1, repeats=5)
    assert stats.repeats == 5
    assert 0 < stats.minimum <= stats.median and stats.iqr >= 0
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(nn.Linear(8, 8), torch.rand(2, 8), repeats=0)


def test_latency_statistics_are_the_benchmark_harness_ones():
    """One estimator: torch.utils.benchmark's (NumPy's linear) quartiles, also in the harness."""
    from benchmarks._harness import _summarise

    times = [0.3, 0.1, 0.4, 0.2, 0.9, 0.5]
    stats = LatencyStats.from_times(times)
    numpy = pytest.importorskip("numpy")
    q1, q3 = numpy.percentile(times, [25, 75])
    assert stats.iqr == pytest.approx(q3 - q1)
    assert (stats.median, stats.minimum, stats.repeats) == (0.35, 0.1, 6)
    timing = _summarise(times, warmup=1, budget_limited=False)
    assert (timing.median_s, timing.iqr_s, timing.min_s, timing.mean_s) == (
        stats.median,
        stats.iqr,
        stats.minimum,
        stats.mean,
    )
    assert LatencyStats.from_times([0.2]).iqr == 0.0
    with pytest.raises(ValueError, match="times must hold at least one timed run, got none"):
        LatencyStats.from_times([])
