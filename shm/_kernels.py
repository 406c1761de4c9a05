"""The slot state machine, compiled with numba; every transition is one compare-and-swap.

Each kernel runs as one nopython call from Python, so a claim (scan, swap, skip accounting,
statistics) costs one dispatch. The hot paths are one call each: :func:`acquire` (a slot to
fill and its sequence number), :func:`publish_stack` (the slot's timestamps, the state change,
the doorbell and the wake-up of sleeping readers) and :func:`claim_wait` (the claim, its
timestamps, and the sleep on the doorbell when there is nothing to claim, without the GIL).
``ctl`` is the int64 view of a ring's control region (see :mod:`._layout`); a slot's state
word sits at ``HEADER_WORDS + slot * SLOT_WORDS``.

Statistics: every actor (the producer, each reader, each pinning consumer, the owner) counts
in its own row, which only it writes; the row's version is odd while an update is in
progress (a single-writer seqlock), so an event that changes two counters (a claim: claimed
and skipped) is seen whole, no process ever waits for another to count, and no lock can be
held by a process that was preempted or died (which, with a real-time camera, would be a
priority inversion). A reader in any process sums the rows. A version left odd by an actor
that died mid-update is made even by the owner's recovery.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._atomics import atomic_add, atomic_cas, atomic_load, atomic_store, fence_acquire
from ._doorbell import EAGAIN, EINTR, ETIMEDOUT, futex_wait, futex_wake, monotonic
from ._layout import (
    C_ABORTED,
    C_CLAIMED,
    C_COMPLETED,
    C_FAILED,
    C_OVERRUNS,
    C_PUBLISHED,
    C_RECOVERED,
    C_SKIPPED,
    C_TORN,
    C_UNPINNED,
    C_WINDOWS_FAILED,
    CLAIMED,
    COUNTER_COUNT,
    COUNTER_FIRST,
    DONE,
    EMPTY,
    H_C,
    H_CLOSED,
    H_DOORBELL,
    H_FRAMES_OFFSET,
    H_NEXT_SEQ,
    H_NPOS,
    H_NSLOTS,
    H_PIN_MASK,
    H_POS_OFFSET,
    H_ROWS_OFFSET,
    H_SLEEPERS,
    H_Z,
    HEADER_WORDS,
    OWNER_ACTOR,
    OWNER_MASK,
    OWNER_SHIFT,
    P_CLAIMED,
    P_COMPLETED,
    P_FAILED,
    P_NEWEST,
    P_NEXT,
    P_PUBLISHED,
    P_RECOVERED,
    P_SKIPPED,
    P_TORN,
    PIN_ACTOR_BASE,
    PIN_MASK,
    PIN_SHIFT,
    POS_WORDS,
    PRODUCER_ACTOR,
    READY,
    S_FRAME_H,
    S_FRAME_W,
    S_FRAME_X,
    S_FRAME_Y,
    S_INTERVAL,
    S_POSITION,
    S_PSEQ,
    S_SEQ,
    S_T_CLAIMED,
    S_T_EXPOSURE,
    S_T_LAST_EXPOSURE,
    S_T_PUBLISHED,
    SEQ_SHIFT,
    SLOT_WORDS,
    STAT_ROW_WORDS,
    STAT_ROWS,
    STATE_MASK,
    WRITING,
)

__all__ = [
    "CLOSED",
    "EXHAUSTED",
    "INTERRUPTED",
    "NOTHING",
    "NO_FUTEX",
    "OS_ERROR",
    "abort",
    "acquire",
    "claim_newest",
    "claim_now",
    "claim_wait",
    "doorbell_wait",
    "count_torn",
    "count_window_failed",
    "drain",
    "find_pinned",
    "find_pseq",
    "find_seq",
    "publish",
    "publish_stack",
    "recover_actor",
    "recover_pin",
    "release",
    "snapshot",
    "store",
    "try_acquire",
    "unpin",
    "wake_all",
]

# Codes the hot-path kernels return instead of a slot (slots are >= 0).
NOTHING = -1  # nothing to claim (within the wait); for acquire: every slot busy (overrun)
CLOSED = -3  # the ring is shut down
EXHAUSTED = -4  # acquire: sequence numbers exhausted
INTERRUPTED = -5  # claim_wait / doorbell_wait: a signal arrived (let Python handle it)
NO_FUTEX = -6  # claim_wait / doorbell_wait: no futex on this machine, the caller sleeps
OS_ERROR = -1000  # claim_wait / doorbell_wait: OS_ERROR - errno, an unexpected futex error


@njit(cache=True, inline="always")
def _word_index(slot: int) -> int:
    return HEADER_WORDS + slot * SLOT_WORDS


@njit(cache=True, inline="always")
def _state(word: int) -> int:
    return word & STATE_MASK


@njit(cache=True, inline="always")
def _seq(word: int) -> int:
    return word >> SEQ_SHIFT


@njit(cache=True, inline="always")
def _row(ctl: np.ndarray, actor: int) -> int:
    """First word (the version) of ``actor``'s counter row."""
    if actor == PRODUCER_ACTOR:
        row = 0
    elif actor == OWNER_ACTOR:
        row = 1
    elif actor >= PIN_ACTOR_BASE:
        row = 2 + actor - PIN_ACTOR_BASE
    else:
        row = 9 + actor  # readers 1.. -> rows 10..
    base: int = ctl[H_ROWS_OFFSET] + row * STAT_ROW_WORDS
    return base


