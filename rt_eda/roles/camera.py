"""The camera role: drives one source, fills the stack ring, applies interval commands.

Lifecycle (the engine's side in brackets)::

    open source -> READY (detail: the stack shape as JSON)
    [engine creates the ring] <- CameraControl('attach', ring name)
    [every role is ready]     <- CameraControl('start', interval)
    loop: next timepoint -> fill a slot frame by frame -> publish
          commands from the interpreter are applied between timepoints
    [stop event] or source exhausted -> source stopped and closed -> STATS -> STOPPED

The camera never waits for analysis. When every slot is claimed or pinned (an overrun) the
timepoint's frames are still read from the source, into a scratch buffer, and counted as
lost: a camera's own buffer must keep draining.

A stop is seen between timepoints (every source's wait for the next one polls it) and between
the frames of a stack: a stack cut short by the stop is given back unpublished, its frames
counted in ``frames_abandoned`` (never acquired, never lost), so a run with a long exposure
ends one frame after the stop, not one stack. A source that runs out (a replay at the end of
its recording) is a normal end: STOPPED carries ``"source exhausted: <why>"``, which the
engine takes as the run's stop reason.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import RingClosedError, RingOverrunError, RtEdaError
from rt_eda.core.messages import CameraControl, Command, Role, RoleEventKind
from rt_eda.core.process import RoleChannels, enter_role, report
from rt_eda.core.stats import Reservoir
from rt_eda.shm import StackRing
from rt_eda.sources import Source, make_source

__all__ = ["CameraStatistics", "run"]

log = logging.getLogger(__name__)

_MAX_LOST_LISTED = 10_000


class _Wake:
    """The flag ``next_timepoint`` polls: the run is stopping, or a command is waiting."""

    def __init__(self, stop: Any, commands: Any) -> None:
        self._stop = stop
        self._commands = commands

    def is_set(self) -> bool:
        return bool(self._stop.is_set()) or not self._commands.empty()


class CameraStatistics:
    """What the camera measured, reported to the engine at the end as JSON."""

    def __init__(self) -> None:
        self.timepoints = 0
        self.frames_acquired = 0
        self.stacks_published = 0
        self.overruns = 0
        self.frames_lost = 0
        self.frames_abandoned = 0  # read for a stack the stop cut short; never published
        self.lost: list[tuple[int, float]] = []  # (timepoint index, exposure time)
        self.actuation_ms = Reservoir()
        self.interval_error_ms = Reservoir()  # |achieved - requested| per timepoint
        self.publish_gap_ms = Reservoir()  # between consecutive publications, same interval
        self.time_s = {"wait_s": 0.0, "read_s": 0.0, "publish_s": 0.0}
        self.first_exposure = float("nan")
        self.last_exposure = float("nan")
        self.commands_applied = 0

    def to_json(self, source: dict[str, float]) -> str:
        span = self.last_exposure - self.first_exposure
        return json.dumps({
            "timepoints": self.timepoints,
            "frames_acquired": self.frames_acquired,
            "stacks_published": self.stacks_published,
            "overruns": self.overruns,
            "frames_lost": self.frames_lost,
            "frames_abandoned": self.frames_abandoned,
            "lost": self.lost[:_MAX_LOST_LISTED],
            "actuation_ms": self.actuation_ms.percentiles().as_dict(),
            "interval_error_ms": self.interval_error_ms.percentiles().as_dict(),
            "publish_interval_ms": self.publish_gap_ms.percentiles().as_dict(),
            "acquisition_s": span if np.isfinite(span) else 0.0,
            "commands_applied": self.commands_applied,
            "time_s": self.time_s,
            "source": source,
        })


def _realtime(priority: int) -> None:
    """Ask for real-time scheduling (SCHED_FIFO), best effort.

    The camera is the one role that must keep time: with it, the camera's frame-to-frame
    jitter beside two TensorFlow workers on 2 cores fell from ~5 ms to ~0.25 ms (p99 - p50,
    bench/test_keras_bench.py). Without the privilege (CAP_SYS_NICE or ``ulimit -r``) it
    runs at normal priority, above the workers, which run niced.
    """
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        log.info("camera: no real-time priority (needs CAP_SYS_NICE or ulimit -r); "
                 "running at normal priority")
    else:
        log.debug("camera: SCHED_FIFO priority %d", priority)


def _wait_control(channels: RoleChannels, kind: str) -> CameraControl | None:
    """Wait for the engine's next control message; None if the run is stopped first."""
    while not channels.stop.is_set():
        try:
            msg = channels.camera.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(msg, CameraControl) and msg.kind == kind:
            return msg
        if isinstance(msg, Command):
            continue  # no acquisition yet: the start interval supersedes it
        log.warning("camera: unexpected message before %s: %r", kind, msg)
    return None


