"""The outcome of event-driven acquisition, measured against ground truth.

What a microscopist compares against fixed-rate imaging: how many events were caught, how
soon after they began, how much of them was imaged fast, and at what light dose. The camera
computes one :class:`~rt_eda.core.messages.PositionOutcome` per position at its end
(:func:`position_outcome`), from the stacks it took there and the source's ground truth (the
synthetic source's event schedule; a replayed recording's truth file); the summary adds
them up (:func:`summarize`).

Definitions (every time on the ``time.monotonic()`` clock)
---------------------------------------------------------
* An *event* is a ground-truth event while it is visible: its intensity at least
  :data:`VISIBLE_INTENSITY` (0.2 of its peak, the threshold the demo model is evaluated at;
  a synthetic event of 3 s is visible for its middle 2.62 s). Only events that begin and end
  within the acquisition (its first to its last exposure at that position) count.
* A stack is *fast* when it was taken at the fast interval (the position's interpreter was
  in its fast state when the camera took it). A fast stack at ``t`` images ``[t, t +
  interval)`` fast, until the position's next stack at the latest.
* An event is *detected* when the position took a fast stack during it; its *detection
  delay* runs from its onset to the first such stack.
* ``event_time_fast_fraction``: the part of the events' summed time imaged fast.
* ``dose_vs_always_fast``: frames taken over the frames an acquisition at the fast interval
  would have taken at the same positions over the same time (one exposure per frame, so
  also the light dose): ``(span / fast_interval + 1)`` stacks per position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, TypedDict

import numpy as np

from rt_eda.core.messages import PositionOutcome

__all__ = [
    "VISIBLE_INTENSITY",
    "EdaSummary",
    "Visit",
    "position_outcome",
    "summarize",
]

VISIBLE_INTENSITY: Final = 0.2
"""An event counts while its intensity is at least this fraction of its peak."""

Visit = tuple[float, bool, float]
"""One stack taken at a position: ``(t_exposure, fast, interval_s in force)``."""


class DelaySummary(TypedDict):
    """Detection delays (seconds)."""

    p50: float
    p99: float


class EdaSummary(TypedDict):
    """The ``eda`` section of the run summary (overall, and inside each position's entry)."""

    events: int
    events_detected: int
    detection_delay_s: DelaySummary
    event_time_fast_fraction: float
    dose_vs_always_fast: float
    event_time_s: float
    frames: int
    frames_always_fast: int


def _fast_cover(visits: Sequence[Visit]) -> list[tuple[float, float]]:
    """The intervals imaged fast, merged, in order."""
    out: list[tuple[float, float]] = []
    for k, (t, fast, interval) in enumerate(visits):
        if not fast or not interval > 0:
            continue
        end = t + interval
        if k + 1 < len(visits):
            end = min(end, visits[k + 1][0])
        if out and t <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((t, end))
    return out


def _overlap(a0: float, a1: float, cover: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(a1, c1) - max(a0, c0)) for c0, c1 in cover)


def position_outcome(events: Sequence[tuple[float, float]], visits: Sequence[Visit], *,
                     fast_interval: float, frames_per_stack: int) -> PositionOutcome:
    """One position's outcome (see the module docstring for every definition).

    Parameters
    ----------
    events
        The ground truth: each event's visible ``(start, end)``, monotonic seconds.
    visits
        Every stack taken at the position, in order: ``(t_exposure, fast, interval_s)``.
    fast_interval
        The fast interval the always-fast comparison uses (seconds, > 0).
    frames_per_stack
        Channels x z-slices.
    """
    if not visits:
        return PositionOutcome(0, 0, (), 0.0, 0.0, 0, 0)
    t_first, t_last = visits[0][0], visits[-1][0]
    cover = _fast_cover(visits)
    fast_times = np.asarray([t for t, fast, _ in visits if fast], dtype=np.float64)
    counted = 0
    detected = 0
    delays: list[float] = []
    event_time = fast_time = 0.0
    for start, end in events:
        if start < t_first or end > t_last or not end > start:
            continue
        counted += 1
        event_time += end - start
        fast_time += _overlap(start, end, cover)
        i = int(np.searchsorted(fast_times, start, side="left"))
        if i < fast_times.size and fast_times[i] < end:
            detected += 1
            delays.append(float(fast_times[i] - start))
    span = t_last - t_first
    always = (math.floor(span / fast_interval + 1e-9) + 1) if fast_interval > 0 else len(visits)
    return PositionOutcome(
        events=counted, events_detected=detected, detection_delays_s=tuple(delays),
        event_time_s=event_time, event_time_fast_s=fast_time,
        frames=len(visits) * frames_per_stack,
        frames_always_fast=int(always) * frames_per_stack,
    )


def summarize(outcomes: Sequence[PositionOutcome]) -> EdaSummary:
    """The ``eda`` section of several positions (or of one): counts and times added up,
    delays pooled; fractions 0.0 where nothing was there to measure."""
    delays = np.asarray([d for o in outcomes for d in o.detection_delays_s], dtype=np.float64)
    event_time = sum(o.event_time_s for o in outcomes)
    fast_time = sum(o.event_time_fast_s for o in outcomes)
    frames = sum(o.frames for o in outcomes)
    always = sum(o.frames_always_fast for o in outcomes)
    return EdaSummary(
        events=sum(o.events for o in outcomes),
        events_detected=sum(o.events_detected for o in outcomes),
        detection_delay_s=DelaySummary(
            p50=float(np.percentile(delays, 50)) if delays.size else 0.0,
            p99=float(np.percentile(delays, 99)) if delays.size else 0.0,
        ),
        event_time_fast_fraction=fast_time / event_time if event_time > 0 else 0.0,
        dose_vs_always_fast=frames / always if always > 0 else 0.0,
        event_time_s=event_time,
        frames=frames,
        frames_always_fast=always,
    )
