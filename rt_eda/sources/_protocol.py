"""The Source protocol: what the camera role drives.

The camera role owns the loop; a source owns the device and its timing::

    spec = source.open()                      # connect, configure; the stack shape
    source.start(interval_s)                  # begin acquiring (sequence or timed snaps)
    while running:
        source.set_interval(new)              # only between timepoints; applies from the next
        t = source.next_timepoint(stop)       # block until the next timepoint is due
        for c, z in source.frame_order():     # fill the ring slot frame by frame
            t_exp = source.read_frame(c, z, slot.pixels[c, z])
        # publish the slot
    source.stop(); source.close()

A source never waits for analysis. ``read_frame`` returns the frame's exposure time on the
``time.monotonic()`` clock (when the camera exposed it, not when Python got round to it).
Errors from the device are raised as :class:`~rt_eda.core.errors.SourceError` carrying the
device's own message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from rt_eda.shm import StackSpec

__all__ = ["Source", "StopFlag", "describe_statistics"]


@runtime_checkable
class StopFlag(Protocol):
    """Anything with ``is_set()`` (a ``threading.Event`` or ``multiprocessing.Event``)."""

    def is_set(self) -> bool: ...


@runtime_checkable
class Source(Protocol):
    """An image source for the camera role (see the module docstring for the lifecycle)."""

    def open(self) -> StackSpec:
        """Connect and configure the device; return the shape of one stack."""
        ...

    def start(self, interval_s: float) -> None:
        """Begin acquiring with ``interval_s`` between timepoints (0 = free-run)."""
        ...

    def set_interval(self, interval_s: float) -> None:
        """Change the interval; it applies from the next timepoint."""
        ...

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """Block until the next timepoint is due; its scheduled monotonic time, or None if
        ``stop`` was set (or the source is exhausted, e.g. a replay at its end)."""
        ...

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """The (channel, z) order in which frames of one timepoint arrive."""
        ...

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Acquire frame (c, z) of the current timepoint into ``out`` (H, W); return its
        exposure time (monotonic seconds)."""
        ...

    def stop(self) -> None:
        """Stop acquiring (a sequence acquisition is stopped; the device stays open)."""
        ...

    def close(self) -> None:
        """Release the device. Safe to call twice and after a failed ``open``."""
        ...

    def statistics(self) -> dict[str, float]:
        """Source-specific counters for the run summary (e.g. frames lost by the device)."""
        ...


_UNIT = re.compile(r"(?P<name>.+?)_(?P<unit>ms|s|fps)(?:_(?P<stat>mean|max|min|p50|p99))?")


def describe_statistics(stats: Mapping[str, float]) -> str:
    """A source's :meth:`Source.statistics` as one line for a person: ``"timepoints 97,
    frames 194, ..., render 0.182 ms mean"`` (names in words, counts as integers, other
    values to 3 significant digits with their unit), never a Python repr."""
    parts = []
    for key, value in stats.items():
        m = _UNIT.fullmatch(key)
        if m is not None:
            text = f"{m['name'].replace('_', ' ')} {value:.3g} {m['unit']}"
            parts.append(text + (f" {m['stat']}" if m["stat"] else ""))
        elif float(value).is_integer():
            parts.append(f"{key.replace('_', ' ')} {int(value)}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value:.3g}")
    return ", ".join(parts)


@runtime_checkable
class PositionedSource(Source, Protocol):
    """A source that images the stage positions of an acquisition plan.

    The camera's scheduler (:mod:`rt_eda.sources.scheduler`) chooses which position is imaged
    when; the source moves there and acquires. Such a source is started free-running
    (``start(0.0)``): ``next_timepoint`` returns at once, the timing is the scheduler's::

        source.start(0.0)
        moved_s = source.move_to(p, stop)       # the stage's own time, measured
        t = source.next_timepoint(stop)         # now
        for c, z in source.frame_order(): source.read_frame(c, z, slot.pixels[c, z])
    """

    @property
    def position_names(self) -> tuple[str, ...]:
        """One name per position (the plan's, or ``p<i>``)."""
        ...

    @property
    def stack_s(self) -> float:
        """Seconds one stack holds the stage (its frames' exposures)."""
        ...

    def move_to(self, position: int, stop: StopFlag) -> float:
        """Move the stage to ``position`` and wait until it is there; the seconds it took.

        Raises
        ------
        SourceError
            The stage refused or failed (the device's message kept).
        """
        ...

    def move_estimate(self, src: int | None, dst: int) -> float:
        """Seconds a move from ``src`` (None: unknown) to ``dst`` is expected to take."""
        ...

    def event_windows(self, position: int, t_end: float,
                      min_intensity: float = 0.0) -> list[tuple[float, float]] | None:
        """The ground truth at ``position``: each event's ``(start, end)``, monotonic, that
        starts before ``t_end``; None when the source has no ground truth."""
        ...
