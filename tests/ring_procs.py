"""Process bodies for the multi-process ring tests (importable by spawned children)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from rt_eda.core.errors import RingClosedError, RingOverrunError
from rt_eda.shm import SharedBlock, StackRing, _doorbell, check_stack, stamp_frame
from rt_eda.shm._atomics import atomic_add, atomic_cas, atomic_load


@njit(cache=True)
def _hammer(words: np.ndarray, n: int) -> int:
    """n increments of word 0 by CAS loops and of word 1 by fetch-add; the CAS retries are
    added to word 2 (proof that the processes raced) and returned."""
    retries = 0
    for _ in range(n):
        atomic_add(words, 1, 1)
        while True:
            old = atomic_load(words, 0)
            if atomic_cas(words, 0, old, old + 1) == old:
                break
            retries += 1
    atomic_add(words, 2, retries)
    return retries


def hammer_atomics(name: str, n: int, races: int, start: Any, out: Any) -> None:
    """Hammer the block's words (see :func:`_hammer`) in rounds of ``n``, from the start line
    on, until the processes together have seen ``races`` CAS retries (they really ran at the
    same time, on the same cache line) or 60 s pass. Reports ("ready", pid) once compiled,
    then ("done", increments, retries)."""
    block = SharedBlock.attach(name)
    words = np.frombuffer(block.buf, dtype=np.int64, count=3)
    _hammer(np.zeros(3, dtype=np.int64), 1)  # compile before the start line
    out.put(("ready", os.getpid()))
    start.wait()
    increments = retries = 0
    deadline = time.monotonic() + 60.0
    while True:
        retries += _hammer(words, n)
        increments += n
        if int(words[2]) >= races or time.monotonic() > deadline:
            break
    out.put(("done", increments, retries))
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


def reader(name: str, actor: int, work_s: float, n_timepoints: int, out: Any,
           ready: Any = None) -> None:
    """Claim newest stacks until the ring closes; check each; report the seqs analysed.
    Puts ``actor`` on ``ready`` once attached (and compiled)."""
    ring = StackRing.attach(name)  # compiles the ring's kernels
    if ready is not None:
        ready.put(actor)
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


def position_producer(name: str, positions: list[int], period_s: float, out: Any) -> None:
    """Publish one stamped stack per entry of ``positions``, at that position, in order (at
    most one per ``period_s`` if > 0; a full ring is retried). Reports ("producer", pid,
    [(seq, position), ...] published, overruns)."""
    ring = StackRing.attach(name)
    published: list[tuple[int, int]] = []
    overruns = 0
    t_next = time.monotonic()
    try:
        for position in positions:
            while True:
                try:
                    with ring.write_slot() as slot:
                        fill_stack(slot.pixels, slot.seq)
                        slot.frame_times[:] = time.monotonic()
                        slot.publish(position=position)
                        published.append((slot.seq, position))
                    break
                except RingOverrunError:
                    overruns += 1
                    time.sleep(0.0005)
            if period_s > 0:
                t_next += period_s
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    finally:
        out.put(("producer", os.getpid(), published, overruns))
        ring.close()


def position_reader(name: str, actor: int, work_s: float, n_timepoints: int, out: Any,
                    ready: Any) -> None:
    """Claim until the ring closes; check every stack of every window (the stamps, and that
    a window is one position's consecutive stacks). Reports ("reader", actor,
    [(seq, position, pseq, window seqs), ...], torn, mixed windows)."""
    ring = StackRing.attach(name)
    ready.put(actor)
    got: list[tuple[int, int, int, tuple[int, ...]]] = []
    torn = mixed = 0
    try:
        while True:
            try:
                claim = ring.claim(actor, timeout=5.0, n_timepoints=n_timepoints)
            except RingClosedError:
                break
            if claim is None:
                continue
            with claim:
                stacks = [claim.pixels] if n_timepoints == 1 else list(claim.pixels)
                if not all(stack_intact(s, q) for s, q in zip(stacks, claim.seqs, strict=True)):
                    torn += 1
                    claim.count_torn()
                if list(claim.seqs) != sorted(claim.seqs) or claim.seqs[-1] != claim.seq:
                    mixed += 1
                end = time.perf_counter() + work_s
                while time.perf_counter() < end:
                    pass
                got.append((claim.seq, claim.position, claim.pseq, tuple(claim.seqs)))
    finally:
        out.put(("reader", actor, got, torn, mixed))
        ring.close()


def claim_and_hang(name: str, actor: int, ready: Any) -> None:
    """Claim one stack, say so, then hang (the test SIGKILLs this process)."""
    ring = StackRing.attach(name)
    claim = ring.claim(actor, timeout=10.0)
    ready.put(None if claim is None else claim.seq)
    time.sleep(60)


def doorbell_reader(name: str, actor: int, out: Any) -> None:
    """Sleep for stacks on the doorbell alone and report each wake-up.

    The ring's readers also wake by themselves every 0.25 s (``StackRing.SLEEP_CAP_S``, a
    safety net); here it is 60 s, so within a test's few seconds only the doorbell wakes this
    process. Reports ("address", doorbell address), then ("claimed", seq) after a publish,
    then ("closed", None) after the owner's shutdown.
    """
    assert StackRing.SLEEP_CAP_S == 0.25
    StackRing.SLEEP_CAP_S = 60.0
    ring = StackRing.attach(name)
    out.put(("address", ring._doorbell_address))
    try:
        claim = ring.claim(actor, timeout=60.0)
        out.put(("claimed", None if claim is None else claim.seq))
        if claim is not None:
            claim.release()
        claim = ring.claim(actor, timeout=60.0)
        out.put(("claimed", None if claim is None else claim.seq))
    except RingClosedError:
        out.put(("closed", None))
    finally:
        ring.close()


def asleep_on(task: str, address: int) -> bool:
    """True when the thread ``task`` (``/proc/PID/task/TID``) sleeps in ``futex(2)`` on the
    word at ``address`` (its own address space's)."""
    try:
        fields = Path(task, "syscall").read_text().split()
    except OSError:
        return False
    return (len(fields) > 2 and fields[0] == str(_doorbell._nr)
            and int(fields[1], 16) == address)


def wait_asleep_on(task: str, address: int, timeout: float = 60.0) -> None:
    """Wait until :func:`asleep_on` (the reader really sleeps in the kernel on the doorbell)."""
    deadline = time.monotonic() + timeout
    while not asleep_on(task, address):
        if time.monotonic() > deadline:
            raise AssertionError(f"{task} never went to sleep on the doorbell at "
                                 f"{address:#x} within {timeout} s")
        time.sleep(0.001)


def create_and_hang(ready: Any) -> None:
    """Create a ring, report its name, hang (the test SIGKILLs this process)."""
    from rt_eda.shm import StackSpec

    ring = StackRing.create(StackSpec(1, 1, 16, 16), 2)
    ready.put(ring.name)
    time.sleep(60)
