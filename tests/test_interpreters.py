"""Tests of rt_eda.interpreters: the binary state machine, ordering, controls, manual mode."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rt_eda.core.config import Config, InterpreterConfig
from rt_eda.core.errors import ConfigError
from rt_eda.core.messages import Command, ControlKey, ControlMessage, Result
from rt_eda.interpreters import (
    BinaryFrameRateInterpreter,
    Interpreter,
    InterpreterState,
    ManualInterpreter,
    make_interpreter,
)

SLOW, FAST = 1.0, 0.1


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(seq: int, decision: float, t_exposure: float) -> Result:
    return Result(
        seq=seq,
        worker=seq % 2,
        decision=decision,
        t_exposure=t_exposure,
        t_published=t_exposure + 0.01,
        t_claimed=t_exposure + 0.02,
        t_done=t_exposure + 0.03,
    )


def binary(clock: FakeClock, **settings: object) -> BinaryFrameRateInterpreter:
    base = InterpreterConfig(slow_interval=SLOW, fast_interval=FAST)
    return BinaryFrameRateInterpreter(base.with_changes(settings), clock=clock)


def feed(
    interp: Interpreter, clock: FakeClock, values: list[float], first_seq: int = 0
) -> list[float | None]:
    """Results acquired one after another (each exposed after the previous decision)."""
    out: list[float | None] = []
    for i, value in enumerate(values):
        clock.now += 1.0
        cmd = interp.on_result(result(first_seq + i, value, t_exposure=clock.now))
        clock.now += 0.5
        out.append(None if cmd is None else cmd.interval_s)
    return out


@pytest.mark.parametrize(
    ("min_fast_frames", "values", "expected"),
    [
        # below the upper threshold: stays slow
        (1, [0.1, 0.2, 0.47, 0.48], [None, None, None, None]),
        # above upper -> fast; one fast frame below lower -> slow
        (1, [0.49, 0.1], [FAST, SLOW]),
        # hysteresis: between the thresholds (and at lower exactly) the state holds
        (1, [0.5, 0.4, 0.35, 0.3, 0.29, 0.4, 0.47], [FAST, None, None, None, SLOW, None, None]),
        # a second event after going back to slow
        (1, [0.6, 0.1, 0.2, 0.9, 0.1], [FAST, SLOW, None, FAST, SLOW]),
        # high values while fast change nothing
        (1, [0.6, 0.9, 0.7, 0.1], [FAST, None, None, SLOW]),
        # min_fast_frames = 3: the third fast frame may switch back, not earlier
        (3, [0.6, 0.1, 0.1, 0.1, 0.1], [FAST, None, None, SLOW, None]),
        # fast frames above lower count too
        (3, [0.6, 0.9, 0.4, 0.1], [FAST, None, None, SLOW]),
        # the count restarts with each fast period
        (
            3,
            [0.6, 0.1, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1],
            [FAST, None, None, SLOW, FAST, None, None, SLOW],
        ),
    ],
)
def test_binary_state_machine(
    min_fast_frames: int, values: list[float], expected: list[float | None]
) -> None:
    clock = FakeClock()
    interp = binary(clock, min_fast_frames=min_fast_frames)
    assert feed(interp, clock, values) == expected
    stats = interp.statistics()
    assert stats.decisions == len(values)
    assert stats.interval_switches == sum(e is not None for e in expected)
    assert stats.results_dropped_out_of_order == 0


def test_start_announces_slow_and_commands_carry_context() -> None:
    clock = FakeClock()
    interp = binary(clock)
    start = interp.start()
    assert start == Command(
        interval_s=SLOW, reason="start: slow interval 1 s", after_seq=-1, t_decided=100.0
    )
    assert interp.statistics().state is InterpreterState.SLOW
    assert interp.statistics().current_interval == SLOW

    clock.now = 200.0
    fast = interp.on_result(result(7, 0.61, t_exposure=199.0))
    assert fast is not None
    assert fast.interval_s == FAST
    assert fast.after_seq == 7
    assert fast.t_decided == 200.0
    assert "decision 0.61 > upper 0.48: fast" in fast.reason

    clock.now = 202.0
    slow = interp.on_result(result(9, 0.05, t_exposure=201.0))
    assert slow is not None
    assert (slow.interval_s, slow.after_seq, slow.t_decided) == (SLOW, 9, 202.0)
    assert "decision 0.05 < lower 0.3 after 1 fast frame(s): slow" in slow.reason


def test_results_of_stacks_exposed_before_the_switch_are_not_fast_frames() -> None:
    clock = FakeClock()
    interp = binary(clock, min_fast_frames=1)
    clock.now = 10.0
    assert interp.on_result(result(5, 0.9, t_exposure=9.0)) is not None  # fast decided at 10
    clock.now = 10.2
    # Stacks 6 and 7 were exposed before the decision (in flight): slow-mode stacks.
    assert interp.on_result(result(6, 0.0, t_exposure=9.5)) is None
    assert interp.on_result(result(7, 0.0, t_exposure=9.99)) is None
    stats = interp.statistics()
    assert (stats.state, stats.fast_frames, stats.decisions) == (InterpreterState.FAST, 0, 3)
    # Stack 8 is the first exposed at or after the decision.
    cmd = interp.on_result(result(8, 0.0, t_exposure=10.0))
    assert cmd is not None
    assert cmd.interval_s == SLOW
    assert interp.statistics().fast_frames == 0  # reset outside fast mode


def test_out_of_order_results_are_dropped_and_counted() -> None:
    clock = FakeClock()
    interp = binary(clock)
    assert interp.on_result(result(5, 0.9, t_exposure=clock.now)) is not None  # fast
    clock.now += 1
    assert interp.on_result(result(3, 0.0, t_exposure=clock.now)) is None  # older: dropped
    assert interp.on_result(result(5, 0.0, t_exposure=clock.now)) is None  # repeated: dropped
    assert interp.statistics().state is InterpreterState.FAST
    cmd = interp.on_result(result(10, 0.0, t_exposure=clock.now))
    assert cmd is not None
    assert cmd.interval_s == SLOW
    # A late result of an older stack cannot flip the state back.
    assert interp.on_result(result(9, 0.99, t_exposure=clock.now)) is None
    stats = interp.statistics()
    assert stats.state is InterpreterState.SLOW
    assert stats.results_dropped_out_of_order == 3
    assert stats.decisions == 2
    assert stats.newest_seq == 10
    assert stats.interval_switches == 2


def test_equal_intervals_change_state_without_commands() -> None:
    clock = FakeClock()
    interp = BinaryFrameRateInterpreter(
        InterpreterConfig(slow_interval=0.5, fast_interval=0.5), clock=clock
    )
    assert feed(interp, clock, [0.9]) == [None]
    stats = interp.statistics()
    assert (stats.state, stats.interval_switches) == (InterpreterState.FAST, 0)


def test_controls_change_thresholds_mid_run() -> None:
    clock = FakeClock()
    interp = binary(clock)
    assert interp.on_control(ControlMessage("upper_threshold", 0.7)) is None
    assert feed(interp, clock, [0.6, 0.8], first_seq=0) == [None, FAST]
    assert interp.on_control(ControlMessage("lower_threshold", 0.05)) is None
    assert feed(interp, clock, [0.1, 0.04], first_seq=2) == [None, SLOW]
    assert interp.on_control(ControlMessage("min_fast_frames", 2.0)) is None
    assert interp.settings.min_fast_frames == 2
    assert feed(interp, clock, [0.8, 0.0, 0.0], first_seq=4) == [FAST, None, SLOW]


def test_interval_controls_apply_to_the_current_state() -> None:
    clock = FakeClock()
    interp = binary(clock)
    interp.start()
    # fast_interval while slow: remembered, nothing sent
    assert interp.on_control(ControlMessage("fast_interval", 0.0)) is None
    # slow_interval while slow: applies at once
    cmd = interp.on_control(ControlMessage("slow_interval", 2.0))
    assert cmd is not None
    assert (cmd.interval_s, cmd.reason) == (2.0, "control: slow_interval = 2")
    assert feed(interp, clock, [0.9]) == [0.0]
    cmd = interp.on_control(ControlMessage("fast_interval", 0.05))
    assert cmd is not None
    assert cmd.interval_s == 0.05
    assert interp.on_control(ControlMessage("fast_interval", 0.05)) is None  # unchanged
    assert interp.statistics().interval_switches == 3


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lower_threshold", 0.9, "interpreter.lower_threshold (0.9) must be <= "),
        ("upper_threshold", 0.1, "interpreter.lower_threshold (0.3) must be <= "),
        ("fast_interval", 5.0, "interpreter.fast_interval (5) must be <= "),
        ("slow_interval", -1.0, "interpreter.slow_interval: -1.0 (float) is not allowed"),
        ("slow_interval", math.nan, "interpreter.slow_interval: nan"),
        ("min_fast_frames", 0.0, "interpreter.min_fast_frames: 0 (int) is not allowed"),
        ("min_fast_frames", 2.5, "interpreter.min_fast_frames: 2.5 (float) is not allowed"),
        ("manual_interval", 1.0, "interpreter.manual_interval: not a run-time setting"),
        ("paused", 0.5, "interpreter.paused: 0.5 is not allowed; expected 0.0 or 1.0"),
    ],
)
def test_invalid_controls_are_refused_and_change_nothing(
    key: str, value: float, message: str
) -> None:
    clock = FakeClock()
    interp = binary(clock, min_fast_frames=2)
    feed(interp, clock, [0.9, 0.0])  # fast, one fast frame done
    settings, stats = interp.settings, interp.statistics()
    with pytest.raises(ConfigError) as exc:
        interp.on_control(ControlMessage(key, value))
    assert message in str(exc.value)
    assert interp.settings == settings
    assert interp.statistics() == stats
    # and it goes on exactly as before
    assert feed(interp, clock, [0.0], first_seq=2) == [SLOW]


def test_a_key_no_interpreter_knows_is_not_a_control_message() -> None:
    with pytest.raises(ValueError, match="control key 'gain' unknown; allowed: "
                                         "lower_threshold, upper_threshold") as exc:
        ControlMessage("gain", 3.0)  # type: ignore[arg-type]
    assert not isinstance(exc.value, ConfigError)
    assert ControlMessage("paused", 1.0).key is ControlKey.PAUSED  # type: ignore[arg-type]


def test_pause_holds_the_interval_and_counts_ignored_results() -> None:
    clock = FakeClock()
    interp = binary(clock)
    assert interp.on_control(ControlMessage("paused", 1.0)) is None
    assert feed(interp, clock, [0.9, 0.9]) == [None, None]
    assert interp.on_result(result(0, 0.9, clock.now)) is None  # order still checked
    stats = interp.statistics()
    assert (stats.paused, stats.results_ignored_paused, stats.decisions) == (True, 2, 0)
    assert stats.results_dropped_out_of_order == 1
    interp.on_control(ControlMessage("paused", 0.0))
    assert feed(interp, clock, [0.9], first_seq=2) == [FAST]


def test_statistics_are_frozen_snapshots() -> None:
    clock = FakeClock()
    interp = binary(clock)
    before = interp.statistics()
    feed(interp, clock, [0.9])
    assert before.state is InterpreterState.SLOW
    assert interp.statistics().state is InterpreterState.FAST
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.decisions = 5  # type: ignore[misc]


def test_make_interpreter_and_protocol() -> None:
    clock = FakeClock()
    interp = make_interpreter(Config(), clock=clock)
    assert isinstance(interp, BinaryFrameRateInterpreter)
    assert isinstance(interp, Interpreter)
    assert interp.start().interval_s == Config().interpreter.slow_interval

    manual = make_interpreter(
        Config().with_overrides({"interpreter.kind": "manual", "camera.interval": 0.7}),
        clock=clock,
    )
    assert isinstance(manual, ManualInterpreter)
    assert isinstance(manual, Interpreter)
    assert manual.start().interval_s == 0.7
    held = make_interpreter(
        Config().with_overrides({"interpreter.kind": "manual", "interpreter.manual_interval": 0}),
        clock=clock,
    )
    assert held.start().interval_s == 0.0
    assert held.statistics().state is InterpreterState.MANUAL


def manual(clock: FakeClock, interval: float = 0.5) -> ManualInterpreter:
    settings = InterpreterConfig(kind="manual", slow_interval=2.0, fast_interval=0.2)
    return ManualInterpreter(settings, interval, clock=clock)


def test_manual_interval_ignores_results_but_checks_order() -> None:
    clock = FakeClock()
    interp = manual(clock)
    start = interp.start()
    assert (start.interval_s, start.after_seq) == (0.5, -1)
    assert feed(interp, clock, [0.99, 0.0, 0.99]) == [None, None, None]
    assert interp.on_result(result(1, 0.9, clock.now)) is None
    stats = interp.statistics()
    assert (stats.decisions, stats.results_dropped_out_of_order) == (3, 1)
    assert (stats.current_interval, stats.interval_switches) == (0.5, 0)


def test_manual_controls() -> None:
    clock = FakeClock()
    interp = manual(clock)
    interp.start()
    cmd = interp.on_control(ControlMessage("manual_interval", 0.25))
    assert cmd is not None
    assert (cmd.interval_s, cmd.reason) == (0.25, "control: manual_interval = 0.25")
    assert interp.on_control(ControlMessage("manual_interval", 0.25)) is None
    fast = interp.on_control(ControlMessage("mode", 1.0))
    assert fast is not None
    assert fast.interval_s == 0.2
    changed = interp.on_control(ControlMessage("fast_interval", 0.1))  # the mode held
    assert changed is not None
    assert changed.interval_s == 0.1
    assert interp.on_control(ControlMessage("slow_interval", 3.0)) is None  # not held
    slow = interp.on_control(ControlMessage("mode", 0.0))
    assert slow is not None
    assert slow.interval_s == 3.0
    back = interp.on_control(ControlMessage("manual_interval", 0.25))
    assert back is not None
    assert back.interval_s == 0.25
    assert interp.statistics().interval_switches == 5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("manual_interval", -0.1, "interpreter.manual_interval: -0.1 (float) is not allowed"),
        ("mode", 2.0, "interpreter.mode: 2.0 is not allowed; expected 0.0 or 1.0"),
        ("lower_threshold", 0.1, "not a run-time setting of the 'manual' interpreter"),
        ("fast_interval", 9.0, "interpreter.fast_interval (9) must be <= "),
    ],
)
def test_manual_invalid_controls_change_nothing(key: str, value: float, message: str) -> None:
    clock = FakeClock()
    interp = manual(clock)
    settings, stats = interp.settings, interp.statistics()
    with pytest.raises(ConfigError) as exc:
        interp.on_control(ControlMessage(key, value))
    assert message in str(exc.value)
    assert (interp.settings, interp.statistics()) == (settings, stats)


def test_manual_refuses_negative_start_interval() -> None:
    with pytest.raises(ConfigError, match=r"interpreter\.manual_interval: -1\.0"):
        manual(FakeClock(), interval=-1.0)
