"""The camera's scheduler over plan positions, on a simulated clock (no processes, no sleep).

A simulated stage executes each planned visit exactly as the camera does (move from
``planned - prep``, the move's time, then expose at ``planned``, the stage held for the
stack's time), so what is checked is the policy itself: exact timing while the stage can
deliver what the intervals ask, fast positions keeping their interval when it cannot, slow
ones delayed and counted, and no position starved.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest

from rt_eda.sources.scheduler import POLICY, Scheduler

STACK_S = 0.02  # two 10 ms exposures
MOVE_S = 0.01


def move(a: int | None, b: int) -> float:
    return 0.0 if a == b else MOVE_S


def simulate(sched: Scheduler, until: float,
             events: Callable[[Scheduler, float], None] | None = None,
             move_s: float = MOVE_S) -> list[tuple[int, float, float, bool]]:
    """Run the simulated stage; every visit as ``(position, due, exposure, fast)``."""
    t = 0.0
    done: list[tuple[int, float, float, bool]] = []
    while t < until:
        if events is not None:
            events(sched, t)
        visit = sched.next(t)
        t = max(t, visit.planned - visit.prep_s)
        if visit.position != sched.current:
            t += move_s
            sched.moved(move_s, 0.0)
        t = max(t, visit.planned)
        sched.visited(visit, t, t)
        done.append((visit.position, visit.due, t, visit.fast))
        t += STACK_S
    return done


def gaps(visits: list[tuple[int, float, float, bool]], position: int) -> list[float]:
    times = [t for p, _, t, _ in visits if p == position]
    return [b - a for a, b in pairwise(times)]


def test_capacity_suffices_every_visit_is_on_time() -> None:
    sched = Scheduler(4, 1.0, 0.0, stack_s=STACK_S, settle_s=0.0, move_estimate=move)
    visits = simulate(sched, 60.0)
    assert len(visits) == 241  # 60 s at 4 positions, and the first of the next round
    # The first stack waits for the stage's first move (from nowhere known); then every
    # visit is exactly when due.
    assert visits[0][2] - visits[0][1] == pytest.approx(MOVE_S)
    assert all(abs(t - due) < 1e-9 for _, due, t, _ in visits[1:])
    for p in range(4):
        assert gaps(visits, p) == pytest.approx([1.0] * (len(gaps(visits, p))))
    st = sched.statistics()
    assert st.timing_error_ms.max == pytest.approx(0.0, abs=1e-6)
    assert st.slow_delayed == st.fast_first == st.aged == 0
    assert st.overload_s == 0.0 and st.demand_max < 1.0
    assert st.policy == POLICY
    # The first visits are spread over the first interval, not all at once.
    assert [due for _, due, _, _ in visits[:4]] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert sched.moves == len(visits)  # one move per visit: every stack is elsewhere


def test_a_fast_position_keeps_its_interval_and_slow_ones_yield() -> None:
    sched = Scheduler(4, 1.0, 0.0, stack_s=STACK_S, settle_s=0.0, move_estimate=move)

    def event(s: Scheduler, t: float) -> None:
        if t >= 2.0 and not s.is_fast(1):
            s.set_interval(1, 0.1, True, t)

    visits = simulate(sched, 30.0, event)
    fast = [(due, t) for p, due, t, f in visits if p == 1 and f]
    assert len(fast) > 200
    # The first fast visit is due when the command comes, and waits for the move there;
    # every later one is exactly on time, whatever the slow positions' grids.
    assert fast[0][1] - fast[0][0] == pytest.approx(MOVE_S)
    assert max(t - due for due, t in fast[1:]) == pytest.approx(0.0, abs=1e-9)
    assert gaps(visits, 1)[-100:] == pytest.approx([0.1] * 100)
    st = sched.statistics()
    assert st.fast_first > 0 and st.slow_delayed > 0  # slow visits that collided yielded
    # at most the fast stack it waited for and two moves, plus its own stack time
    assert st.slow_delay_ms.max <= 2 * (STACK_S + MOVE_S) * 1e3 + 1e-6
    for p in (0, 2, 3):  # and were still seen about once a second
        assert max(gaps(visits, p)) < 1.0 + 2 * (STACK_S + MOVE_S) + 1e-9


def test_overload_fast_first_slow_delayed_and_counted_none_starved() -> None:
    # 16 positions at 1 s, 6 of them fast at 0.1 s: 6 x 10 visits/s x 30 ms = 1.8 s of
    # stage time per second for the fast ones alone.
    n = 16
    sched = Scheduler(n, 1.0, 0.0, stack_s=STACK_S, settle_s=0.0, move_estimate=move)

    def event(s: Scheduler, t: float) -> None:
        for p in range(6):
            if t >= 1.0 and not s.is_fast(p):
                s.set_interval(p, 0.1, True, t)

    visits = simulate(sched, 40.0, event)
    st = sched.statistics()
    assert st.demand_max > 1.0 and st.overload_s > 30.0
    assert st.slow_delayed > 0 and st.fast_first > 0
    assert st.aged > 0  # slow positions that waited a whole interval went first
    for p in range(n):
        seen = [t for q, _, t, _ in visits if q == p]
        assert seen, f"position {p} never visited"
        # No starvation: never more than about two slow intervals without a stack.
        assert max(gaps(visits, p)) < 2.5, (p, max(gaps(visits, p)))
    # The fast positions got most of the stage.
    fast_visits = sum(1 for p, *_ in visits if p < 6)
    assert fast_visits > 0.6 * len(visits)


def test_a_shorter_interval_is_due_at_once_a_longer_one_after_the_last_stack() -> None:
    sched = Scheduler(2, 1.0, 0.0, stack_s=STACK_S, settle_s=0.0, move_estimate=move)
    v = sched.next(0.0)
    sched.visited(v, 0.0, 0.0)
    sched.set_interval(0, 0.1, True, 0.5)  # 0.1 after the last stack has passed: now
    v = sched.next(0.5)
    assert (v.position, v.due, v.fast) == (0, 0.5, True)
    sched.visited(v, 0.5, 0.5)
    sched.set_interval(0, 2.0, False, 0.6)
    assert sched.next(0.6).position == 1  # position 0 is due at 2.5 now


def test_settling_and_moves_are_counted_and_planned_ahead() -> None:
    sched = Scheduler(2, 1.0, 0.0, stack_s=STACK_S, settle_s=0.005, move_estimate=move)
    v0 = sched.next(0.0)
    sched.visited(v0, v0.planned, v0.planned)
    v1 = sched.next(0.1)
    assert v1.position == 1 and v1.prep_s == pytest.approx(MOVE_S + 0.005)
    assert v1.planned == pytest.approx(0.5)  # its due time; the move starts before it
    sched.moved(0.011, 0.005)
    st = sched.statistics()
    assert st.moves == 1 and st.move_ms.max == pytest.approx(11.0)
    assert st.settle_ms.max == pytest.approx(5.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one position"):
        Scheduler(0, 1.0, 0.0, stack_s=STACK_S, settle_s=0.0, move_estimate=move)