@njit(cache=True)
def _count(ctl: np.ndarray, actor: int, index: int, delta: int) -> None:
    base = _row(ctl, actor)
    atomic_add(ctl, base, 1)  # odd: updating
    ctl[base + index] += delta
    atomic_add(ctl, base, 1)  # even: done


@njit(cache=True, inline="always")
def _count_position(ctl: np.ndarray, position: int, index: int, delta: int) -> None:
    """Add ``delta`` to counter ``index`` of ``position``'s row (fetch-and-add: any actor)."""
    if 0 <= position < ctl[H_NPOS]:
        atomic_add(ctl, ctl[H_POS_OFFSET] + position * POS_WORDS + index, delta)


@njit(cache=True, inline="always")
def _position_of(ctl: np.ndarray, wi: int, w: int) -> int:
    """The position of the stack whose state word read ``w``, or -1 when the slot changed
    since (it was recycled: its words no longer belong to that stack). Called after the load
    of ``w``; the fence orders the read of the position before the second load."""
    position: int = ctl[wi + S_POSITION]
    fence_acquire()
    if atomic_load(ctl, wi) != w:
        return -1
    return position


@njit(cache=True)
def try_acquire(ctl: np.ndarray, actor: int, seq: int) -> int:
    """Producer: take the reusable slot with the oldest stack into WRITING.

    Reusable: EMPTY, DONE or READY (a READY stack nobody claimed is taken back and counted
    as skipped), and no pins. Returns the slot, or -1 when every slot is claimed, pinned or
    being written (an overrun, counted). The new word carries ``seq``, or ``H_NEXT_SEQ``
    when ``seq`` < 0 (the single producer's numbering). Several producers may acquire at
    once (each slot is taken by compare-and-swap) if each gives its own ``seq``.
    """
    n = ctl[H_NSLOTS]
    if seq < 0:
        seq = atomic_load(ctl, H_NEXT_SEQ)
    for _attempt in range(64):
        best = -1
        best_key = 0
        best_word = 0
        for i in range(n):
            w = atomic_load(ctl, _word_index(i))
            st = _state(w)
            if (w & PIN_MASK) != 0:
                continue
            if st == EMPTY:
                key = -1
            elif st == DONE or st == READY:
                key = _seq(w)
            else:
                continue
            if best < 0 or key < best_key:
                best = i
                best_key = key
                best_word = w
        if best < 0:
            _count(ctl, actor, C_OVERRUNS, 1)
            return -1
        new = (seq << SEQ_SHIFT) | WRITING
        wi = _word_index(best)
        position = ctl[wi + S_POSITION]  # the old stack's: see the CAS below
        if atomic_cas(ctl, wi, best_word, new) == best_word:
            # The swap succeeded, so the word had not changed since it was read, nor the
            # position read after it: a READY stack taken back is skipped at its position.
            if _state(best_word) == READY:
                _count(ctl, actor, C_SKIPPED, 1)
                _count_position(ctl, position, P_SKIPPED, 1)
            ctl[wi + S_POSITION] = 0
            ctl[wi + S_PSEQ] = seq
            ctl[wi + S_FRAME_H] = 0  # the full frame unless the publish says otherwise
            return best
    _count(ctl, actor, C_OVERRUNS, 1)
    return -1


