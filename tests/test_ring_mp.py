"""The ring across processes: atomics, a producer/readers stress test, dead readers, leaks.

Every process is started with ``spawn`` (as in the engine) and is killed in ``finally``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import proc_tools
import pytest
import ring_procs

from rt_eda.shm import SharedBlock, StackRing, StackSpec, list_blocks, sweep_stale_blocks

CTX = mp.get_context("spawn")
MakeRing = Callable[..., StackRing]


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def start(procs: list[Any], target: Callable[..., None], *args: object) -> Any:
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    procs.append(p)
    return p


def test_atomics_hammered_from_several_processes(procs: list[Any]) -> None:
    block = SharedBlock.create(64, tag="test")
    try:
        words = np.frombuffer(block.buf, dtype=np.int64, count=3)
        start_line = CTX.Event()
        out = CTX.Queue()
        n, workers, races = 200_000, 3, 10_000
        for _ in range(workers):
            start(procs, ring_procs.hammer_atomics, block.name, n, races, start_line, out)
        assert [out.get(timeout=120)[0] for _ in range(workers)] == ["ready"] * workers
        start_line.set()  # every process compiled and waiting: they start together
        done = [out.get(timeout=180) for _ in range(workers)]
        for p in procs:
            p.join(timeout=30)
        increments = sum(d[1] for d in done)
        retries = sum(d[2] for d in done)
        # A CAS that lost a race proves the processes incremented at the same time; without
        # many, a non-atomic increment would pass too (one that is not atomic lost about 5 %
        # of its updates after 10,000 races here) and nothing was tested.
        assert retries >= races, (
            f"{retries} CAS retries in {increments} increments: the processes hardly raced")
        assert int(words[2]) == retries
        # Lost updates would show as a total below the increments made.
        assert int(words[0]) == increments  # compare-and-swap loops
        assert int(words[1]) == increments  # fetch-add
        del words
    finally:
        block.close()
        block.unlink()


def _stress(
    procs: list[Any], make_ring: MakeRing, n_stacks: int, readers: int, work_s: float,
    n_timepoints: int = 1, period_s: float = 0.0,
) -> None:
    ring = make_ring(StackSpec(2, 2, 24, 24), n_slots=8)
    out, ready = CTX.Queue(), CTX.Queue()
    for actor in range(1, readers + 1):
        start(procs, ring_procs.reader, ring.name, actor, work_s, n_timepoints, out, ready)
    # Every reader attached (and compiled) before the producer starts.
    assert sorted(ready.get(timeout=120) for _ in range(readers)) == list(range(1, readers + 1))
    start(procs, ring_procs.producer, ring.name, n_stacks, period_s, out)
    reports = [out.get(timeout=240)]
    ring.shutdown()
    reports += [out.get(timeout=60) for _ in range(readers)]
    ring.drain()
    stats = ring.statistics()

    producer = next(r for r in reports if r[0] == "producer")
    reader_reports = [r for r in reports if r[0] == "reader"]
    all_seqs = [s for r in reader_reports for s in r[2]]
    assert producer[2] == n_stacks == stats.published
    assert sum(r[3] for r in reader_reports) == 0 == stats.torn_reads  # no torn read
    assert len(all_seqs) == len(set(all_seqs))  # analysed exactly once
    assert len(all_seqs) == stats.completed
    # Every published stack is either analysed or counted as skipped.
    assert stats.published == stats.completed + stats.skipped + stats.recovered
    assert stats.recovered == 0
    assert stats.claimed == stats.completed + stats.windows_failed
    for r in reader_reports:  # each reader moves forward in time
        assert r[2] == sorted(r[2])
    assert len(all_seqs) > 0
    if n_timepoints > 1:
        assert min(all_seqs) >= n_timepoints - 1


def test_stress_one_producer_three_readers(
    procs: list[Any], make_ring: MakeRing, run_slow: bool
) -> None:
    _stress(procs, make_ring, 200_000 if run_slow else 20_000, readers=3, work_s=20e-6)


def test_stress_time_windows(procs: list[Any], make_ring: MakeRing, run_slow: bool) -> None:
    # Paced at 5,000 stacks/s: an unpaced producer laps an 8-slot ring faster than a reader
    # copies a window, and then every window is (correctly) refused.
    _stress(procs, make_ring, 50_000 if run_slow else 5_000, readers=2, work_s=0.0,
            n_timepoints=3, period_s=200e-6)


def test_a_killed_reader_claim_is_recovered(procs: list[Any], make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=2)
    ready = CTX.Queue()
    victim = start(procs, ring_procs.claim_and_hang, ring.name, 7, ready)
    with ring.write_slot() as slot:
        slot.pixels[:] = 1
    assert ready.get(timeout=60) == 0
    assert ring.statistics().slots_claimed == 1
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=10)
    assert ring.recover(7) == 1
    stats = ring.statistics()
    assert stats.recovered == 1 and stats.slots_claimed == 0
    # Both slots are usable again.
    for _ in range(2):
        with ring.write_slot() as slot:
            slot.pixels[:] = 2
    assert ring.statistics().overruns == 0


def test_the_doorbell_alone_wakes_a_reader_in_another_process(
    procs: list[Any], make_ring: MakeRing
) -> None:
    # The reader sleeps with no poll fallback (see ring_procs.doorbell_reader): a publish and
    # a shutdown must each wake it within seconds, not at its 60 s timeout.
    ring = make_ring()
    out = CTX.Queue()
    reader = start(procs, ring_procs.doorbell_reader, ring.name, 1, out)
    kind, address = out.get(timeout=120)
    assert kind == "address"
    task = f"/proc/{reader.pid}/task/{reader.pid}"
    ring_procs.wait_asleep_on(task, address)
    with ring.write_slot() as slot:
        slot.pixels[:] = 1
    assert out.get(timeout=10) == ("claimed", 0), "a publish did not wake the reader"
    ring_procs.wait_asleep_on(task, address)
    ring.shutdown()
    assert out.get(timeout=10) == ("closed", None), "a shutdown did not wake the reader"
    reader.join(timeout=30)
    assert reader.exitcode == 0


def _run_creator_script() -> tuple[subprocess.Popen[str], str]:
    code = textwrap.dedent(
        """
        import sys, time
        from rt_eda.shm import StackRing, StackSpec
        ring = StackRing.create(StackSpec(1, 1, 16, 16), 2)
        print(ring.name, flush=True)
        try:
            time.sleep(60)
        finally:
            ring.close(); ring.unlink()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    name = proc.stdout.readline().strip()
    assert name.startswith("rt_eda_")
    return proc, name


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _names() -> set[str]:
    return {n for n, _ in list_blocks()}


def _wait_gone(name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in _names():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_of_the_creator_unlinks() -> None:
    proc, name = _run_creator_script()
    try:
        assert name in _names()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert _wait_gone(name, 5.0)
    finally:
        _end(proc)


def test_sigkilled_creator_block_is_removed_by_its_tracker() -> None:
    proc, name = _run_creator_script()
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the resource tracker survives and cleans up
        proc.wait(timeout=30)
        assert _wait_gone(name, 10.0)
    finally:
        _end(proc)


def test_sweep_removes_blocks_of_dead_runs_only(make_ring: MakeRing) -> None:
    live = make_ring()
    proc, name = _run_creator_script()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # creator and its tracker die together
        proc.wait(timeout=30)
        proc_tools.wait_group_gone(proc.pid)
        # Nobody was left to unlink it; every run's start-up sweeps too, so another run on
        # this machine may have removed it since.
        if name in _names():
            assert name in sweep_stale_blocks() or name not in _names()
        assert name not in _names()
        assert live.name in _names()  # never a live process's block
        assert live.name not in sweep_stale_blocks()
    finally:
        _end(proc)
