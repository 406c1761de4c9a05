"""The writer role: every stack of the ring, every network image and every decision, on disk.

Lifecycle (the engine's side in brackets)::

    attach the stack ring, register its pin   (every stack published from now on waits for
    [output ring] attach, register a pin       the writer before its slot can be reused)
    create the run folder's files -> READY
    loop: stacks in sequence order -> image store + frames.csv -> release the pin
          (a stack read from a sensor region: saved as the full frame, zeros outside the
           region, never the slot's stale pixels; frames.csv names the region)
          network images (lowest pinned first) -> network_images.zarr + network_index.csv
          records from the interpreter (a reader thread drains channels.writer) -> CSV files
            (a DecisionRecord -> decisions.csv, locations.csv (a row per event region of its
             Result), and intervals.csv when it changed the interval: the row names its
             trigger from the record itself)
          flush the CSV files after every batch
    until the ring is closed and drained AND ``None`` arrived on channels.writer
    close the recording (exact shapes, OME metadata) -> STATS -> STOPPED

The writer is the one consumer that may not skip: it holds a pin on every stack until the
stack is persisted, so the camera overruns (a loud, counted loss) rather than overwriting an
unsaved stack. A write that fails (a full disk: ENOSPC, or any OSError) ends the role:
FAILED with ``WriterError: ...`` naming the file and how many frames were saved, exit 1; the
recording is closed as far as the disk allows, so everything already written stays readable.
The pins are dropped on every exit path, so a dead writer never blocks the camera.

The interpreter's rows are read by a thread of their own, so a slow disk never blocks the
interpreter on a full pipe; the main thread does all the writing.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from pathlib import Path

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, RingClosedError, RtEdaError, WriterError
from rt_eda.core.messages import (
    ControlRecord,
    DecisionRecord,
    Failure,
    IntervalChange,
    RoleEventKind,
    RoleName,
    WriterReady,
    WriterRow,
    WriterStatistics,
)
from rt_eda.core.process import RoleChannels, enter_role, report
from rt_eda.core.queues import Channel, StopFlag
from rt_eda.core.stats import RecentWindow
from rt_eda.shm import PinReader, StackRing
from rt_eda.storage.recording import Recording, position_names

__all__ = ["run", "serve"]

log = logging.getLogger(__name__)

_BATCH = 16  # stacks written before the rows and network images get a turn
_IDLE_WAIT_S = 0.02  # how long an idle writer sleeps on the ring's doorbell
_KEEP_TIMES = 1 << 16
_LINGER_QUIET_S = 1.0  # after a failure: rows are drained until stop and this much quiet
_ROW_TYPES = (DecisionRecord, IntervalChange, ControlRecord)


class _Measures:
    """What the writer measures; :meth:`statistics` freezes it (with the recording's counts)
    for the engine. Write times: percentiles over the newest ``_KEEP_TIMES`` stacks, max
    over all."""

    def __init__(self) -> None:
        self.write_ms = RecentWindow(_KEEP_TIMES)
        self.max_backlog = 0
        self.rows_received = 0
        self.rows_rejected = 0

    def statistics(self, recording: Recording | None, error: str) -> WriterStatistics:
        counts = recording.stats if recording is not None else None
        return WriterStatistics(
            frames_written=counts.frames_written if counts else 0,
            stacks_written=counts.stacks_written if counts else 0,
            network_images_written=counts.network_images_written if counts else 0,
            bytes_written=counts.bytes_written if counts else 0,
            decisions=counts.decisions if counts else 0,
            intervals=counts.intervals if counts else 0,
            controls=counts.controls if counts else 0,
            path=str(recording.run_dir) if recording is not None else "",
            format=recording.format if recording is not None else "",
            write_ms=self.write_ms.percentiles(),
            max_backlog_stacks=self.max_backlog,
            rows_received=self.rows_received,
            rows_rejected=self.rows_rejected,
            error=error,
        )


class _Rows:
    """Drains ``channels.writer`` in a thread into a deque; ``done`` once ``None`` arrived."""

    def __init__(self, source: Channel[WriterRow | None] | None) -> None:
        self.items: collections.deque[WriterRow] = collections.deque()
        self.done = threading.Event()
        self._source = source
        self._stop = threading.Event()
        self.error = ""
        if source is None:
            self.done.set()
            self._thread: threading.Thread | None = None
        else:
            self._thread = threading.Thread(target=self._drain, name="writer-rows",
                                            daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        assert self._source is not None
        while not self._stop.is_set():
            try:
                msg = self._source.get(timeout=0.1)
            except queue.Empty:
                continue
            except (EOFError, OSError) as exc:  # the engine closed the queue: nothing more
                self.error = f"{type(exc).__name__}: {exc}"
                break
            if msg is None:
                break
            self.items.append(msg)
        self.done.set()

    def discard_until_done(self, stop: StopFlag) -> int:
        """After a failure: keep the interpreter's pipe from filling (its ``put`` would
        block) by discarding rows until the sentinel, or until ``stop`` is set and no row
        came for a second. Returns how many were discarded."""
        discarded = 0
        quiet_since = time.monotonic()
        while not self.done.wait(0.05):
            if self.items:
                discarded += len(self.items)
                self.items.clear()
                quiet_since = time.monotonic()
            elif stop.is_set() and time.monotonic() - quiet_since > _LINGER_QUIET_S:
                break
        return discarded + len(self.items)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def run(config: Config, channels: RoleChannels) -> None:
    """Entry point of the writer process (exits 1 after a failure)."""
    enter_role(RoleName.WRITER, channels)
    if serve(config, channels) != 0:
        raise SystemExit(1)


def serve(config: Config, channels: RoleChannels) -> int:
    """The writer role without the process set-up of :func:`run` (tests run it in a thread).

    Reports READY once both pins are registered and the files are created, STATS and
    STOPPED at the end, FAILED (with ``WriterError: ...``) on a failure. Returns 0 after a
    clean end, 1 after a failure.
    """
    me = RoleName.WRITER
    stats = _Measures()
    ring: StackRing | None = None
    out_ring: StackRing | None = None
    pins: list[tuple[StackRing, PinReader]] = []
    recording: Recording | None = None
    rows: _Rows | None = None
    error: Failure | None = None
    try:
        if not config.run.save:
            raise ConfigError("writer: run.save is not set (the writer needs a folder)")
        if not channels.ring:
            raise WriterError("writer: no stack ring was named in the channels")
        ring = StackRing.attach(channels.ring)
        pin = ring.register_pin()
        pins.append((ring, pin))
        out_pin: PinReader | None = None
        network_shape: tuple[int, int] | None = None
        if channels.output_ring and config.writer.save_network_images:
            out_ring = StackRing.attach(channels.output_ring)
            out_pin = out_ring.register_pin()
            pins.append((out_ring, out_pin))
            network_shape = (out_ring.spec.height, out_ring.spec.width)
        spec = ring.spec
        recording = Recording(Path(config.run.save), spec.shape, spec.np_dtype,
                              fmt=config.writer.format, config_toml=config.to_toml(),
                              network_shape=network_shape,
                              positions=position_names(config, ring.positions),
                              plan_json=_plan_json(config))
        rows = _Rows(channels.writer)
        report(channels, me, 0, RoleEventKind.READY,
               WriterReady(str(recording.run_dir), recording.format))
        log.info("writer: recording %s %s stacks to %s (%s)", spec.shape, spec.dtype,
                 recording.run_dir, recording.format)
        _loop(ring, pin, out_pin, recording, rows, stats)
        recording.close()
        if rows.error:
            log.warning("writer: the row queue ended without its sentinel (%s)", rows.error)
    except RtEdaError as exc:
        error = Failure.from_exception(exc)
    except OSError as exc:
        saved = recording.stats.frames_written if recording is not None else 0
        error = Failure("WriterError", f"{exc}; {saved} frame(s) saved")
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.exception("writer failed")
        error = Failure.from_exception(exc)
    finally:
        for _, p in pins:
            p.unregister()  # a dead or failed writer never blocks the camera
        if recording is not None and not recording.closed:
            recording.abandon()
        for r in (out_ring, ring):
            if r is not None:
                r.close()
        if error is not None:
            log.error("writer: %s", error.text)
            report(channels, me, 0, RoleEventKind.FAILED, error)
        report(channels, me, 0, RoleEventKind.STATS,
               stats.statistics(recording, error.text if error is not None else ""))
        if rows is not None:
            if error:
                lost = rows.discard_until_done(channels.stop)
                if lost:
                    log.warning("writer: %d row(s) from the interpreter not recorded", lost)
            rows.stop()
    if error is not None:
        return 1
    report(channels, me, 0, RoleEventKind.STOPPED)
    return 0


def _loop(ring: StackRing, pin: PinReader, out_pin: PinReader | None, recording: Recording,
          rows: _Rows, stats: _Measures) -> None:
    stacks_done = False
    network_done = out_pin is None
    idle = False
    while True:
        busy = False
        if not stacks_done:
            try:
                busy |= _write_stacks(ring, pin, recording, stats,
                                      _IDLE_WAIT_S if idle else 0.0)
            except RingClosedError:
                stacks_done = True
                log.info("writer: stack ring closed and drained (%d stacks written)",
                         recording.stats.stacks_written)
        if out_pin is not None and not network_done:
            try:
                busy |= _write_network(out_pin, recording,
                                       _IDLE_WAIT_S if idle and stacks_done else 0.0)
            except RingClosedError:
                network_done = True
        finished_rows = rows.done.is_set()  # read before draining: nothing comes after
        while rows.items:
            busy = True
            item = rows.items.popleft()
            stats.rows_received += 1
            if not isinstance(item, _ROW_TYPES):
                stats.rows_rejected += 1
                log.warning("writer: ignoring unexpected message %r", item)
                continue
            recording.log(item)
        if busy:
            recording.flush()
        if stacks_done and network_done and finished_rows and not rows.items:
            return
        if stacks_done and network_done and not busy:
            rows.done.wait(_IDLE_WAIT_S)
        idle = not busy


def _plan_json(config: Config) -> str | None:
    """The plan to save with the recording (``plan.json``), None without one."""
    if not config.camera.plan:
        return None
    from rt_eda.core.plan import load_plan

    try:
        return load_plan(config.camera.plan).text + "\n"
    except ConfigError as exc:  # checked when the configuration loaded; gone since
        log.warning("writer: the plan is not saved with the run: %s", exc)
        return None


def _write_stacks(ring: StackRing, pin: PinReader, recording: Recording,
                  stats: _Measures, wait_s: float) -> bool:
    """Write up to a batch of stacks in sequence order; True if any. RingClosedError once
    the ring is closed and every stack is written."""
    wrote = False
    for _ in range(_BATCH):
        stack = pin.next(timeout=wait_s)
        if stack is None:
            break
        wait_s = 0.0
        backlog = ring.newest_seq() - stack.seq
        stats.max_backlog = max(stats.max_backlog, backlog)
        t0 = time.perf_counter()
        recording.write_stack(stack.seq, stack.pixels, stack.frame_times, stack.interval_s,
                              stack.position, stack.frame)
        stats.write_ms.add((time.perf_counter() - t0) * 1e3)
        pin.release(stack)
        wrote = True
    return wrote


def _write_network(pin: PinReader, recording: Recording, wait_s: float) -> bool:
    """Write up to a batch of network images (lowest sequence number first); True if any."""
    wrote = False
    for _ in range(_BATCH):
        image = pin.next_any(timeout=wait_s)
        if image is None:
            break
        wait_s = 0.0
        recording.write_network_image(image.seq, image.pixels[0, 0], image.t_published)
        pin.release(image)
        wrote = True
    return wrote
