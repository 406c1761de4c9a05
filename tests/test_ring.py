"""The stack ring's state machine, in one process (multi-process tests: test_ring_mp.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import ring_procs

from rt_eda.core.errors import ClaimRecoveredError, RingClosedError, RingError, RingOverrunError
from rt_eda.shm import StackRing, StackSpec

MakeRing = Callable[..., StackRing]


def publish(ring: StackRing, value: int | None = None) -> int:
    with ring.write_slot() as slot:
        slot.pixels[:] = slot.seq if value is None else value
        slot.frame_times[:] = time.monotonic()
        return slot.seq


def test_publish_then_claim_gives_the_stack_zero_copy(make_ring: MakeRing) -> None:
    ring = make_ring()
    seq = publish(ring, 7)
    claim = ring.try_claim(1)
    assert claim is not None and claim.seq == seq == 0
    assert claim.pixels.shape == (2, 1, 32, 32)
    assert (claim.pixels == 7).all()
    assert np.shares_memory(claim.pixels, ring._pixels)  # a view, not a copy
    # ... that a worker cannot change: the writer saves this very slot
    with pytest.raises(ValueError, match="read-only"):
        claim.pixels[0, 0, 0, 0] = 99
    with pytest.raises(ValueError, match="read-only"):
        claim.pixels -= 1
    assert (claim.pixels == 7).all() and (ring._pixels[0] == 7).all()
    assert claim.t_published >= claim.t_exposure
    assert claim.t_claimed >= claim.t_published
    claim.release()
    stats = ring.statistics()
    assert (stats.published, stats.claimed, stats.completed, stats.skipped) == (1, 1, 1, 0)


def test_stamps_are_on_the_monotonic_clock_and_travel_with_the_stack(
    make_ring: MakeRing,
) -> None:
    """The publish and the claim stamp the slot in compiled code: their clock must be the one
    Python's ``time.monotonic()`` reads (every role compares them with its own), and the
    exposure times and interval the producer gave must reach the reader and the pin reader."""
    ring = make_ring(n_slots=4)
    pins = ring.register_pin()
    for interval in (0.25, 0.0):
        with ring.write_slot() as slot:
            slot.frame_times[:] = [10.0 + interval, 11.0 + interval]  # 2 frames (C=2, Z=1)
            before = time.monotonic()
            slot.publish(interval_s=interval)
            after = time.monotonic()
        claim = ring.try_claim(1)
        claimed_after = time.monotonic()
        assert claim is not None and claim.seq == slot.seq
        assert before <= claim.t_published <= after
        assert claim.t_published <= claim.t_claimed <= claimed_after
        assert claim.t_exposure == 10.0 + interval
        assert claim.interval_s == interval
        assert list(claim.frame_times) == [10.0 + interval, 11.0 + interval]
        assert ring.claims() == [(1, slot.seq, claim.t_claimed)]
        claim.release()
        stack = pins.next(timeout=0)
        assert stack is not None and stack.seq == slot.seq
        assert (stack.t_exposure, stack.t_published, stack.interval_s) == (
            claim.t_exposure, claim.t_published, interval)
        pins.release(stack)


def test_exhausted_sequence_numbers_take_no_slot(make_ring: MakeRing) -> None:
    """A producer out of sequence numbers gets an error and leaves every slot as it was."""
    from rt_eda.shm._layout import H_NEXT_SEQ, MAX_SEQ

    ring = make_ring(n_slots=2)
    ring._ctl[H_NEXT_SEQ] = MAX_SEQ + 1
    for _ in range(3):
        with pytest.raises(RingError, match="exhausted"):
            ring.write_slot()
    stats = ring.statistics()
    assert (stats.slots_writing, stats.overruns, stats.published) == (0, 0, 0)
    with ring.write_slot(seq=5) as slot:  # a producer with its own numbers still can
        assert slot.seq == 5


def test_nothing_to_claim_before_publish_and_while_writing(make_ring: MakeRing) -> None:
    ring = make_ring()
    assert ring.try_claim(1) is None
    with ring.write_slot() as slot:
        slot.pixels[:] = 1
        assert ring.try_claim(1) is None  # a stack being written is invisible
    assert ring.try_claim(1) is not None


def test_claim_newest_skips_older_stacks_once(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=6)
    for _ in range(4):
        publish(ring)
    first = ring.try_claim(1)
    assert first is not None and first.seq == 3
    # The older READY stacks were passed over: a second reader finds nothing to claim.
    assert ring.try_claim(2) is None
    first.release()
    stats = ring.statistics()
    assert stats.skipped == 3 and stats.claimed == 1
    assert stats.published == stats.completed + stats.skipped


def test_each_stack_is_claimed_by_exactly_one_reader(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=4)
    publish(ring)
    a = ring.try_claim(1)
    b = ring.try_claim(2)
    assert a is not None and b is None
    publish(ring)
    b = ring.try_claim(2)
    assert b is not None and b.seq == 1
    a.release()
    b.release()


def test_producer_takes_back_the_oldest_unclaimed_stack(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=3)
    for _ in range(5):
        publish(ring)
    stats = ring.statistics()
    # 5 stacks into 3 slots: the two oldest READY stacks were taken back, i.e. skipped.
    assert stats.published == 5 and stats.skipped == 2 and stats.overruns == 0
    claim = ring.try_claim(1)
    assert claim is not None and claim.seq == 4 and (claim.pixels == 4).all()
    claim.release()
    assert ring.statistics().skipped == 4


def test_claimed_slots_are_never_overwritten(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=2)
    publish(ring, 11)
    held = ring.try_claim(1)
    assert held is not None
    publish(ring, 22)
    held2 = ring.try_claim(2)
    assert held2 is not None
    with pytest.raises(RingOverrunError, match="ring of 2"):
        ring.write_slot()
    assert ring.statistics().overruns == 1
    assert (held.pixels == 11).all() and (held2.pixels == 22).all()
    held.release()
    assert publish(ring, 33) == 2  # the released slot is reused, seq continues
    assert (held2.pixels == 22).all()
    held2.release()


def test_abort_gives_the_slot_back_and_reuses_the_sequence_number(make_ring: MakeRing) -> None:
    ring = make_ring()
    with pytest.raises(ZeroDivisionError), ring.write_slot() as slot:
        slot.pixels[:] = 5
        _ = 1 / 0
    assert ring.try_claim(1) is None
    assert publish(ring) == 0
    assert ring.statistics().aborted == 1


def test_publishing_twice_is_an_error(make_ring: MakeRing) -> None:
    ring = make_ring()
    slot = ring.write_slot()
    slot.publish()
    with pytest.raises(RingError, match="already published"):
        slot.publish()


def test_pinned_stacks_survive_until_released_and_come_in_order(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=3)
    pin = ring.register_pin()
    for v in (10, 11, 12):
        publish(ring, v)
    # All three slots pinned: the producer must not overwrite any of them.
    with pytest.raises(RingOverrunError):
        ring.write_slot()
    # A reader may still claim (and analysis skips) pinned stacks.
    claim = ring.try_claim(1)
    assert claim is not None and claim.seq == 2
    claim.release()
    got = []
    for _ in range(3):
        stack = pin.next(timeout=0.1)
        assert stack is not None
        got.append((stack.seq, int(stack.pixels[0, 0, 5, 5])))
        pin.release(stack)
    assert got == [(0, 10), (1, 11), (2, 12)]
    assert pin.next(timeout=0.01) is None
    publish(ring, 13)  # unpinned slots are reusable again
    stats = ring.statistics()
    assert stats.overruns == 1 and stats.unpinned == 3


def test_releasing_a_pin_the_slot_does_not_carry_is_an_error(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=3)
    pin = ring.register_pin()
    publish(ring)
    publish(ring)
    first = pin.next(timeout=0.1)
    assert first is not None
    wrong = type(first)(1, first.slot, first.pixels, first.frame_times, 0.0, 0.0, 0.0)
    with pytest.raises(RingError, match="no longer carries pin"):
        pin.release(wrong)
    pin.release(first)
    with pytest.raises(RingError, match="no longer carries pin"):
        pin.release(first)  # twice


def test_several_producers_with_their_own_numbers(make_ring: MakeRing) -> None:
    # Workers publishing network images: sparse numbers, out of order.
    ring = make_ring(n_slots=4)
    pin = ring.register_pin()
    for seq in (12, 10, 15):
        with ring.write_slot(seq) as slot:
            assert slot.seq == seq
            slot.pixels[:] = seq
    assert ring.newest_seq() == 15
    got = []
    for _ in range(3):
        stack = pin.next_any(timeout=0.1)
        assert stack is not None
        got.append((stack.seq, int(stack.pixels[0, 0, 0, 0])))
        pin.release(stack)
    assert got == [(10, 10), (12, 12), (15, 15)]
    assert pin.next_any(timeout=0.01) is None
    out = np.empty(ring.spec.shape, dtype=ring.spec.np_dtype)
    assert ring.copy_stack(15, out) and (out == 15).all()
    with pytest.raises(ValueError, match="sequence number"):
        ring.write_slot(-3)


def test_recover_pin_frees_the_slots_of_a_dead_consumer(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=2)
    pin = ring.register_pin()
    publish(ring)
    publish(ring)
    with pytest.raises(RingOverrunError):
        ring.write_slot()
    assert ring.recover_pin(pin.bit) == 2
    publish(ring)  # no pins any more: the producer can reuse a slot


def test_time_window_is_exactly_the_last_t_stacks(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=6)
    publish(ring)
    publish(ring)
    # Only 2 stacks exist: no window of 3, and nothing claimed or skipped.
    assert ring.try_claim(1, n_timepoints=3) is None
    stats = ring.statistics()
    assert stats.claimed == 0 and stats.skipped == 0
    publish(ring)
    claim = ring.try_claim(1, n_timepoints=3)
    assert claim is not None and claim.seq == 2
    assert claim.pixels.shape == (3, 2, 1, 32, 32)
    assert [int(claim.pixels[k, 0, 0, 0, 0]) for k in range(3)] == [0, 1, 2]
    claim.release()
    publish(ring)
    publish(ring)
    claim = ring.try_claim(1, n_timepoints=3)
    assert claim is not None
    assert [int(claim.pixels[k, 1, 0, 9, 9]) for k in range(3)] == [2, 3, 4]
    claim.release()


def test_window_with_an_overwritten_stack_is_refused_and_counted(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=2)
    for _ in range(3):
        publish(ring)  # stack 0 is gone: the ring holds 1 and 2
    assert ring.try_claim(1, n_timepoints=3) is None
    stats = ring.statistics()
    assert stats.windows_failed == 1
    # The claim of stack 2 was given back (not leaked) and counted as skipped.
    assert stats.completed == 0 and stats.slots_claimed == 0
    assert stats.published == stats.skipped == 3


def test_recover_returns_a_dead_readers_claim(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=2)
    publish(ring)
    claim = ring.try_claim(5)
    assert claim is not None
    assert ring.recover(5) == 1
    assert ring.recover(5) == 0
    with pytest.raises(ClaimRecoveredError, match="reader 5"):
        claim.release()
    stats = ring.statistics()
    assert stats.recovered == 1 and stats.completed == 0
    assert stats.published == stats.completed + stats.skipped + stats.recovered


def test_drain_counts_unclaimed_stacks_as_skipped(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=4)
    for _ in range(3):
        publish(ring)
    assert ring.drain() == 3
    stats = ring.statistics()
    assert stats.published == stats.completed + stats.skipped + stats.recovered == 3


@pytest.fixture
def doorbell_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers also wake by themselves every 0.25 s (``StackRing.SLEEP_CAP_S``, a safety
    net), which would hide a broken doorbell; at 60 s, within a test's few seconds only the
    doorbell can wake them."""
    assert StackRing.SLEEP_CAP_S == 0.25
    monkeypatch.setattr(StackRing, "SLEEP_CAP_S", 60.0)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_claim_sleeps_until_publish_and_shutdown_wakes_it(
    make_ring: MakeRing, doorbell_only: None
) -> None:
    ring = make_ring()
    got: list[object] = []
    tid: list[int] = []

    def wait_for_claim() -> None:
        tid.append(threading.get_native_id())
        claim = ring.claim(1, timeout=60.0)
        got.append(claim.seq if claim else None)
        if claim:
            claim.release()
        try:
            ring.claim(1, timeout=60.0)
        except RingClosedError:
            got.append("closed")

    thread = threading.Thread(target=wait_for_claim, daemon=True)
    thread.start()
    assert _wait_for(lambda: bool(tid), 10.0)
    task = f"/proc/self/task/{tid[0]}"
    ring_procs.wait_asleep_on(task, ring._doorbell_address)  # asleep in the kernel
    publish(ring)
    assert _wait_for(lambda: got == [0], 10.0), f"a publish did not wake the reader: {got}"
    ring_procs.wait_asleep_on(task, ring._doorbell_address)
    ring.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a shutdown did not wake the reader"
    assert got == [0, "closed"]
    with pytest.raises(RingClosedError):
        ring.write_slot()