@njit(cache=True)
def publish(ctl: np.ndarray, slot: int, actor: int) -> int:
    """Producer: WRITING -> READY (with the registered pins); returns the sleeper count.

    The slot's timestamps must be stored before; the release store of the state word makes
    them (and the pixels) visible to any reader that sees READY.
    """
    wi = _word_index(slot)
    w = ctl[wi]
    seq = _seq(w)
    position = ctl[wi + S_POSITION]
    pins = atomic_load(ctl, H_PIN_MASK) & 0xFF
    atomic_store(ctl, wi, (seq << SEQ_SHIFT) | (pins << PIN_SHIFT) | READY)
    while True:  # H_NEXT_SEQ = max(H_NEXT_SEQ, seq + 1): producers may publish out of order
        cur = atomic_load(ctl, H_NEXT_SEQ)
        if cur > seq or atomic_cas(ctl, H_NEXT_SEQ, cur, seq + 1) == cur:
            break
    _count(ctl, actor, C_PUBLISHED, 1)
    if 0 <= position < ctl[H_NPOS]:
        _count_position(ctl, position, P_PUBLISHED, 1)
        newest = ctl[H_POS_OFFSET] + position * POS_WORDS + P_NEWEST
        while True:  # the position's newest = max(newest, seq + 1)
            cur = atomic_load(ctl, newest)
            if cur > seq or atomic_cas(ctl, newest, cur, seq + 1) == cur:
                break
    atomic_add(ctl, H_DOORBELL, 1)  # the low 32 bits are the futex word
    return atomic_load(ctl, H_SLEEPERS)


@njit(cache=True)
def acquire(ctl: np.ndarray, actor: int, seq: int, max_seq: int) -> tuple[int, int]:
    """Producer, in one call: ``(slot, seq)`` of a slot taken into WRITING for stack ``seq``
    (< 0: the single producer's next number, ``H_NEXT_SEQ``).

    Instead of a slot: ``(CLOSED, seq)`` after shutdown (nothing taken, nothing counted);
    ``(EXHAUSTED, seq)`` when the next number is above ``max_seq`` (nothing taken);
    ``(NOTHING, seq)`` when every slot is claimed, pinned or being written (an overrun,
    counted by :func:`try_acquire`).
    """
    if atomic_load(ctl, H_CLOSED) != 0:
        return CLOSED, seq
    if seq < 0:
        seq = atomic_load(ctl, H_NEXT_SEQ)
        if seq > max_seq:
            return EXHAUSTED, seq
    return try_acquire(ctl, actor, seq), seq


@njit(cache=True)
def publish_stack(ctl: np.ndarray, slot: int, actor: int, interval_s: float,
                  futex_nr: int, position: int, pseq: int, frame_y: int, frame_x: int,
                  frame_h: int, frame_w: int) -> None:
    """Producer, in one call: stamp and publish the stack in WRITING slot ``slot``.

    Stores the slot's timestamps (first and last frame's exposure from the frame-time table,
    ``t_published`` = now on the monotonic clock, the interval in force), its sequence
    number, its ``position`` and its number within the position (``pseq``; < 0: the
    position's next number, counted in the position table, for a ring's single producer),
    its frame region (``frame_h`` 0: the full frame; stored every time, slots are reused),
    then :func:`publish` (WRITING -> READY, a release store: a reader that sees READY sees
    the stamps, the position, the region and the pixels), and wakes the readers asleep on
    the doorbell.
    """
    f = ctl.view(np.float64)
    wi = _word_index(slot)
    seq = _seq(ctl[wi])
    frames = ctl[H_C] * ctl[H_Z]
    first = ctl[H_FRAMES_OFFSET] + slot * frames
    f[wi + S_T_EXPOSURE] = f[first]
    f[wi + S_T_LAST_EXPOSURE] = f[first + frames - 1]
    f[wi + S_T_PUBLISHED] = monotonic()
    f[wi + S_INTERVAL] = interval_s
    ctl[wi + S_SEQ] = seq
    if pseq < 0:
        pseq = atomic_add(ctl, ctl[H_POS_OFFSET] + position * POS_WORDS + P_NEXT, 1)
    ctl[wi + S_POSITION] = position
    ctl[wi + S_PSEQ] = pseq
    ctl[wi + S_FRAME_Y] = frame_y
    ctl[wi + S_FRAME_X] = frame_x
    ctl[wi + S_FRAME_H] = frame_h
    ctl[wi + S_FRAME_W] = frame_w
    if publish(ctl, slot, actor) > 0 and futex_nr >= 0:
        futex_wake(ctl, H_DOORBELL, futex_nr)


