"""Stack ring benchmarks: each times one ring operation, beside its baseline timed the same way
in the same run.

    pytest bench/test_ring_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

- ``test_publish``: one stack published (a camera frame copied into a slot, then published)
  while a reader process claims; baselines: ``multiprocessing.Queue.put`` of the same frame to
  a reader process, and an in-process ``np.copyto`` of it (512x512 and 2048x2048 uint16);
- ``test_claim``: one claim from Python; baseline: the same bookkeeping under a
  ``multiprocessing.Lock``;
- ``test_publish_to_claim_round_trip``: publish -> claim by a sleeping reader process and back
  (two hops); baseline: the same round trip through ``multiprocessing.Queue``;
- ``test_idle_claim_cpu``: the CPU time of one idle claim wait; baseline: a blocking
  ``multiprocessing.Queue.get`` on an empty queue.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Iterator
from typing import Any

import bench_procs
import numpy as np
import pytest
from bench_timing import figures, median, pct, per_op, times

from rt_eda.shm import StackRing, StackSpec

CTX = mp.get_context("spawn")


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def spawn(procs: list[Any], target: Any, *args: Any) -> Any:
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    procs.append(p)
    return p


@pytest.mark.parametrize("size", [512, 2048], ids=["512x512", "2048x2048"])
def test_publish(benchmark: Any, procs: list[Any], quick: bool, report: Any,
                 size: int) -> None:
    """Timed: one stack published into the ring (a free slot taken, a 1 x 1 x size x size
    uint16 camera frame copied into it, its timestamps set, published) while a reader process
    claims the newest stack as fast as it can; rounds x iterations, per stack.

    Baselines, per stack, timed the same way in the same run: ``multiprocessing.Queue.put`` of
    the same frame (maxsize 8, a reader process getting; in steady state a put waits for a
    get, so it is the Queue's transport time) and an in-process ``np.copyto`` of the frame
    into one of 8 buffers (the copy alone).
    """
    if size == 512:
        rounds, iterations, q_rounds, q_iterations = (5, 200, 3, 50) if quick else \
            (20, 500, 10, 100)
    else:
        rounds, iterations, q_rounds, q_iterations = (5, 10, 3, 10) if quick else \
            (20, 25, 6, 10)
    frame = np.random.default_rng(0).integers(0, 4000, (1, 1, size, size), dtype=np.uint16)

    with StackRing.create(StackSpec(1, 1, size, size), 8) as ring:
        out, ready = CTX.Queue(), CTX.Queue()
        spawn(procs, bench_procs.ring_reader, ring.name, 1, out, ready)
        ready.get(timeout=120)

        def publish() -> None:
            with ring.write_slot() as slot:
                np.copyto(slot.pixels, frame)
                slot.frame_times[:] = time.monotonic()

        benchmark.pedantic(publish, rounds=rounds, iterations=iterations, warmup_rounds=1)
        ring_t = times(benchmark)
        time.sleep(0.05)
        ring.shutdown()
        _, delivered, _latencies, _cpu = out.get(timeout=60)
        ring.drain()
        stats = ring.statistics()
    assert stats.published == stats.completed + stats.skipped

    q = CTX.Queue(maxsize=8)
    qout = CTX.Queue()
    spawn(procs, bench_procs.queue_reader, q, qout, ready)
    ready.get(timeout=120)
    queue_t = per_op(lambda: q.put((time.monotonic(), frame)), rounds=q_rounds,
                     iterations=q_iterations, warmup_rounds=1)
    q.put(None)
    qout.get(timeout=120)

    slots = np.empty((8, 1, 1, size, size), dtype=np.uint16)
    counter = iter(range(1 << 62))
    copy_t = per_op(lambda: np.copyto(slots[next(counter) % 8], frame), rounds=rounds,
                    iterations=iterations, warmup_rounds=1)

    result = {
        **figures(ring_t, "publish"), **figures(queue_t, "queue_put"),
        **figures(copy_t, "copy"),
        "ring_stacks_per_s": 1 / float(np.mean(ring_t)),
        "queue_stacks_per_s": 1 / float(np.mean(queue_t)),
        "copy_stacks_per_s": 1 / float(np.mean(copy_t)),
        "ring_vs_queue": median(queue_t) / median(ring_t),
        "ring_vs_copy": median(copy_t) / median(ring_t),
        "published": stats.published, "delivered": delivered,
        "delivered_fraction": delivered / max(1, stats.published),
    }
    benchmark.extra_info.update(result)
    report("publish one stack, reader process claiming (per stack; ratios: baseline time / "
           "ring time)", {
               "size": f"{size}x{size}", "ring us": result["publish_median_us"],
               "Queue.put us": result["queue_put_median_us"],
               "copy us": result["copy_median_us"],
               "ring/s": result["ring_stacks_per_s"], "Queue/s": result["queue_stacks_per_s"],
               "ring vs Queue": result["ring_vs_queue"],
               "ring vs copy": result["ring_vs_copy"],
               "delivered": result["delivered_fraction"],
           })


def test_claim(benchmark: Any, quick: bool, report: Any) -> None:
    """Timed: one ``try_claim`` of the newest READY stack from Python (compare-and-swap on the
    slot's state word, older READY stacks marked skipped, counters, timestamps); one claim per
    round (rounds x 1 iteration: the untimed set-up releases the previous claim and publishes
    the next stack).

    Baseline, same rounds: the same bookkeeping in Python under a ``multiprocessing.Lock``.
    """
    n = 1_000 if quick else 5_000
    held: list[Any] = []
    with StackRing.create(StackSpec(1, 1, 8, 8), 4) as ring:

        def publish_next() -> None:
            while held:
                claim = held.pop()
                assert claim is not None, "try_claim found no stack"
                claim.release()
            with ring.write_slot():
                pass

        def claim() -> None:
            held.append(ring.try_claim(1))

        benchmark.pedantic(claim, setup=publish_next, rounds=n, warmup_rounds=100)
        publish_next()
    claim_t = times(benchmark)

    lock = CTX.Lock()
    states = [2, 0, 0, 0]
    seqs = [0, 0, 0, 0]
    step = iter(range(1 << 62))
    chosen: list[int] = []

    def make_ready() -> None:
        if chosen:
            states[chosen.pop()] = 4
        i = next(step)
        states[i % 4] = 2
        seqs[i % 4] = i

    def locked_claim() -> None:
        with lock:
            best = max((s for s in range(4) if states[s] == 2), key=lambda s: seqs[s])
            states[best] = 3
        chosen.append(best)

    base_t = per_op(locked_claim, setup=make_ready, rounds=n, warmup_rounds=100)
    result = {
        **figures(claim_t, "claim"), **figures(base_t, "locked_python"),
        "claim_vs_locked_python": median(base_t) / median(claim_t),
    }
    benchmark.extra_info.update(result)
    report("claim from Python (us per claim)", {
        "claim p50": result["claim_median_us"], "claim p99": result["claim_p99_us"],
        "locked Python p50": result["locked_python_median_us"],
        "locked Python p99": result["locked_python_p99_us"],
        "ratio (locked / claim)": result["claim_vs_locked_python"],
    })


def test_publish_to_claim_round_trip(benchmark: Any, procs: list[Any], quick: bool,
                                     report: Any) -> None:
    """Timed: one round trip of two publish -> claim hops, each to a reader sleeping on the
    ring's doorbell: a stack published here (512x512 uint16 ring) is claimed by an echo
    process, which publishes a stack in a second ring that is claimed back here; one round trip
    per round (rounds x 1 iteration). The untimed set-up sleeps 2 ms (a 500 Hz camera), so the
    echo process is asleep when the stack comes.

    The one-way hops the readers saw (claim time - publish time, both ``time.monotonic()``) go
    into ``extra_info``. Baseline, same rounds and pacing: the same round trip through two
    ``multiprocessing.Queue``s, the 512x512 frame pickled on the way out.
    """
    n = 150 if quick else 500
    period = 2e-3
    frame = np.random.default_rng(0).integers(0, 4000, (1, 1, 512, 512), dtype=np.uint16)
    back: list[float] = []
    with StackRing.create(StackSpec(1, 1, 512, 512), 8) as ring_out, \
            StackRing.create(StackSpec(1, 1, 8, 8), 8) as ring_back:
        out, ready = CTX.Queue(), CTX.Queue()
        spawn(procs, bench_procs.ring_echo, ring_out.name, ring_back.name, ready, out)
        ready.get(timeout=120)

        def round_trip() -> None:
            with ring_out.write_slot() as slot:
                slot.frame_times[:] = time.monotonic()
            claim = ring_back.claim(1, timeout=5.0)
            assert claim is not None, "no answer from the echo process within 5 s"
            back.append(claim.t_claimed - claim.t_published)
            claim.release()

        benchmark.pedantic(round_trip, setup=lambda: time.sleep(period), rounds=n,
                           warmup_rounds=10)
        ring_t = times(benchmark)
        ring_out.shutdown()
        there = out.get(timeout=60)

    q_out, q_back = CTX.Queue(), CTX.Queue()
    spawn(procs, bench_procs.queue_echo, q_out, q_back, ready, out)
    ready.get(timeout=120)
    q_back_lat: list[float] = []

    def queue_round_trip() -> None:
        q_out.put((time.monotonic(), frame))
        t_put = q_back.get(timeout=5.0)
        q_back_lat.append(time.monotonic() - t_put)

    queue_t = per_op(queue_round_trip, setup=lambda: time.sleep(period), rounds=n,
                     warmup_rounds=10)
    q_out.put(None)
    q_there = out.get(timeout=60)
    ring_hops = np.concatenate([there[-n:], back[-n:]])
    queue_hops = np.concatenate([q_there[-n:], q_back_lat[-n:]])
    result = {
        "rate_hz": 1 / period,
        **figures(ring_t, "round_trip"), **figures(queue_t, "queue_round_trip"),
        "ring_vs_queue": median(queue_t) / median(ring_t),
        "hop_p50_us": pct(ring_hops, 50) * 1e6, "hop_p99_us": pct(ring_hops, 99) * 1e6,
        "hop_max_us": float(np.max(ring_hops)) * 1e6,
        "queue_hop_p50_us": pct(queue_hops, 50) * 1e6,
        "queue_hop_p99_us": pct(queue_hops, 99) * 1e6,
        "queue_hop_max_us": float(np.max(queue_hops)) * 1e6,
    }
    benchmark.extra_info.update(result)
    report("publish -> claim, sleeping reader, 500 Hz (us)", {
        "round trip p50": result["round_trip_median_us"],
        "round trip p99": result["round_trip_p99_us"],
        "one hop p50": result["hop_p50_us"], "one hop p99": result["hop_p99_us"],
        "Queue round trip p50": result["queue_round_trip_median_us"],
        "Queue hop p50": result["queue_hop_p50_us"],
        "Queue hop p99": result["queue_hop_p99_us"],
        "ratio (Queue / ring)": result["ring_vs_queue"],
    })


@pytest.mark.benchmark(timer=time.process_time)
def test_idle_claim_cpu(benchmark: Any, quick: bool, report: Any) -> None:
    """Timed, in CPU seconds (this test's timer is ``time.process_time``): one idle
    ``claim(timeout=0.5)`` on an empty ring, i.e. what a reader with nothing to do spends
    sleeping on the doorbell for 0.5 s; one wait per round (rounds x 1 iteration).

    Baseline, same rounds, same timer: ``multiprocessing.Queue.get(timeout=0.5)`` on an empty
    queue. ``extra_info`` gives both as % of a core.
    """
    rounds = 4 if quick else 8
    wait_s = 0.5
    with StackRing.create(StackSpec(1, 1, 8, 8), 2) as ring:

        def idle_claim() -> None:
            assert ring.claim(1, timeout=wait_s) is None

        benchmark.pedantic(idle_claim, rounds=rounds)
    ring_t = times(benchmark)
    q = CTX.Queue()

    def idle_get() -> None:
        with pytest.raises(queue.Empty):
            q.get(timeout=wait_s)

    queue_t = per_op(idle_get, rounds=rounds, timer=time.process_time)
    result = {
        "wait_s": wait_s, **figures(ring_t, "claim_cpu"), **figures(queue_t, "queue_get_cpu"),
        "ring_reader_cpu_percent": 100 * float(np.mean(ring_t)) / wait_s,
        "queue_reader_cpu_percent": 100 * float(np.mean(queue_t)) / wait_s,
    }
    benchmark.extra_info.update(result)
    report("idle reader CPU (% of one core)", {
        "ring claim": result["ring_reader_cpu_percent"],
        "Queue.get": result["queue_reader_cpu_percent"],
        "ring us per 0.5 s wait": result["claim_cpu_median_us"],
    })
    assert result["ring_reader_cpu_percent"] < 2.0
