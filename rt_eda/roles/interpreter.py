"""The interpreter role: results in, interval commands out, every decision logged.

Consumes :class:`~rt_eda.core.messages.Result` (workers) and
:class:`~rt_eda.core.messages.ControlMessage` (viewer) from the results queue, runs the configured
interpreter (:mod:`rt_eda.interpreters`), sends :class:`~rt_eda.core.messages.Command` to the
camera, and measures the latencies of every result it receives. ``None`` on the queue (put by
the engine once every worker has stopped) ends the loop after everything before it is handled.

A non-finite decision (NaN, inf) is never acted on (see :mod:`rt_eda.interpreters`); the
first is logged with its worker and stack, later ones as one count every
``_NONFINITE_LOG_PERIOD_S``. When the interpreter says the detector is broken (too many in a
row), the role reports the fault to the engine once, which stops the run (exit 1); the role
itself goes on draining results until the end, so the summary's counts stay exact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import time

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, RtEdaError
from rt_eda.core.messages import Command, ControlMessage, Result, Role, RoleEventKind
from rt_eda.core.process import RoleChannels, enter_role, report
from rt_eda.core.stats import Reservoir
from rt_eda.interpreters import Interpreter, make_interpreter
from rt_eda.shm import DecisionTrace

__all__ = ["run"]

log = logging.getLogger(__name__)

_STATUS_PERIOD_S = 0.5
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


class _Log:
    """Latencies and the decision log of one run."""

    def __init__(self) -> None:
        self.publish_to_claim = Reservoir()
        self.publish_to_decision = Reservoir()
        self.interval_changes: list[dict[str, object]] = []
        self.controls: list[dict[str, object]] = []
        self.results = 0
        self.handle_s = 0.0
        self.trace: DecisionTrace | None = None
        self.interval = float("nan")
        self.fast = 0.0
        self.nonfinite = _NonFiniteLog()

    def command(self, cmd: Command) -> None:
        self.interval_changes.append(dataclasses.asdict(cmd))
        self.interval = cmd.interval_s
        if self.trace is not None:
            self.trace.append(cmd.after_seq, 0.0, cmd.t_decided, float("nan"), cmd.interval_s,
                              self.fast, 0, 1)

    def result(self, r: Result, t_decided: float) -> None:
        if self.trace is not None:
            self.trace.append(r.seq, r.t_exposure, t_decided, r.decision, self.interval,
                              self.fast, r.worker, 0)


def run(config: Config, channels: RoleChannels) -> None:
    """Entry point of the interpreter process."""
    enter_role(Role.INTERPRETER.value, channels)
    interp: Interpreter | None = None
    record = _Log()
    trace: DecisionTrace | None = None
    try:
        interp = make_interpreter(config)
        if channels.trace:
            trace = DecisionTrace.attach(channels.trace)
            record.trace = trace
        first = interp.start()
        channels.camera.put(first)
        record.command(first)
        _to_writer(channels, "interval", dataclasses.asdict(first))
        report(channels, "interpreter", 0, RoleEventKind.READY)
        _loop(interp, channels, record)
        record.nonfinite.flush(time.monotonic(), final=True)
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.exception("interpreter failed")
        report(channels, "interpreter", 0, RoleEventKind.FAILED,
               f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    finally:
        stats = dataclasses.asdict(interp.statistics()) if interp is not None else {}
        report(channels, "interpreter", 0, RoleEventKind.STATS, json.dumps({
            "interpreter": {k: (str(v) if not isinstance(v, (int, float, bool)) else v)
                            for k, v in stats.items()},
            "results": record.results,
            "publish_to_claim": record.publish_to_claim.percentiles().as_dict(),
            "publish_to_decision": record.publish_to_decision.percentiles().as_dict(),
            "interval_changes": record.interval_changes,
            "controls": record.controls,
            "time_s": {"handle_s": record.handle_s},
        }))
        if trace is not None:
            trace.close()
    report(channels, "interpreter", 0, RoleEventKind.STOPPED)


def _to_writer(channels: RoleChannels, kind: str, row: dict[str, object]) -> None:
    if channels.writer is not None:
        channels.writer.put((kind, row))


def _loop(interp: Interpreter, channels: RoleChannels, record: _Log) -> None:
    next_status = time.monotonic() + _STATUS_PERIOD_S
    recent: list[float] = []
    while True:
        try:
            msg = channels.results.get(timeout=0.1)
        except queue.Empty:
            msg = Ellipsis
        now = time.monotonic()
        if msg is None:
            return
        cmd: Command | None = None
        if isinstance(msg, Result):
            cmd = interp.on_result(msg)
            if cmd is not None:  # the state changes only with the interval
                record.fast = 1.0 if interp.statistics().state == "fast" else 0.0
            if not math.isfinite(msg.decision):
                record.nonfinite.add(msg, now)
                why = interp.broken()
                if why is not None and not record.nonfinite.fault_reported:
                    record.nonfinite.fault_reported = True
                    report(channels, "interpreter", 0, RoleEventKind.FAILED, why)
            record.result(msg, now)
            record.results += 1
            p2d = (now - msg.t_published) * 1e3
            record.publish_to_claim.add((msg.t_claimed - msg.t_published) * 1e3)
            record.publish_to_decision.add(p2d)
            recent.append(p2d)
            if channels.writer is not None:
                row = dataclasses.asdict(msg)
                row.update(t_decided=now, command_interval=cmd.interval_s if cmd else None)
                channels.writer.put(("decision", row))
        elif isinstance(msg, ControlMessage):
            try:
                cmd = interp.on_control(msg)
            except ConfigError as exc:
                log.error("control %s=%r refused: %s", msg.key, msg.value, exc)
                record.controls.append({"key": msg.key, "value": msg.value, "t": now,
                                        "accepted": False, "error": str(exc)})
            else:
                log.info("control %s=%r applied", msg.key, msg.value)
                record.controls.append({"key": msg.key, "value": msg.value, "t": now,
                                        "accepted": True})
                _to_writer(channels, "control", {"key": msg.key, "value": msg.value, "t": now})
        elif msg is not Ellipsis:
            raise RtEdaError(f"interpreter: unexpected message {msg!r}")
        if cmd is not None:
            channels.camera.put(cmd)
            record.command(cmd)
            _to_writer(channels, "interval", dataclasses.asdict(cmd))
            log.debug("interval -> %.4g s after stack %d (%s)", cmd.interval_s, cmd.after_seq,
                     cmd.reason)
        if msg is not Ellipsis:
            record.handle_s += time.monotonic() - now
        if now >= next_status:
            next_status = now + _STATUS_PERIOD_S
            s = interp.statistics()
            report(channels, "interpreter", 0, RoleEventKind.STATUS, json.dumps({
                "interval": s.current_interval, "state": str(s.state),
                "decisions": s.decisions, "switches": s.interval_switches,
                "p2d_p50_ms": float(np.median(recent)) if recent else 0.0,
            }))
            recent.clear()