@njit(cache=True)
def wake_all(ctl: np.ndarray, futex_nr: int) -> None:
    """Wake every reader asleep on the doorbell (after :func:`set_closed`)."""
    if futex_nr >= 0:
        futex_wake(ctl, H_DOORBELL, futex_nr)


@njit(cache=True, inline="always")
def _sleep(ctl: np.ndarray, bell: int, wait_ns: int, futex_nr: int) -> int:
    """Sleep on the doorbell while it still reads ``bell`` (registered as a sleeper, so the
    producer knows to wake us), at most ``wait_ns``. 0 when it is time to look again;
    INTERRUPTED, NO_FUTEX or OS_ERROR - errno otherwise."""
    if futex_nr < 0:
        return NO_FUTEX
    atomic_add(ctl, H_SLEEPERS, 1)
    err = futex_wait(ctl, H_DOORBELL, bell, wait_ns, futex_nr)
    atomic_add(ctl, H_SLEEPERS, -1)
    if err == 0 or err == EAGAIN or err == ETIMEDOUT:
        return 0
    if err == EINTR:
        return INTERRUPTED
    return OS_ERROR - err


@njit(cache=True, nogil=True)
def doorbell_wait(ctl: np.ndarray, bell: int, wait_ns: int, futex_nr: int) -> int:
    """Sleep on the doorbell while it reads ``bell``, at most ``wait_ns`` (the GIL released).

    0 after a publish, a shutdown, the time-out or a spurious wake-up (the caller looks
    again); INTERRUPTED (a signal: the caller lets Python run its handlers), NO_FUTEX (the
    caller sleeps itself) or OS_ERROR - errno.
    """
    return _sleep(ctl, bell, wait_ns, futex_nr)


@njit(cache=True, inline="always")
def _claim_look(ctl: np.ndarray, actor: int, min_pseq: int, check_closed: bool,
                bell: int) -> tuple[int, int, float, float, float, float, int, int]:
    """One look of :func:`claim_wait` (``bell``: the doorbell, read before it)."""
    if check_closed and atomic_load(ctl, H_CLOSED) != 0:
        return CLOSED, bell, 0.0, 0.0, 0.0, 0.0, 0, 0
    slot = claim_newest(ctl, actor, min_pseq)
    if slot < 0:
        return NOTHING, bell, 0.0, 0.0, 0.0, 0.0, 0, 0
    f = ctl.view(np.float64)
    wi = _word_index(slot)
    t_claimed = monotonic()
    f[wi + S_T_CLAIMED] = t_claimed
    return (slot, _seq(atomic_load(ctl, wi)), f[wi + S_T_EXPOSURE], f[wi + S_T_PUBLISHED],
            f[wi + S_INTERVAL], t_claimed, ctl[wi + S_POSITION], ctl[wi + S_PSEQ])


@njit(cache=True, nogil=True)
def claim_wait(ctl: np.ndarray, actor: int, min_pseq: int, wait_ns: int, check_closed: bool,
               futex_nr: int) -> tuple[int, int, float, float, float, float, int, int]:
    """Reader, in one call (the GIL released): claim a position's newest READY stack (see
    :func:`claim_newest`); when there is none, sleep on the doorbell (at most ``wait_ns``)
    and look once more.

    Returns ``(slot, seq, t_exposure, t_published, interval_s, t_claimed, position, pseq)``
    for a claim (``t_claimed`` = now, stored in the slot). Instead of a slot: NOTHING
    (nothing to claim: no READY stack, or none far enough into its position for a time
    window: ``pseq >= min_pseq``), CLOSED (``check_closed`` and the ring is shut down;
    checked before each look), INTERRUPTED, NO_FUTEX or OS_ERROR - errno (see
    :func:`doorbell_wait`).
    """
    # The doorbell is read before each look: a publish after the look moves it, and the
    # sleep returns at once instead of missing the stack.
    got = _claim_look(ctl, actor, min_pseq, check_closed, atomic_load(ctl, H_DOORBELL))
    if got[0] != NOTHING or wait_ns <= 0:
        return got
    code = _sleep(ctl, got[1] & 0xFFFFFFFF, wait_ns, futex_nr)
    if code != 0:
        return code, 0, 0.0, 0.0, 0.0, 0.0, 0, 0
    return _claim_look(ctl, actor, min_pseq, check_closed, 0)


