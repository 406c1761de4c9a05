"""Replay of a multi-position run folder (``replay:DIR`` of a run saved with a plan).

A run folder whose ``images.ome.zarr`` holds one image per position (the bioformats2raw
layout, :mod:`rt_eda.core.runfolder`) is replayed as its positions were acquired: every
recorded stack, in recorded time order, each with its position, on a replay clock that runs
in real time from :meth:`~ReplayPositions.start` (aligned with the first recorded stack).

Each position has its own interval (the interpreter's commands name their position:
:meth:`~ReplayPositions.set_position_interval`). A recorded stack is shown when its position
is due: at least that position's interval (less half its shortest recorded spacing, so
recording jitter does not skip a stack) after the position's last stack shown; the others
are skipped and counted (``timepoints_skipped``), as a slower acquisition would have left them
out. A position recorded more slowly than it is now asked to be imaged is shown at its
recorded rate (a replay cannot make frames that were not taken).

The recording's ``truth.csv`` (a synthetic run's ground truth, per position) is mapped onto
the replay clock (:meth:`~ReplayPositions.event_windows`), so a replay is scored like a live
run: its summary's ``eda``.

Stacks with no data (a chunk file missing, cut short by a crash) are left out of the
timeline at :meth:`~ReplayPositions.open` and counted (``timepoints_missing``); one that
fails to read while replaying is skipped and counted (``timepoints_damaged``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.core.imagefiles import ZarrReader
from rt_eda.core.runfolder import (
    FRAMES_CSV,
    IMAGES_ZARR,
    TRUTH_CSV,
    read_table,
    read_truth,
    store_positions,
)
from rt_eda.shm import StackSpec
from rt_eda.sources._settings import SettingsSource

from ._pacing import checked_interval, wait_until
from ._protocol import StopFlag
from ._replay_settings import ReplaySettings

__all__ = ["ReplayPositions", "is_multi_position"]

log = logging.getLogger(__name__)


def is_multi_position(path: str | Path) -> bool:
    """Whether ``path`` is a run folder recorded at several positions."""
    images = Path(path) / IMAGES_ZARR
    try:
        series = store_positions(images)
    except (OSError, ValueError):
        return False
    return series is not None and len(series) > 1


@dataclass(slots=True)
class _Counters:
    timepoints: int = 0
    frames: int = 0
    skipped: int = 0
    missing: int = 0
    damaged: int = 0


class ReplayPositions(SettingsSource[ReplaySettings]):
    """The stacks of a multi-position run folder, replayed (see the module docstring).

    Self-timed: :meth:`next_timepoint` chooses the next stack and its position
    (:attr:`position`); the camera publishes it there. One thread only.
    """

    def __init__(self, settings: ReplaySettings) -> None:
        self._settings = settings
        self._readers: list[ZarrReader] = []
        self._names: tuple[str, ...] = ()
        self._spec: StackSpec | None = None
        # The timeline: one row per replayable stack, in recorded order.
        self._t_rec = np.zeros(0)
        self._pos = np.zeros(0, np.int64)
        self._t_index = np.zeros(0, np.int64)
        self._offsets: dict[tuple[int, int], np.ndarray] = {}
        self._tolerance: list[float] = []
        self._truth: dict[int, list[tuple[float, float]]] | None = None
        self._intervals: list[float] = []
        self._last: list[float] = []
        self._cursor = 0
        self._t0 = 0.0
        self._rec0 = 0.0
        self._stack: np.ndarray | None = None
        self._t_current = 0.0
        self._offset_key = (0, 0)
        self.position = 0
        self._running = False
        self._exhausted = False
        self._counters = _Counters()

    # -- what it replays -------------------------------------------------------------------
    @property
    def spec(self) -> StackSpec:
        """Every position's stack shape (after :meth:`open`)."""
        if self._spec is None:
            raise SourceError("replay: spec is known only after open()")
        return self._spec

    @property
    def position_names(self) -> tuple[str, ...]:
        """The recorded positions' names."""
        return self._names

    @property
    def exhausted(self) -> bool:
        """True once every recorded stack was shown or skipped."""
        return self._exhausted

    @property
    def end_reason(self) -> str:
        """How the replay ended ("" before)."""
        if not self._exhausted:
            return ""
        c = self._counters
        return (f"end of the recording: {c.timepoints} of {len(self._t_rec)} recorded stacks "
                f"at {len(self._readers)} positions replayed ({c.skipped} skipped by the "
                f"positions' intervals)")

    def open(self) -> StackSpec:
        """Open every position's image and the timeline of ``frames.csv``.

        Raises
        ------
        ConfigError
            Not a multi-position run folder; the positions' stacks differ in shape; no
            recorded time (``frames.csv`` missing or without positions); nothing to replay.
        """
        if self._spec is not None:
            return self._spec
        folder = Path(self._settings.path)
        images = folder / IMAGES_ZARR
        try:
            series = store_positions(images)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"replay: {images}: unreadable metadata ({exc})") from None
        if not series:
            raise ConfigError(f"replay: {folder} is not a multi-position run folder")
        self._readers = [ZarrReader(images / key) for key in series]
        shapes = {r.shape[1:] for r in self._readers}
        if len(shapes) != 1 or len({str(r.dtype) for r in self._readers}) != 1:
            raise ConfigError(f"replay: {images}: the positions' images differ in stack shape "
                              f"or type ({sorted(shapes)})")
        c, z, y, x = next(iter(shapes))
        self._spec = StackSpec(c, z, y, x, str(self._readers[0].dtype))
        self._names = self._position_names(images, len(series))
        self._timeline(folder / FRAMES_CSV)
        self._truth = read_truth(folder / TRUTH_CSV)
        log.info("replay: %s, %d positions, %d stacks (%d without data)", folder,
                 len(series), len(self._t_rec), self._counters.missing)
        return self._spec

    @staticmethod
    def _position_names(images: Path, n: int) -> tuple[str, ...]:
        import json

        try:
            rt = json.loads((images / "zarr.json").read_bytes())["attributes"]["rt_eda"]
            names = tuple(str(v) for v in rt.get("names", ()))
        except (OSError, ValueError, KeyError, TypeError):
            names = ()
        return names if len(names) == n else tuple(f"p{p}" for p in range(n))

    def _timeline(self, frames_csv: Path) -> None:
        table = read_table(frames_csv)
        need = ("position", "t_index", "c", "z", "t_exposure")
        if not table or any(k not in table for k in need):
            raise ConfigError(f"replay: {frames_csv} is missing or has no columns "
                              f"{list(need)}: a multi-position recording is replayed at its "
                              "recorded times")
        pos, t_index = table["position"].astype(np.int64), table["t_index"].astype(np.int64)
        c, z = table["c"].astype(np.int64), table["z"].astype(np.int64)
        t_exp = table["t_exposure"].astype(np.float64)
        assert self._spec is not None
        nc, nz = self._spec.channels, self._spec.z_slices
        stacks: dict[tuple[int, int], np.ndarray] = {}
        for p, t, ci, zi, te in zip(pos, t_index, c, z, t_exp, strict=True):
            if not (0 <= p < len(self._readers) and 0 <= ci < nc and 0 <= zi < nz):
                continue
            times = stacks.setdefault((int(p), int(t)), np.full(nc * nz, np.nan))
            times[ci * nz + zi] = te
        rows = []
        for (p, t), times in stacks.items():
            reader = self._readers[p]
            gone = {k for g in reader.gaps for k in g.timepoints}
            if t >= reader.shape[0] or t in gone or not np.isfinite(times).any():
                self._counters.missing += 1
                continue
            first = float(np.nanmin(times))
            self._offsets[(p, t)] = np.nan_to_num(times - first, nan=0.0)
            rows.append((first, p, t))
        if not rows:
            raise ConfigError(f"replay: {frames_csv.parent}: no recorded stack can be replayed")
        rows.sort()
        self._t_rec = np.asarray([r[0] for r in rows])
        self._pos = np.asarray([r[1] for r in rows], np.int64)
        self._t_index = np.asarray([r[2] for r in rows], np.int64)
        self._tolerance = []
        for p in range(len(self._readers)):
            gaps = np.diff(self._t_rec[self._pos == p])
            self._tolerance.append(float(gaps.min()) / 2 if gaps.size else 0.0)

    # -- the Source protocol ---------------------------------------------------------------
    def start(self, interval_s: float) -> None:
        """Start the replay clock now (every position at ``interval_s``)."""
        self.open()
        self._intervals = [checked_interval(interval_s)] * len(self._readers)
        self._last = [-math.inf] * len(self._readers)
        self._cursor = 0
        self._t0 = time.monotonic()
        self._rec0 = float(self._t_rec[0])
        self._running = True

    def set_interval(self, interval_s: float) -> None:
        """Every position's interval."""
        self._intervals = [checked_interval(interval_s)] * len(self._readers)

    def set_position_interval(self, position: int, interval_s: float) -> None:
        """One position's interval (from its next stack on)."""
        if 0 <= position < len(self._intervals):
            self._intervals[position] = checked_interval(interval_s)

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """Wait for the next recorded stack of a position that is due; its replay time
        (:attr:`position` says where). None when stopped or at the end."""
        while self._running and not stop.is_set():
            if self._cursor >= len(self._t_rec):
                self._exhausted = True
                return None
            k = self._cursor
            p = int(self._pos[k])
            t_rec = float(self._t_rec[k])
            self._cursor += 1
            if t_rec < self._last[p] + self._intervals[p] - self._tolerance[p]:
                self._counters.skipped += 1
                continue
            due = self._t0 + (t_rec - self._rec0)
            assert self._spec is not None
            stack = np.empty(self._spec.shape, self._spec.np_dtype)
            try:
                self._readers[p].read_stack(int(self._t_index[k]), stack)
            except (OSError, ValueError, ConfigError, SourceError) as exc:
                self._counters.damaged += 1
                log.warning("replay: stack %d of position %d cannot be read: %s",
                            int(self._t_index[k]), p, exc)
                continue
            if wait_until(due, stop) is None:
                return None
            self._last[p] = t_rec
            self._stack = stack
            self._t_current = due
            self._offset_key = (p, int(self._t_index[k]))
            self.position = p
            self._counters.timepoints += 1
            return due
        return None

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major, as recorded."""
        assert self._spec is not None
        for c in range(self._spec.channels):
            for z in range(self._spec.z_slices):
                yield c, z

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Frame (c, z) of the current stack; its replay time (the recorded offset kept)."""
        if self._stack is None:
            raise SourceError("replay: read_frame() called before next_timepoint()")
        np.copyto(out, self._stack[c, z])
        self._counters.frames += 1
        assert self._spec is not None
        return self._t_current + float(self._offsets[self._offset_key][
            c * self._spec.z_slices + z])

    def event_windows(self, position: int, t_end: float,
                      min_intensity: float = 0.0) -> list[tuple[float, float]] | None:
        """The recording's ``truth.csv`` for ``position``, on the replay clock (events that
        start before ``t_end``); None without a truth file."""
        if self._truth is None:
            return None
        shift = self._t0 - self._rec0
        return [(a + shift, b + shift) for a, b in self._truth.get(position, [])
                if a + shift < t_end]

    def stop(self) -> None:
        """Stop: :meth:`next_timepoint` returns None from now on."""
        self._running = False

    def close(self) -> None:
        """Close every position's image."""
        for r in self._readers:
            r.close()
        self._readers = []
        self._running = False

    def statistics(self) -> dict[str, float]:
        """``timepoints`` shown, ``timepoints_skipped`` (by the intervals),
        ``timepoints_missing`` (no data), ``timepoints_damaged`` (a read failed), frames,
        positions, recorded stacks."""
        c = self._counters
        return {"timepoints": c.timepoints, "frames": c.frames, "timepoints_skipped": c.skipped,
                "timepoints_missing": c.missing, "timepoints_damaged": c.damaged,
                "positions": len(self._names), "recorded_stacks": len(self._t_rec)}
