"""Process bodies for the benchmarks (importable by spawned children)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rt_eda.core.errors import RingClosedError
from rt_eda.shm import StackRing


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


def ring_echo(name_in: str, name_out: str, ready: Any, out: Any) -> None:
    """Claim each stack of ring ``name_in`` (sleeping while there is none) and answer it with
    a stack published in ring ``name_out``; report the publish -> claim latencies seen."""
    ring_in = StackRing.attach(name_in)
    ring_out = StackRing.attach(name_out)
    latencies: list[float] = []
    ready.put(os.getpid())
    while True:
        try:
            claim = ring_in.claim(1, timeout=1.0)
        except RingClosedError:
            break
        if claim is None:
            continue
        latencies.append(claim.t_claimed - claim.t_published)
        claim.release()
        with ring_out.write_slot() as slot:
            slot.frame_times[:] = time.monotonic()
    out.put(latencies)
    ring_in.close()
    ring_out.close()


def queue_echo(q_in: Any, q_out: Any, ready: Any, out: Any) -> None:
    """Get each message of ``q_in`` and put a small answer on ``q_out``, until None; a message
    ``(t_put, payload)`` has its put -> get latency recorded and reported."""
    latencies: list[float] = []
    ready.put(os.getpid())
    while True:
        item = q_in.get()
        if item is None:
            break
        if isinstance(item, tuple):
            latencies.append(time.monotonic() - item[0])
        q_out.put(time.monotonic())
    out.put(latencies)


def message_echo(q_in: Any, q_out: Any, ready: Any, busy: bool = False) -> None:
    """Put every message of ``q_in`` back on ``q_out`` unchanged, until None.

    ``busy``: a second thread runs pure Python all the while (holding the GIL as a worker's
    Python hooks do), so this process's threads wait for the GIL as a worker's would.
    """
    if busy:
        threading.Thread(target=_spin, daemon=True).start()
    ready.put(os.getpid())
    while True:
        item = q_in.get()
        if item is None:
            break
        q_out.put(item)


def _spin() -> None:
    n = 0
    while True:
        n += 1
