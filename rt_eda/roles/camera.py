"""The camera role: drives one source, fills the stack ring, applies interval commands.

Lifecycle (the engine's side in brackets)::

    open source -> READY (CameraReady: the stack's spec)
    [engine creates the ring] <- CameraControl(ATTACH, ring name)
    [interpreter started]     <- Command: the interval to start at (the start announcement)
    [every role is ready]     <- CameraControl(START)
    loop: next timepoint -> fill a slot frame by frame -> publish
          commands from the interpreter are applied between timepoints
          STATUS (CameraStatus: the jitter of the last half second, the counts) twice a
          second, and once more at the end (the jitter of the whole run)
    [stop event] or source exhausted -> source stopped and closed -> STATS -> STOPPED

The camera keeps the interval it applies (it is the actuator); the interval *decided* lives in
the interpreter alone, which sends it in every :class:`~rt_eda.core.messages.Command`, the
first one included. Each applied command's decision -> actuation latency is measured at the
exposure of the first timepoint after it, and counted as speeding up (a shorter interval) or
slowing down (a longer one).

The camera never waits for analysis. When every slot is claimed or pinned (an overrun) the
timepoint's frames are still read from the source, into a scratch buffer, and counted as
lost: a camera's own buffer must keep draining.

With an acquisition plan (``camera.plan``) the camera drives a
:class:`~rt_eda.sources.PositionedSource` through the scheduler
(:mod:`rt_eda.sources.scheduler`): each position has its own interval (the interpreter's
commands name their position), the next visit is chosen earliest deadline first with fast
positions first, the stage is moved there (the move and the settling are timed and
counted), and every stack is published with its position. What the camera took at each
position, and (where the source knows its ground truth) how many events it caught, how soon
and at what light dose (:mod:`rt_eda.core.outcome`), goes into its statistics.

A stop is seen between timepoints (every source's wait for the next one polls it) and between
the frames of a stack: a stack cut short by the stop is given back unpublished, its frames
counted in ``frames_abandoned`` (never acquired, never lost), so a run with a long exposure
ends one frame after the stop, not one stack. A source that runs out (a replay at the end of
its recording) is a normal end: STOPPED carries ``Stopped("source exhausted: <why>",
source_exhausted=True)``, which the engine takes as the run's stop reason.
"""

from __future__ import annotations

import logging
import queue
import time
from array import array
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rt_eda.actuators import make_actuators
from rt_eda.actuators._camera import CameraActuation
from rt_eda.core.config import Config
from rt_eda.core.errors import RingClosedError, RingOverrunError, RtEdaError
from rt_eda.core.files import write_atomic
from rt_eda.core.messages import (
    ALL_POSITIONS,
    Action,
    CameraControl,
    CameraControlKind,
    CameraMessage,
    CameraReady,
    CameraStatistics,
    CameraStatus,
    CameraTimes,
    Command,
    Failure,
    LostTimepoint,
    PositionAcquisition,
    PositionOutcome,
    RoleEventKind,
    RoleName,
    Stopped,
)
from rt_eda.core.outcome import VISIBLE_INTENSITY, position_outcome
from rt_eda.core.process import (
    RoleChannels,
    debug_logging,
    enter_role,
    report,
    request_realtime,
)
from rt_eda.core.queues import Channel, StopFlag
from rt_eda.core.regions import FrameRegion
from rt_eda.core.runfolder import TRUTH_COLUMNS, TRUTH_CSV
from rt_eda.core.stats import Percentiles, RecentWindow, Reservoir
from rt_eda.shm import SlotWriter, StackRing
from rt_eda.sources import PositionedSource, Source, make_source
from rt_eda.sources._pacing import wait_until
from rt_eda.sources.scheduler import Scheduler

__all__ = ["run"]

log = logging.getLogger(__name__)

_MAX_LOST_LISTED = 10_000
_STATUS_PERIOD_S = 0.5  # how often the live jitter goes to the engine (the status line)


class _Wake:
    """The flag ``next_timepoint`` polls: the run is stopping, or a command is waiting."""

    def __init__(self, stop: StopFlag, commands: Channel[CameraMessage]) -> None:
        self._stop = stop
        self._commands = commands

    def is_set(self) -> bool:
        return bool(self._stop.is_set()) or not self._commands.empty()


