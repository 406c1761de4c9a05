"""Engine benchmarks: each times one step of the pipeline; the whole runs that give the
engine's targets (``rt-eda run`` through :class:`rt_eda.engine.Engine`, in-process) are
module-scoped fixtures whose figures go into the ``extra_info`` of the step they make
meaningful, and into the tables printed at the end.

    pytest bench/test_engine_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

- ``test_publish_to_decision``: one camera timepoint through the real worker and interpreter
  roles to its decision; runs: synthetic 2x512x512 at 100/500/1000 stacks/s (``--quick``:
  1000 only), and analysis 10x slower than the camera; baseline: rendering the stack alone;
- ``test_interpreter_on_result``: one decision of the binary interpreter; run: decision ->
  actuation with frequent events;
- ``test_result_through_message_queue``: a Result to another process and back through
  :class:`rt_eda.core.queues.MessageQueue`; baseline: ``multiprocessing.Queue``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import bench_procs
import numpy as np
import pytest
from bench_timing import figures, median, per_op, times

from rt_eda.core.config import Config, load_config
from rt_eda.core.messages import (
    DecisionRecord,
    InterpreterReport,
    IntervalChange,
    Result,
    RoleEventKind,
    WorkerStart,
)
from rt_eda.core.process import RoleChannels
from rt_eda.core.queues import MessageQueue
from rt_eda.engine import Engine
from rt_eda.interpreters import make_interpreter
from rt_eda.roles import interpreter as interpreter_role
from rt_eda.roles import worker as worker_role
from rt_eda.shm import StackRing
from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

CTX = mp.get_context("spawn")


class _Never:
    def is_set(self) -> bool:
        return False


NEVER = _Never()

E2E = {  # what the rate runs and the timed pipeline share
    "interpreter.kind": "manual", "run.verify": True,
    "analysis.workers": 2, "analysis.worker": "ImageWorker",
}


def run_engine(overrides: dict[str, object]) -> dict[str, Any]:
    config = load_config(None).with_overrides({"viewer.enabled": False, **overrides})
    engine = Engine(config)
    logging.getLogger().setLevel(logging.WARNING)
    code = engine.run()
    assert code == 0, engine.errors
    s = engine.summary
    assert s["stacks_published"] == s["stacks_analysed"] + s["stacks_skipped"]
    return s


@pytest.fixture(scope="module")
def rate_runs(quick: bool) -> dict[float, dict[str, Any]]:
    """End-to-end runs, one per requested rate: synthetic 2x512x512 -> 2 ImageWorkers ->
    manual interpreter, --verify."""
    duration = 3.0 if quick else 10.0
    intervals = [0.001] if quick else [0.01, 0.002, 0.001]
    runs = {}
    for interval in intervals:
        s = run_engine({**E2E, "camera.interval": interval,
                        "interpreter.manual_interval": interval, "run.duration": duration})
        lat = s["latency_ms"]
        requested = 1 / interval
        runs[interval] = {
            "requested_per_s": requested,
            "acquired_per_s": s["acquired_fps"],
            "acquired_ratio": s["acquired_fps"] / requested,
            "analysed_per_s": s["analysed_per_s"],
            "skipped_fraction": s["stacks_skipped"] / max(1, s["stacks_published"]),
            "p2c_p50_ms": lat["publish_to_claim"]["p50"],
            "p2c_p99_ms": lat["publish_to_claim"]["p99"],
            "p2d_p50_ms": lat["publish_to_decision"]["p50"],
            "p2d_p99_ms": lat["publish_to_decision"]["p99"],
            "torn_reads": s["torn_reads"],
            "interval_error_p99_ms": s["interval_error_ms"]["p99"],
        }
    return runs


@pytest.fixture(scope="module")
def overload_run(quick: bool) -> dict[str, Any]:
    """Analysis 10x slower than the camera: a worker busy 100 ms per stack, camera at 10 ms."""
    interval, work_ms = 0.01, 100.0
    s = run_engine({
        "interpreter.kind": "manual", "camera.interval": interval,
        "interpreter.manual_interval": interval,
        "analysis.worker": "BusyWorker", "analysis.worker_modules": ["slow_workers"],
        "analysis.options": {"work_ms": work_ms}, "analysis.workers": 1,
        "run.duration": 4.0 if quick else 8.0,
    })
    p2d = s["latency_ms"]["publish_to_decision"]
    return {
        "requested_per_s": 1 / interval, "acquired_per_s": s["acquired_fps"],
        "acquired_ratio": s["acquired_fps"] * interval,
        "analysis_ms": work_ms, "analysed_per_s": s["analysed_per_s"],
        "skipped_fraction": s["stacks_skipped"] / max(1, s["stacks_published"]),
        "p2d_p50_ms": p2d["p50"], "p2d_p99_ms": p2d["p99"],
        "target_p2d_p99_ms": 1.5 * work_ms + 5,
    }


@pytest.fixture(scope="module")
def actuation_run(quick: bool) -> dict[str, Any]:
    """Binary interpreter flipping between 2 ms and 1 ms on frequent synthetic events."""
    s = run_engine({
        "interpreter.slow_interval": 0.002, "interpreter.fast_interval": 0.001,
        "camera.synthetic.event_every_s": 0.6, "camera.synthetic.event_duration_s": 0.3,
        "analysis.workers": 2, "analysis.worker": "ImageWorker",
        "run.duration": 4.0 if quick else 8.0,
    })
    d2a = s["latency_ms"]["decision_to_actuation"]
    return {
        "interval_switches": s["interval_switches"],
        "d2a_p50_ms": d2a["p50"], "d2a_p99_ms": d2a["p99"], "d2a_max_ms": d2a["max"],
        "target_p99_ms": 2.0 + 5.0,
        "p2d_p99_ms": s["latency_ms"]["publish_to_decision"]["p99"],
    }


def _events(channels: RoleChannels, n: int, kind: RoleEventKind) -> list[Any]:
    """The next ``n`` events of ``kind`` (a FAILED one fails the test)."""
    got = []
    while len(got) < n:
        ev = channels.events.get(timeout=120)
        assert ev.kind is not RoleEventKind.FAILED, f"{ev.role} failed: {ev.payload}"
        if ev.kind is kind:
            got.append(ev)
    return got


@contextlib.contextmanager
def worker_and_interpreter_roles(config: Config, ring: StackRing
                                 ) -> Iterator[tuple[RoleChannels, dict[str, Any]]]:
    """The real worker processes and interpreter process of ``config`` on ``ring``, started
    and stopped as the engine does; the interpreter's decision rows come on ``writer``.

    Yields the channels and a dict that holds, after the block, the interpreter's statistics.
    """
    channels = RoleChannels(
        events=CTX.Queue(), camera=MessageQueue(CTX), results=MessageQueue(CTX),
        stop=CTX.Event(), log=CTX.Queue(), writer=MessageQueue(CTX), ring=ring.name,
        parent_pid=os.getpid())
    workers: list[Any] = []
    others: list[Any] = []
    stats: dict[str, Any] = {}
    try:
        for index in range(1, config.analysis.workers + 1):
            control = MessageQueue(CTX)
            p = CTX.Process(target=worker_role.run, args=(config, channels, index, control),
                            daemon=True)
            p.start()
            workers.append((p, control))
        _events(channels, len(workers), RoleEventKind.READY)
        for _, control in workers:
            control.put(WorkerStart(""))  # no network-image ring
        p = CTX.Process(target=interpreter_role.run, args=(config, channels), daemon=True)
        p.start()
        others.append(p)
        _events(channels, 1, RoleEventKind.READY)
        first = channels.writer.get(timeout=60)
        assert isinstance(first, IntervalChange)  # the start announcement
        yield channels, stats
        ring.shutdown()
        for p, _ in workers:
            p.join(60)
        channels.results.put(None)
        for ev in _events(channels, config.analysis.workers + 1, RoleEventKind.STATS):
            if isinstance(ev.payload, InterpreterReport):
                stats["publish_to_decision"] = ev.payload.publish_to_decision.as_dict()
        for p in others:
            p.join(60)
        assert all(p.exitcode == 0 for p, _ in workers), [p.exitcode for p, _ in workers]
        assert all(p.exitcode == 0 for p in others), [p.exitcode for p in others]
    finally:
        channels.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # the roles' log records: let their feeder threads finish
                channels.log.get(timeout=0.2)
        for p in [w for w, _ in workers] + others:
            if p.is_alive():
                p.kill()
            p.join(10)


def test_publish_to_decision(benchmark: Any, quick: bool, report: Any,
                             rate_runs: dict[float, dict[str, Any]],
                             overload_run: dict[str, Any]) -> None:
    """Timed: one camera timepoint to its decision, through the real roles: the synthetic
    source renders a stamped 2x512x512 uint16 stack into a ring slot here (as the camera
    role does), publishes it; one of 2 ImageWorker processes (worker role, --verify, asleep
    on the ring) claims, checks the stamps and analyses it, sends the Result to the
    interpreter process (manual interpreter), whose decision row comes back here. One stack
    per round (rounds x 1 iteration); nothing else is in flight.

    Baseline, per stack, in the same run: rendering the stack alone into a numpy buffer.
    ``extra_info``: the one-way publish -> decision the interpreter measured, the rate runs
    (``e2e_<rate>_*``) and the overload run (``overload_*``), which give the engine's targets.
    """
    rounds = 100 if quick else 300
    config = load_config(None).with_overrides({**E2E, "viewer.enabled": False})
    source = SyntheticSource(SyntheticSettings(height=512, width=512, verify=True))
    spec = source.open()
    order = list(source.frame_order())
    source.start(0.0)
    with StackRing.create(spec, 16) as ring, \
            worker_and_interpreter_roles(config, ring) as (channels, interp):

        def one_stack() -> None:
            source.next_timepoint(NEVER)
            with ring.write_slot() as slot:
                source.set_sequence(slot.seq)
                for i, (c, z) in enumerate(order):
                    slot.frame_times[i] = source.read_frame(c, z, slot.pixels[c, z])
                seq = slot.seq
            while True:
                row = channels.writer.get(timeout=30)
                if isinstance(row, DecisionRecord) and row.result.seq == seq:
                    return

        benchmark.pedantic(one_stack, rounds=rounds, warmup_rounds=10)
        stats = ring.statistics()
    stack_t = times(benchmark)
    assert stats.torn_reads == 0

    buf = np.empty(spec.shape, spec.np_dtype)
    step = iter(range(1 << 62))
    render_t = per_op(lambda: source.render_stack(next(step) * 1e-3, buf), rounds=rounds,
                      warmup_rounds=10)
    source.close()
    p2d = interp["publish_to_decision"]
    result: dict[str, Any] = {
        **figures(stack_t, "stack_to_decision", "ms"), **figures(render_t, "render", "ms"),
        "render_vs_stack": median(render_t) / median(stack_t),
        "interpreter_p2d_p50_ms": p2d["p50"], "interpreter_p2d_p99_ms": p2d["p99"],
        "torn_reads": stats.torn_reads,
        **{f"e2e_{1 / k:g}_{name}": v for k, run in rate_runs.items() for name, v in run.items()},
        **{f"overload_{name}": v for name, v in overload_run.items()},
    }
    benchmark.extra_info.update(result)
    report("one stack to its decision: synthetic 2x512x512 -> 2 ImageWorkers -> manual "
           "interpreter, one at a time (ms)", {
               "p50": result["stack_to_decision_median_ms"],
               "p99": result["stack_to_decision_p99_ms"],
               "interpreter's publish->decision p50": p2d["p50"],
               "render alone p50": result["render_median_ms"],
           })
    for run in rate_runs.values():
        report("end to end: synthetic 2x512x512 -> 2 ImageWorkers -> manual interpreter", run)
    report("overload: analysis 10x slower than the camera (100 ms vs 10 ms)", overload_run)
    assert all(run["torn_reads"] == 0 for run in rate_runs.values())


def test_interpreter_on_result(benchmark: Any, quick: bool, report: Any,
                               actuation_run: dict[str, Any]) -> None:
    """Timed: one ``BinaryFrameRateInterpreter.on_result`` (order check, hysteresis, a
    Command when the interval changes) on a stream of results whose decisions cross the
    thresholds every 4 results, so every 4th call switches the interval as in the
    frequent-events run; rounds x iterations, per result.

    ``extra_info``: the decision -> actuation run (binary interpreter, 2 ms / 1 ms, frequent
    events) and its target (one interval + 5 ms).
    """
    rounds, iterations = (10, 500) if quick else (30, 1000)
    config = load_config(None).with_overrides({
        "interpreter.slow_interval": 0.002, "interpreter.fast_interval": 0.001})
    interp = make_interpreter(config)
    interp.start()
    hi = config.interpreter.upper_threshold + 0.1
    lo = config.interpreter.lower_threshold - 0.1
    t0 = time.monotonic() + 1e6  # every stack "exposed" after any decision: it counts as fast
    n = (rounds + 1) * iterations + 1
    results = iter([Result(seq=i, worker=1 + i % 2, decision=hi if i % 4 < 2 else lo,
                           t_exposure=t0 + i, t_published=t0 + i, t_claimed=t0 + i,
                           t_done=t0 + i) for i in range(n)])
    commands: list[Any] = []

    def on_result() -> None:
        cmd = interp.on_result(next(results))
        if cmd is not None:
            commands.append(cmd)

    benchmark.pedantic(on_result, rounds=rounds, iterations=iterations, warmup_rounds=1)
    decided = interp.statistics().decisions
    result = {
        **figures(times(benchmark), "on_result"),
        "commands_per_result": len(commands) / max(1, decided),
        **{f"d2a_run_{k}": v for k, v in actuation_run.items()},
    }
    benchmark.extra_info.update(result)
    report("interpreter: one result (us), and decision -> actuation in a run (binary "
           "interpreter, 2 ms / 1 ms)", {
               "on_result p50 us": result["on_result_median_us"],
               "commands per result": result["commands_per_result"], **actuation_run})
    assert result["commands_per_result"] > 0.2
    assert actuation_run["interval_switches"] >= 2


@pytest.mark.parametrize("echo", ["idle", "busy"])
def test_result_through_message_queue(benchmark: Any, quick: bool, report: Any,
                                      echo: str) -> None:
    """Timed: one Result sent to another process through a :class:`MessageQueue` and the
    same Result sent back through a second one (a round trip, two hops, the receiving side
    asleep in ``get``); one round trip per round (rounds x 1 iteration). ``busy``: the other
    process also runs a thread of pure Python, as a worker whose hooks hold the GIL (the
    case :mod:`rt_eda.core.queues` was written for: ``multiprocessing.Queue`` sends from a feeder
    thread that must win the GIL first).

    Baseline, same rounds: the same round trip through two ``multiprocessing.Queue``s.
    """
    rounds = (200 if quick else 1000) if echo == "idle" else (40 if quick else 200)
    result_msg = Result(seq=1, worker=1, decision=0.5, t_exposure=1.0, t_published=1.0,
                        t_claimed=1.0, t_done=1.0)
    procs = []
    figures_: dict[str, Any] = {}
    try:
        for name, make in (("message_queue", lambda: MessageQueue(CTX)),
                           ("mp_queue", CTX.Queue)):
            q_out, q_back, ready = make(), make(), CTX.Queue()
            p = CTX.Process(target=bench_procs.message_echo,
                            args=(q_out, q_back, ready, echo == "busy"), daemon=True)
            p.start()
            procs.append(p)
            ready.get(timeout=120)

            def round_trip(q_out: Any = q_out, q_back: Any = q_back) -> None:
                q_out.put(result_msg)
                assert q_back.get(timeout=5.0) == result_msg

            if name == "message_queue":
                benchmark.pedantic(round_trip, rounds=rounds, warmup_rounds=5)
                figures_[name] = times(benchmark)
            else:
                figures_[name] = per_op(round_trip, rounds=rounds, warmup_rounds=5)
            q_out.put(None)
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
    mq, base = figures_["message_queue"], figures_["mp_queue"]
    result = {**figures(mq, "round_trip"), **figures(base, "mp_queue_round_trip"),
              "vs_mp_queue": median(base) / median(mq)}
    benchmark.extra_info.update(result)
    report("a Result to another process and back (us per round trip)", {
        "other process": echo, "MessageQueue p50": result["round_trip_median_us"],
        "MessageQueue p99": result["round_trip_p99_us"],
        "multiprocessing.Queue p50": result["mp_queue_round_trip_median_us"],
        "multiprocessing.Queue p99": result["mp_queue_round_trip_p99_us"],
        "ratio (Queue / MessageQueue)": result["vs_mp_queue"],
    })
