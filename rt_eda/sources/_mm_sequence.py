"""Sequence acquisition for the Micro-Manager source: the camera free-runs into
Micro-Manager's circular buffer and frames are popped as they come.

:class:`Sequence` starts and stops a continuous sequence on one core, pops frames with their
numbers and exposure times, and picks each timepoint's frame: with interval 0 every frame is
a timepoint; with an interval > 0 it *decimates*, keeping the first frame exposed no earlier
than half a camera frame period (or half an interval) before the timepoint is due, and
popping the early ones as they come (counted in ``mm_frames_skipped``).

What it measures, into the source's :class:`Counters`:

* exposure times: Micro-Manager's ``TimeReceivedByCore`` tag (wall-clock, set when the camera
  thread inserted the frame, after the exposure) converted to the monotonic clock with an
  offset sampled when the sequence started, minus the exposure; a frame without a usable tag
  gets the time it was popped (``mm_timestamp_fallbacks``, one WARNING);
* losses: gaps in the ``ImageNumber`` tag (the core numbers every frame it inserts), one
  ``mm_buffer_overflows`` and their size in ``mm_frames_lost`` each, with a WARNING; frames
  left in the buffer at a stop (``mm_frames_discarded``).

A sequence that stops by itself is a :class:`~rt_eda.core.errors.SourceError` (naming the
overflow when the buffer reports one).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn

import numpy as np

from rt_eda.core.errors import SourceError

from ._mm_device import call, wall_to_monotonic
from ._protocol import StopFlag

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

__all__ = ["Counters", "Sequence"]

log = logging.getLogger("rt_eda.sources.micromanager")

_TAG_TIME: Final = "TimeReceivedByCore"
_TAG_NUMBER: Final = "ImageNumber"
_SEQ_POLL_S: Final = 0.0002  # sleep while waiting for the next frame of a sequence
_SEQ_DRAIN_S: Final = 0.001  # longest sleep while frames come that are too early to keep


@dataclass(slots=True)
class Counters:
    """What the Micro-Manager source counts (see its ``statistics`` for the keys)."""

    timepoints: int = 0
    frames: int = 0
    popped: int = 0
    skipped: int = 0
    discarded: int = 0
    overflows: int = 0
    lost: int = 0
    camera_frames_done: int = 0  # frames numbered by the core in sequences already stopped
    sequence_starts: int = 0
    mode_switches: int = 0
    timepoints_late: int = 0
    timestamp_fallbacks: int = 0
    freerun_first: float = math.nan
    freerun_last: float = math.nan
    freerun_frames: int = 0


class Sequence:
    """Continuous sequence acquisition on one opened core (one thread drives it).

    Parameters
    ----------
    core
        The configured core.
    counters
        The source's counters, updated here.
    exposure_s
        The exposure the camera reports (seconds): subtracted from the time a frame was
        received, and the first guess of the camera's frame period.
    """

    def __init__(self, core: CMMCorePlus, counters: Counters, exposure_s: float) -> None:
        import pymmcore

        self._core = core
        self._md: Any = pymmcore.Metadata()  # reused for every pop
        self._counters = counters
        self._exposure_s = exposure_s
        self._period = exposure_s  # the camera's frame period, smoothed
        self._interval: float | None = None  # None: no sequence running
        self._t_start = 0.0
        self._wall_to_mono = 0.0
        self._expected_number: int | None = None
        self._last_number = -1
        self._prev_pop_t: float | None = None
        self._warned_timestamps = False

    @property
    def interval(self) -> float | None:
        """The interval of the running sequence (seconds), None when none runs."""
        return self._interval

    def camera_frames(self) -> int:
        """Frames the core has numbered in the running sequence (0 when none runs)."""
        return self._last_number + 1 if self._interval is not None else 0

    def start(self, interval: float) -> None:
        """Start a sequence, asking the camera for ``interval`` between frames.

        Raises
        ------
        SourceError
            Micro-Manager refused (its message kept).
        """
        self._wall_to_mono = wall_to_monotonic()
        self._t_start = time.monotonic()
        call(
            f"starting a sequence acquisition at {interval * 1e3:.4g} ms",
            self._core.startContinuousSequenceAcquisition, interval * 1e3,
        )
        self._interval = interval
        self._expected_number = None
        self._last_number = -1
        self._prev_pop_t = None
        self._counters.sequence_starts += 1

    def stop(self) -> None:
        """Stop the running sequence (if any); frames left in the buffer are counted in
        ``discarded`` and cleared.

        Raises
        ------
        SourceError
            Micro-Manager failed to stop it (its message kept).
        """
        if self._interval is None:
            return
        core = self._core
        call("stopping the sequence acquisition", core.stopSequenceAcquisition)
        left = core.getRemainingImageCount()
        c = self._counters
        c.discarded += left
        c.camera_frames_done += self._last_number + 1 + left
        core.clearCircularBuffer()
        self._interval = None

    def next_frame(self, stop: StopFlag, t_current: float | None,
                   interval: float) -> tuple[np.ndarray, float, float] | None:
        """Wait for the frame of the timepoint after ``t_current``; None if ``stop`` was set.

        Returns
        -------
        tuple or None
            The image, its exposure time, and the timepoint's time: the frame's exposure time
            in free-run (or for the first timepoint); else the scheduled time ``t_current +
            interval``, re-anchored to the frame when the camera is more than half an
            interval late (``timepoints_late``).

        Raises
        ------
        SourceError
            The sequence stopped by itself, or popping failed.
        """
        core = self._core
        target = None if t_current is None or interval == 0.0 else t_current + interval
        slack = 0.0 if target is None else min(0.5 * self._period, 0.5 * interval)
        while True:
            if stop.is_set():
                return None
            if core.getRemainingImageCount() == 0:
                if not core.isSequenceRunning():
                    self._died()
                # Frames are popped as they come, also the early ones that are skipped: a
                # backlog popped in one burst at the due time delayed the camera's own thread
                # (p99 interval error 4 ms -> see bench/test_sources_bench.py).
                wait = _SEQ_POLL_S if target is None else min(
                    max(target - slack - time.monotonic(), _SEQ_POLL_S), _SEQ_DRAIN_S)
                time.sleep(wait)
                continue
            image, t = self._pop()
            if target is None or t >= target - slack:
                break
            self._counters.skipped += 1
        c = self._counters
        if target is None:
            if interval == 0.0:
                if c.freerun_frames == 0:
                    c.freerun_first = t
                c.freerun_frames += 1
                c.freerun_last = t
            return image, t, t
        if t - target >= 0.5 * interval:
            c.timepoints_late += 1
            return image, t, t
        return image, t, target

    def _pop(self) -> tuple[np.ndarray, float]:
        """Pop the next frame; account its number; return it and its exposure start."""
        core = self._core
        md = self._md
        image: np.ndarray = call("popping a frame", core.popNextImageMD, md)
        now = time.monotonic()
        c = self._counters
        c.popped += 1
        if md.HasTag(_TAG_NUMBER):
            number = int(md.GetSingleTag(_TAG_NUMBER).GetValue())
            expected = self._expected_number
            if expected is not None and number > expected:
                lost = number - expected
                c.overflows += 1
                c.lost += lost
                log.warning(
                    "micromanager source: circular buffer overflowed (%d MB): %d frames lost "
                    "(image %d follows %d)", core.getCircularBufferMemoryFootprint(), lost,
                    number, expected - 1,
                )
                self._prev_pop_t = None
            self._expected_number = number + 1
            self._last_number = number
        else:
            self._last_number += 1
        t = now
        if md.HasTag(_TAG_TIME):
            stamp = md.GetSingleTag(_TAG_TIME).GetValue()
            try:
                received = datetime.fromisoformat(stamp).timestamp() + self._wall_to_mono
            except ValueError:
                received = math.nan
            if self._t_start - 0.5 <= received <= now + 0.5:
                t = received
            else:
                self._timestamp_fallback(f"{_TAG_TIME} {stamp!r}")
        else:
            self._timestamp_fallback(f"no {_TAG_TIME} tag")
        t -= self._exposure_s
        if self._prev_pop_t is not None and t > self._prev_pop_t:
            self._period += 0.1 * (t - self._prev_pop_t - self._period)
        self._prev_pop_t = t
        return image, t

    def _timestamp_fallback(self, why: str) -> None:
        self._counters.timestamp_fallbacks += 1
        if not self._warned_timestamps:
            self._warned_timestamps = True
            log.warning(
                "micromanager source: frame timestamp unusable (%s); using the time it was "
                "popped (counted in mm_timestamp_fallbacks)", why,
            )

    def _died(self) -> NoReturn:
        core = self._core
        overflowed = core.isBufferOverflowed()
        self._interval = None
        if overflowed:
            self._counters.overflows += 1
            raise SourceError(
                f"micromanager source: camera {core.getCameraDevice()} stopped its sequence "
                f"acquisition: the circular buffer ({core.getCircularBufferMemoryFootprint()} "
                f"MB, {core.getBufferTotalCapacity()} frames) overflowed"
            )
        raise SourceError(
            f"micromanager source: camera {core.getCameraDevice()} stopped its sequence "
            f"acquisition by itself after image {self._last_number}"
        )