class _PositionTrack:
    """What the camera took at one position: counts, and every stack's exposure time, fast
    flag and interval (the outcome is measured from them at the end)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.timepoints = 0
        self.published = 0
        self.frames = 0
        self.t = array("d")
        self.fast = array("b")
        self.interval = array("d")

    def add(self, t_exposure: float, fast: bool, interval: float) -> None:
        self.t.append(t_exposure)
        self.fast.append(fast)
        self.interval.append(interval)

    def visits(self) -> list[tuple[float, bool, float]]:
        return list(zip(self.t, (bool(f) for f in self.fast), self.interval, strict=True))


class _Measures:
    """What the camera counts while it runs; :meth:`statistics` freezes it for the engine."""

    def __init__(self) -> None:
        self.timepoints = 0
        self.frames_acquired = 0
        self.stacks_published = 0
        self.overruns = 0
        self.frames_lost = 0
        self.frames_abandoned = 0  # read for a stack the stop cut short; never published
        self.lost: list[LostTimepoint] = []
        self.actuation_ms = Reservoir()
        self.speed_up_ms = Reservoir()
        self.slow_down_ms = Reservoir()
        self.interval_error_ms = Reservoir()  # |achieved - requested| per timepoint
        self.publish_gap_ms = Reservoir()  # between consecutive publications, same interval
        self.gap_deviation_ms = Reservoir()  # each of those gaps minus its interval: jitter
        self.wait_s = self.read_s = self.publish_s = 0.0
        self.first_exposure = float("nan")
        self.last_exposure = float("nan")
        self.commands_applied = 0
        self.positions: list[_PositionTrack] = [_PositionTrack("p0")]
        self.scheduler: Scheduler | None = None
        self.outcomes: dict[int, PositionOutcome] = {}
        self.actuation: CameraActuation | None = None

    def position_records(self) -> tuple[PositionAcquisition, ...]:
        out = []
        for p, track in enumerate(self.positions):
            if self.scheduler is not None:
                _, fast, lateness, delayed, gap = self.scheduler.position_figures(p)
            else:
                fast, lateness, delayed = sum(track.fast), Percentiles(), 0
                gaps = np.diff(np.frombuffer(track.t, dtype=np.float64))
                gap = float(gaps.max()) if gaps.size else 0.0
            out.append(PositionAcquisition(
                position=p, name=track.name, timepoints=track.timepoints,
                stacks_published=track.published, frames_acquired=track.frames,
                fast_timepoints=fast, lateness_ms=lateness, delayed=delayed, max_gap_s=gap,
                outcome=self.outcomes.get(p),
            ))
        return tuple(out)

    def status(self, jitter_ms: float, gaps: int, *, final: bool = False) -> CameraStatus:
        """The live snapshot: ``jitter_ms`` over ``gaps`` gaps, and the counts so far (with
        ``final``, the timepoints and the acquisition's span too)."""
        if not final:
            return CameraStatus(jitter_ms, gaps, self.stacks_published, self.frames_acquired,
                                self.frames_lost)
        s = self.statistics({})
        return CameraStatus(jitter_ms, gaps, s.stacks_published, s.frames_acquired,
                            s.frames_lost, True, s.timepoints, s.acquisition_s)

    def statistics(self, source: Mapping[str, float]) -> CameraStatistics:
        span = self.last_exposure - self.first_exposure
        return CameraStatistics(
            timepoints=self.timepoints,
            frames_acquired=self.frames_acquired,
            stacks_published=self.stacks_published,
            overruns=self.overruns,
            frames_lost=self.frames_lost,
            frames_abandoned=self.frames_abandoned,
            lost=tuple(self.lost[:_MAX_LOST_LISTED]),
            actuation_ms=self.actuation_ms.percentiles(),
            actuation_speed_up_ms=self.speed_up_ms.percentiles(),
            actuation_slow_down_ms=self.slow_down_ms.percentiles(),
            interval_error_ms=self.interval_error_ms.percentiles(),
            publish_interval_ms=self.publish_gap_ms.percentiles(),
            jitter_ms=self.gap_deviation_ms.percentiles().spread,
            acquisition_s=span if np.isfinite(span) else 0.0,
            commands_applied=self.commands_applied,
            times=CameraTimes(self.wait_s, self.read_s, self.publish_s),
            source=dict(source),
            positions=self.position_records(),
            scheduler=self.scheduler.statistics() if self.scheduler is not None else None,
            actions=self.actuation.statistics() if self.actuation is not None else (),
            roi_coverage=(self.actuation.roi_coverage() if self.actuation is not None
                          else (0, 0, 0)),
        )


class _Applied:
    """A command the camera applied, waiting for the first timepoint after it; ``faster``:
    it shortened the interval (True), lengthened it (False), or left it (None)."""

    __slots__ = ("command", "faster")

    def __init__(self, command: Command, faster: bool | None) -> None:
        self.command = command
        self.faster = faster


def _wait_control(channels: RoleChannels, kind: CameraControlKind,
                  start: list[Command]) -> CameraControl | None:
    """Wait for the engine's next control message; None if the run is stopped first.
    Commands that come meanwhile are kept in ``start`` (the newest sets the interval
    acquisition starts at)."""
    while not channels.stop.is_set():
        try:
            msg = channels.camera.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(msg, CameraControl) and msg.kind is kind:
            return msg
        if isinstance(msg, Command):
            start.append(msg)
            continue
        log.warning("camera: unexpected message before %s: %r", kind, msg)
    return None


def run(config: Config, channels: RoleChannels) -> None:
    """Entry point of the camera process."""
    enter_role(RoleName.CAMERA, channels)
    request_realtime("camera", config.camera.realtime_priority)
    if not config.run.debug:  # device libraries log every call at DEBUG
        logging.getLogger("pymmcore-plus").setLevel(logging.WARNING)
    source: Source | None = None
    measures = _Measures()
    ended = Stopped()
    me = RoleName.CAMERA
    actuation: CameraActuation | None = None
    try:
        source = make_source(config)
        spec = source.open()
        names = _position_names(source, config)
        measures.positions = [_PositionTrack(n) for n in names]
        actuation = CameraActuation(
            make_actuators(config, (spec.height, spec.width), len(names)), source,
            len(names), config.run.save)
        actuation.open()  # before READY: an actuator the source cannot serve exits 2
        measures.actuation = actuation
        # Importing pymmcore-plus sets the root logger to DEBUG (its configure_logging):
        # back to this run's level, or every device library's DEBUG line reaches the terminal.
        logging.getLogger().setLevel(logging.DEBUG if debug_logging() else logging.INFO)
        report(channels, me, 0, RoleEventKind.READY, CameraReady(spec, len(names)))
        announced: list[Command] = []
        attach = _wait_control(channels, CameraControlKind.ATTACH, announced)
        if attach is None:
            return
        ring = StackRing.attach(attach.ring)
        try:
            start = _wait_control(channels, CameraControlKind.START, announced)
            if start is not None:
                if not announced:
                    raise RtEdaError("camera: told to start before the interpreter announced "
                                     "the interval to start at")
                first = announced[-1]
                if config.camera.plan and isinstance(source, PositionedSource):
                    ended = _acquire_plan(source, ring, channels, first.interval_s, measures,
                                          config, actuation)
                else:
                    ended = _acquire(source, ring, channels, first.interval_s, measures,
                                     actuation)
        finally:
            ring.close()
    except RtEdaError as exc:  # the engine logs and reports it (once)
        report(channels, me, 0, RoleEventKind.FAILED, Failure.from_exception(exc))
        raise SystemExit(1) from None
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.exception("camera failed")
        report(channels, me, 0, RoleEventKind.FAILED, Failure.from_exception(exc))
        raise SystemExit(1) from None
    finally:
        source_stats: Mapping[str, float] = {}
        if actuation is not None:
            actuation.close()
        if source is not None:
            try:
                source.stop()
                source_stats = source.statistics()
                measures.outcomes = _outcomes(source, measures, config)
            finally:
                source.close()
        whole = measures.gap_deviation_ms.percentiles()  # the live display's last figures
        report(channels, me, 0, RoleEventKind.STATUS,
               measures.status(whole.spread, whole.count, final=True))
        report(channels, me, 0, RoleEventKind.STATS, measures.statistics(source_stats))
    report(channels, me, 0, RoleEventKind.STOPPED, ended)


def _acquire(source: Source, ring: StackRing, channels: RoleChannels, interval: float,
             stats: _Measures, actuation: CameraActuation) -> Stopped:
    """Acquire until the stop (returns ``Stopped()``) or the source runs out (returns
    ``Stopped("source exhausted: <why>", source_exhausted=True)``)."""
    spec = ring.spec
    order = list(source.frame_order())
    scratch = np.empty(spec.shape, dtype=spec.np_dtype)
    set_sequence = getattr(source, "set_sequence", None)
    wake = _Wake(channels.stop, channels.camera)
    pending: list[_Applied] = []  # applied, waiting for their first timepoint
    last_exposure: float | None = None
    last_interval = interval
    last_publish = 0.0
    recent_gaps = RecentWindow(4096)  # since the last live status
    next_status = time.monotonic() + _STATUS_PERIOD_S
    track = stats.positions[0]
    fast = [False]
    # A source that chooses the position of each stack itself (a multi-position replay):
    # every position has its own interval, fast state and commands waiting to actuate.
    multi = len(stats.positions) > 1
    intervals = [interval] * len(stats.positions)
    fasts = [False] * len(stats.positions)
    pendings: list[list[_Applied]] = [pending] + [[] for _ in stats.positions[1:]]
    position = 0
    source.start(interval)
    log.info("camera: acquiring %s %s at interval %.4g s", spec.shape, spec.dtype, interval)
    while not channels.stop.is_set():
        if multi:
            _apply_position_commands(source, channels.camera, intervals, fasts, pendings,
                                     stats, actuation)
        else:
            interval = _apply_commands(source, channels.camera, interval, pending, stats,
                                       fast, actuation)
        # What the actions ask of the next timepoint (a sensor region, presets) is set
        # before it starts: a source takes such a change from its next timepoint on.
        actuation.prepare(position)
        t0 = time.perf_counter()
        t_due = source.next_timepoint(wake)
        t1 = time.perf_counter()
        stats.wait_s += t1 - t0
        if t_due is None:
            if source_finished(source, channels):
                return _exhausted(source) if not channels.stop.is_set() else Stopped()
            continue
        if multi:
            position = int(getattr(source, "position", 0))
            interval, fast[0], pending = (intervals[position], fasts[position],
                                          pendings[position])
            track = stats.positions[position]
        actuation.arrived(position)
        index = stats.timepoints
        stats.timepoints += 1
        track.timepoints += 1
        frame = actuation.frame()  # the region this timepoint is read from
        try:
            slot = ring.write_slot()
        except RingOverrunError:
            t_exp, n_read = _read_frames(source, order, scratch, None, channels.stop)
            if n_read < len(order):
                stats.frames_abandoned += n_read
                break
            _lost(stats, index, t_exp, len(order))
            track.frames += len(order)
            track.add(t_exp, fast[0], interval)
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
            slot.publish(interval_s=interval, position=position, frame=frame)
            t4 = time.perf_counter()
        actuation.published(slot.seq, position, t_exp, frame, channels.results)
        stats.read_s += t3 - t2
        stats.publish_s += (t4 - t3) + (t2 - t1)
        t_pub = time.monotonic()
        stats.stacks_published += 1
        stats.frames_acquired += len(order)
        track.published += 1
        track.frames += len(order)
        track.add(t_exp, fast[0], interval)
        if last_exposure is None:
            stats.first_exposure = t_exp
        elif last_interval == interval and not multi:
            if interval > 0:
                stats.interval_error_ms.add(abs((t_exp - last_exposure) - interval) * 1e3)
            gap_ms = (t_pub - last_publish) * 1e3
            stats.publish_gap_ms.add(gap_ms)
            # jitter: the gap's distance from its interval, so that gaps of a slow and of a
            # fast period (1000 and 100 ms) do not read as 900 ms of jitter
            deviation_ms = gap_ms - interval * 1e3
            stats.gap_deviation_ms.add(deviation_ms)
            recent_gaps.add(deviation_ms)
        last_exposure, last_interval, last_publish = t_exp, interval, t_pub
        if t_pub >= next_status:
            next_status = t_pub + _STATUS_PERIOD_S
            report(channels, RoleName.CAMERA, 0, RoleEventKind.STATUS,
                   stats.status(recent_gaps.percentiles().spread, recent_gaps.count))
            recent_gaps.clear()
        stats.last_exposure = t_exp
        _actuated(pending, t_exp, stats, actuation)
    return Stopped()


def _acquire_plan(source: PositionedSource, ring: StackRing, channels: RoleChannels,
                  interval: float, stats: _Measures, config: Config,
                  actuation: CameraActuation) -> Stopped:
    """Acquire a plan's positions until the stop (returns ``Stopped()``): the scheduler picks
    every visit, the source moves there and acquires, each stack is published with its
    position (see the module docstring)."""
    spec = ring.spec
    order = list(source.frame_order())
    scratch = np.empty(spec.shape, dtype=spec.np_dtype)
    set_sequence = getattr(source, "set_sequence", None)
    wake = _Wake(channels.stop, channels.camera)
    n = len(stats.positions)
    settle_s = config.camera.settle_ms / 1000.0
    pending: dict[int, list[_Applied]] = {p: [] for p in range(n)}
    recent = RecentWindow(4096)  # timing errors since the last live status
    next_status = time.monotonic() + _STATUS_PERIOD_S
    source.start(0.0)  # free-running: the scheduler times every stack
    sched = Scheduler(n, interval, time.monotonic(), stack_s=source.stack_s, settle_s=settle_s,
                      move_estimate=source.move_estimate)
    stats.scheduler = sched
    log.info("camera: acquiring %s %s at %d positions, interval %.4g s each (%s)",
             spec.shape, spec.dtype, n, interval, "scheduler: fast positions first")
    while not channels.stop.is_set():
        _apply_plan_commands(channels.camera, sched, pending, stats, actuation)
        t0 = time.perf_counter()
        now = time.monotonic()
        visit = sched.next(now)
        actuation.prepare(visit.position)  # before its timepoint starts (see _acquire)
        move_at = visit.planned - visit.prep_s
        if move_at > now and wait_until(move_at, wake) is None:
            stats.wait_s += time.perf_counter() - t0
            continue  # a command came (or the stop): plan again
        if visit.position != sched.current:
            moved = source.move_to(visit.position, channels.stop)
            settled = 0.0
            if settle_s > 0:
                t_settle = time.monotonic()
                if wait_until(t_settle + settle_s, channels.stop) is None:
                    break
                settled = time.monotonic() - t_settle
            sched.moved(moved, settled)
        if wait_until(visit.planned, channels.stop) is None:
            break
        t_due = source.next_timepoint(channels.stop)
        t1 = time.perf_counter()
        stats.wait_s += t1 - t0
        if t_due is None:
            break
        p = visit.position
        actuation.arrived(p)  # the stage is there: an SLM shows this position's mask
        p_interval = sched.interval(p)
        track = stats.positions[p]
        index = stats.timepoints
        stats.timepoints += 1
        track.timepoints += 1
        frame = actuation.frame()  # the region this timepoint is read from
        try:
            slot = ring.write_slot()
        except RingOverrunError:
            t_exp, n_read = _read_frames(source, order, scratch, None, channels.stop)
            if n_read < len(order):
                stats.frames_abandoned += n_read
                break
            _lost(stats, index, t_exp, len(order))
            track.frames += len(order)
            track.add(t_exp, visit.fast, p_interval)
            sched.visited(visit, t_exp, time.monotonic())
            continue
        except RingClosedError:
            break
        seq = slot.seq
        published = _fill_and_publish(source, order, slot, set_sequence, channels.stop,
                                      p_interval, p, frame)
        if published is None:
            break
        t_exp, t_read, t_publish = published
        actuation.published(seq, p, t_exp, frame, channels.results)
        stats.read_s += t_read
        stats.publish_s += t_publish
        t_pub = time.monotonic()
        sched.visited(visit, t_exp, t_pub)
        stats.stacks_published += 1
        stats.frames_acquired += len(order)
        track.published += 1
        track.frames += len(order)
        track.add(t_exp, visit.fast, p_interval)
        stats.interval_error_ms.add(max(0.0, t_exp - visit.due) * 1e3)
        recent.add(abs(t_exp - visit.planned) * 1e3)
        if np.isnan(stats.first_exposure):
            stats.first_exposure = t_exp
        stats.last_exposure = t_exp
        _actuated(pending[p], t_exp, stats, actuation)
        if t_pub >= next_status:
            next_status = t_pub + _STATUS_PERIOD_S
            report(channels, RoleName.CAMERA, 0, RoleEventKind.STATUS,
                   CameraStatus(recent.percentiles().spread, recent.count))
            recent.clear()
    return Stopped()


def _fill_and_publish(source: Source, order: list[tuple[int, int]], slot: SlotWriter,
                      set_sequence: object, stop: StopFlag, interval: float, position: int,
                      frame: FrameRegion | None = None) -> tuple[float, float, float] | None:
    """Read one stack into ``slot`` and publish it at ``position``: ``(first exposure, read
    seconds, publish seconds)``, or None when the stop cut it short (the slot is given back
    unpublished)."""
    with slot:
        if callable(set_sequence):
            set_sequence(slot.seq)
        t2 = time.perf_counter()
        t_exp, n_read = _read_frames(source, order, slot.pixels, slot.frame_times, stop)
        if n_read < len(order):
            slot.abort()
            log.info("camera: stopped in the middle of a stack; it is not published")
            return None
        t3 = time.perf_counter()
        slot.publish(interval_s=interval, position=position, frame=frame)
        t4 = time.perf_counter()
    return t_exp, t3 - t2, t4 - t3


def _apply_position_commands(source: Source, commands: Channel[CameraMessage],
                             intervals: list[float], fasts: list[bool],
                             pendings: list[list[_Applied]], stats: _Measures,
                             actuation: CameraActuation) -> None:
    """Apply every waiting command to its position's interval (every position for
    :data:`~rt_eda.core.messages.ALL_POSITIONS`), for a source that times its positions
    itself (``set_position_interval``)."""
    set_position = getattr(source, "set_position_interval", None)
    while True:
        try:
            msg = commands.get_nowait()
        except queue.Empty:
            return
        if isinstance(msg, Action):
            actuation.receive(msg)
            continue
        if not isinstance(msg, Command):
            log.warning("camera: ignoring unexpected message %r", msg)
            continue
        stats.commands_applied += 1
        n = len(intervals)
        targets = range(n) if msg.position == ALL_POSITIONS else (
            (msg.position,) if 0 <= msg.position < n else ())
        for p in targets:
            old = intervals[p]
            faster = None if msg.interval_s == old else msg.interval_s < old
            pendings[p].append(_Applied(msg, faster))
            fasts[p] = msg.fast
            if msg.interval_s != old:
                intervals[p] = msg.interval_s
                if callable(set_position):
                    set_position(p, msg.interval_s)
                log.info("camera: position %d interval %.4g s -> %.4g s (%s)", p, old,
                         msg.interval_s, msg.reason)


def _apply_plan_commands(commands: Channel[CameraMessage], sched: Scheduler,
                         pending: dict[int, list[_Applied]], stats: _Measures,
                         actuation: CameraActuation) -> None:
    """Apply every waiting command to the position it names (every position for
    :data:`~rt_eda.core.messages.ALL_POSITIONS`)."""
    now = time.monotonic()
    while True:
        try:
            msg = commands.get_nowait()
        except queue.Empty:
            return
        if isinstance(msg, Action):
            actuation.receive(msg)
            continue
        if not isinstance(msg, Command):
            log.warning("camera: ignoring unexpected message %r", msg)
            continue
        stats.commands_applied += 1
        if msg.position == ALL_POSITIONS:
            targets: range | tuple[int, ...] = range(sched.n)
        elif 0 <= msg.position < sched.n:
            targets = (msg.position,)
        else:
            log.warning("camera: command for position %d ignored: the plan has %d",
                        msg.position, sched.n)
            continue
        for p in targets:
            old = sched.interval(p)
            faster = None if msg.interval_s == old else msg.interval_s < old
            pending[p].append(_Applied(msg, faster))
            sched.set_interval(p, msg.interval_s, msg.fast, now)
            if msg.interval_s != old:
                log.info("camera: position %d interval %.4g s -> %.4g s (%s)", p, old,
                         msg.interval_s, msg.reason)


def _actuated(pending: list[_Applied], t_exp: float, stats: _Measures,
              actuation: CameraActuation) -> None:
    """The first timepoint after these commands was exposed at ``t_exp``: their decision ->
    actuation latencies (the start announcement is not a decision on a stack)."""
    for applied in pending:
        cmd = applied.command
        if cmd.after_seq < 0:
            continue
        actuation.interval(cmd, t_exp)
        ms = (t_exp - cmd.t_decided) * 1e3
        stats.actuation_ms.add(ms)
        if applied.faster is True:
            stats.speed_up_ms.add(ms)
        elif applied.faster is False:
            stats.slow_down_ms.add(ms)
    pending.clear()


def _lost(stats: _Measures, index: int, t_exp: float, frames: int) -> None:
    """A timepoint read whole but not put in the ring (it was full): counted and listed."""
    stats.overruns += 1
    stats.frames_lost += frames
    stats.frames_acquired += frames
    if len(stats.lost) < _MAX_LOST_LISTED:
        stats.lost.append(LostTimepoint(index, t_exp))
    log.warning("camera: ring full (writer or workers behind): timepoint %d lost", index)


def _position_names(source: Source, config: Config) -> tuple[str, ...]:
    """The names of the positions stacks will come from: a plan's, a multi-position
    replay's; one, ``p0``, otherwise."""
    if config.camera.plan and isinstance(source, PositionedSource):
        return source.position_names
    names = getattr(source, "position_names", None)
    if callable(getattr(source, "set_position_interval", None)) and names:
        return tuple(str(n) for n in names)
    return ("p0",)


def _outcomes(source: Source, stats: _Measures, config: Config) -> dict[int, PositionOutcome]:
    """Each position's outcome against the source's ground truth (none without one); with
    ``--save`` the truth goes into the run folder too (``truth.csv``: a replay of it
    measures the same outcome)."""
    out: dict[int, PositionOutcome] = {}
    fast_interval = config.interpreter.fast_interval
    frames = max(1, len(list(source.frame_order()))) if stats.frames_acquired else 1
    truth: dict[int, list[tuple[float, float]]] = {}
    for p, track in enumerate(stats.positions):
        if not len(track.t):
            continue
        t_end = track.t[-1] + 1e-9
        windows: list[tuple[float, float]] | None
        positioned = getattr(source, "event_windows", None)
        if callable(positioned) and (config.camera.plan or len(stats.positions) > 1):
            windows = positioned(p, t_end, VISIBLE_INTENSITY)
        else:
            windows_of = getattr(source, "event_windows", None)
            windows = windows_of(t_end, VISIBLE_INTENSITY) if windows_of is not None else None
        if windows is None:
            continue
        truth[p] = windows
        out[p] = position_outcome(windows, track.visits(), fast_interval=fast_interval,
                                  frames_per_stack=frames)
    if truth and config.run.save:
        _write_truth(Path(config.run.save) / TRUTH_CSV, truth)
    return out


def _write_truth(path: Path, truth: dict[int, list[tuple[float, float]]]) -> None:
    """``truth.csv``: ``position,start,end`` per event (monotonic s, visible part)."""
    rows = [",".join(TRUTH_COLUMNS)]
    rows += [f"{p},{a!r},{b!r}" for p, windows in sorted(truth.items()) for a, b in windows]
    try:
        write_atomic(path, "\n".join(rows) + "\n", make_parents=False)
    except OSError as exc:  # the outcome is still in the summary
        log.warning("camera: the ground truth could not be saved to %s: %s", path, exc)


def _exhausted(source: Source) -> Stopped:
    reason = str(getattr(source, "end_reason", "") or "the source has no more images")
    log.info("camera: source exhausted: %s", reason)
    return Stopped(f"source exhausted: {reason}", source_exhausted=True)


def source_finished(source: Source, channels: RoleChannels) -> bool:
    """After next_timepoint returned None: True if acquisition is over (stop or exhausted)."""
    if channels.stop.is_set():
        return True
    return channels.camera.empty() and bool(getattr(source, "exhausted", False))


def _read_frames(source: Source, order: list[tuple[int, int]], pixels: np.ndarray,
                 frame_times: np.ndarray | None, stop: StopFlag) -> tuple[float, int]:
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


def _apply_commands(source: Source, commands: Channel[CameraMessage], interval: float,
                    pending: list[_Applied], stats: _Measures, fast: list[bool],
                    actuation: CameraActuation) -> float:
    while True:
        try:
            msg = commands.get_nowait()
        except queue.Empty:
            return interval
        if isinstance(msg, Action):
            actuation.receive(msg)
            continue
        if not isinstance(msg, Command):
            log.warning("camera: ignoring unexpected message %r", msg)
            continue
        stats.commands_applied += 1
        fast[0] = msg.fast
        faster = None if msg.interval_s == interval else msg.interval_s < interval
        pending.append(_Applied(msg, faster))
        if msg.interval_s != interval:
            source.set_interval(msg.interval_s)
            log.info("camera: interval %.4g s -> %.4g s (%s)", interval, msg.interval_s,
                     msg.reason)
            interval = msg.interval_s
