"""Latency percentiles in constant memory: the one percentile implementation of rt-eda.

A run can last hours at a thousand stacks per second: keeping every sample would grow
without bound. Two bounded collectors, both O(1) per ``add`` and allocation-free after
construction, both giving a :class:`Percentiles` record:

- :class:`Reservoir` keeps a uniform random sample of at most ``capacity`` values
  (reservoir sampling, Algorithm R): percentiles describe the **whole run**.
- :class:`RecentWindow` keeps the newest ``capacity`` values (a ring): percentiles describe
  the **recent past** (a writer's write times, a device's interval errors).

Both keep the exact count and the exact maximum of every value ever added.
:func:`percentiles` computes the same record from an array at hand. Every percentile in the
package comes from :func:`percentiles` (``numpy.percentile``, linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Percentiles", "RecentWindow", "Reservoir", "percentiles"]


@dataclass(frozen=True, slots=True)
class Percentiles:
    """The distribution of one latency (or any sample), as it crosses process boundaries.

    Attributes
    ----------
    p50, p99
        Percentiles of the values kept (all of them, a uniform sample of them, or the newest,
        depending on the collector).
    max
        The exact maximum of every value added (0.0 when none).
    count
        How many values were added (0: every field is 0.0).
    """

    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    count: int = 0

    @property
    def spread(self) -> float:
        """``p99 - p50``: the jitter of a series of intervals (0.0 when empty)."""
        return self.p99 - self.p50

    def as_dict(self) -> dict[str, float]:
        """``{"p50", "p99", "max"}``: the form of every latency in the run summary."""
        return {"p50": self.p50, "p99": self.p99, "max": self.max}


def percentiles(values: np.ndarray | list[float], *, count: int | None = None,
                maximum: float | None = None) -> Percentiles:
    """The :class:`Percentiles` of ``values`` (all zeros when empty).

    Parameters
    ----------
    values
        The values to describe.
    count, maximum
        The exact count and maximum when ``values`` is a sample of a larger set (defaults:
        those of ``values``).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return Percentiles()
    p50, p99 = np.percentile(arr, [50, 99])
    return Percentiles(
        p50=float(p50), p99=float(p99),
        max=float(arr.max()) if maximum is None else float(maximum),
        count=int(arr.size) if count is None else int(count),
    )


class Reservoir:
    """A uniform sample of at most ``capacity`` values, with the exact count and maximum.

    ``add`` is O(1) and allocates nothing. One thread only.
    """

    def __init__(self, capacity: int = 200_000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"a reservoir needs a capacity >= 1, got {capacity}")
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

    def percentiles(self) -> Percentiles:
        """Percentiles of the sample; the count and the maximum are exact."""
        if not self.count:
            return Percentiles()
        return percentiles(self.sample(), count=self.count, maximum=self.maximum)

    def __len__(self) -> int:
        return self.count


class RecentWindow:
    """The newest ``capacity`` values (a ring), with the exact count and maximum of all.

    ``add`` is O(1) and allocates nothing. One thread only.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        if capacity < 1:
            raise ValueError(f"a window needs a capacity >= 1, got {capacity}")
        self._data = np.zeros(capacity, dtype=np.float64)
        self.count = 0
        self.maximum = float("-inf")

    def add(self, value: float) -> None:
        """Add one value (the oldest kept is dropped once the window is full)."""
        self._data[self.count % self._data.shape[0]] = value
        self.count += 1
        if value > self.maximum:
            self.maximum = value

    def clear(self) -> None:
        """Forget every value (the buffer is kept: nothing is allocated)."""
        self.count = 0
        self.maximum = float("-inf")

    def values(self) -> np.ndarray:
        """The values kept (in ring order, not in time order)."""
        return self._data[: min(self.count, self._data.shape[0])]

    def percentiles(self) -> Percentiles:
        """Percentiles of the newest values; the count and the maximum cover every value."""
        if not self.count:
            return Percentiles()
        return percentiles(self.values(), count=self.count, maximum=self.maximum)

    def __len__(self) -> int:
        return self.count