@njit(cache=True)
def claim_now(ctl: np.ndarray, actor: int, min_pseq: int
              ) -> tuple[int, int, float, float, float, float, int, int]:
    """Reader: :func:`claim_wait` without the sleep, the closed check or releasing the GIL
    (a look that finds nothing costs less)."""
    return _claim_look(ctl, actor, min_pseq, False, 0)


@njit(cache=True)
def abort(ctl: np.ndarray, slot: int, actor: int) -> None:
    """Producer: give a WRITING slot back unpublished (its sequence number is reused)."""
    atomic_store(ctl, _word_index(slot), EMPTY)
    _count(ctl, actor, C_ABORTED, 1)


@njit(cache=True)
def claim_newest(ctl: np.ndarray, actor: int, min_pseq: int) -> int:
    """Reader: claim the newest READY stack of one position.

    Each position's newest READY stack is a candidate; the one that has waited longest (the
    lowest sequence number among the candidates) is claimed, so no position's newest stack
    waits behind another position's newer ones. Older READY stacks *of the claimed
    position* are moved to DONE and counted as skipped (each by exactly one reader: the move
    is a compare-and-swap); a newer stack of position A never makes a reader skip a stack of
    position B. With one position this is the newest READY stack, older ones skipped.

    Returns the slot; -1 when nothing is READY; -2 when no position's newest READY stack is
    far enough into its position for a time window (``pseq < min_pseq``; nothing is claimed
    or skipped).
    """
    n = ctl[H_NSLOTS]
    npos = ctl[H_NPOS]
    newest_slot = np.empty(npos, dtype=np.int64)
    newest_word = np.zeros(npos, dtype=np.int64)  # 0: position not seen (READY is never 0)
    seen = np.empty(npos, dtype=np.int64)
    claimed = -1
    claimed_seq = 0
    claimed_position = 0
    for _attempt in range(1000):
        k = 0
        for i in range(n):
            wi = _word_index(i)
            w = atomic_load(ctl, wi)
            if _state(w) != READY:
                continue
            p = _position_of(ctl, wi, w)
            if p < 0 or p >= npos:
                continue  # recycled since the load: not READY with that stack any more
            if newest_word[p] == 0:
                seen[k] = p
                k += 1
                newest_word[p] = w
                newest_slot[p] = i
            elif _seq(w) > _seq(newest_word[p]):
                newest_word[p] = w
                newest_slot[p] = i
        if k == 0:
            return -1
        best = -1
        for j in range(k):
            p = seen[j]
            w = newest_word[p]
            wi = _word_index(newest_slot[p])
            pseq = ctl[wi + S_PSEQ]
            fence_acquire()
            if atomic_load(ctl, wi) != w or pseq < min_pseq:
                continue
            if best < 0 or _seq(w) < _seq(newest_word[best]):
                best = p
        if best >= 0:
            w = newest_word[best]
            wi = _word_index(newest_slot[best])
            new = (w & ~(STATE_MASK | OWNER_MASK)) | CLAIMED | (actor << OWNER_SHIFT)
            if atomic_cas(ctl, wi, w, new) == w:
                claimed = newest_slot[best]
                claimed_seq = _seq(w)
                claimed_position = best
                break
        for j in range(k):
            newest_word[seen[j]] = 0
        if best < 0:
            return -2
    if claimed < 0:
        return -1
    skipped = 0
    for i in range(n):
        wi = _word_index(i)
        w = atomic_load(ctl, wi)
        while _state(w) == READY and _seq(w) < claimed_seq:
            p = _position_of(ctl, wi, w)
            if p < 0:
                w = atomic_load(ctl, wi)  # recycled meanwhile: look at what it holds now
                continue
            if p != claimed_position:
                break
            old = atomic_cas(ctl, wi, w, (w & ~STATE_MASK) | DONE)
            if old == w:
                skipped += 1
                break
            w = old
    base = _row(ctl, actor)
    atomic_add(ctl, base, 1)
    ctl[base + C_CLAIMED] += 1
    ctl[base + C_SKIPPED] += skipped
    atomic_add(ctl, base, 1)
    _count_position(ctl, claimed_position, P_CLAIMED, 1)
    if skipped:
        _count_position(ctl, claimed_position, P_SKIPPED, skipped)
    return claimed