def run(config: Config, channels: RoleChannels) -> None:
    """Entry point of the camera process."""
    enter_role(Role.CAMERA.value, channels)
    _realtime(config.camera.realtime_priority)
    if not config.run.debug:  # device libraries log every call at DEBUG
        logging.getLogger("pymmcore-plus").setLevel(logging.WARNING)
    source: Source | None = None
    stats = CameraStatistics()
    ended = ""
    try:
        source = make_source(config)
        spec = source.open()
        report(channels, "camera", 0, RoleEventKind.READY, json.dumps(asdict(spec)))
        attach = _wait_control(channels, "attach")
        if attach is None:
            return
        ring = StackRing.attach(str(attach.value))
        try:
            start = _wait_control(channels, "start")
            if start is not None:
                ended = _acquire(source, ring, channels, float(start.value), stats)
        finally:
            ring.close()
    except RtEdaError as exc:  # the engine logs and reports it (once)
        report(channels, "camera", 0, RoleEventKind.FAILED, f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.exception("camera failed")
        report(channels, "camera", 0, RoleEventKind.FAILED, f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    finally:
        source_stats: dict[str, float] = {}
        if source is not None:
            try:
                source.stop()
                source_stats = source.statistics()
            finally:
                source.close()
        report(channels, "camera", 0, RoleEventKind.STATS, stats.to_json(source_stats))
    report(channels, "camera", 0, RoleEventKind.STOPPED, ended)


def _acquire(source: Source, ring: StackRing, channels: RoleChannels, interval: float,
             stats: CameraStatistics) -> str:
    """Acquire until the stop (returns ``""``) or the source runs out (returns
    ``"source exhausted: <why>"``)."""
    spec = ring.spec
    order = list(source.frame_order())
    scratch = np.empty(spec.shape, dtype=spec.np_dtype)
    set_sequence = getattr(source, "set_sequence", None)
    wake = _Wake(channels.stop, channels.camera)
    pending: list[Command] = []  # applied, waiting for their first timepoint
    last_exposure: float | None = None
    last_interval = interval
    last_publish = 0.0
    source.start(interval)
    log.info("camera: acquiring %s %s at interval %.4g s", spec.shape, spec.dtype, interval)
    while not channels.stop.is_set():
        interval = _apply_commands(source, channels.camera, interval, pending, stats)
        t0 = time.perf_counter()
        t_due = source.next_timepoint(wake)
        t1 = time.perf_counter()
        stats.time_s["wait_s"] += t1 - t0
        if t_due is None:
            if source_finished(source, channels):
                return _exhausted(source) if not channels.stop.is_set() else ""
            continue
        index = stats.timepoints
        stats.timepoints += 1
        try:
            slot = ring.write_slot()
        except RingOverrunError:
            t_exp, n_read = _read_frames(source, order, scratch, None, channels.stop)
            if n_read < len(order):
                stats.frames_abandoned += n_read
                break
            stats.overruns += 1
            stats.frames_lost += len(order)
            stats.frames_acquired += len(order)
            if len(stats.lost) < _MAX_LOST_LISTED:
                stats.lost.append((index, t_exp))
            log.warning("camera: ring full (writer or workers behind): timepoint %d lost",
                        index)
            continue
        except RingClosedError:
            break
        with slot:
            if set_sequence is not None:
                set_sequence(slot.seq)
            t2 = time.perf_counter()
            t_exp, n_read = _read_frames(source, order, slot.pixels, slot.frame_times,
                                         channels.stop)
            if n_read < len(order):  # the stop cut the stack short: give the slot back
                slot.abort()
                stats.frames_abandoned += n_read
                log.info("camera: stopped in the middle of a stack; it is not published")
                break
            t3 = time.perf_counter()
            slot.publish(interval_s=interval)
            t4 = time.perf_counter()
        stats.time_s["read_s"] += t3 - t2
        stats.time_s["publish_s"] += (t4 - t3) + (t2 - t1)
        t_pub = time.monotonic()
        stats.stacks_published += 1
        stats.frames_acquired += len(order)
        if last_exposure is None:
            stats.first_exposure = t_exp
        elif last_interval == interval:
            if interval > 0:
                stats.interval_error_ms.add(abs((t_exp - last_exposure) - interval) * 1e3)
            stats.publish_gap_ms.add((t_pub - last_publish) * 1e3)
        last_exposure, last_interval, last_publish = t_exp, interval, t_pub
        stats.last_exposure = t_exp
        for cmd in pending:
            if cmd.after_seq >= 0:  # the start announcement is not a decision on a stack
                stats.actuation_ms.add((t_exp - cmd.t_decided) * 1e3)
        pending.clear()
    return ""


def _exhausted(source: Source) -> str:
    reason = str(getattr(source, "end_reason", "") or "the source has no more images")
    log.info("camera: source exhausted: %s", reason)
    return f"source exhausted: {reason}"


def source_finished(source: Source, channels: RoleChannels) -> bool:
    """After next_timepoint returned None: True if acquisition is over (stop or exhausted)."""
    if channels.stop.is_set():
        return True
    return channels.camera.empty() and bool(getattr(source, "exhausted", False))


def _read_frames(source: Source, order: list[tuple[int, int]], pixels: np.ndarray,
                 frame_times: np.ndarray | None, stop: Any) -> tuple[float, int]:
    """Read one timepoint's frames: the first one's exposure time and how many were read
    (fewer than ``order`` when ``stop`` was set before the last one)."""
    first = 0.0
    for i, (c, z) in enumerate(order):
        if i and stop.is_set():
            return first, i
        t = source.read_frame(c, z, pixels[c, z])
        if i == 0:
            first = t
        if frame_times is not None:
            frame_times[i] = t
    return first, len(order)


def _apply_commands(source: Source, commands: Any, interval: float, pending: list[Command],
                    stats: CameraStatistics) -> float:
    while True:
        try:
            msg = commands.get_nowait()
        except queue.Empty:
            return interval
        if not isinstance(msg, Command):
            log.warning("camera: ignoring unexpected message %r", msg)
            continue
        stats.commands_applied += 1
        pending.append(msg)
        if msg.interval_s != interval:
            source.set_interval(msg.interval_s)
            log.info("camera: interval %.4g s -> %.4g s (%s)", interval, msg.interval_s,
                     msg.reason)
            interval = msg.interval_s
