"""Per-position streams through the ring: "newest" and "stale" are per position.

In one process (the state machine, exactly) and across processes (a producer and readers
started with spawn, as in the engine). The guarantee under test: a newer stack of position A
never makes a reader skip a stack of position B; time windows are one position's stacks; every
count holds per position as it does for the ring.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ring_procs

from rt_eda.shm import PositionStatistics, StackRing, StackSpec

CTX = mp.get_context("spawn")
MakeRing = Callable[..., StackRing]


def publish(ring: StackRing, position: int) -> int:
    with ring.write_slot() as slot:
        slot.pixels[:] = slot.seq
        slot.frame_times[:] = time.monotonic()
        slot.publish(position=position)
        return slot.seq


def claim_seq(ring: StackRing, actor: int = 1, n_timepoints: int = 1) -> int | None:
    claim = ring.try_claim(actor, n_timepoints=n_timepoints)
    if claim is None:
        return None
    claim.release()
    return claim.seq


def counts_add_up(p: PositionStatistics) -> bool:
    return p.published == p.completed + p.skipped + p.failed + p.recovered


def test_a_newer_stack_of_a_never_skips_the_only_stack_of_b(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=8, positions=2)
    b = publish(ring, 1)
    a = [publish(ring, 0) for _ in range(5)]
    claim = ring.try_claim(1)
    assert claim is not None and (claim.seq, claim.position, claim.pseq) == (b, 1, 0)
    claim.release()
    stats = ring.position_statistics()
    assert stats[1].skipped == 0 and stats[0].skipped == 0  # nothing skipped yet
    claim = ring.try_claim(1)
    assert claim is not None and (claim.seq, claim.position, claim.pseq) == (a[-1], 0, 4)
    claim.release()
    a_stats, b_stats = ring.position_statistics()
    assert (b_stats.published, b_stats.completed, b_stats.skipped) == (1, 1, 0)
    assert (a_stats.published, a_stats.completed, a_stats.skipped) == (5, 1, 4)
    whole = ring.statistics()
    assert whole.skipped == 4 and whole.completed == 2


def test_the_position_that_waited_longest_is_claimed_first(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=8, positions=3)
    s = [publish(ring, p) for p in (2, 0, 1, 0)]  # newest: p2 -> s0, p1 -> s2, p0 -> s3
    assert [claim_seq(ring) for _ in range(4)] == [s[0], s[2], s[3], None]
    stats = ring.position_statistics()
    assert [p.completed for p in stats] == [1, 1, 1]
    assert [p.skipped for p in stats] == [1, 0, 0]  # s1, older than p0's s3
    assert all(counts_add_up(p) for p in stats)


def test_one_position_claims_the_newest_and_skips_the_rest(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=6)
    seqs = [publish(ring, 0) for _ in range(4)]
    assert claim_seq(ring) == seqs[-1]
    (only,) = ring.position_statistics()
    assert (only.published, only.completed, only.skipped, only.newest_seq) == (4, 1, 3, 3)


def test_time_windows_are_one_positions_last_stacks(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=10, positions=2)
    s = [publish(ring, p) for p in (0, 1, 0, 1, 0)]  # A: s0 s2 s4, B: s1 s3
    claim = ring.try_claim(1, n_timepoints=3)
    assert claim is not None and claim.position == 0
    assert claim.seqs == (s[0], s[2], s[4])
    assert [int(claim.pixels[k, 0, 0, 5, 5]) for k in range(3)] == [s[0], s[2], s[4]]
    claim.release()
    # B has two stacks: no window of 3 yet, and nothing of B is claimed or skipped.
    assert ring.try_claim(1, n_timepoints=3) is None
    assert ring.position_statistics()[1].claimed == 0
    s.append(publish(ring, 1))
    claim = ring.try_claim(1, n_timepoints=3)
    assert claim is not None and claim.position == 1 and claim.pseq == 2
    assert claim.seqs == (s[1], s[3], s[5])
    claim.release()


def test_every_outcome_is_counted_at_its_position(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=4, positions=3)
    publish(ring, 0)
    publish(ring, 1)
    claim = ring.try_claim(1)  # position 0's stack (waited longest)
    assert claim is not None and claim.position == 0
    claim.fail()
    claim = ring.try_claim(2)
    assert claim is not None and claim.position == 1
    assert ring.recover(2) == 1  # its reader died
    publish(ring, 2)
    claim = ring.try_claim(3)
    assert claim is not None and claim.position == 2
    claim.count_torn()
    claim.release(analysed=False)
    publish(ring, 2)
    publish(ring, 1)
    publish(ring, 0)
    publish(ring, 0)  # every slot busy with READY stacks: the producer takes one back
    ring.drain()
    stats = ring.position_statistics()
    assert [p.failed for p in stats] == [1, 0, 0]
    assert [p.recovered for p in stats] == [0, 1, 0]
    assert [p.torn_reads for p in stats] == [0, 0, 1]
    assert all(counts_add_up(p) for p in stats), stats
    whole = ring.statistics()
    assert sum(p.published for p in stats) == whole.published == 7
    assert sum(p.skipped for p in stats) == whole.skipped
    assert sum(p.failed for p in stats) == whole.failed


def test_pinned_stacks_carry_their_position(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=6, positions=2)
    pin = ring.register_pin()
    publish(ring, 1)
    publish(ring, 0)
    publish(ring, 1)
    got = []
    for _ in range(3):
        stack = pin.next(timeout=1.0)
        assert stack is not None
        got.append((stack.seq, stack.position, stack.pseq))
        pin.release(stack)
    assert got == [(0, 1, 0), (1, 0, 0), (2, 1, 1)]
    assert ring.newest_seq(0) == 1 and ring.newest_seq(1) == 2 and ring.newest_seq() == 2


def test_positions_out_of_range_are_refused(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=4, positions=2)
    with pytest.raises(ValueError, match="position 2"), ring.write_slot() as slot:
        slot.publish(position=2)
    assert ring.statistics().published == 0  # the slot was given back unpublished
    assert ring.statistics().aborted == 1
    with pytest.raises(ValueError, match="position 5"):
        ring.newest_seq(5)
    with pytest.raises(ValueError, match="positions"):
        StackRing.create(StackSpec(1, 1, 8, 8), 2, positions=0)
    attached = StackRing.attach(ring.name)
    try:
        assert attached.positions == 2
    finally:
        attached.close()


# -- across processes ------------------------------------------------------------------------
@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def _start(procs: list[Any], target: Callable[..., None], *args: object) -> Any:
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    procs.append(p)
    return p


def _run(procs: list[Any], ring: StackRing, positions: list[int], readers: int,
         work_s: float, n_timepoints: int, period_s: float,
         readers_first: bool) -> tuple[list[tuple[int, int]], list[Any]]:
    out, ready = CTX.Queue(), CTX.Queue()

    def start_readers() -> None:
        for actor in range(1, readers + 1):
            _start(procs, ring_procs.position_reader, ring.name, actor, work_s, n_timepoints,
                   out, ready)
        assert sorted(ready.get(timeout=120) for _ in range(readers)) == list(
            range(1, readers + 1))

    if readers_first:
        start_readers()
    _start(procs, ring_procs.position_producer, ring.name, positions, period_s, out)
    producer = out.get(timeout=240)
    assert producer[0] == "producer"
    if not readers_first:
        start_readers()
    deadline = time.monotonic() + 120
    while True:  # the readers take what they can; then the run ends
        st = ring.statistics()
        if (st.slots_ready == 0 and st.slots_claimed == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ring.shutdown()
    reports = [out.get(timeout=60) for _ in range(readers)]
    ring.drain()
    return producer[2], reports


def test_across_processes_the_only_stack_of_b_is_analysed(
    procs: list[Any], make_ring: MakeRing
) -> None:
    # Everything published before the readers look: B's one stack sits among 100 newer
    # stacks of A, and two readers in other processes must still take it.
    ring = make_ring(StackSpec(2, 2, 24, 24), n_slots=128, positions=2)
    published, reports = _run(procs, ring, [0] * 50 + [1] + [0] * 50, readers=2,
                              work_s=0.0, n_timepoints=1, period_s=0.0, readers_first=False)
    b_seq = next(seq for seq, p in published if p == 1)
    analysed = [g for r in reports for g in r[2]]
    assert b_seq in [g[0] for g in analysed]
    a_stats, b_stats = ring.position_statistics()
    assert (b_stats.published, b_stats.completed, b_stats.skipped) == (1, 1, 0)
    assert a_stats.skipped > 0  # newer A stacks were there, and A's older ones were skipped
    assert counts_add_up(a_stats) and counts_add_up(b_stats)


@pytest.mark.parametrize("n_timepoints", [1, 3])
def test_stress_positions_across_processes(
    procs: list[Any], make_ring: MakeRing, run_slow: bool, n_timepoints: int
) -> None:
    n_positions = 4
    n = 20_000 if run_slow else 2_000
    rng = random.Random(15)
    # Bursts: a position often publishes several stacks in a row, as a fast one does.
    positions: list[int] = []
    while len(positions) < n:
        positions += [rng.randrange(n_positions)] * rng.choice((1, 1, 2, 5, 20))
    positions = positions[:n]
    # More slots than stacks: the producer never takes a READY stack back, so every skip is
    # a reader's, and each must have been passed over for a newer stack of its own position.
    ring = make_ring(StackSpec(2, 2, 24, 24), n_slots=min(4096, n + 8), positions=n_positions)
    published, reports = _run(procs, ring, positions, readers=3, work_s=50e-6,
                              n_timepoints=n_timepoints, period_s=100e-6, readers_first=True)
    assert sum(r[3] for r in reports) == 0 == ring.statistics().torn_reads
    assert sum(r[4] for r in reports) == 0  # every window: one position, in order
    analysed = [g for r in reports for g in r[2]]
    seqs = [g[0] for g in analysed]
    assert len(seqs) == len(set(seqs))
    position_of = dict(published)
    for seq, position, pseq, window in analysed:
        assert position_of[seq] == position
        assert all(position_of[s] == position for s in window)
        assert len(window) == n_timepoints and pseq >= n_timepoints - 1
    stats = ring.position_statistics()
    for p in range(n_positions):
        mine = [seq for seq, q in published if q == p]
        done = sorted(seq for seq, q, _, _ in analysed if q == p)
        assert stats[p].published == len(mine)
        assert stats[p].completed == len(done)
        assert counts_add_up(stats[p]), stats[p]
        # Each stack not analysed was skipped for a newer stack of its own position...
        for seq in set(mine) - set(done):
            assert (done and max(done) > seq) or n_timepoints > 1
        # ... so the newest stack of each position is always analysed (a window of 1).
        if n_timepoints == 1:
            assert mine[-1] in done
    whole = ring.statistics()
    assert whole.published == n == sum(s.published for s in stats)
    assert whole.published == whole.completed + whole.skipped + whole.failed + whole.recovered
