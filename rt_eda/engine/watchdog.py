"""The engine's watchdog: finds a worker that holds one stack far longer than it should.

A worker that hangs without dying (SIGSTOP, a hook that never returns, a deadlock in a
library) keeps its claim forever; nothing else would notice, because the ring keeps working
with the other slots. The engine polls the ring's claims (:meth:`StackRing.claims`) a few
times a second and hands them to :class:`Watchdog`, which says which claims are overdue::

    claim seen        -> its age = now - t_claimed (or now - first seen, until stamped)
    claim gone        -> its duration (an upper bound: now - t_claimed) joins that worker's
                         samples (the last 256; claims shorter than a poll are mostly unseen,
                         which only makes the samples, and the bound, larger)
    bound(worker)     = analysis.watchdog_s when set; otherwise
                        max(5 s, 10 x p99 of the worker's samples), or 30 s before it has any
                        (its first claims may be slower than the rest)
    age > bound       -> overdue: the engine kills the worker (SIGKILL), recovers its claim
                         (counted) and restarts it (counted, bounded)

The samples of a worker index outlive its restarts (the same worker class and model).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["FACTOR", "FIRST_CLAIMS_S", "MIN_BOUND_S", "Overdue", "Watchdog"]

MIN_BOUND_S = 5.0
"""The automatic bound is never shorter."""

FACTOR = 10.0
"""The automatic bound is this many times the worker's own p99 claim duration."""

FIRST_CLAIMS_S = 30.0
"""The automatic bound before a worker's first claim duration is known."""

_SAMPLES = 256


@dataclass(frozen=True, slots=True)
class Overdue:
    """A claim held longer than its worker's bound."""

    worker: int
    seq: int
    age_s: float
    bound_s: float
    how: str  # how the bound was chosen, for the message

    def message(self) -> str:
        """One line for the log and the summary's errors."""
        return (f"worker {self.worker}: killed by the watchdog: it held stack {self.seq} for "
                f"{self.age_s:.1f} s, over its bound of {self.bound_s:.1f} s ({self.how}; "
                "analysis.watchdog_s sets it)")


class Watchdog:
    """Tracks claim durations per worker and reports overdue claims (see the module docstring).

    Parameters
    ----------
    fixed_s
        ``analysis.watchdog_s``: a fixed bound in seconds, or 0 for the automatic one.
    """

    def __init__(self, fixed_s: float = 0.0) -> None:
        self.fixed_s = fixed_s
        self._samples: dict[int, deque[float]] = {}
        self._open: dict[tuple[int, int], float] = {}  # (worker, seq) -> claimed at
        self._reported: set[tuple[int, int]] = set()

    def bound(self, worker: int) -> tuple[float, str]:
        """The longest a claim of ``worker`` may be held, and how it was chosen."""
        if self.fixed_s > 0:
            return self.fixed_s, "analysis.watchdog_s"
        samples = self._samples.get(worker)
        if not samples:
            return FIRST_CLAIMS_S, "no claim of this worker timed yet"
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        if FACTOR * p99 <= MIN_BOUND_S:
            return MIN_BOUND_S, f"at least {MIN_BOUND_S:g} s; its p99 is {1e3 * p99:.0f} ms"
        return FACTOR * p99, f"{FACTOR:g} x its p99 of {p99:.2f} s"

    def observe(self, claims: list[tuple[int, int, float]], now: float) -> list[Overdue]:
        """Take a snapshot of the ring's claims at ``now``; returns the claims now overdue
        (each reported once).

        Parameters
        ----------
        claims
            ``(worker, seq, t_claimed)`` as :meth:`StackRing.claims` gives them (NaN: not
            stamped yet).
        now
            ``time.monotonic()`` when the snapshot was taken.
        """
        seen = set()
        overdue = []
        for worker, seq, t_claimed in claims:
            key = (worker, seq)
            seen.add(key)
            start = self._open.get(key)
            if start is None or (math.isfinite(t_claimed) and t_claimed < start):
                start = t_claimed if math.isfinite(t_claimed) else now
                self._open[key] = start
            age = now - start
            bound, how = self.bound(worker)
            if age > bound and key not in self._reported:
                self._reported.add(key)
                overdue.append(Overdue(worker, seq, age, bound, how))
        for key in [k for k in self._open if k not in seen]:
            start = self._open.pop(key)
            if key in self._reported:
                self._reported.discard(key)  # recovered: not a sample of its analysis time
                continue
            self._samples.setdefault(key[0], deque(maxlen=_SAMPLES)).append(now - start)
        return overdue