def test_claim_times_out(make_ring: MakeRing) -> None:
    ring = make_ring()
    t0 = time.monotonic()
    assert ring.claim(1, timeout=0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 1.0


def test_copy_stack_reads_without_claiming(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=2)
    publish(ring, 3)
    out = np.empty(ring.spec.shape, dtype=ring.spec.np_dtype)
    assert ring.copy_stack(ring.newest_seq(), out) and (out == 3).all()
    assert ring.copy_stack(99, out) is False
    claim = ring.try_claim(1)  # copy_stack left the stack claimable
    assert claim is not None
    claim.release()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32", "float64"])
def test_any_integer_or_float_dtype(make_ring: MakeRing, dtype: str) -> None:
    ring = make_ring(StackSpec(1, 3, 7, 5, dtype))
    with ring.write_slot() as slot:
        slot.pixels[:] = np.arange(3 * 7 * 5, dtype=dtype).reshape(1, 3, 7, 5)
    claim = ring.try_claim(1)
    assert claim is not None
    assert claim.pixels.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(claim.pixels.ravel(), np.arange(105, dtype=dtype))
    claim.release()


def test_attach_sees_the_same_memory_and_geometry(make_ring: MakeRing) -> None:
    ring = make_ring(StackSpec(2, 2, 8, 8, "float32"), n_slots=3)
    publish(ring, 4)
    other = StackRing.attach(ring.name)
    try:
        assert other.spec == ring.spec and other.n_slots == 3 and not other.owner
        claim = other.try_claim(1)
        assert claim is not None and (claim.pixels == 4).all()
        claim.release()
        assert ring.statistics().completed == 1
    finally:
        other.close()


def test_bad_arguments_are_refused(make_ring: MakeRing) -> None:
    with pytest.raises(ValueError, match=r"2\.\.4096 slots, got 1"):
        StackRing.create(StackSpec(1, 1, 4, 4), 1)
    with pytest.raises(ValueError, match="dtype"):
        StackSpec(1, 1, 4, 4, "complex64")
    with pytest.raises(ValueError, match="height"):
        StackSpec(1, 1, 0, 4)
    ring = make_ring()
    with pytest.raises(ValueError, match="reader id"):
        ring.try_claim(0)
    with pytest.raises(RingError, match="no stack ring named"):
        StackRing.attach("rt_eda_1_ring_deadbeef")


def test_context_manager_unlinks(make_ring: MakeRing) -> None:
    from rt_eda.shm import list_blocks

    with StackRing.create(StackSpec(1, 1, 4, 4), 2) as ring:
        name = ring.name
        assert name in {n for n, _ in list_blocks()}
    assert name not in {n for n, _ in list_blocks()}


def test_decision_trace_keeps_the_newest_records() -> None:
    from rt_eda.shm import TRACE_FIELDS, DecisionTrace

    with DecisionTrace.create(capacity=4) as trace:
        reader = DecisionTrace.attach(trace.name)
        try:
            first, rows = reader.read(0)
            assert first == 0 and rows.shape[0] == 0
            for i in range(3):
                trace.append(i, 0, 0, i / 10, 1.0, 0, 1, 0, 0, 1, 2, 3, 4)
            first, rows = reader.read(0)
            assert first == 0 and rows[:, 0].tolist() == [0, 1, 2]
            assert rows.shape == (3, len(TRACE_FIELDS))
            for i in range(3, 10):
                trace.append(i, 0, 0, i / 10, 1.0, 0, 1, 0, 0, 1, 2, 3, 4)
            first, rows = reader.read(0)  # only the newest 4 are still held
            assert first == 6 and rows[:, 0].tolist() == [6, 7, 8, 9]
            first, rows = reader.read(8)
            assert first == 8 and rows[:, 0].tolist() == [8, 9]
            first, rows = reader.read(0, limit=2)
            assert first == 8
        finally:
            reader.close()


def test_statistics_never_block_on_a_reader_that_died_mid_update(make_ring: MakeRing) -> None:
    from rt_eda.shm import _kernels
    from rt_eda.shm._layout import H_ROWS_OFFSET, STAT_ROW_WORDS

    ring = make_ring()
    publish(ring)
    claim = ring.try_claim(3)
    assert claim is not None
    row = int(ring._ctl[H_ROWS_OFFSET]) + (9 + 3) * STAT_ROW_WORDS
    _kernels.store(ring._ctl, row, int(ring._ctl[row]) + 1)  # died with its version odd
    t0 = time.monotonic()
    stats = ring.statistics()
    assert time.monotonic() - t0 < 1.0
    assert stats.claimed == 1 and stats.published == 1
    assert ring.recover(3) == 1  # recovery makes the row readable again
    assert _kernels.snapshot(ring._ctl, np.zeros(10, np.int64))
    assert ring.statistics().recovered == 1


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float16", "float32", "float64"])
def test_stamps_check_every_frame_exactly(dtype: str) -> None:
    """``check_stack`` passes a stack whose every frame carries its sequence number, channel
    and slice, and fails each way a frame can be wrong: another stack's number, another
    frame's channel or slice, a stamp pixel outside the range of the piece it holds."""
    from rt_eda.shm import check_stack, read_stamp, stamp_frame

    bits = 4 if dtype in ("uint8", "float16") else 12  # the pieces' size for this dtype
    seq = 0x3_2B5 if bits == 4 else 0x7_3F3_A51  # the second piece odd (see below)
    stack = np.zeros((3, 2, 16, 16), dtype=dtype)
    for c in range(3):
        for z in range(2):
            stamp_frame(stack[c, z], seq, c, z)
            assert read_stamp(stack[c, z]) == (seq, c, z)
    assert check_stack(stack, seq)
    assert not check_stack(stack, seq + 1)
    torn = stack.copy()
    stamp_frame(torn[2, 1], seq + 1, 2, 1)  # one frame of the next stack
    assert not check_stack(torn, seq) and not check_stack(torn, seq + 1)
    swapped = stack.copy()
    swapped[[0, 1]] = stack[[1, 0]]  # right stack, frames in the wrong channels
    assert not check_stack(swapped, seq)
    # The first piece plus 1 << bits, read as one number, equals seq (that bit is set in the
    # second piece): only a piece-by-piece check refuses it.
    first = seq & ((1 << bits) - 1)
    for pixel, wrong in ((0, first + (1 << bits)), (6, 1), (7, 5)):
        bad = stack.copy()
        bad[0, 0, 0, pixel] = wrong
        assert not check_stack(bad, seq), (pixel, wrong)
