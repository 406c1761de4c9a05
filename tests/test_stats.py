"""Bounded latency statistics: the one percentile implementation (rt_eda.core.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from rt_eda.core.stats import Percentiles, RecentWindow, Reservoir, percentiles


def test_reservoir_is_exact_while_small_and_bounded_when_large() -> None:
    r = Reservoir(capacity=1000)
    for v in range(500):
        r.add(float(v))
    assert r.percentiles() == percentiles(np.arange(500.0))
    for v in range(500, 200_000):
        r.add(float(v % 1000))
    assert len(r) == 200_000 and r.sample().shape == (1000,)
    s = r.percentiles()
    assert s.max == 999.0 and s.count == 200_000
    assert 400 < s.p50 < 600  # a uniform sample of 0..999: median near 500


def test_empty_collectors_give_zeros() -> None:
    assert percentiles([]) == Percentiles(0.0, 0.0, 0.0, 0)
    assert Reservoir(10).percentiles() == Percentiles()
    assert RecentWindow(10).percentiles() == Percentiles()
    assert Percentiles().as_dict() == {"p50": 0.0, "p99": 0.0, "max": 0.0}


def test_recent_window_describes_the_newest_values_and_the_max_of_all() -> None:
    w = RecentWindow(capacity=100)
    w.add(1e6)  # an early outlier: gone from the percentiles, kept as the maximum
    for v in range(1, 1001):
        w.add(float(v))
    p = w.percentiles()
    assert p.count == 1001 and p.max == 1e6
    expected = percentiles(np.arange(901.0, 1001.0))
    assert (p.p50, p.p99) == (expected.p50, expected.p99)
    w.clear()  # a new period (the camera's live jitter): nothing from before counts
    assert w.percentiles() == Percentiles() and len(w) == 0
    w.add(3.0)
    assert w.percentiles() == Percentiles(3.0, 3.0, 3.0, 1)


def test_percentiles_match_numpy_and_spread_is_p99_minus_p50() -> None:
    values = np.random.default_rng(1).exponential(2.0, 5000)
    p = percentiles(values)
    assert p.p50 == pytest.approx(np.percentile(values, 50))
    assert p.p99 == pytest.approx(np.percentile(values, 99))
    assert p.max == values.max() and p.count == 5000
    assert p.spread == pytest.approx(p.p99 - p.p50)
    with pytest.raises(ValueError):
        Reservoir(0)
