"""A replay's timing: the recorded time of each timepoint, and which timepoint is shown when.

* :func:`recorded_times`: the time of each recorded timepoint from the frame times a
  recording gives (``frames.csv``, OME ``DeltaT``) or its fixed spacing (OME
  ``TimeIncrement``, ImageJ ``finterval``, NGFF ``t`` scale); timepoints without a recorded
  time get times estimated from their neighbours (interpolated between recorded ones,
  extrapolated at the median recorded spacing beyond them). Fewer than two recorded times:
  no timing (the replay plays at the commanded interval).
* :class:`ReplaySchedule`: the replay clock. ``recorded`` timing: the next timepoint is due
  at ``max(previous + interval, recorded time of the next)`` on a clock aligned with the
  first recorded timepoint, and the one shown is the one recorded nearest that moment (never
  one already shown), so a slow interval skips forward in recorded time and a fast one plays
  every timepoint at its recorded timing. ``commanded`` timing: one timepoint per interval.
  The wait itself is the sources' one pacing clock (:func:`rt_eda.sources._pacing.wait_until`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from rt_eda.core.errors import ConfigError
from rt_eda.core.imagefiles import format_indices

__all__ = ["RecordedTimes", "ReplaySchedule", "ReplayTiming", "recorded_times"]


class ReplayTiming(StrEnum):
    """When replayed timepoints are due (see :mod:`rt_eda.sources.replay`)."""

    AUTO = "auto"
    RECORDED = "recorded"
    COMMANDED = "commanded"


@dataclass(frozen=True, slots=True)
class RecordedTimes:
    """The recorded timing of a recording.

    Attributes
    ----------
    times
        Per recorded timepoint: seconds from the first replayable one (estimated where not
        recorded; NaN where the timepoint cannot be replayed).
    offsets
        ``(T, C, Z)``: each frame's offset from its timepoint's time (0 where unknown); None
        when the recording gives no per-frame times.
    untimed
        Replayable timepoints whose time was estimated.
    """

    times: np.ndarray
    offsets: np.ndarray | None
    untimed: int


def recorded_times(description: str, frame_t: np.ndarray | None, step_s: float | None,
                   playable: np.ndarray, warn: Callable[..., None]) -> RecordedTimes | None:
    """The recorded timing of a recording, or None when it has too little of it.

    Parameters
    ----------
    description
        How messages name the recording.
    frame_t
        ``(T, C, Z)`` recorded frame times (NaN where unknown), or None.
    step_s
        A fixed spacing of timepoints, used when there are no frame times; or None.
    playable
        ``(T,)`` bool: the timepoints that can be replayed.
    warn
        Called (``logging`` style) once for timepoints with an estimated time, and once when
        too few have a recorded time.

    Raises
    ------
    ConfigError
        The recorded times of the replayable timepoints go backwards (both named).
    """
    n_t = playable.size
    offsets = None
    if frame_t is not None:
        starts, offsets = _starts_and_offsets(frame_t)
    elif step_s is not None and math.isfinite(step_s):
        starts = np.arange(n_t) * step_s
    else:
        return None
    known = playable & np.isfinite(starts)
    k_t = starts[known]
    if k_t.size and np.any(np.diff(k_t) < 0):
        at = int(np.flatnonzero(np.diff(k_t) < 0)[0])
        raise ConfigError(
            f"replay: recorded times of {description} go backwards (timepoint "
            f"{int(np.flatnonzero(known)[at + 1])} at {k_t[at + 1]:.6g} s after "
            f"{k_t[at]:.6g} s)"
        )
    n_play = int(playable.sum())
    untimed = 0
    if k_t.size == n_play:
        times = np.where(playable, starts, np.nan)
    elif k_t.size >= 2:
        estimated, spacing = _estimate(starts, playable)
        missing = np.flatnonzero(playable & ~known)
        untimed = int(missing.size)
        warn("replay: %d of %d replayable timepoints have no recorded time (timepoints %s): "
             "replayed at times estimated from their neighbours (recorded spacing %.4g s)",
             untimed, n_play, format_indices(missing), spacing)
        times = np.where(playable, estimated, np.nan)
    else:
        warn("replay: only %d of %d replayable timepoints have a recorded time: replayed at "
             "the commanded interval", k_t.size, n_play)
        return None
    return RecordedTimes(times - np.nanmin(times), offsets, untimed)


def _starts_and_offsets(frame_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, C, Z) frame times (NaN = unknown) -> timepoint starts (NaN = unknown) and each
    frame's offset from its timepoint's start (0 where unknown)."""
    known = ~np.isnan(frame_t).all(axis=(1, 2))
    starts = np.full(frame_t.shape[0], np.nan)
    starts[known] = np.nanmin(frame_t[known], axis=(1, 2))
    offsets = np.nan_to_num(frame_t - starts[:, None, None], nan=0.0)
    return starts, offsets


