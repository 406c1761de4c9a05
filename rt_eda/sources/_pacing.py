"""The pacing clock every source waits on: sleep until just before a deadline, then spin.

One function, :func:`wait_until`, is the only place a source waits for a timepoint to be due
(the synthetic source, Micro-Manager snaps, a replay). It sleeps with ``time.sleep`` in steps
of at most :data:`POLL_S`, checking the stop flag between steps, so a stop is seen within
20 ms however far away the deadline is; it busy-waits only the last :data:`SPIN_S`. It never
returns early, and returns how late it woke.

Why the spin: ``time.sleep`` overshoots by ~90 us here (timer slack); spinning the last 50 us
halved the median lateness (91 -> 42 us, 4 ms interval, 2 cores shared): 50 us of CPU per
timepoint, nothing in free-run. A longer spin would steal a worker's core on a small machine.

:func:`skip_missed` is the drift-free schedule's rule for a caller that came back late, and
:func:`checked_interval` the one check of an interval a source is given at run time.
"""

from __future__ import annotations

import math
import time
from typing import Final

from rt_eda.core.errors import ConfigError

from ._protocol import StopFlag

__all__ = ["POLL_S", "SPIN_S", "checked_interval", "skip_missed", "wait_until"]

POLL_S: Final = 0.02
"""The longest sleep between two looks at the stop flag (seconds)."""

SPIN_S: Final = 50e-6
"""The final busy-wait before a deadline (seconds; see the module docstring for the figures)."""


def wait_until(due: float, stop: StopFlag) -> float | None:
    """Wait until ``time.monotonic() >= due``; how late it woke, or None if stopped.

    Parameters
    ----------
    due
        The deadline on the ``time.monotonic()`` clock; one in the past returns at once.
    stop
        Looked at before every sleep: once it is set the wait ends within :data:`POLL_S`
        (the spin of the last :data:`SPIN_S` is never interrupted).

    Returns
    -------
    float or None
        Seconds between ``due`` and the moment the wait ended (>= 0: never early), or None
        when ``stop`` was set before the deadline.
    """
    while (remaining := due - time.monotonic()) > SPIN_S:
        if stop.is_set():
            return None
        time.sleep(min(remaining - SPIN_S, POLL_S))
    while (now := time.monotonic()) < due:  # at most SPIN_S
        pass
    return now - due


def skip_missed(due: float, interval_s: float, now: float) -> tuple[float, int]:
    """A drift-free schedule's next timepoint for a caller that came back ``now``.

    When ``now`` is more than one interval past ``due``, the timepoints missed in between
    are skipped (never a burst of catch-up frames) and the latest one already due is
    returned, still on the grid ``due + k * interval_s``.

    Returns
    -------
    tuple[float, int]
        The timepoint to wait for and how many were skipped (0 when the caller is on time,
        and always with ``interval_s`` 0).
    """
    if interval_s > 0.0 and now - due > interval_s:
        missed = int((now - due) // interval_s)
        return due + missed * interval_s, missed
    return due, 0


def checked_interval(interval_s: float) -> float:
    """``interval_s`` as a float, checked: a source's ``start`` and ``set_interval`` take it.

    Raises
    ------
    ConfigError
        Not a finite number >= 0 (the value is named).
    """
    if (
        not isinstance(interval_s, int | float)
        or isinstance(interval_s, bool)
        or not math.isfinite(interval_s)
        or interval_s < 0
    ):
        raise ConfigError(f"interval_s must be a finite number >= 0 (seconds), got {interval_s!r}")
    return float(interval_s)
