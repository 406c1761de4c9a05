"""Replay of a recorded acquisition (``replay:PATH``) as an rt-eda source.

What it reads
-------------
``PATH`` is one of:

* a run folder as rt-eda's writer saves it: ``images.ome.zarr`` (or ``images.ome.tif``/
  ``images.ome.tiff``) and, optionally, ``frames.csv`` beside it;
* an OME-Zarr group (NGFF v0.4 or v0.5: ``multiscales`` in the group attributes, under ``ome``
  for v0.5; the first dataset, normally array ``"0"``, is replayed) or a bare zarr array;
* a TIFF, OME-TIFF or ImageJ hyperstack (series 0, read with tifffile).

Axes are named by the file (NGFF ``axes``, OME ``DimensionOrder``, ImageJ hyperstack axes);
the names must be among ``t, c, z, y, x`` with ``y, x`` last (missing ``t``, ``c`` or ``z``
count as size 1). A file without axis names (a plain TIFF or zarr array) must have exactly 5
dimensions, taken as ``(t, c, z, y, x)``. Pixels must be integers or floats. Anything else is a
:class:`~rt_eda.core.errors.ConfigError` naming the axes, shape or dtype found.

At :meth:`~ReplaySource.open` only metadata are read, and the files of the image data are
checked with ``stat`` (see :mod:`rt_eda.core.imagefiles`). Each timepoint's stack is read
when :meth:`~ReplaySource.next_timepoint` chooses it, before it waits for the timepoint to be
due; :meth:`~ReplaySource.read_frame` copies from it.

Recorded timing
---------------
The time of each recorded timepoint comes from, in order: ``frames.csv`` (columns ``seq,
t_index, c, z, t_exposure, interval_s``; a timepoint's time is its earliest ``t_exposure``,
and each frame keeps its offset from it), OME-TIFF ``Plane`` ``DeltaT`` (or ``Pixels``
``TimeIncrement``), ImageJ ``finterval``, or the NGFF scale of the ``t`` axis (with its unit).
Timepoints without a recorded time (rows missing from ``frames.csv``: it was cut short, or
rows were unreadable) get times estimated from their neighbours: interpolated between
recorded ones, extrapolated at the median recorded spacing after the last (or before the
first) one. With fewer than two recorded times the recording is replayed at the commanded
interval.

What cannot be replayed (said loudly, never silently)
-------------------------------------------------------
Every timepoint the recording declares is replayed, except those whose data are not there or
cannot be read; those are skipped, and each class of problem is logged once as a WARNING that
names the timepoints and why, and counted in :meth:`~ReplaySource.statistics` (the run
summary's ``source_statistics``):

* ``timepoints_missing``: no data recorded (no chunk file; past the end of a TIFF that was cut
  short; a zarr shape larger than the data written);
* ``timepoints_damaged``: data present but unreadable (a chunk file of the wrong size, a read
  that failed while replaying);
* ``timepoints_untimed``: replayed, at an estimated time; ``frames_csv_bad_rows``: rows of
  ``frames.csv`` that could not be used (an unusable ``frames.csv`` gives no timing at all,
  also with a WARNING); ``zarr_chunks_absent``: chunk files absent from a zarr store not
  written by rt-eda, replayed as its fill value (writers omit chunks holding only that).

So ``timepoints + timepoints_skipped + timepoints_missing + timepoints_damaged +
timepoints_not_reached == recorded_timepoints`` at any moment (``timepoints_not_reached`` is
0 once the replay is exhausted). A recording with no replayable timepoint is a
:class:`~rt_eda.core.errors.ConfigError` at :meth:`~ReplaySource.open` naming why.

How it replays
--------------
``timing="recorded"`` (the default when the recording has timing): the replay clock runs in
real time from :meth:`~ReplaySource.start`, aligned with the first recorded timepoint. The next
timepoint is due at ``max(previous + interval, recorded time of the next timepoint)``, and the
timepoint shown is the one recorded nearest the replay clock at that moment, never one already
shown. So at intervals shorter than the recorded spacing every timepoint plays, at its recorded
timing; at longer ones the replay skips forward in recorded time as a slow acquisition would
(``timepoints_skipped``). Free-run (interval 0) plays at the recorded timing. A caller that
comes back late gets the timepoint nearest to now.

``timing="commanded"`` (the default without recorded timing): every timepoint plays, one per
commanded interval (free-run: as fast as the caller reads).

When the recording is over, :meth:`~ReplaySource.next_timepoint` returns None and
:attr:`~ReplaySource.exhausted` is True (the camera role then ends the acquisition, a normal
end: :attr:`~ReplaySource.end_reason` says how far it got).

Exposure times returned by :meth:`~ReplaySource.read_frame` are on the replay clock: the
timepoint's time plus the frame's recorded offset within its timepoint (``frames.csv`` or OME
``DeltaT``), or its index in :meth:`~ReplaySource.frame_order` times ``exposure_s``.

Where each part lives: :mod:`rt_eda.core.imagefiles` and :mod:`rt_eda.core.runfolder` (reading
the files), :mod:`rt_eda.sources._replay_timing` (recorded times, the replay clock's choice of
the next timepoint), :mod:`rt_eda.sources._replay_settings` (the settings, derived from the
validated ``camera.source``); this module holds the source: opening, reading ahead, counting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.core.imagefiles import AXES, GapKind, Reader, format_indices, open_reader
from rt_eda.core.runfolder import FRAME_COLUMNS_REQUIRED as CSV_COLUMNS
from rt_eda.core.runfolder import FRAMES_CSV, read_frames_csv
from rt_eda.shm import StackSpec
from rt_eda.sources._settings import SettingsSource

from ._pacing import checked_interval, wait_until
from ._protocol import StopFlag, describe_statistics
from ._replay_settings import ReplaySettings
from ._replay_timing import ReplaySchedule, ReplayTiming, recorded_times

if TYPE_CHECKING:
    from rt_eda.core.config import Config

__all__ = [
    "AXES",
    "CSV_COLUMNS",
    "FRAMES_CSV",
    "ReplaySettings",
    "ReplaySource",
    "ReplayTiming",
    "make_replay_source",
]

log = logging.getLogger(__name__)


def make_replay_source(config: Config) -> ReplaySource:
    """The source for ``camera.source = "replay:PATH"`` (not opened), with
    :meth:`ReplaySettings.from_config` (nothing checked again).

    The recording decides the stack shape; ``camera.exposure_ms`` spaces the frames of a
    timepoint when the recording has no per-frame times.

    Raises
    ------
    ConfigError
        ``camera.source`` is not a replay.
    """
    return ReplaySource(ReplaySettings.from_config(config))


# --------------------------------------------------------------------------- the source


@dataclass(slots=True)
class _Counters:
    timepoints: int = 0
    frames: int = 0
    skipped: int = 0
    late: int = 0
    missing: int = 0
    damaged: int = 0
    untimed: int = 0
    csv_bad_rows: int = 0
    chunks_absent: int = 0
    read_s: float = 0.0


class ReplaySource(SettingsSource[ReplaySettings]):
    """A recorded acquisition replayed as a source (see the module docstring).

    Not thread-safe: the camera role's thread drives it.
    """

    def __init__(self, settings: ReplaySettings) -> None:
        self._settings = settings
        self._reader: Reader | None = None
        self._spec: StackSpec | None = None
        self._probed: StackSpec | None = None  # spec asked before open()
        self._timing = ReplayTiming.COMMANDED
        self._times: np.ndarray | None = None  # per recorded timepoint (NaN: not playable)
        self._offsets: np.ndarray | None = None
        self._order = np.zeros(0, np.int64)  # the playable recorded timepoints, in order
        self._schedule: ReplaySchedule | None = None  # after open()
        self._stack: np.ndarray | None = None  # the current timepoint, read ahead
        self._started = False
        self._running = False
        self._exhausted = False
        self._interval = 0.0
        self._pos = -1  # position in _order of the timepoint being shown
        self._index = -1  # the recorded timepoint being shown
        self._read_failures_warned = False
        self._counters = _Counters()

    # ------------------------------------------------------------------ properties

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack, ``(C, Z, Y, X)`` of the recording.

        Known before :meth:`open`: on an unopened source the first call checks the recording
        as :meth:`open` would (metadata and a ``stat`` of the data, nothing logged), so the
        engine refuses a recording with nothing to replay before any process starts.

        Raises
        ------
        ConfigError
            The recording cannot be replayed (what :meth:`open` would raise).
        """
        if self._spec is not None:
            return self._spec
        if self._probed is None:
            probe = ReplaySource(self._settings)
            try:
                self._probed = probe._open(quiet=True)
            finally:
                probe.close()
        return self._probed

    @property
    def exhausted(self) -> bool:
        """True once the recording has been played to its end."""
        return self._exhausted

    @property
    def end_reason(self) -> str:
        """How the replay ended, for the run summary (``""`` before it is exhausted)."""
        if not self._exhausted:
            return ""
        c = self._counters
        text = (f"end of the recording: {c.timepoints} of {self.n_timepoints} recorded "
                f"timepoints replayed")
        parts = [f"{n} {what}" for n, what in (
            (c.skipped, "skipped by the interval"), (c.missing, "missing"),
            (c.damaged, "damaged")) if n]
        return text + (f" ({', '.join(parts)})" if parts else "")

    @property
    def timing(self) -> ReplayTiming:
        """The timing in use (``recorded`` or ``commanded``; known after :meth:`open`)."""
        return self._timing

    @property
    def n_timepoints(self) -> int:
        """Timepoints the recording declares (after :meth:`open`)."""
        return 0 if self._reader is None else self._reader.shape[0]

    @property
    def playable(self) -> np.ndarray:
        """The recorded timepoints that can be replayed (after :meth:`open`; a read that
        fails while replaying removes one later)."""
        return self._order.copy()

    @property
    def current_index(self) -> int:
        """The recorded timepoint of the current stack (-1 before the first)."""
        return self._index

    @property
    def recorded_times(self) -> np.ndarray | None:
        """Time of each recorded timepoint, seconds from the first replayable one (estimated
        where not recorded, NaN where the timepoint cannot be replayed); None without
        recorded timing."""
        return None if self._times is None else self._times.copy()

    # ------------------------------------------------------------------ Source protocol

    def open(self) -> StackSpec:
        """Open the recording (metadata, and a ``stat`` of its data files) and return the
        stack shape; log one WARNING per class of problem found (see the module docstring).

        Calling it again on an open source is a no-op.

        Raises
        ------
        ConfigError
            Missing path, unknown format, wrong axes, dimensions or dtype, recorded times
            that go backwards, no timepoint that can be replayed, or ``timing="recorded"``
            for a recording without timing (what was found is named).
        """
        return self._open(quiet=False)

    def _open(self, *, quiet: bool) -> StackSpec:
        if self._reader is not None:
            return self.spec
        reader, csv_path = open_reader(Path(self._settings.path))
        try:
            self._setup(reader, csv_path, log.debug if quiet else log.warning)
        except BaseException:
            reader.close()
            raise
        return self.spec

    def _setup(self, reader: Reader, csv_path: Path | None, warn: Any) -> None:
        c = self._counters
        n_t = reader.shape[0]
        c.chunks_absent = reader.chunks_absent
        for note in reader.notes:
            warn("replay: %s", note)
        playable = np.ones(n_t, bool)
        for gap in reader.gaps:
            playable[list(gap.timepoints)] = False
            if gap.kind is GapKind.MISSING:
                c.missing += len(gap.timepoints)
            else:
                c.damaged += len(gap.timepoints)
            warn("replay: %d of %d timepoints cannot be replayed, %s: %s (timepoints "
                        "%s); they are skipped", len(gap.timepoints), n_t, gap.kind.value,
                        gap.why, format_indices(gap.timepoints))
        if not playable.any():
            why = "; ".join(f"{g.kind.value}: {g.why}" for g in reader.gaps) or "no timepoints"
            raise ConfigError(f"replay: nothing to replay in {reader.description}: {why}")
        frame_t = reader.frame_times
        if csv_path is not None:
            found = read_frames_csv(csv_path, reader.shape)
            c.csv_bad_rows = found.bad_rows
            if found.bad_rows:
                warn("replay: %s: %d row(s) unusable, ignored (first: %s)", csv_path,
                            found.bad_rows, found.first_bad)
            if found.frame_times is not None:
                frame_t = found.frame_times
            else:
                warn("replay: %s is unusable (%s): no recorded times from it",
                            csv_path, found.unusable)
        recorded = recorded_times(reader.description, frame_t, reader.step_s, playable, warn)
        times = None if recorded is None else recorded.times
        c.untimed = 0 if recorded is None else recorded.untimed
        timing = ReplayTiming(self._settings.timing)
        if timing is ReplayTiming.AUTO:
            timing = ReplayTiming.RECORDED if times is not None else ReplayTiming.COMMANDED
        elif timing is ReplayTiming.RECORDED and times is None:
            raise ConfigError(
                f"replay: timing 'recorded' asked, but {reader.description} has no "
                f"recorded timing (no usable {FRAMES_CSV}, OME DeltaT/TimeIncrement, ImageJ "
                "finterval or NGFF t scale)"
            )
        _, n_c, n_z, h, w = reader.shape
        spec = StackSpec(n_c, n_z, h, w, reader.dtype.name)
        self._order = np.flatnonzero(playable)
        self._schedule = ReplaySchedule(
            timing, None if times is None else times[self._order], self._order.size)
        self._stack = np.empty(spec.shape, spec.np_dtype)
        self._reader, self._spec, self._timing = reader, spec, timing
        self._times = times
        self._offsets = None if recorded is None else recorded.offsets
        (log.debug if warn is log.debug else log.info)(
            "replay source open: %s, %d timepoints (%d replayable), %s timing%s%s",
            reader.description, n_t, self._order.size, timing.value,
            f" from {csv_path}" if csv_path is not None and frame_t is not None else "",
            f" ({np.nanmax(times):.4g} s recorded)" if times is not None else "",
        )

    def start(self, interval_s: float) -> None:
        """Start the replay clock now; the first replayable timepoint is due at once.

        Raises
        ------
        SourceError
            The source is not open.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if self._reader is None or self._schedule is None:
            raise SourceError("replay source: start() called before open()")
        self._interval = checked_interval(interval_s)
        self._schedule.start(time.monotonic())
        self._pos = self._index = -1
        self._exhausted = False
        self._started = self._running = True

    def set_interval(self, interval_s: float) -> None:
        """Change the interval from the next timepoint.

        Raises
        ------
        SourceError
            The replay was not started.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if not self._started:
            raise SourceError("replay source: set_interval() called before start()")
        self._interval = checked_interval(interval_s)

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """Choose the next timepoint, read its stack, sleep until it is due; return its time
        on the replay clock.

        A stack that cannot be read is skipped (counted in ``timepoints_damaged``, the first
        one logged as a WARNING) and the next one is chosen.

        Returns
        -------
        float or None
            The timepoint's ``time.monotonic()`` time; None when ``stop`` is set, :meth:`stop`
            was called, or the recording is over (then :attr:`exhausted` is True).

        Raises
        ------
        SourceError
            The replay was not started.
        """
        schedule = self._schedule
        if not self._started or schedule is None:
            raise SourceError("replay source: next_timepoint() called before start()")
        if not self._running or self._exhausted or stop.is_set():
            return None
        nxt = self._pos + 1
        while True:
            chosen = schedule.choose(nxt, self._interval, time.monotonic())
            if chosen is None:
                self._end(nxt)
                return None
            pos, due, late = chosen
            self._counters.late += late
            self._counters.skipped += pos - nxt
            if self._load(pos):
                break
            nxt = pos + 1
            if stop.is_set():
                return None
        if wait_until(due, stop) is None:
            return None
        self._counters.timepoints += 1
        self._pos, self._index = pos, int(self._order[pos])
        schedule.shown(due)
        return due

    def _load(self, pos: int) -> bool:
        """Read the stack of playable position ``pos`` ahead; False if it cannot be read."""
        assert self._reader is not None and self._stack is not None
        index = int(self._order[pos])
        t = time.perf_counter()
        try:
            self._reader.read_stack(index, self._stack)
        except SourceError as exc:
            self._counters.damaged += 1
            if not self._read_failures_warned:
                self._read_failures_warned = True
                log.warning("replay: timepoint %d cannot be read, skipped (counted in "
                            "timepoints_damaged; later ones only counted): %s", index, exc)
            else:
                log.debug("replay: timepoint %d cannot be read: %s", index, exc)
            return False
        self._counters.read_s += time.perf_counter() - t
        return True

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major: every z of channel 0, then of channel 1, ..."""
        spec = self.spec
        for c in range(spec.channels):
            for z in range(spec.z_slices):
                yield c, z

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Copy frame (c, z) of the current recorded timepoint into ``out`` (H, W).

        Returns
        -------
        float
            The frame's exposure time on the replay clock (see the module docstring).

        Raises
        ------
        SourceError
            No current timepoint, ``c``/``z`` out of range, or ``out`` of the wrong shape or
            dtype (both named).
        """
        spec = self.spec
        if (
            self._index < 0 or not self._started or self._stack is None
            or self._schedule is None
        ):
            raise SourceError("replay source: read_frame() called before next_timepoint()")
        if not (0 <= c < spec.channels and 0 <= z < spec.z_slices):
            raise SourceError(
                f"replay source: frame (c={c}, z={z}) out of range: "
                f"{spec.channels} channels x {spec.z_slices} z-slices"
            )
        if out.shape != (spec.height, spec.width) or out.dtype != spec.np_dtype:
            raise SourceError(
                f"replay source: frame buffer {out.shape} {out.dtype}, expected "
                f"{(spec.height, spec.width)} {spec.dtype}"
            )
        np.copyto(out, self._stack[c, z])
        self._counters.frames += 1
        due = self._schedule.due
        if self._offsets is not None:
            return due + float(self._offsets[self._index, c, z])
        return due + (c * spec.z_slices + z) * self._settings.exposure_s

    def stop(self) -> None:
        """Stop the replay: :meth:`next_timepoint` returns None from now on."""
        if self._running:
            self._running = False
            log.info("replay source stopped: %s", describe_statistics(self.statistics()))

    def close(self) -> None:
        """Close the file. Safe to call twice, and on a source never opened."""
        self._running = False
        reader, self._reader = self._reader, None
        self._stack = None
        if reader is not None:
            reader.close()

    def statistics(self) -> dict[str, float]:
        """Counters since construction (see the module docstring for how they add up).

        Keys: ``timepoints`` (replayed), ``frames``, ``recorded_timepoints`` (declared by
        the recording), ``timepoints_skipped`` (replayable ones passed over: slow interval or
        late caller), ``timepoints_missing``, ``timepoints_damaged``,
        ``timepoints_not_reached``, ``timepoints_untimed`` (replayable ones whose time was
        estimated), ``frames_csv_bad_rows``, ``zarr_chunks_absent`` (replayed as the fill
        value), ``timepoints_late`` (times the caller came back after the next timepoint was
        due), ``last_index`` (recorded timepoint last shown, -1 before), ``exhausted`` (1.0
        once over), ``read_ms_mean`` (per stack read).
        """
        c = self._counters
        accounted = c.timepoints + c.skipped + c.missing + c.damaged
        return {
            "timepoints": c.timepoints,
            "frames": c.frames,
            "recorded_timepoints": self.n_timepoints,
            "timepoints_skipped": c.skipped,
            "timepoints_missing": c.missing,
            "timepoints_damaged": c.damaged,
            "timepoints_not_reached": max(0, self.n_timepoints - accounted),
            "timepoints_untimed": c.untimed,
            "frames_csv_bad_rows": c.csv_bad_rows,
            "zarr_chunks_absent": c.chunks_absent,
            "timepoints_late": c.late,
            "last_index": self._index,
            "exhausted": 1.0 if self._exhausted else 0.0,
            "read_ms_mean": 1e3 * c.read_s / c.timepoints if c.timepoints else 0.0,
        }

    # ------------------------------------------------------------------ internals

    def _end(self, nxt: int) -> None:
        """The recording is over; replayable timepoints not reached count as skipped."""
        if not self._exhausted:
            self._counters.skipped += max(0, self._order.size - nxt)
            self._exhausted = True
            log.info("replay source: %s", self.end_reason)

