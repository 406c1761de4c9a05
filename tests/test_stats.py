"""Bounded latency statistics."""

from __future__ import annotations

import numpy as np

from rt_eda.core.stats import Reservoir, percentiles


def test_reservoir_is_exact_while_small_and_bounded_when_large() -> None:
    r = Reservoir(capacity=1000)
    for v in range(500):
        r.add(float(v))
    assert r.summary() == percentiles(np.arange(500.0))
    for v in range(500, 200_000):
        r.add(float(v % 1000))
    assert len(r) == 200_000 and r.sample().shape == (1000,)
    s = r.summary()
    assert s["max"] == 999.0
    assert 400 < s["p50"] < 600  # a uniform sample of 0..999: median near 500
    assert percentiles([]) == {"p50": 0.0, "p99": 0.0, "max": 0.0}