@njit(cache=True)
def release(ctl: np.ndarray, slot: int, actor: int, seq: int, outcome: int) -> bool:
    """Reader: CLAIMED -> DONE (pins kept), counted under ``outcome``: ``C_COMPLETED``
    (analysed), ``C_SKIPPED`` (the reader gave up on it) or ``C_FAILED`` (its analysis
    raised); any other value counts as skipped. False if the claim was recovered
    meanwhile (nothing is counted then: the owner counted it as recovered)."""
    wi = _word_index(slot)
    position = ctl[wi + S_POSITION]  # stable while the claim is held (checked below)
    w = atomic_load(ctl, wi)
    while True:
        if _state(w) != CLAIMED or _seq(w) != seq or ((w & OWNER_MASK) >> OWNER_SHIFT) != actor:
            return False
        old = atomic_cas(ctl, wi, w, (w & ~(STATE_MASK | OWNER_MASK)) | DONE)
        if old == w:
            break
        w = old  # only the pin bits can have changed
    if outcome != C_COMPLETED and outcome != C_FAILED:
        outcome = C_SKIPPED
    _count(ctl, actor, outcome, 1)
    if outcome == C_COMPLETED:
        _count_position(ctl, position, P_COMPLETED, 1)
    elif outcome == C_FAILED:
        _count_position(ctl, position, P_FAILED, 1)
    else:
        _count_position(ctl, position, P_SKIPPED, 1)
    return True


@njit(cache=True)
def find_seq(ctl: np.ndarray, seq: int) -> int:
    """The slot holding stack ``seq`` in a readable state (READY, CLAIMED, DONE), or -1."""
    n = ctl[H_NSLOTS]
    for i in range(n):
        w = atomic_load(ctl, _word_index(i))
        st = _state(w)
        if _seq(w) == seq and (st == READY or st == CLAIMED or st == DONE):
            return i
    return -1


@njit(cache=True)
def find_pseq(ctl: np.ndarray, position: int, pseq: int) -> tuple[int, int]:
    """``(slot, seq)`` of the readable stack (READY, CLAIMED, DONE) that is number ``pseq``
    of ``position``, or ``(-1, -1)``. The position words are read between two loads of an
    unchanged state word, so they belong to ``seq``'s stack."""
    n = ctl[H_NSLOTS]
    for i in range(n):
        wi = _word_index(i)
        w = atomic_load(ctl, wi)
        st = _state(w)
        if not (st == READY or st == CLAIMED or st == DONE):
            continue
        p = ctl[wi + S_POSITION]
        k = ctl[wi + S_PSEQ]
        fence_acquire()
        if p == position and k == pseq and atomic_load(ctl, wi) == w:
            return i, _seq(w)
    return -1, -1


@njit(cache=True)
def find_pinned(ctl: np.ndarray, bit: int) -> int:
    """The readable slot with the lowest sequence number that carries pin ``bit``, or -1."""
    n = ctl[H_NSLOTS]
    mask = 1 << (PIN_SHIFT + bit)
    best = -1
    best_seq = 0
    for i in range(n):
        w = atomic_load(ctl, _word_index(i))
        st = _state(w)
        readable = st == READY or st == CLAIMED or st == DONE
        if (w & mask) != 0 and readable and (best < 0 or _seq(w) < best_seq):
            best = i
            best_seq = _seq(w)
    return best


@njit(cache=True)
def still_holds(ctl: np.ndarray, slot: int, seq: int) -> bool:
    """After copying a slot without a claim: True if it still holds ``seq`` (seqlock check)."""
    fence_acquire()
    w = atomic_load(ctl, _word_index(slot))
    st = _state(w)
    return _seq(w) == seq and (st == READY or st == CLAIMED or st == DONE)


@njit(cache=True)
def unpin(ctl: np.ndarray, slot: int, bit: int, seq: int, actor: int) -> bool:
    """Pinning consumer: clear its pin on stack ``seq``. False if the pin is not there."""
    wi = _word_index(slot)
    mask = 1 << (PIN_SHIFT + bit)
    w = atomic_load(ctl, wi)
    while True:
        if _seq(w) != seq or (w & mask) == 0:
            return False
        old = atomic_cas(ctl, wi, w, w & ~mask)
        if old == w:
            break
        w = old
    _count(ctl, actor, C_UNPINNED, 1)
    return True