def _estimate(starts: np.ndarray, playable: np.ndarray) -> tuple[np.ndarray, float]:
    """Fill unknown starts of playable timepoints (see the module docstring); the spacing
    used beyond the recorded ones. Needs at least two known starts among the playable."""
    idx = np.arange(starts.size)
    known = playable & np.isfinite(starts)
    k_idx, k_t = idx[known], starts[known]
    spacing = float(np.median(np.diff(k_t) / np.diff(k_idx)))
    out = np.interp(idx, k_idx, k_t)
    out[idx < k_idx[0]] = k_t[0] - (k_idx[0] - idx[idx < k_idx[0]]) * spacing
    out[idx > k_idx[-1]] = k_t[-1] + (idx[idx > k_idx[-1]] - k_idx[-1]) * spacing
    out[known] = k_t
    return out, spacing


class ReplaySchedule:
    """Which replayable timepoint comes next and when it is due (one thread drives it).

    Positions are indices into the replayable timepoints, in recorded order.

    Parameters
    ----------
    timing
        ``RECORDED`` or ``COMMANDED`` (``AUTO`` is resolved at open).
    times
        The replayable timepoints' recorded times (seconds from the first), sorted; needed
        for ``RECORDED``.
    count
        How many timepoints can be replayed.
    """

    def __init__(self, timing: ReplayTiming, times: np.ndarray | None, count: int) -> None:
        if timing is ReplayTiming.RECORDED and times is None:
            raise ValueError("recorded timing needs the recorded times")
        self._timing = timing
        self._times = times
        self._count = count
        self._t0 = 0.0
        self._first = True
        self._due = 0.0

    @property
    def due(self) -> float:
        """When the timepoint shown last was due (monotonic seconds)."""
        return self._due

    def start(self, t0: float) -> None:
        """Start the replay clock at ``t0`` (monotonic): the first timepoint is due at once."""
        self._t0 = t0
        self._first = True
        self._due = 0.0

    def choose(self, nxt: int, interval: float, now: float) -> tuple[int, float, bool] | None:
        """The position of the timepoint to show next (``nxt`` or later), when it is due, and
        whether the caller came back after it was due (``late``: it is due now); None past
        the end of the recording.

        Nothing changes until :meth:`shown` is called (a stack that cannot be read is
        passed over by choosing again from the position after it).
        """
        n = self._count
        if nxt >= n:
            return None
        if self._timing is ReplayTiming.RECORDED:
            times = self._times
            assert times is not None
            if self._first:
                return nxt, self._t0 + float(times[nxt]), False
            due = max(self._due + interval, self._t0 + float(times[nxt]))
            late = due < now
            if late:
                due = now
            rec = due - self._t0
            last_spacing = float(times[-1] - times[-2]) if n > 1 else 0.0
            if rec > float(times[-1]) + 0.5 * last_spacing:
                return None
            return max(nxt, _nearest(times, rec)), due, late
        if self._first or interval == 0.0:
            return nxt, now, False
        due = self._due + interval
        late = due < now - interval
        return nxt, (now if late else due), late

    def shown(self, due: float) -> None:
        """The timepoint due at ``due`` is being shown (the next is due after it)."""
        self._due = due
        self._first = False


def _nearest(times: np.ndarray, t: float) -> int:
    """Index of the element of sorted ``times`` nearest ``t`` (the earlier one on a tie)."""
    i = int(np.searchsorted(times, t))
    if i <= 0:
        return 0
    if i >= len(times):
        return len(times) - 1
    return i - 1 if t - float(times[i - 1]) <= float(times[i]) - t else i
