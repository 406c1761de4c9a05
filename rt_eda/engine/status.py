"""The live status line: what the terminal shows twice a second while the run goes.

Every figure is read from where it is kept, never tracked a second time: the rates and
counts from the ring's counters, the interval, state and latency from the interpreter's
newest :class:`~rt_eda.core.messages.InterpreterStatus`, the jitter from the camera's newest
:class:`~rt_eda.core.messages.CameraStatus`, the workers alive and restarts from the
supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from rt_eda.engine.summary import RoleReports
from rt_eda.shm import RingStatistics

__all__ = ["Status", "StatusMark", "status_now"]


@dataclass
class Status:
    """The live numbers shown on the terminal (and handed to a status callback).

    The interval, state and latency are the interpreter's newest snapshot
    (:class:`~rt_eda.core.messages.InterpreterStatus`), the jitter the camera's
    (:class:`~rt_eda.core.messages.CameraStatus`: p99 - p50 of its publication gaps over the
    last half second, NaN before the first), the rates the ring's counters.
    """

    elapsed_s: float = 0.0
    acquired_per_s: float = 0.0
    analysed_per_s: float = 0.0
    published: int = 0
    analysed: int = 0
    skipped: int = 0
    interval_s: float = float("nan")
    state: str = ""
    p2d_p50_ms: float = 0.0
    workers: int = 0
    restarts: int = 0
    jitter_ms: float = float("nan")

    def line(self) -> str:
        """One terminal line."""
        return (
            f"{self.elapsed_s:7.1f} s  acquired {self.acquired_per_s:7.1f}/s "
            f"(jitter {self.jitter_ms:5.2f} ms)  "
            f"analysed {self.analysed_per_s:7.1f}/s  skipped {self.skipped:>7d}  "
            f"interval {self.interval_s:.3g} s {self.state:<4}  "
            f"publish->decision p50 {self.p2d_p50_ms:6.2f} ms  workers {self.workers}"
            + (f" (restarts {self.restarts})" if self.restarts else "")
        )


class StatusMark(NamedTuple):
    """Where the previous status was taken: the rates are over the time since."""

    t: float
    published: int
    analysed: int


def status_now(now: float, last: StatusMark, rs: RingStatistics, reports: RoleReports, *,
               t_start: float, workers: int, restarts: int) -> tuple[Status, StatusMark]:
    """The status at ``now`` (rates since ``last``) and the mark for the next one."""
    dt = max(1e-9, now - last.t)
    interp = reports.status
    cam = reports.camera_status
    st = Status(
        elapsed_s=now - t_start,
        acquired_per_s=(rs.published - last.published) / dt,
        analysed_per_s=(rs.completed - last.analysed) / dt,
        published=rs.published, analysed=rs.completed, skipped=rs.skipped + rs.recovered,
        interval_s=interp.interval_s if interp is not None else float("nan"),
        state=str(interp.state) if interp is not None else "",
        p2d_p50_ms=interp.publish_to_decision_p50_ms if interp is not None else 0.0,
        workers=workers, restarts=restarts,
        jitter_ms=cam.jitter_ms if cam is not None else float("nan"),
    )
    return st, StatusMark(now, rs.published, rs.completed)
