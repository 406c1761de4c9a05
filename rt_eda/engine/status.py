"""The live status: what the terminal shows twice a second while the run goes.

Every figure is read from where the summary reads it, never tracked a second time:

::

    counts (published,          the ring's counters (the summary's ``stacks_*``)
      analysed, skipped, failed)
    rates                       those counters' change over the last RATE_WINDOW_S (a slow
                                interval of 1 s reads 1.0/s, not 0 and 2 by turns)
    interval, state, decisions  the interpreter's newest InterpreterStatus
    decision latency p50/p99    the same snapshot: every result so far, like the summary's
                                latency_ms.publish_to_decision (NaN before the first)
    camera jitter, frames lost  the camera's newest CameraStatus
    workers alive, restarts     the supervisor

At the end of a run the roles send one more snapshot each (``final``) from the records their
statistics come from, and the engine gives one more status (:attr:`Status.final`) after every
role has stopped: its counts, latency and jitter are the summary's.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from rt_eda.core.messages import ClusterStatus
from rt_eda.engine.summary import RoleReports, acquired_per_s
from rt_eda.shm import RingStatistics

__all__ = ["RATE_WINDOW_S", "Rates", "Status", "status_now"]

RATE_WINDOW_S = 5.0
"""The rates are over this many seconds (over the whole run in the final status)."""


@dataclass(frozen=True, slots=True)
class Status:
    """The live numbers shown on the terminal (and handed to a status callback).

    Attributes
    ----------
    elapsed_s, duration_s
        Since acquisition started; ``run.duration`` (None: until stopped).
    published, analysed, skipped, failed
        Stacks, from the ring's counters (skipped includes claims taken back from dead
        workers, as the summary's ``stacks_skipped``).
    acquired_per_s, analysed_per_s, skipped_per_s
        Stacks per second over the last :data:`RATE_WINDOW_S` (when ``final``: over the
        camera's acquisition, as the summary's ``acquired_fps`` and ``analysed_per_s``).
    interval_s, state, decisions, interval_switches
        The interpreter's (NaN, "" and 0 before its first snapshot).
    p2d_p50_ms, p2d_p99_ms
        Publish -> decision latency of every decision so far (NaN before the first).
    jitter_ms, frames_acquired, frames_lost
        The camera's: p99 - p50 of its publication gaps over the last half second (the whole
        run when ``final``; NaN before the first), and its counts so far.
    workers, restarts
        Worker processes alive (when ``final``: the run's ``analysis.workers``), and
        restarted so far.
    final
        The last status of a run, given once every role has stopped.
    """

    elapsed_s: float = 0.0
    duration_s: float | None = None
    published: int = 0
    analysed: int = 0
    skipped: int = 0
    failed: int = 0
    acquired_per_s: float = 0.0
    analysed_per_s: float = 0.0
    skipped_per_s: float = 0.0
    interval_s: float = math.nan
    state: str = ""
    decisions: int = 0
    interval_switches: int = 0
    p2d_p50_ms: float = math.nan
    p2d_p99_ms: float = math.nan
    jitter_ms: float = math.nan
    frames_acquired: int = 0
    frames_lost: int = 0
    workers: int = 0
    restarts: int = 0
    final: bool = False
    cluster: str = ""  # with --cluster: actors up, their restarts, the added latency (p50)

    @property
    def left_s(self) -> float | None:
        """Seconds left of ``run.duration`` (None without one)."""
        if self.duration_s is None:
            return None
        return max(0.0, self.duration_s - self.elapsed_s)

    def line(self) -> str:
        """The status as one plain line (logs without a terminal)."""
        when = f"{self.elapsed_s:.0f} s" + (
            f" of {self.duration_s:g} s" if self.duration_s is not None else "")
        interval = "" if math.isnan(self.interval_s) else f"{self.interval_s:g} s"
        return (
            f"{when}: acquired {self.published} stacks ({self.acquired_per_s:.1f}/s), "
            f"analysed {self.analysed} ({self.analysed_per_s:.1f}/s), skipped "
            f"{self.skipped}" + (f", failed {self.failed}" if self.failed else "")
            + f"; interval {interval or '-'} {self.state}; decision latency p50 "
            f"{_ms(self.p2d_p50_ms)}, p99 {_ms(self.p2d_p99_ms)}; camera jitter "
            f"{_ms(self.jitter_ms)}; frames lost {self.frames_lost}; workers {self.workers}"
            + (f" (restarts {self.restarts})" if self.restarts else "")
            + (f"; {self.cluster}" if self.cluster else "")
        )


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} ms"


class Rates:
    """The ring's counters over the last :data:`RATE_WINDOW_S` (one thread: the engine's)."""

    def __init__(self, t_start: float) -> None:
        self._marks: deque[tuple[float, int, int, int]] = deque([(t_start, 0, 0, 0)])

    def add(self, now: float, published: int, analysed: int,
            skipped: int) -> tuple[float, float, float]:
        """Keep this mark; the rates (acquired, analysed, skipped per second) since the oldest
        mark within the window."""
        self._marks.append((now, published, analysed, skipped))
        while len(self._marks) > 2 and now - self._marks[1][0] >= RATE_WINDOW_S:
            self._marks.popleft()
        t0, p0, a0, s0 = self._marks[0]
        dt = max(1e-9, now - t0)
        return (published - p0) / dt, (analysed - a0) / dt, (skipped - s0) / dt


def status_now(now: float, rates: Rates, rs: RingStatistics, reports: RoleReports, *,
               t_start: float, duration_s: float | None, workers: int, restarts: int,
               final: bool = False) -> Status:
    """The status at ``now`` (see the module docstring). ``final``: every role has stopped
    (``now`` is when the stop began; the rates are the summary's)."""
    interp = reports.status
    cam = reports.camera_status
    skipped = rs.skipped + rs.recovered
    elapsed = now - t_start
    if final:  # as the summary's acquired_fps and analysed_per_s
        span = cam.acquisition_s if cam is not None and cam.final else 0.0
        acq = acquired_per_s(cam.timepoints, span) if cam is not None else 0.0
        ana, ski = (rs.completed / span, skipped / span) if span > 0 else (0.0, 0.0)
    else:
        acq, ana, ski = rates.add(now, rs.published, rs.completed, skipped)
    latency = interp.publish_to_decision if interp is not None else None
    decided = latency is not None and latency.count > 0
    return Status(
        elapsed_s=elapsed, duration_s=duration_s,
        published=rs.published, analysed=rs.completed, skipped=skipped, failed=rs.failed,
        acquired_per_s=acq, analysed_per_s=ana, skipped_per_s=ski,
        interval_s=interp.interval_s if interp is not None else math.nan,
        state=str(interp.state) if interp is not None else "",
        decisions=interp.decisions if interp is not None else 0,
        interval_switches=interp.interval_switches if interp is not None else 0,
        p2d_p50_ms=latency.p50 if decided and latency is not None else math.nan,
        p2d_p99_ms=latency.p99 if decided and latency is not None else math.nan,
        jitter_ms=cam.jitter_ms if cam is not None and cam.gaps else math.nan,
        frames_acquired=cam.frames_acquired if cam is not None else 0,
        frames_lost=cam.frames_lost if cam is not None else 0,
        workers=workers, restarts=restarts, final=final,
        cluster=_cluster(reports.cluster_status),
    )


def _cluster(st: ClusterStatus | None) -> str:
    """The cluster's part of the status ("" without one): actors up of all, their restarts,
    and the latency going through it adds, p50 of send / compute / return since the last."""
    if st is None:
        return ""
    return (f"actors {st.actors_up}/{st.actors}"
            + (f" (restarts {st.restarts})" if st.restarts else "")
            + f", send/compute/return p50 {_ms(st.send_p50_ms)}/{_ms(st.compute_p50_ms)}/"
            f"{_ms(st.return_p50_ms)}")
