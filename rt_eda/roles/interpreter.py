"""The interpreter role: results in, interval commands out, one record per decision.

Consumes :class:`~rt_eda.core.messages.Result` (workers) and
:class:`~rt_eda.core.messages.ControlMessage` (viewer) from the results queue, runs the
configured interpreter (:mod:`rt_eda.interpreters`) and sends each
:class:`~rt_eda.core.messages.Command` to the camera. For every result it builds ONE
:class:`~rt_eda.core.messages.DecisionRecord` (with the interval change it caused, if any),
and every consumer reads that record::

    Result --> interpreter.on_result --> DecisionRecord --+--> trace row(s)   (viewer)
                                        (once)            +--> writer          (decisions.csv,
                                                          |                     intervals.csv)
                                                          +--> _Report         (summary)

The interval in force is the interpreter's own state (its statistics); nothing here keeps a
copy. With several stage positions (a plan) it keeps one interpreter per position
(:class:`~rt_eda.interpreters.PerPosition`: the ring says how many), every command names its
position, and a control applies to every position. ``None`` on the queue (put by the engine
once every worker has stopped) ends the loop after everything before it is handled.

A non-finite decision (NaN, inf) is never acted on (see :mod:`rt_eda.interpreters`); the
first is logged with its worker and stack, later ones as one count every
``_NONFINITE_LOG_PERIOD_S``. When the interpreter says the detector is broken (too many in a
row), the role reports the fault to the engine once, which stops the run (exit 1); the role
itself goes on draining results until the end, so the summary's counts stay exact.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from types import EllipsisType

from rt_eda.actuators import Actuator, make_actuators
from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, RtEdaError
from rt_eda.core.location_truth import LocationScore, TrueEvent
from rt_eda.core.messages import (
    Action,
    Command,
    ControlMessage,
    ControlRecord,
    DecisionRecord,
    Failure,
    InterpreterReport,
    InterpreterStatistics,
    InterpreterStatus,
    IntervalChange,
    LocationErrors,
    Result,
    ResultsMessage,
    RoleEventKind,
    RoleName,
    TrueEvents,
    WriterRow,
    action_trace_row,
    region_trace_rows,
)
from rt_eda.core.process import RoleChannels, enter_role, report, request_realtime
from rt_eda.core.stats import Reservoir
from rt_eda.interpreters import PerPosition, make_interpreter
from rt_eda.shm import DecisionTrace, RingError, StackRing

__all__ = ["run"]

log = logging.getLogger(__name__)

_STATUS_PERIOD_S = 0.5
_LIVE_SAMPLE = 4096  # results kept for the live latency (its percentiles cost ~0.5 ms)
_NONFINITE_LOG_PERIOD_S = 10.0


class _NonFiniteLog:
    """Rate-limited log of non-finite decisions: the first in full, then a count per period."""

    def __init__(self) -> None:
        self.pending = 0
        self.seen = 0
        self.next_line = 0.0
        self.fault_reported = False

    def add(self, r: Result, now: float) -> None:
        self.seen += 1
        if self.seen == 1:
            log.warning("worker %d returned a non-finite decision (%s) for stack %d: not "
                        "acted on (further ones are counted, logged every %.0f s)",
                        r.worker, r.decision, r.seq, _NONFINITE_LOG_PERIOD_S)
            self.next_line = now + _NONFINITE_LOG_PERIOD_S
            return
        self.pending += 1
        self.flush(now)

    def flush(self, now: float, *, final: bool = False) -> None:
        if self.pending and (final or now >= self.next_line):
            log.warning("%d more non-finite decision(s) (%d in all so far)", self.pending,
                        self.seen)
            self.pending = 0
            self.next_line = now + _NONFINITE_LOG_PERIOD_S


class _Truth:
    """The workers' locations against the ground truth the camera sends
    (:class:`~rt_eda.core.messages.TrueEvents`, for stacks with a visible event): the truth
    of a stack waits here for its result (bounded: stacks never analysed are forgotten)."""

    _KEEP = 4096

    def __init__(self) -> None:
        self.pending: dict[int, TrueEvents] = {}
        self.score = LocationScore()
        self.stacks = 0
        self.seen = False  # the source sends truth at all

    def truth(self, msg: TrueEvents) -> None:
        self.seen = True
        self.pending[msg.seq] = msg
        if len(self.pending) > self._KEEP:  # the oldest (dicts keep insertion order)
            del self.pending[next(iter(self.pending))]

    def result(self, r: Result) -> None:
        t = self.pending.pop(r.seq, None)
        if t is None:
            if self.seen and r.regions:  # regions where no event was visible
                self.score.false_regions += len(r.regions)
                self.stacks += 1
            return
        self.stacks += 1
        self.score.add_locations(r.regions, [TrueEvent(*e) for e in t.events])

    def report(self) -> LocationErrors | None:
        if not self.seen:
            return None
        s = self.score
        return LocationErrors(s._errors.percentiles(), s.false_regions, s.missed_events,
                              self.stacks)


class _Report:
    """What the role measures over the run, from the records it builds (one thread)."""

    def __init__(self) -> None:
        self.publish_to_claim = Reservoir()
        self.publish_to_decision = Reservoir()
        self.live_publish_to_decision = Reservoir(_LIVE_SAMPLE)  # the same results, sampled
        self.interval_changes: list[IntervalChange] = []
        self.controls: list[ControlRecord] = []
        self.results = 0
        self.handle_s = 0.0
        self.nonfinite = _NonFiniteLog()
        self.truth = _Truth()
        self.actions_sent: dict[str, int] = {}
        self.decide_failed: dict[str, int] = {}

    def decision(self, record: DecisionRecord) -> float:
        """Count one record; returns its publish -> decision latency (ms)."""
        r = record.result
        self.results += 1
        p2d = (record.t_decided - r.t_published) * 1e3
        self.publish_to_claim.add((r.t_claimed - r.t_published) * 1e3)
        self.publish_to_decision.add(p2d)
        self.live_publish_to_decision.add(p2d)
        if record.change is not None:
            self.interval_changes.append(record.change)
        return p2d

    def freeze(self, interp: PerPosition | None) -> InterpreterReport:
        return InterpreterReport(
            statistics=interp.statistics() if interp is not None else None,
            results=self.results,
            publish_to_claim=self.publish_to_claim.percentiles(),
            publish_to_decision=self.publish_to_decision.percentiles(),
            interval_changes=tuple(self.interval_changes),
            controls=tuple(self.controls),
            handle_s=self.handle_s,
            positions=interp.position_statistics() if interp is not None else (),
            locations=self.truth.report(),
            actions_sent=dict(self.actions_sent),
            decide_failed=dict(self.decide_failed),
        )


class _Outputs:
    """Where each record goes besides the report: the shared trace and the writer."""

    def __init__(self, channels: RoleChannels, trace: DecisionTrace | None) -> None:
        self.trace = trace
        self._writer = channels.writer

    def decision(self, record: DecisionRecord) -> None:
        if self.trace is not None:
            self.trace.append(*record.trace_row())
            for row in region_trace_rows(record.result, record.t_decided):
                self.trace.append(*row)
            if record.change is not None:
                self.trace.append(*record.change.trace_row())
        self.row(record)

    def action(self, action: Action) -> None:
        """An action an actuator decided (the viewer shows the newest of each kind)."""
        if self.trace is not None:
            self.trace.append(*action_trace_row(action))

    def change(self, change: IntervalChange) -> None:
        """An interval change no result caused (the start, a control)."""
        if self.trace is not None:
            self.trace.append(*change.trace_row())
        self.row(change)

    def row(self, row: WriterRow) -> None:
        """Hand one record to the writer (without --save: nowhere)."""
        if self._writer is not None:
            self._writer.put(row)


def _positions(channels: RoleChannels) -> tuple[int, tuple[int, int]]:
    """How many positions the stacks come from and the sensor's ``(height, width)`` (the
    ring says; 1 and (0, 0) without a ring)."""
    if not channels.ring:
        return 1, (0, 0)
    try:
        ring = StackRing.attach(channels.ring)
    except RingError:
        return 1, (0, 0)
    try:
        return ring.positions, (ring.spec.height, ring.spec.width)
    finally:
        ring.close()


def run(config: Config, channels: RoleChannels) -> None:
    """Entry point of the interpreter process."""
    enter_role(RoleName.INTERPRETER, channels)
    request_realtime("interpreter", config.camera.realtime_priority - 1)
    me = RoleName.INTERPRETER
    interp: PerPosition | None = None
    measured = _Report()
    trace: DecisionTrace | None = None
    try:
        positions, sensor = _positions(channels)
        interp = PerPosition(make_interpreter(config), positions)
        actuators = [a for a in make_actuators(config, sensor, positions)
                     if a.name != "interval"]
        if channels.trace:
            trace = DecisionTrace.attach(channels.trace)
        outputs = _Outputs(channels, trace)
        first = interp.start()
        channels.camera.put(first)  # the interval acquisition starts at (every position)
        change = IntervalChange(first, first.fast)
        measured.interval_changes.append(change)
        outputs.change(change)
        report(channels, me, 0, RoleEventKind.READY)
        _loop(interp, channels, measured, outputs, actuators)
        measured.nonfinite.flush(time.monotonic(), final=True)
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.exception("interpreter failed")
        report(channels, me, 0, RoleEventKind.FAILED, Failure.from_exception(exc))
        raise SystemExit(1) from None
    finally:
        if interp is not None:  # the live display's last figures: the summary's
            report(channels, me, 0, RoleEventKind.STATUS,
                   _status(interp.statistics(), measured, final=True))
        report(channels, me, 0, RoleEventKind.STATS, measured.freeze(interp))
        if trace is not None:
            trace.close()
    report(channels, me, 0, RoleEventKind.STOPPED)


def _on_result(interp: PerPosition, msg: Result, now: float, channels: RoleChannels,
               measured: _Report) -> DecisionRecord:
    """Act on one result; its record (built here, once)."""
    cmd = interp.on_result(msg)
    interval, fast = interp.state(msg.position)
    record = DecisionRecord(msg, now, interval, fast,
                            IntervalChange(cmd, fast) if cmd is not None else None)
    if not math.isfinite(msg.decision):
        measured.nonfinite.add(msg, now)
        why = interp.broken()
        if why is not None and not measured.nonfinite.fault_reported:
            measured.nonfinite.fault_reported = True
            report(channels, RoleName.INTERPRETER, 0, RoleEventKind.FAILED, Failure("", why))
    return record


def _on_control(interp: PerPosition, msg: ControlMessage, now: float,
                measured: _Report) -> tuple[ControlRecord, list[Command]]:
    """Apply one control (to every position); its record and the commands it caused."""
    cmds: list[Command] = []
    try:
        cmds = interp.on_control(msg)
    except ConfigError as exc:
        log.error("control %s=%r refused: %s", msg.key.value, msg.value, exc)
        control = ControlRecord(msg.key, msg.value, now, accepted=False, error=str(exc))
    else:
        log.info("control %s=%r applied", msg.key.value, msg.value)
        control = ControlRecord(msg.key, msg.value, now, accepted=True)
    measured.controls.append(control)
    return control, cmds


def _loop(interp: PerPosition, channels: RoleChannels, measured: _Report,
          outputs: _Outputs, actuators: list[Actuator]) -> None:
    next_status = time.monotonic() + _STATUS_PERIOD_S
    while True:
        msg: ResultsMessage | EllipsisType
        try:
            msg = channels.results.get(timeout=0.1)
        except queue.Empty:
            msg = Ellipsis
        now = time.monotonic()
        if msg is None:
            return
        if isinstance(msg, Result):
            record = _on_result(interp, msg, now, channels, measured)
            if record.change is not None:
                _send(channels, record.change.command)  # first: the camera is waiting
            for actuator in actuators:
                action = _decide(actuator, record, measured)
                if action is not None:
                    channels.camera.put(action)
                    outputs.action(action)
                    sent = measured.actions_sent
                    sent[action.kind] = sent.get(action.kind, 0) + 1
            measured.decision(record)
            outputs.decision(record)
            measured.truth.result(msg)
        elif isinstance(msg, TrueEvents):
            measured.truth.truth(msg)
        elif isinstance(msg, ControlMessage):
            control, cmds = _on_control(interp, msg, now, measured)
            for cmd in cmds:
                _send(channels, cmd)
            if control.accepted:
                outputs.row(control)
            for cmd in cmds:
                change = IntervalChange(cmd, cmd.fast)
                measured.interval_changes.append(change)
                outputs.change(change)
        elif msg is not Ellipsis:
            raise RtEdaError(f"interpreter: unexpected message {msg!r}")
        if msg is not Ellipsis:
            measured.handle_s += time.monotonic() - now
        if now >= next_status:
            next_status = now + _STATUS_PERIOD_S
            report(channels, RoleName.INTERPRETER, 0, RoleEventKind.STATUS,
                   _status(interp.statistics(), measured))


def _decide(actuator: Actuator, record: DecisionRecord, measured: _Report) -> Action | None:
    """``actuator.decide(record)``; one that raises (a plug-in's bug) is counted and logged
    once per actuator, and the run goes on without that action."""
    try:
        return actuator.decide(record)
    except Exception as exc:
        failed = measured.decide_failed
        failed[actuator.name] = failed.get(actuator.name, 0) + 1
        if failed[actuator.name] == 1:
            log.warning("actuator %r failed to decide (%s: %s); the run goes on without its "
                        "actions, later failures are counted", actuator.name,
                        type(exc).__name__, " ".join(str(exc).split()))
            log.debug("actuator %r failed to decide", actuator.name, exc_info=exc)
        return None


def _status(s: InterpreterStatistics, measured: _Report, *,
            final: bool = False) -> InterpreterStatus:
    """The live snapshot: the interpreter's state and counts ``s``, and the latency of every
    result so far (see :class:`~rt_eda.core.messages.InterpreterStatus`)."""
    sample = measured.publish_to_decision if final else measured.live_publish_to_decision
    return InterpreterStatus(
        interval_s=s.current_interval, state=s.state, decisions=s.decisions,
        interval_switches=s.interval_switches, publish_to_decision=sample.percentiles(),
        final=final)


def _send(channels: RoleChannels, cmd: Command) -> None:
    channels.camera.put(cmd)
    log.debug("interval -> %.4g s after stack %d (%s)", cmd.interval_s, cmd.after_seq,
              cmd.reason)
