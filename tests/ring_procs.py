"""Process bodies for the multi-process ring tests (importable by spawned children)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from numba import njit

from rt_eda.errors import RingClosedError, RingOverrunError
from rt_eda.shm import SharedBlock, StackRing, check_stack, stamp_frame
from rt_eda.shm._atomics import atomic_add, atomic_cas, atomic_load


@njit(cache=True)
def _hammer(words: np.ndarray, n: int) -> int:
    retries = 0
    for _ in range(n):
        atomic_add(words, 1, 1)
        while True:
            old = atomic_load(words, 0)
            if atomic_cas(words, 0, old, old + 1) == old:
                break
            retries += 1
    return retries


def hammer_atomics(name: str, n: int, start: Any, out: Any) -> None:
    """Increment word 0 by CAS loops and word 1 by fetch-add, n times each."""
    block = SharedBlock.attach(name)
    words = np.frombuffer(block.buf, dtype=np.int64, count=2)
    _hammer(words[:1].copy(), 1)  # compile before the start line
    start.wait()
    retries = _hammer(words, n)
    out.put(retries)
    del words
    block.close()


def fill_stack(stack: np.ndarray, seq: int) -> None:
    """Every pixel carries the sequence number; the first pixels also carry the stamp."""
    stack.fill(seq & 0xFFFF)
    for c in range(stack.shape[0]):
        for z in range(stack.shape[1]):
            stamp_frame(stack[c, z], seq, c, z)


def stack_intact(stack: np.ndarray, seq: int) -> bool:
    """True if ``stack`` is exactly what :func:`fill_stack` wrote for ``seq``."""
    if not check_stack(stack, seq):
        return False
    body = stack[:, :, 1:, :]
    return bool(body.min() == body.max() == (seq & 0xFFFF))


def producer(name: str, n_stacks: int, period_s: float, out: Any) -> None:
    """Publish ``n_stacks`` stamped stacks (at most one per ``period_s`` if > 0)."""
    ring = StackRing.attach(name)
    overruns = 0
    published = 0
    t_next = time.monotonic()
    try:
        while published < n_stacks:
            try:
                with ring.write_slot() as slot:
                    fill_stack(slot.pixels, slot.seq)
                    slot.frame_times[:] = time.monotonic()
            except RingOverrunError:
                overruns += 1
                time.sleep(0.0005)
                continue
            published += 1
            if period_s > 0:
                t_next += period_s
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    finally:
        out.put(("producer", os.getpid(), published, overruns))
        ring.close()


def reader(name: str, actor: int, work_s: float, n_timepoints: int, out: Any) -> None:
    """Claim newest stacks until the ring closes; check each; report the seqs analysed."""
    ring = StackRing.attach(name)
    seqs: list[int] = []
    torn = 0
    try:
        while True:
            try:
                claim = ring.claim(actor, timeout=5.0, n_timepoints=n_timepoints)
            except RingClosedError:
                break
            if claim is None:
                continue
            with claim:
                if n_timepoints == 1:
                    ok = stack_intact(claim.pixels, claim.seq)
                else:
                    ok = all(
                        stack_intact(claim.pixels[k], claim.seq - (n_timepoints - 1 - k))
                        for k in range(n_timepoints)
                    )
                if not ok:
                    torn += 1
                    claim.count_torn()
                if work_s > 0:
                    end = time.perf_counter() + work_s
                    while time.perf_counter() < end:
                        pass
                seqs.append(claim.seq)
    finally:
        out.put(("reader", actor, seqs, torn))
        ring.close()


def claim_and_hang(name: str, actor: int, ready: Any) -> None:
    """Claim one stack, say so, then hang (the test SIGKILLs this process)."""
    ring = StackRing.attach(name)
    claim = ring.claim(actor, timeout=10.0)
    ready.put(None if claim is None else claim.seq)
    time.sleep(60)


def create_and_hang(ready: Any) -> None:
    """Create a ring, report its name, hang (the test SIGKILLs this process)."""
    from rt_eda.shm import StackSpec

    ring = StackRing.create(StackSpec(1, 1, 16, 16), 2)
    ready.put(ring.name)
    time.sleep(60)
