"""Bounded latency statistics for runs of any length.

A run can last hours at a thousand stacks per second: keeping every latency sample would
grow without bound. :class:`Reservoir` keeps a uniform random sample of at most ``capacity``
values (reservoir sampling, Algorithm R) in a preallocated numpy array, plus the exact count
and maximum, so percentiles describe the whole run in constant memory.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Reservoir", "percentiles"]


def percentiles(values: np.ndarray | list[float]) -> dict[str, float]:
    """``{p50, p99, max}`` of the values (zeros when empty)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max())}


class Reservoir:
    """A uniform sample of at most ``capacity`` values, with the exact count and maximum.

    ``add`` is O(1) and allocates nothing. One thread only.
    """

    def __init__(self, capacity: int = 200_000, seed: int = 0) -> None:
        self._data = np.empty(capacity, dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self.count = 0
        self.maximum = float("-inf")

    def add(self, value: float) -> None:
        """Offer one value."""
        n = self.count
        self.count = n + 1
        if value > self.maximum:
            self.maximum = value
        cap = self._data.shape[0]
        if n < cap:
            self._data[n] = value
        else:
            j = int(self._rng.integers(0, n + 1))
            if j < cap:
                self._data[j] = value

    def sample(self) -> np.ndarray:
        """The values kept (all of them while fewer than ``capacity`` were added)."""
        return self._data[: min(self.count, self._data.shape[0])]

    def summary(self) -> dict[str, float]:
        """``{p50, p99, max}``; the maximum is exact, the percentiles from the sample."""
        out = percentiles(self.sample())
        if self.count:
            out["max"] = self.maximum
        return out

    def __len__(self) -> int:
        return self.count