@njit(cache=True)
def recover_actor(ctl: np.ndarray, dead: int, actor: int) -> int:
    """Owner: return every claim held by actor ``dead`` (it died) to DONE; make its
    counter row readable again if it died mid-update. Returns the number of claims
    recovered (counted)."""
    base = _row(ctl, dead)
    if atomic_load(ctl, base) & 1:
        atomic_add(ctl, base, 1)
    n = ctl[H_NSLOTS]
    recovered = 0
    for i in range(n):
        wi = _word_index(i)
        w = atomic_load(ctl, wi)
        while _state(w) == CLAIMED and ((w & OWNER_MASK) >> OWNER_SHIFT) == dead:
            position = ctl[wi + S_POSITION]  # stable while claimed (the CAS checks it is)
            old = atomic_cas(ctl, wi, w, (w & ~(STATE_MASK | OWNER_MASK)) | DONE)
            if old == w:
                recovered += 1
                _count_position(ctl, position, P_RECOVERED, 1)
                break
            w = old
    if recovered:
        _count(ctl, actor, C_RECOVERED, recovered)
    return recovered


@njit(cache=True)
def recover_pin(ctl: np.ndarray, bit: int, actor: int) -> int:
    """Owner: drop pin ``bit`` from every slot and from the registered mask (its consumer
    died or left). Returns the number of slots that were still pinned."""
    mask = 1 << (PIN_SHIFT + bit)
    while True:
        m = atomic_load(ctl, H_PIN_MASK)
        if atomic_cas(ctl, H_PIN_MASK, m, m & ~(1 << bit)) == m:
            break
    n = ctl[H_NSLOTS]
    dropped = 0
    for i in range(n):
        wi = _word_index(i)
        w = atomic_load(ctl, wi)
        while (w & mask) != 0:
            old = atomic_cas(ctl, wi, w, w & ~mask)
            if old == w:
                dropped += 1
                break
            w = old
    return dropped


@njit(cache=True)
def drain(ctl: np.ndarray, actor: int) -> int:
    """Owner, at the end of a run: every READY stack left unclaimed -> DONE, counted as
    skipped, so that ``published == completed + skipped + failed + recovered`` once no claim
    is held."""
    n = ctl[H_NSLOTS]
    skipped = 0
    for i in range(n):
        wi = _word_index(i)
        w = atomic_load(ctl, wi)
        while _state(w) == READY:
            position = ctl[wi + S_POSITION]  # w's stack's if the CAS below succeeds
            old = atomic_cas(ctl, wi, w, (w & ~STATE_MASK) | DONE)
            if old == w:
                skipped += 1
                _count_position(ctl, position, P_SKIPPED, 1)
                break
            w = old
    if skipped:
        _count(ctl, actor, C_SKIPPED, skipped)
    return skipped


@njit(cache=True)
def count_torn(ctl: np.ndarray, actor: int, slot: int) -> None:
    """A reader found the stack it holds in ``slot`` torn (verification stamps did not
    match): counted for the reader and for the stack's position."""
    _count(ctl, actor, C_TORN, 1)
    _count_position(ctl, ctl[_word_index(slot) + S_POSITION], P_TORN, 1)


@njit(cache=True)
def count_window_failed(ctl: np.ndarray, actor: int) -> None:
    """A reader could not form a time window (an older stack was already overwritten)."""
    _count(ctl, actor, C_WINDOWS_FAILED, 1)


@njit(cache=True)
def snapshot(ctl: np.ndarray, out: np.ndarray) -> bool:
    """Sum every actor's counters into ``out``, each row read consistently (seqlock). False
    if a row kept changing (or stayed odd: its actor is mid-update, or died there) for many
    attempts; ``out`` then holds that row's last reading (off by at most one event)."""
    out[:] = 0
    consistent = True
    row = np.empty(COUNTER_COUNT, dtype=np.int64)
    rows_at = ctl[H_ROWS_OFFSET]
    for r in range(STAT_ROWS):
        base = rows_at + r * STAT_ROW_WORDS
        ok = False
        for _attempt in range(2000):
            v1 = atomic_load(ctl, base)
            if v1 & 1:
                continue
            for k in range(COUNTER_COUNT):
                row[k] = ctl[base + COUNTER_FIRST + k]
            fence_acquire()
            if atomic_load(ctl, base) == v1:
                ok = True
                break
        if not ok:
            consistent = False
            for k in range(COUNTER_COUNT):
                row[k] = ctl[base + COUNTER_FIRST + k]
        for k in range(COUNTER_COUNT):
            out[k] += row[k]
    return consistent


