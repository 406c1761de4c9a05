"""Interpreters: turn analysis results into acquisition changes (interval commands).

An interpreter is a plain object driven by the interpreter role, one call at a time (it is
not thread-safe and needs no locking)::

    cmd = interp.start()                  # the initial interval, always announced
    for each Result from the queue:
        cmd = interp.on_result(result)    # a Command when the interval changes, else None
    for each ControlMessage from a person:
        cmd = interp.on_control(msg)      # validated; a bad value raises and changes nothing
    interp.statistics()                   # a frozen snapshot, any time

Non-finite decisions
--------------------
A decision that is NaN or infinite (a model with NaN weights, a hook dividing by zero) says
nothing about the sample: it is never acted on, never counts as received for ordering, and is
counted in ``InterpreterStatistics.nonfinite_decisions``. ``nonfinite_in_a_row`` counts the
current streak (reset by any finite decision); :meth:`Interpreter.broken` names the problem
once the streak reaches ``interpreter.max_nonfinite_in_a_row`` (0: never), and the interpreter
role then ends the run as a fault: the detector is broken, and an acquisition that can never
switch must not go on looking healthy.

Ordering
--------
Results can arrive out of order (several workers finish at different times). Every
interpreter acts only on a result whose ``seq`` is newer than the newest it has received;
an older (or repeated) one is dropped and counted in
``InterpreterStatistics.results_dropped_out_of_order``. A late result can therefore never
flip the state back, which the original plugin allowed.

Binary frame-rate state machine
-------------------------------
::

               decision > upper_threshold
        SLOW ────────────────────────────────▶ FAST
         ▲                                       │
         └───────────────────────────────────────┘
           decision < lower_threshold and
           fast_frames >= min_fast_frames

Between the thresholds the state holds (hysteresis). ``fast_frames`` counts results of stacks
*acquired in fast mode*: a result counts only when its stack's first frame was exposed at or
after the moment the switch to fast was decided (``Result.t_exposure >= Command.t_decided``,
both on the ``time.monotonic()`` clock every process shares). Results of stacks exposed before
the switch, still in flight when it was decided, were acquired at the slow interval and must
not count: otherwise, with several workers, the results already queued when the event was
seen would use up ``min_fast_frames`` at once and send the acquisition back to slow before a
single fast stack had been looked at. The one result that triggers a switch back to slow may
itself be the fast stack that completes the count. (A stack exposed after the decision but
before the camera applied the command, which the camera does at its next timepoint, does
count: the interpreter cannot see actuation, and that stack is the first the camera takes
once the event is known.)

The original plugin counts fast frames from the result that triggered fast, whatever its
stack's exposure time; with ``min_fast_frames = 1`` it may therefore switch back on the very
next result, possibly of a stack exposed before the switch. rt-eda does not.

Positions
---------
With an acquisition plan of several stage positions, :class:`PerPosition` keeps one
interpreter per position (its own state, hysteresis, ``min_fast_frames`` count and
ordering: a result is acted on only when it is newer than the newest of *its* position), so
an event at one position speeds up that position alone. Every command it returns names its
position (``Command.position``); a control applies to every position. With one position it
is exactly the one interpreter.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from rt_eda.core.config import Config, InterpreterConfig
from rt_eda.core.errors import ConfigError
from rt_eda.core.messages import (
    ALL_POSITIONS,
    Command,
    ControlMessage,
    InterpreterState,
    InterpreterStatistics,
    PositionDecisions,
    Result,
)

__all__ = [
    "BinaryFrameRateInterpreter",
    "Interpreter",
    "InterpreterState",
    "InterpreterStatistics",
    "ManualInterpreter",
    "PerPosition",
    "make_interpreter",
]

log = logging.getLogger(__name__)

_CONTROL_SOURCE = "run-time control"


@runtime_checkable
class Interpreter(Protocol):
    """What the interpreter role drives (see the module docstring for the lifecycle)."""

    def start(self) -> Command:
        """The initial interval; the role sends it to the camera before any result."""
        ...

    def on_result(self, result: Result) -> Command | None:
        """Act on one result; a Command only when the interval changes."""
        ...

    def on_control(self, msg: ControlMessage) -> Command | None:
        """Apply a run-time change; a Command if it changes the interval in force.

        Raises
        ------
        ConfigError
            The key is not a setting of this interpreter or the value is not allowed; nothing
            is changed.
        """
        ...

    def statistics(self) -> InterpreterStatistics:
        """A frozen snapshot of the counters and the state."""
        ...

    def broken(self) -> str | None:
        """Why the detector is to be considered broken (too many non-finite decisions in a
        row, ``interpreter.max_nonfinite_in_a_row``), or None while it is not."""
        ...


def _flag(msg: ControlMessage) -> bool:
    """A 0/1 control value as a bool; anything else is a ConfigError."""
    if msg.value not in (0.0, 1.0):
        raise ConfigError(
            f"interpreter.{msg.key}: {msg.value!r} is not allowed; expected 0.0 or 1.0"
        )
    return msg.value == 1.0


def _setting_value(key: str, value: float) -> float | int:
    """ControlMessage values are floats; integer settings take integral floats only."""
    if key == "min_fast_frames" and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


class _OrderedInterpreter:
    """What every interpreter shares: in-order filtering, pause, counters, commands."""

    _state: InterpreterState

    def __init__(
        self,
        settings: InterpreterConfig,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._interval = interval
        self._clock = clock
        self._newest_seq = -1
        self._decisions = 0
        self._dropped = 0
        self._ignored_paused = 0
        self._switches = 0
        self._paused = False
        self._nonfinite = 0
        self._nonfinite_run = 0
        self._last_nonfinite: Result | None = None

    @property
    def settings(self) -> InterpreterConfig:
        """The settings in force (changed by controls)."""
        return self._settings

    def _accept(self, result: Result) -> bool:
        """Whether ``result`` is to be acted on; counts non-finite, dropped and paused
        results (each result in exactly one of those or in ``decisions``)."""
        if not math.isfinite(result.decision):
            self._nonfinite += 1
            self._nonfinite_run += 1
            self._last_nonfinite = result
            return False
        self._nonfinite_run = 0
        if result.seq <= self._newest_seq:
            self._dropped += 1
            log.debug(
                "result of stack %d from worker %d dropped: not newer than stack %d",
                result.seq,
                result.worker,
                self._newest_seq,
            )
            return False
        self._newest_seq = result.seq
        if self._paused:
            self._ignored_paused += 1
            return False
        self._decisions += 1
        return True

    def _command(
        self, interval: float, reason: str, t_decided: float | None = None
    ) -> Command | None:
        """Set the interval; a Command only if it changed."""
        if interval == self._interval:
            return None
        self._interval = interval
        self._switches += 1
        log.debug("interval -> %g s (%s)", interval, reason)  # the camera logs it, applied
        return Command(
            interval_s=interval,
            reason=reason,
            after_seq=self._newest_seq,
            t_decided=self._clock() if t_decided is None else t_decided,
        )

    def _announce(self, reason: str) -> Command:
        log.debug("interval %g s (%s)", self._interval, reason)  # the camera logs it too
        return Command(
            interval_s=self._interval, reason=reason, after_seq=-1, t_decided=self._clock()
        )

    def _changed(self, changes: Mapping[str, object]) -> InterpreterConfig:
        return self._settings.with_changes(changes, source=_CONTROL_SOURCE)

    def _pause(self, msg: ControlMessage) -> None:
        self._paused = _flag(msg)
        log.info("interpreter %s", "paused" if self._paused else "resumed")

    def _unknown(self, msg: ControlMessage, allowed: tuple[str, ...]) -> ConfigError:
        kind = self._settings.kind
        return ConfigError(
            f"interpreter.{msg.key}: not a run-time setting of the {kind!r} interpreter "
            f"(value {msg.value!r} refused); allowed: {', '.join(allowed)}"
        )

    def statistics(self) -> InterpreterStatistics:
        """A frozen snapshot of the counters and the state."""
        return InterpreterStatistics(
            decisions=self._decisions,
            results_dropped_out_of_order=self._dropped,
            interval_switches=self._switches,
            current_interval=self._interval,
            state=self._state,
            fast_frames=self._fast_frames_now(),
            results_ignored_paused=self._ignored_paused,
            paused=self._paused,
            newest_seq=self._newest_seq,
            nonfinite_decisions=self._nonfinite,
            nonfinite_in_a_row=self._nonfinite_run,
        )

    def broken(self) -> str | None:
        """Why the detector is broken (see the module docstring), or None."""
        limit = self._settings.max_nonfinite_in_a_row
        if limit <= 0 or self._nonfinite_run < limit or self._last_nonfinite is None:
            return None
        last = self._last_nonfinite
        return (
            f"the detector is broken: {self._nonfinite_run} non-finite decisions in a row "
            f"(last: {last.decision} from worker {last.worker}, stack {last.seq}); "
            f"interpreter.max_nonfinite_in_a_row = {limit}"
        )

    def _fast_frames_now(self) -> int:
        return 0


class BinaryFrameRateInterpreter(_OrderedInterpreter):
    """Slow until an event is seen, fast until it is over (see the module docstring).

    Parameters
    ----------
    settings
        ``kind``, thresholds, intervals and ``min_fast_frames`` (validated already).
    clock
        The time source for ``Command.t_decided`` and for counting fast frames; it must be
        the clock ``Result.t_exposure`` uses (``time.monotonic``, the default).

    Notes
    -----
    Run-time controls: ``lower_threshold``, ``upper_threshold``, ``slow_interval``,
    ``fast_interval``, ``min_fast_frames``, ``paused`` (1.0/0.0). New thresholds and
    ``min_fast_frames`` apply from the next result; a new interval of the current state
    applies at once (a Command). A control that would break ``lower <= upper`` or
    ``fast <= slow`` raises :class:`~rt_eda.core.errors.ConfigError` and changes nothing.
    """

    CONTROL_KEYS = (
        "lower_threshold",
        "upper_threshold",
        "slow_interval",
        "fast_interval",
        "min_fast_frames",
        "paused",
    )

    def __init__(
        self, settings: InterpreterConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(settings, settings.slow_interval, clock)
        self._state = InterpreterState.SLOW
        self._t_fast_since = math.inf
        self._fast_frames = 0

    def _fast_frames_now(self) -> int:
        return self._fast_frames if self._state is InterpreterState.FAST else 0

    def start(self) -> Command:
        """Announce the slow interval (the state is SLOW until an event is seen)."""
        return self._announce(f"start: slow interval {self._settings.slow_interval:g} s")

    def on_result(self, result: Result) -> Command | None:
        """Act on one result (see the module docstring); a Command when the interval changes.

        The state may change without a Command when ``fast_interval == slow_interval``.
        """
        if not self._accept(result):
            return None
        s = self._settings
        value = result.decision
        if self._state is InterpreterState.SLOW:
            if value > s.upper_threshold:
                self._state = InterpreterState.FAST
                t_decided = self._clock()
                self._t_fast_since = t_decided
                self._fast_frames = 0
                return self._command(
                    s.fast_interval,
                    f"decision {value:.4g} > upper {s.upper_threshold:g}: fast "
                    f"(stack {result.seq})",
                    t_decided,
                )
            return None
        if result.t_exposure >= self._t_fast_since:
            self._fast_frames += 1
        if value < s.lower_threshold and self._fast_frames >= s.min_fast_frames:
            frames = self._fast_frames
            self._state = InterpreterState.SLOW
            self._fast_frames = 0
            self._t_fast_since = math.inf
            return self._command(
                s.slow_interval,
                f"decision {value:.4g} < lower {s.lower_threshold:g} after {frames} fast "
                f"frame(s): slow (stack {result.seq})",
            )
        return None

    def on_control(self, msg: ControlMessage) -> Command | None:
        """Apply a run-time change (see the class notes); invalid ones change nothing."""
        if msg.key == "paused":
            self._pause(msg)
            return None
        if msg.key not in self.CONTROL_KEYS:
            raise self._unknown(msg, self.CONTROL_KEYS)
        self._settings = self._changed({msg.key: _setting_value(msg.key, msg.value)})
        log.info("interpreter.%s set to %r", msg.key, msg.value)
        target = (
            self._settings.fast_interval
            if self._state is InterpreterState.FAST
            else self._settings.slow_interval
        )
        return self._command(target, f"control: {msg.key} = {msg.value:g}")


class ManualInterpreter(_OrderedInterpreter):
    """Holds a fixed interval that only a person changes.

    Results are received (in order, counted as decisions) but never change the interval.

    Parameters
    ----------
    settings
        Its ``slow_interval``/``fast_interval`` are what the ``mode`` toggle selects.
    interval
        The interval held at start (``interpreter.manual_interval``, or ``camera.interval``
        when that is unset).
    clock
        The time source for ``Command.t_decided``.

    Notes
    -----
    Run-time controls: ``manual_interval`` (hold this interval), ``mode`` (1.0 → hold
    ``fast_interval``, 0.0 → hold ``slow_interval``), ``slow_interval``/``fast_interval``
    (applied at once if that mode is the one held), ``paused``. Thresholds are not settings
    of this interpreter and are refused.
    """

    CONTROL_KEYS = ("manual_interval", "mode", "slow_interval", "fast_interval", "paused")

    def __init__(
        self,
        settings: InterpreterConfig,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        checked = settings.with_changes({"manual_interval": interval}, source=_CONTROL_SOURCE)
        super().__init__(checked, interval, clock)
        self._state = InterpreterState.MANUAL
        self._mode: InterpreterState = InterpreterState.MANUAL  # which interval is held

    def start(self) -> Command:
        """Announce the interval held."""
        return self._announce(f"start: manual interval {self._interval:g} s")

    def on_result(self, result: Result) -> Command | None:
        """Record the result (order-checked); the interval never changes here."""
        self._accept(result)
        return None

    def on_control(self, msg: ControlMessage) -> Command | None:
        """Apply a run-time change (see the class notes); invalid ones change nothing."""
        if msg.key == "paused":
            self._pause(msg)
            return None
        if msg.key not in self.CONTROL_KEYS:
            raise self._unknown(msg, self.CONTROL_KEYS)
        if msg.key == "mode":
            fast = _flag(msg)
            self._mode = InterpreterState.FAST if fast else InterpreterState.SLOW
        else:
            self._settings = self._changed({msg.key: msg.value})
            if msg.key == "manual_interval":
                self._mode = InterpreterState.MANUAL
        log.info("interpreter.%s set to %r", msg.key, msg.value)
        target = {
            InterpreterState.MANUAL: self._settings.manual_interval,
            InterpreterState.FAST: self._settings.fast_interval,
            InterpreterState.SLOW: self._settings.slow_interval,
        }[self._mode]
        assert target is not None  # manual_interval is set in __init__
        return self._command(target, f"control: {msg.key} = {msg.value:g}")


def make_interpreter(config: Config, *, clock: Callable[[], float] = time.monotonic) -> Interpreter:
    """The interpreter ``config.interpreter.kind`` names, set up from the configuration.

    ``manual`` holds ``interpreter.manual_interval``, or ``camera.interval`` when unset.
    """
    settings = config.interpreter
    if settings.kind == "binary":
        return BinaryFrameRateInterpreter(settings, clock=clock)
    interval = settings.manual_interval
    if interval is None:
        interval = config.camera.interval
    return ManualInterpreter(settings, interval, clock=clock)


class PerPosition:
    """One interpreter per stage position (see "Positions" in the module docstring).

    Parameters
    ----------
    template
        A fresh interpreter (no result seen yet): every position starts as a copy of it.
    positions
        How many positions the acquisition has (a result of a position beyond them gets an
        interpreter of its own too, made from the template).

    Notes
    -----
    Not thread-safe (the interpreter role's one thread drives it). Non-finite decisions are
    counted by the position's interpreter; the streak that makes the detector *broken*
    (``interpreter.max_nonfinite_in_a_row``) is counted across every position, since one
    model analyses them all.
    """

    def __init__(self, template: Interpreter, positions: int = 1) -> None:
        self._template = template
        self._interps = [copy.deepcopy(template) for _ in range(max(1, positions))]
        self._nonfinite_run = 0
        self._last_nonfinite: Result | None = None
        limit = getattr(getattr(template, "settings", None), "max_nonfinite_in_a_row", 0)
        self._limit = int(limit)

    @property
    def positions(self) -> int:
        """Positions with an interpreter."""
        return len(self._interps)

    def _of(self, position: int) -> Interpreter:
        while position >= len(self._interps):
            self._interps.append(copy.deepcopy(self._template))
        return self._interps[position]

    def start(self) -> Command:
        """The initial interval, announced for every position (:data:`ALL_POSITIONS`)."""
        cmd = self._template.start()
        return dataclasses.replace(cmd, position=ALL_POSITIONS, fast=self._fast(self._template))

    @staticmethod
    def _fast(interp: Interpreter) -> bool:
        return interp.statistics().state is InterpreterState.FAST

    def on_result(self, result: Result) -> Command | None:
        """Act on one result at its position; a Command (naming the position) when that
        position's interval changes."""
        position = max(0, result.position)
        interp = self._of(position)
        if math.isfinite(result.decision):
            self._nonfinite_run = 0
        else:
            self._nonfinite_run += 1
            self._last_nonfinite = result
        cmd = interp.on_result(result)
        if cmd is None:
            return None
        return dataclasses.replace(cmd, position=position, fast=self._fast(interp))

    def on_control(self, msg: ControlMessage) -> list[Command]:
        """Apply a run-time change to every position; the commands it causes, one per
        position whose interval changed.

        Raises
        ------
        ConfigError
            The change is refused (nothing is changed at any position: the first position
            checks it before the others take it).
        """
        commands = []
        self._template.on_control(msg)  # refuses a bad change before any position takes it
        for position, interp in enumerate(self._interps):
            cmd = interp.on_control(msg)
            if cmd is not None:
                commands.append(dataclasses.replace(cmd, position=position,
                                                    fast=self._fast(interp)))
        return commands

    def state(self, position: int) -> tuple[float, bool]:
        """The interval in force at ``position`` and whether it is in its fast state."""
        s = self._of(max(0, position)).statistics()
        return s.current_interval, s.state is InterpreterState.FAST

    def statistics(self) -> InterpreterStatistics:
        """Every position's counters added up; the interval of position 0 with one
        position, else the shortest in force; FAST when any position is."""
        stats = [i.statistics() for i in self._interps]
        if len(stats) == 1:
            one = stats[0]
            return dataclasses.replace(one, nonfinite_in_a_row=self._nonfinite_run)
        fast = any(s.state is InterpreterState.FAST for s in stats)
        state = InterpreterState.FAST if fast else stats[0].state
        if state is InterpreterState.FAST and stats[0].state is InterpreterState.MANUAL:
            state = InterpreterState.MANUAL
        return InterpreterStatistics(
            decisions=sum(s.decisions for s in stats),
            results_dropped_out_of_order=sum(s.results_dropped_out_of_order for s in stats),
            interval_switches=sum(s.interval_switches for s in stats),
            current_interval=min(s.current_interval for s in stats),
            state=state,
            fast_frames=sum(s.fast_frames for s in stats),
            results_ignored_paused=sum(s.results_ignored_paused for s in stats),
            paused=any(s.paused for s in stats),
            newest_seq=max(s.newest_seq for s in stats),
            nonfinite_decisions=sum(s.nonfinite_decisions for s in stats),
            nonfinite_in_a_row=self._nonfinite_run,
        )

    def position_statistics(self) -> tuple[PositionDecisions, ...]:
        """Each position's share of the counters, its state and interval."""
        out = []
        for position, interp in enumerate(self._interps):
            s = interp.statistics()
            out.append(PositionDecisions(
                position=position, decisions=s.decisions,
                results_dropped_out_of_order=s.results_dropped_out_of_order,
                results_ignored_paused=s.results_ignored_paused,
                interval_switches=s.interval_switches,
                nonfinite_decisions=s.nonfinite_decisions, state=s.state,
                current_interval=s.current_interval,
            ))
        return tuple(out)

    def broken(self) -> str | None:
        """Why the detector is broken: ``max_nonfinite_in_a_row`` non-finite decisions in a
        row, across every position (None while it is not)."""
        if self._limit <= 0 or self._nonfinite_run < self._limit:
            return None
        last = self._last_nonfinite
        assert last is not None
        return (
            f"the detector is broken: {self._nonfinite_run} non-finite decisions in a row "
            f"(last: {last.decision} from worker {last.worker}, stack {last.seq}); "
            f"interpreter.max_nonfinite_in_a_row = {self._limit}"
        )
