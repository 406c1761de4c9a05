"""Per-operation timing shared by the benchmarks.

Every benchmark times one operation with pytest-benchmark (``benchmark.pedantic`` or
``benchmark(fn)``), so the statistics that ``--benchmark-compare`` compares are seconds per
operation. A baseline measured in the same test is timed by :func:`per_op` the way pytest-benchmark
times a round (``rounds`` rounds of ``iterations`` calls, each round's time divided by
``iterations``), so a ratio of two medians compares like with like.

:func:`times` reads the per-operation values of the benchmark just run; :func:`figures` turns
per-operation values into the named figures that go into ``extra_info`` and the printed tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def per_op(fn: Callable[[], object], *, rounds: int, iterations: int = 1,
           setup: Callable[[], object] | None = None, warmup_rounds: int = 0,
           timer: Callable[[], float] = time.perf_counter) -> np.ndarray:
    """Seconds per call of ``fn``, one value per round, as ``benchmark.pedantic`` measures.

    A round calls ``setup`` (untimed; only with ``iterations`` 1, as pytest-benchmark allows),
    then times ``iterations`` calls of ``fn`` with ``timer`` and divides by ``iterations``.
    ``warmup_rounds`` rounds run first and are not kept.
    """
    if setup is not None and iterations != 1:
        raise ValueError("setup needs iterations=1 (as benchmark.pedantic)")
    out = np.empty(rounds, dtype=np.float64)
    for r in range(-warmup_rounds, rounds):
        if setup is not None:
            setup()
        t0 = timer()
        for _ in range(iterations):
            fn()
        dt = timer() - t0
        if r >= 0:
            out[r] = dt / iterations
    return out


def times(benchmark: Any) -> np.ndarray:
    """The per-operation seconds of each round of the benchmark just run (pytest-benchmark's
    own data: a round's time divided by its iterations)."""
    stats = benchmark.stats
    if stats is None or not stats.stats.data:
        raise RuntimeError("the benchmark has not run (or ran disabled): no rounds to read")
    return np.asarray(stats.stats.data, dtype=np.float64)


_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6}


def figures(values: np.ndarray, name: str, unit: str = "us") -> dict[str, float]:
    """``{name}_median_{unit}``, ``_mean_``, ``_min_``, ``_p99_`` of per-operation seconds.

    With ``iterations`` > 1 the values are round means, so the p99 is that of round means.
    """
    k = _SCALE[unit]
    return {
        f"{name}_median_{unit}": float(np.median(values)) * k,
        f"{name}_mean_{unit}": float(np.mean(values)) * k,
        f"{name}_min_{unit}": float(np.min(values)) * k,
        f"{name}_p99_{unit}": float(np.percentile(values, 99)) * k,
    }


def median(values: np.ndarray) -> float:
    """The median of per-operation seconds."""
    return float(np.median(values))


def pct(values: Any, q: float) -> float:
    """The ``q``-th percentile of ``values`` (NaN when empty)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")
