"""How a claim ends is counted exactly once: analysed, skipped, failed or recovered.

The ring's identity ``published == completed + skipped + failed + recovered`` holds for every
way a reader can end a claim, including a block that raises inside ``with claim:``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from rt_eda.core.errors import ClaimRecoveredError
from rt_eda.shm import RingStatistics, StackRing

MakeRing = Callable[..., StackRing]


def publish(ring: StackRing) -> int:
    with ring.write_slot() as slot:
        slot.pixels[:] = slot.seq
        slot.frame_times[:] = time.monotonic()
        return slot.seq


def adds_up(stats: RingStatistics) -> bool:
    return stats.published == (stats.completed + stats.skipped + stats.failed
                               + stats.recovered)


def test_a_block_that_raises_counts_the_stack_as_failed_not_analysed(
        make_ring: MakeRing) -> None:
    ring = make_ring()
    publish(ring)
    claim = ring.try_claim(1)
    assert claim is not None
    with pytest.raises(ZeroDivisionError), claim:
        raise ZeroDivisionError("hook")
    stats = ring.statistics()
    assert (stats.completed, stats.skipped, stats.failed) == (0, 0, 1)
    assert stats.slots_claimed == 0 and adds_up(stats)


@pytest.mark.parametrize("exc", [ValueError("x"), KeyboardInterrupt(), SystemExit(3)])
def test_every_kind_of_exception_fails_the_claim(make_ring: MakeRing,
                                                 exc: BaseException) -> None:
    ring = make_ring()
    publish(ring)
    claim = ring.try_claim(1)
    assert claim is not None
    with pytest.raises(type(exc)), claim:
        raise exc
    assert ring.statistics().failed == 1


def test_each_outcome_is_counted_once(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=6)
    for how in ("analysed", "skipped", "failed", "failed-then-release"):
        publish(ring)
        claim = ring.try_claim(1)
        assert claim is not None
        if how == "analysed":
            claim.release()
        elif how == "skipped":
            claim.release(analysed=False)
        else:
            claim.fail()
            claim.release()  # a second hand-back does nothing
            claim.fail()
    stats = ring.statistics()
    assert (stats.completed, stats.skipped, stats.failed) == (1, 1, 2)
    assert adds_up(stats)


def test_a_recovered_claim_is_not_counted_again_when_it_fails(make_ring: MakeRing) -> None:
    ring = make_ring()
    publish(ring)
    claim = ring.try_claim(7)
    assert claim is not None
    assert ring.recover(7) == 1
    with pytest.raises(ClaimRecoveredError):
        claim.fail()
    # The context manager keeps the hook's exception, never the recovery.
    publish(ring)
    claim = ring.try_claim(7)
    assert claim is not None
    ring.recover(7)
    with pytest.raises(RuntimeError, match="hook"), claim:
        raise RuntimeError("hook")
    stats = ring.statistics()
    assert (stats.recovered, stats.failed, stats.completed) == (2, 0, 0)
    assert adds_up(stats)


def test_drain_leaves_the_identity_exact(make_ring: MakeRing) -> None:
    ring = make_ring(n_slots=6)
    publish(ring)
    claim = ring.try_claim(1)
    assert claim is not None
    claim.fail()
    for _ in range(3):
        publish(ring)
    assert ring.drain() == 3
    stats = ring.statistics()
    assert (stats.published, stats.failed, stats.skipped) == (4, 1, 3)
    assert adds_up(stats)
