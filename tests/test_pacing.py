"""The pacing clock every source waits on (rt_eda.sources._pacing): never early, a stop ends
the wait within one poll, lateness reported, missed timepoints skipped on the grid."""

from __future__ import annotations

import math
import threading
import time

import pytest

from rt_eda.core.errors import ConfigError
from rt_eda.sources._pacing import POLL_S, checked_interval, skip_missed, wait_until

NEVER = threading.Event()


@pytest.mark.parametrize("ahead_s", [0.0, 30e-6, 0.003, 0.045])
def test_never_early_and_reports_how_late(ahead_s: float) -> None:
    due = time.monotonic() + ahead_s
    late = wait_until(due, NEVER)
    woke = time.monotonic()
    assert late is not None
    assert woke >= due and late >= 0.0
    assert late <= woke - due  # measured at the moment the wait ended, not later


def test_a_deadline_in_the_past_returns_at_once_with_its_lateness() -> None:
    due = time.monotonic() - 0.5
    t = time.perf_counter()
    late = wait_until(due, NEVER)
    assert time.perf_counter() - t < 0.01
    assert late is not None and late >= 0.5


def test_a_stop_ends_a_long_wait_within_one_poll() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    try:
        t = time.monotonic()
        assert wait_until(t + 30.0, stop) is None
        waited = time.monotonic() - t
    finally:
        timer.cancel()
    assert 0.05 <= waited < 0.05 + POLL_S + 0.5  # 0.5 s of slack for a loaded machine


def test_a_stop_already_set_returns_none_before_a_future_deadline() -> None:
    stop = threading.Event()
    stop.set()
    assert wait_until(time.monotonic() + 10.0, stop) is None
    assert wait_until(time.monotonic() - 1.0, stop) is not None  # due already: no wait


@pytest.mark.parametrize(
    ("due", "interval", "now", "expected"),
    [
        (10.0, 1.0, 9.0, (10.0, 0)),  # early: wait for it
        (10.0, 1.0, 10.9, (10.0, 0)),  # late by less than an interval: still that one
        (10.0, 1.0, 11.0, (10.0, 0)),  # exactly one interval late: still that one
        (10.0, 1.0, 13.5, (13.0, 3)),  # three missed, the latest due is on the grid
        (10.0, 0.25, 11.1, (11.0, 4)),
        (10.0, 0.0, 99.0, (10.0, 0)),  # free-run: nothing to skip
    ],
)
def test_skip_missed_stays_on_the_grid(due: float, interval: float, now: float,
                                       expected: tuple[float, int]) -> None:
    new_due, missed = skip_missed(due, interval, now)
    assert new_due == pytest.approx(expected[0]) and missed == expected[1]
    assert new_due <= max(due, now)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", True, None])
def test_checked_interval_names_the_value(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"interval_s must be a finite number >= 0") as info:
        checked_interval(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_checked_interval_gives_a_float() -> None:
    assert checked_interval(2) == 2.0 and isinstance(checked_interval(2), float)
    assert checked_interval(0) == 0.0