@njit(cache=True)
def count_states(ctl: np.ndarray, out: np.ndarray) -> None:
    """Number of slots in each state (a racy census for statistics, not for decisions)."""
    out[:] = 0
    n = ctl[H_NSLOTS]
    for i in range(n):
        st = _state(atomic_load(ctl, _word_index(i)))
        if st < out.shape[0]:
            out[st] += 1


@njit(cache=True)
def set_closed(ctl: np.ndarray) -> None:
    """Owner: mark the ring closed and ring the doorbell so every sleeper wakes."""
    atomic_store(ctl, H_CLOSED, 1)
    atomic_add(ctl, H_DOORBELL, 1)


@njit(cache=True)
def load(ctl: np.ndarray, index: int) -> int:
    """An acquire load of one control word."""
    return atomic_load(ctl, index)


@njit(cache=True)
def register_pin(ctl: np.ndarray, max_pins: int) -> int:
    """Allocate a pin bit for a new pinning consumer; -1 if all are taken."""
    while True:
        m = atomic_load(ctl, H_PIN_MASK)
        bit = -1
        for b in range(max_pins):
            if (m & (1 << b)) == 0:
                bit = b
                break
        if bit < 0:
            return -1
        if atomic_cas(ctl, H_PIN_MASK, m, m | (1 << bit)) == m:
            return bit


_warm = False


def warm_up() -> None:
    """Load (or compile) every kernel now, on a scratch control block, so that the first
    real claim or publish of this process is not slowed by numba. Once per process."""
    global _warm
    if _warm:
        return
    scratch = np.zeros(HEADER_WORDS + 2 * SLOT_WORDS + STAT_ROWS * STAT_ROW_WORDS + POS_WORDS
                       + 2, dtype=np.int64)
    scratch[H_NSLOTS] = 2
    scratch[H_NPOS] = 1
    scratch[H_ROWS_OFFSET] = HEADER_WORDS + 2 * SLOT_WORDS
    scratch[H_POS_OFFSET] = scratch[H_ROWS_OFFSET] + STAT_ROWS * STAT_ROW_WORDS
    counters = np.zeros(COUNTER_COUNT, dtype=np.int64)
    census = np.zeros(8, dtype=np.int64)
    scratch[H_C] = scratch[H_Z] = 1
    scratch[H_FRAMES_OFFSET] = scratch.shape[0] - 2
    slot, seq = acquire(scratch, 1, -1, 1 << 30)
    publish_stack(scratch, slot, 1, 0.0, -1, 0, -1, 0, 0, 0, 0)
    got = claim_wait(scratch, 1, 0, 0, True, -1)[0]
    release(scratch, got, 1, seq, C_COMPLETED)
    slot, seq = acquire(scratch, 1, -1, 1 << 30)
    publish_stack(scratch, slot, 1, 0.0, -1, 0, seq, 0, 0, 0, 0)
    got = claim_now(scratch, 1, 0)[0]
    release(scratch, got, 1, seq, C_COMPLETED)
    claim_wait(scratch, 1, 0, 1, True, -1)  # nothing: NO_FUTEX, no sleep
    doorbell_wait(scratch, 0, 1, -1)
    wake_all(scratch, -1)
    slot = try_acquire(scratch, 1, -1)
    publish(scratch, slot, 1)
    got = claim_newest(scratch, 1, 0)
    release(scratch, got, 1, 2, C_COMPLETED)
    slot = try_acquire(scratch, 1, -1)
    abort(scratch, slot, 1)
    find_pinned(scratch, 0)
    unpin(scratch, 0, 0, 0, 1)
    find_seq(scratch, 0)
    find_pseq(scratch, 0, 0)
    still_holds(scratch, 0, 0)
    recover_actor(scratch, 1, 2)
    register_pin(scratch, 8)
    recover_pin(scratch, 0, 2)
    drain(scratch, 2)
    count_torn(scratch, 1, 0)
    count_window_failed(scratch, 1)
    snapshot(scratch, counters)
    count_states(scratch, census)
    load(scratch, 0)
    set_closed(scratch)
    store(scratch, 0, 0)
    _warm = True


@njit(cache=True)
def store(ctl: np.ndarray, index: int, value: int) -> None:
    """A release store of one control word."""
    atomic_store(ctl, index, value)
