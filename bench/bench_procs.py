"""Process bodies for the benchmarks (importable by spawned children)."""

from __future__ import annotations

import contextlib
import os
import queue
import time
from typing import Any

import numpy as np

from rt_eda.errors import RingClosedError, RingOverrunError
from rt_eda.shm import StackRing


def ring_producer(name: str, n: int, period_s: float, go: Any, out: Any) -> None:
    """Copy a camera frame into a slot and publish it, n times (paced if period_s > 0)."""
    ring = StackRing.attach(name)
    frame = np.random.default_rng(0).integers(0, 4000, ring.spec.shape, dtype=np.uint16)
    frame = frame.astype(ring.spec.np_dtype)
    go.wait()
    overruns = 0
    t0 = time.perf_counter()
    t_next = time.monotonic()
    for _ in range(n):
        if period_s > 0:
            t_next += period_s
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            with ring.write_slot() as slot:
                np.copyto(slot.pixels, frame)
                slot.frame_times[:] = time.monotonic()
        except RingOverrunError:
            overruns += 1
    out.put(("producer", time.perf_counter() - t0, overruns))
    del frame
    ring.close()


def ring_reader(name: str, actor: int, out: Any, ready: Any) -> None:
    """Claim newest stacks until the ring closes; report counts, latencies and CPU time."""
    ring = StackRing.attach(name)
    latencies: list[float] = []
    got = 0
    cpu0 = time.process_time()
    ready.put(os.getpid())
    while True:
        try:
            claim = ring.claim(actor, timeout=1.0)
        except RingClosedError:
            break
        if claim is None:
            continue
        latencies.append(claim.t_claimed - claim.t_published)
        _ = int(claim.pixels[0, 0, 0, 0])
        claim.release()
        got += 1
    out.put(("reader", got, latencies, time.process_time() - cpu0))
    ring.close()


def queue_producer(q: Any, shape: tuple[int, ...], n: int, period_s: float, go: Any,
                   out: Any) -> None:
    """Put n pickled frames on a multiprocessing.Queue (paced if period_s > 0)."""
    frame = np.random.default_rng(0).integers(0, 4000, shape, dtype=np.uint16)
    go.wait()
    t0 = time.perf_counter()
    t_next = time.monotonic()
    for _ in range(n):
        if period_s > 0:
            t_next += period_s
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        q.put((time.monotonic(), frame))
    q.put(None)
    out.put(("producer", time.perf_counter() - t0, 0))


def queue_reader(q: Any, out: Any, ready: Any) -> None:
    """Get frames until None; report counts, put->get latencies, CPU time."""
    latencies: list[float] = []
    got = 0
    cpu0 = time.process_time()
    ready.put(os.getpid())
    t_end = 0.0
    while True:
        item = q.get()
        if item is None:
            t_end = time.perf_counter()
            break
        t_put, frame = item
        latencies.append(time.monotonic() - t_put)
        _ = int(frame[0, 0, 0, 0])
        got += 1
    out.put(("reader", got, latencies, time.process_time() - cpu0, t_end))


def idle_ring_reader(name: str, seconds: float, out: Any) -> None:
    """Wait for stacks that never come; report the CPU time spent doing so."""
    ring = StackRing.attach(name)
    cpu0 = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ring.claim(1, timeout=deadline - time.monotonic())
        except RingClosedError:
            break
    out.put(time.process_time() - cpu0)
    ring.close()


def idle_queue_reader(q: Any, seconds: float, out: Any) -> None:
    """Block on an empty multiprocessing.Queue; report the CPU time spent doing so."""
    cpu0 = time.process_time()
    with contextlib.suppress(queue.Empty):
        q.get(timeout=seconds)
    out.put(time.process_time() - cpu0)
