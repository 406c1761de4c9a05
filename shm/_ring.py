"""The stack ring: S slots of (C, Z, H, W) stacks in one shared-memory block.

Roles and what each may do (see :mod:`._layout` for the state word and :mod:`._kernels` for
the transitions)::

    producer (camera)     EMPTY/DONE/READY(unpinned) --acquire--> WRITING --publish--> READY
                                                        WRITING --abort--> EMPTY
    readers (workers)     READY --claim newest--> CLAIMED --release--> DONE (analysed)
                                                  CLAIMED --fail-----> DONE (failed)
                          older READY passed over by a claim -------------> DONE (skipped)
    pinning consumer      clears its pin bit once the stack is persisted (writer)
    owner (engine)        CLAIMED of a dead reader --recover--> DONE; drain READY -> DONE

The producer never waits: when every slot is claimed, pinned or being written, the stack is
an *overrun* (counted) and :meth:`StackRing.write_slot` raises
:class:`~rt_eda.shm.RingOverrunError`. A CLAIMED slot and a pinned slot are never
overwritten. Readers sleep on the doorbell (:mod:`._doorbell`) when there is nothing to claim.

Positions: every stack carries its stage position (``publish(position=p)``; 0 in a
single-position run) and its number among that position's stacks. "Newest" and "stale" are
per position: a claim takes the newest READY stack of the position that has waited longest
and skips only older stacks *of that position*; a time window is the position's last T
stacks. Every count is also kept per position (:meth:`StackRing.position_statistics`).

Frame regions: a stack read from a region of the sensor (a camera ROI) still fills a slot of
the full (C, Z, H, W) shape, its region's pixels at their sensor position and the rest stale
(whatever the slot held before). ``publish(frame=region)`` records the region with the stack;
:attr:`Claim.frame` and :attr:`PinnedStack.frame` hand it out (None: the full frame), and
every reader must look only inside it.

Every process maps the same block; :meth:`StackRing.create` makes it (the owner must
:meth:`~StackRing.unlink` it, which the context manager does), :meth:`StackRing.attach`
maps it by name. Numpy arrays handed out (``pixels``) are views on shared memory: zero-copy,
valid while the claim (or slot being written) is held.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self

import numpy as np

from . import _kernels
from ._block import SharedBlock
from ._doorbell import FUTEX_NR
from ._errors import (
    ClaimRecoveredError,
    RingClosedError,
    RingError,
    RingOverrunError,
    TornReadError,
)
from ._layout import (
    C_COMPLETED,
    C_FAILED,
    C_SKIPPED,
    CLAIMED,
    COUNTER_COUNT,
    COUNTER_NAMES,
    H_C,
    H_CLOSED,
    H_CREATOR,
    H_DOORBELL,
    H_DTYPE,
    H_FRAMES_OFFSET,
    H_H,
    H_MAGIC,
    H_NEXT_SEQ,
    H_NPOS,
    H_NSLOTS,
    H_PIN_MASK,
    H_PIX_OFFSET,
    H_PIX_STRIDE,
    H_POS_OFFSET,
    H_ROWS_OFFSET,
    H_SLOT_WORDS,
    H_VERSION,
    H_W,
    H_Z,
    HEADER_WORDS,
    MAGIC,
    MAX_PINS,
    MAX_POSITIONS,
    MAX_READER_ID,
    MAX_SEQ,
    OWNER_ACTOR,
    OWNER_MASK,
    OWNER_SHIFT,
    P_NEWEST,
    PAGE,
    PIN_ACTOR_BASE,
    POS_WORDS,
    POSITION_COUNTER_NAMES,
    PRODUCER_ACTOR,
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
    S_T_PUBLISHED,
    S_WORD,
    SEQ_SHIFT,
    SLOT_WORDS,
    STAT_ROW_WORDS,
    STAT_ROWS,
    STATE_MASK,
    VERSION,
    pack_dtype,
    round_up,
    unpack_dtype,
)
from ._region import FrameRegion
from ._spec import StackSpec

__all__ = [
    "Claim",
    "PinReader",
    "PinnedStack",
    "PositionStatistics",
    "RingStatistics",
    "SlotWriter",
    "StackRing",
]

_MAX_SLOTS = 4096


@dataclass(frozen=True, slots=True)
class RingStatistics:
    """A consistent snapshot of the ring's counters (all processes' activity).

    Once no claim is held and the ring is drained,
    ``published == completed + skipped + failed + recovered``: every stack is analysed
    (``completed``), passed over or given up on (``skipped``), released by a reader whose
    analysis raised (``failed``), or taken back from a reader that died (``recovered``).
    """

    published: int
    claimed: int
    completed: int
    skipped: int
    overruns: int
    recovered: int
    torn_reads: int
    unpinned: int
    aborted: int
    windows_failed: int
    failed: int
    next_seq: int
    slots_ready: int
    slots_claimed: int
    slots_writing: int


@dataclass(frozen=True, slots=True)
class PositionStatistics:
    """One position's counts in the ring (a snapshot; exact once the ring is drained, when
    ``published == completed + skipped + failed + recovered`` holds for each position as it
    does for the ring). ``newest_seq``: its newest published stack, -1 before the first."""

    position: int
    published: int
    claimed: int
    completed: int
    skipped: int
    failed: int
    recovered: int
    torn_reads: int
    newest_seq: int


class SlotWriter:
    """A slot held by the producer in WRITING state (from :meth:`StackRing.write_slot`).

    Fill ``pixels`` (C, Z, H, W) frame by frame and ``frame_times`` (C*Z exposure times),
    then :meth:`publish`. Only the producer process may hold one.
    """

    __slots__ = ("_done", "_explicit", "_ring", "frame_times", "pixels", "seq", "slot")

    def __init__(self, ring: StackRing, slot: int, seq: int, explicit: bool = False) -> None:
        self._ring = ring
        self.slot = slot
        self.seq = seq
        self.pixels: np.ndarray = ring._slot_pixels[slot]
        self.frame_times: np.ndarray = ring._slot_frame_times[slot]
        self._done = False
        self._explicit = explicit

    def publish(self, *, interval_s: float = 0.0, position: int = 0,
                frame: FrameRegion | None = None) -> None:
        """Make the stack visible to readers (READY). The exposure timestamps are taken from
        ``frame_times`` (first and last frame); ``interval_s`` is the interval in force;
        ``position`` the stage position it was acquired at (0 .. ring.positions - 1);
        ``frame`` the region of the sensor its pixels were read into (at their sensor
        position; the pixels outside are stale), None or the whole sensor for the full frame.

        One compiled call (:func:`._kernels.publish_stack`): the timestamps (``t_published``
        on the monotonic clock), the position and the stack's number within it (the ring
        counts it; a stack published with its own sequence number keeps that number), the
        frame region, the state change, and the wake-up of sleeping readers.

        Raises
        ------
        ValueError
            ``position`` is not one of the ring's positions, or ``frame`` does not lie within
            the ring's (H, W) (nothing is published).
        """
        if self._done:
            raise RingError(f"slot {self.slot} (stack {self.seq}) was already published")
        ring = self._ring
        if not 0 <= position < ring.positions:
            raise ValueError(f"position {position} is not one of the ring's "
                             f"{ring.positions} (0 .. {ring.positions - 1})")
        fy = fx = fh = fw = 0
        if frame is not None:  # plain int checks: this runs for every stack of an ROI
            fy, fx, fh, fw = frame.y, frame.x, frame.height, frame.width
            height, width = ring._frame_hw
            if fy < 0 or fx < 0 or fy + fh > height or fx + fw > width:
                raise ValueError(f"frame region {frame.describe()} does not lie within the "
                                 f"ring's {width}x{height} px frames")
            if fh == height and fw == width:
                fy = fx = fh = fw = 0  # the full frame
        self._done = True
        _kernels.publish_stack(ring._ctl, self.slot, PRODUCER_ACTOR, float(interval_s),
                               FUTEX_NR, position, self.seq if self._explicit else -1,
                               fy, fx, fh, fw)

    def abort(self) -> None:
        """Give the slot back unpublished; the sequence number is used by the next stack."""
        if not self._done:
            self._done = True
            _kernels.abort(self._ring._ctl, self.slot, PRODUCER_ACTOR)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.publish()


class Claim:
    """A stack (or a time window of stacks) claimed by one reader.

    ``pixels`` is (C, Z, H, W), a zero-copy read-only view on the slot, for a single stack
    (the writer saves that very slot: a worker copies before changing it); for a time
    window of T stacks it is a (T, C, Z, H, W) array, oldest first, assembled under sequence
    checks: the last T stacks *of the claimed stack's position* (``seqs``, oldest first,
    their sequence numbers). ``position`` and ``pseq`` are the stack's position and its
    number within that position. ``frame`` is the region of the sensor the (newest) stack
    was read from, None for the full frame: only ``pixels[..., frame.y:frame.y1,
    frame.x:frame.x1]`` are valid then (a window's older stacks may have been read from other
    regions; the newest stack's is the one recorded here). Valid until :meth:`release`; the
    context manager releases.
    """

    __slots__ = (
        "_released",
        "_ring",
        "actor",
        "frame",
        "interval_s",
        "pixels",
        "position",
        "pseq",
        "seq",
        "seqs",
        "slot",
        "t_claimed",
        "t_exposure",
        "t_published",
    )

    def __init__(
        self, ring: StackRing, slot: int, seq: int, actor: int, pixels: np.ndarray,
        t_exposure: float, t_published: float, interval_s: float, t_claimed: float,
        position: int = 0, pseq: int = 0, seqs: tuple[int, ...] | None = None,
        frame: FrameRegion | None = None,
    ) -> None:
        self._ring = ring
        self.slot = slot
        self.seq = seq
        self.actor = actor
        self.pixels = pixels
        self.t_exposure = t_exposure
        self.t_published = t_published
        self.interval_s = interval_s
        self.t_claimed = t_claimed  # stamped in the slot by the claim (claim_wait)
        self.position = position
        self.pseq = pseq
        self.seqs = seqs if seqs is not None else (seq,)
        self.frame = frame
        self._released = False

    @property
    def frame_times(self) -> np.ndarray:
        """Exposure times of the newest stack's frames (C*Z)."""
        times: np.ndarray = self._ring._slot_frame_times[self.slot]
        return times

    def count_torn(self) -> None:
        """Record that verification found this stack torn (counted in the ring, and for its
        position)."""
        _kernels.count_torn(self._ring._ctl, self.actor, self.slot)

    def release(self, *, analysed: bool = True) -> None:
        """Hand the slot back (DONE), counted as completed, or as skipped when
        ``analysed=False`` (the reader gave up on it, e.g. a torn stack). Raises
        ClaimRecoveredError if the owner had taken the claim back (this reader was declared
        dead); discard the result then. A second release (or :meth:`fail`) does nothing."""
        self._hand_back(C_COMPLETED if analysed else C_SKIPPED)

    def fail(self) -> None:
        """Hand the slot back (DONE), counted as *failed*: the analysis of this stack raised.

        The context manager calls it when its block raises. Raises ClaimRecoveredError as
        :meth:`release` does; a second release (or fail) does nothing.
        """
        self._hand_back(C_FAILED)

    def _hand_back(self, outcome: int) -> None:
        if self._released:
            return
        self._released = True
        if not _kernels.release(self._ring._ctl, self.slot, self.actor, self.seq, outcome):
            raise ClaimRecoveredError(
                f"claim of stack {self.seq} (slot {self.slot}) by reader {self.actor} "
                "was recovered by the ring's owner"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.release()
        else:
            # The block raised: the stack was not analysed, it failed (counted as such, so
            # the counts add up). The original exception is the one that matters.
            with contextlib.suppress(ClaimRecoveredError):
                self.fail()


@dataclass(frozen=True, slots=True)
class PinnedStack:
    """A stack a pinning consumer may read until it calls :meth:`PinReader.release`.

    ``frame``: the region of the sensor it was read from (None: the full frame); the pixels
    outside it are stale.
    """

    seq: int
    slot: int
    pixels: np.ndarray
    frame_times: np.ndarray
    t_exposure: float
    t_published: float
    interval_s: float
    position: int = 0
    pseq: int = 0
    frame: FrameRegion | None = None


class PinReader:
    """A pinning consumer (the recording writer): sees every published stack, in order.

    Every stack published after :meth:`StackRing.register_pin` carries this consumer's pin;
    the producer will not overwrite it until :meth:`release`. Stacks are read in sequence
    order starting at the first stack published after registration.
    """

    def __init__(self, ring: StackRing, bit: int) -> None:
        self._ring = ring
        self.bit = bit
        self.actor = PIN_ACTOR_BASE + bit
        self.next_seq = int(_kernels.load(ring._ctl, H_NEXT_SEQ))

    def next(self, timeout: float | None = None) -> PinnedStack | None:
        """The next stack in sequence order, or None if none arrived within ``timeout``.

        Raises RingClosedError when the ring is closed and no further stack is pending.
        """
        ring = self._ring
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            bell = ring._doorbell_value()
            slot = _kernels.find_seq(ring._ctl, self.next_seq)
            if slot >= 0:
                return self._stack(slot, self.next_seq)
            if ring.closed and _kernels.load(ring._ctl, H_NEXT_SEQ) <= self.next_seq:
                raise RingClosedError("ring closed: no further stacks")
            if not ring._sleep(bell, deadline):
                return None

    def next_any(self, timeout: float | None = None) -> PinnedStack | None:
        """The pinned stack with the lowest sequence number, whatever the order stacks were
        published in (a ring with several producers, where numbers have gaps). None on
        timeout; RingClosedError once the ring is closed and nothing pinned is left."""
        ring = self._ring
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            bell = ring._doorbell_value()
            slot = _kernels.find_pinned(ring._ctl, self.bit)
            if slot >= 0:
                seq = int(ring._ctl[ring._slot_word(slot) + S_SEQ])
                if _kernels.find_seq(ring._ctl, seq) == slot:
                    return self._stack(slot, seq)
                continue  # recycled between the two looks: look again
            if ring.closed:
                raise RingClosedError("ring closed: no further stacks")
            if not ring._sleep(bell, deadline):
                return None

    def _stack(self, slot: int, seq: int) -> PinnedStack:
        ring = self._ring
        base = ring._slot_word(slot)
        f = ring._ctlf
        return PinnedStack(
            seq=seq,
            slot=slot,
            pixels=ring._pixels[slot],
            frame_times=ring._frame_times[slot],
            t_exposure=float(f[base + S_T_EXPOSURE]),
            t_published=float(f[base + S_T_PUBLISHED]),
            interval_s=float(f[base + S_INTERVAL]),
            position=int(ring._ctl[base + S_POSITION]),
            pseq=int(ring._ctl[base + S_PSEQ]),
            frame=ring._frame_of(base),
        )

    def release(self, stack: PinnedStack) -> None:
        """The stack is persisted: drop the pin so the producer may reuse the slot.

        Stacks from :meth:`next` must be released in order; stacks from :meth:`next_any` in
        any order."""
        in_order = stack.seq == self.next_seq
        if not _kernels.unpin(self._ring._ctl, stack.slot, self.bit, stack.seq, self.actor):
            raise RingError(f"stack {stack.seq} in slot {stack.slot} no longer carries pin "
                            f"{self.bit} (was the pin recovered?)")
        if in_order:
            self.next_seq += 1

    def unregister(self) -> None:
        """Stop pinning: new stacks no longer carry this pin; pins still held are dropped."""
        _kernels.recover_pin(self._ring._ctl, self.bit, self.actor)


class StackRing:
    """A shared-memory ring of image stacks (see the module docstring for the protocol).

    Parameters
    ----------
    block
        The mapped shared-memory block.

    Use :meth:`create` or :meth:`attach`, not the constructor.
    """

    SLEEP_CAP_S: ClassVar[float] = 0.25
    """Longest single sleep on the doorbell: a sleeping reader also wakes by itself this
    often (a safety net; tests raise it to prove the doorbell alone wakes readers)."""

    def __init__(self, block: SharedBlock) -> None:
        _kernels.warm_up()
        self._block = block
        buf = block.buf
        head = np.frombuffer(buf, dtype=np.int64, count=HEADER_WORDS)
        if int(head[H_MAGIC]) != MAGIC:
            raise RingError(f"shared block {block.name!r} is not an rt-eda stack ring")
        if int(head[H_VERSION]) != VERSION:
            raise RingError(
                f"ring {block.name!r} has layout version {int(head[H_VERSION])}, "
                f"this rt-eda reads version {VERSION}"
            )
        self.n_slots = int(head[H_NSLOTS])
        self.positions = int(head[H_NPOS])
        self._pos_at = int(head[H_POS_OFFSET])
        self.spec = StackSpec(
            int(head[H_C]), int(head[H_Z]), int(head[H_H]), int(head[H_W]),
            unpack_dtype(int(head[H_DTYPE])),
        )
        frames_at = int(head[H_FRAMES_OFFSET])
        ctl_words = frames_at + self.n_slots * self.spec.frames
        pix_offset = int(head[H_PIX_OFFSET])
        stride = int(head[H_PIX_STRIDE])
        del head
        self._ctl = np.frombuffer(buf, dtype=np.int64, count=ctl_words)
        self._ctlf = np.frombuffer(buf, dtype=np.float64, count=ctl_words)
        self._frame_times = self._ctlf[frames_at:].reshape(self.n_slots, self.spec.frames)
        item = self.spec.np_dtype.itemsize
        per_slot = stride // item
        flat = np.frombuffer(
            buf, dtype=self.spec.np_dtype, count=self.n_slots * per_slot, offset=pix_offset
        ).reshape(self.n_slots, per_slot)
        n_pix = self.spec.nbytes // item
        self._pixels = flat[:, :n_pix].reshape(self.n_slots, *self.spec.shape)
        # Each slot's views, made once: a publish or claim hands them out without indexing.
        self._slot_pixels = list(self._pixels)
        self._slot_frame_times = list(self._frame_times)
        self._doorbell_address = self._ctl.ctypes.data + H_DOORBELL * 8
        self._counters = np.zeros(COUNTER_COUNT, dtype=np.int64)
        self._census = np.zeros(8, dtype=np.int64)
        self._frame_hw = (self.spec.height, self.spec.width)
        self._frame_cache: tuple[tuple[int, int, int, int], FrameRegion] = (
            (0, 0, 1, 1), FrameRegion(0, 0, 1, 1))  # the last region a claim read: _frame_of
        self._closed_locally = False

    # -- lifecycle ---------------------------------------------------------------------------
    @staticmethod
    def layout_size(spec: StackSpec, n_slots: int, positions: int = 1) -> tuple[int, int, int]:
        """``(total bytes, pixel offset, pixel stride)`` of a ring of ``n_slots`` for stacks
        of ``positions`` positions."""
        frames_at = (HEADER_WORDS + n_slots * SLOT_WORDS + STAT_ROWS * STAT_ROW_WORDS
                     + positions * POS_WORDS)
        ctl_bytes = round_up((frames_at + n_slots * spec.frames) * 8, PAGE)
        stride = round_up(spec.nbytes, PAGE)
        return ctl_bytes + n_slots * stride, ctl_bytes, stride

    @classmethod
    def create(cls, spec: StackSpec, n_slots: int, *, positions: int = 1) -> StackRing:
        """Create a ring of ``n_slots`` slots for stacks of ``spec`` acquired at ``positions``
        stage positions (this process owns it)."""
        if not 2 <= n_slots <= _MAX_SLOTS:
            raise ValueError(f"a ring needs 2..{_MAX_SLOTS} slots, got {n_slots}")
        if not 1 <= positions <= MAX_POSITIONS:
            raise ValueError(f"a ring holds 1..{MAX_POSITIONS} positions, got {positions}")
        size, pix_offset, stride = cls.layout_size(spec, n_slots, positions)
        block = SharedBlock.create(size, tag="ring")
        try:
            head = np.frombuffer(block.buf, dtype=np.int64, count=HEADER_WORDS)
            head[H_VERSION] = VERSION
            head[H_NSLOTS] = n_slots
            head[H_SLOT_WORDS] = SLOT_WORDS
            head[H_PIX_OFFSET] = pix_offset
            head[H_PIX_STRIDE] = stride
            head[H_C], head[H_Z], head[H_H], head[H_W] = spec.shape
            head[H_DTYPE] = pack_dtype(spec.dtype)
            head[H_CREATOR] = os.getpid()
            head[H_ROWS_OFFSET] = HEADER_WORDS + n_slots * SLOT_WORDS
            head[H_NPOS] = positions
            head[H_POS_OFFSET] = head[H_ROWS_OFFSET] + STAT_ROWS * STAT_ROW_WORDS
            head[H_FRAMES_OFFSET] = head[H_POS_OFFSET] + positions * POS_WORDS
            head[H_MAGIC] = MAGIC  # last: an attacher never sees a half-made header
            del head
            return cls(block)
        except BaseException:
            block.close()
            block.unlink()
            raise

    @classmethod
    def attach(cls, name: str) -> StackRing:
        """Map an existing ring by name (any process)."""
        try:
            block = SharedBlock.attach(name)
        except FileNotFoundError:
            raise RingError(f"no stack ring named {name!r} (has the run ended?)") from None
        try:
            return cls(block)
        except BaseException:
            block.close()
            raise

    @property
    def name(self) -> str:
        """The shared-memory name other processes attach by."""
        return self._block.name

    @property
    def owner(self) -> bool:
        """True in the process that created the ring."""
        return self._block.owner

    @property
    def closed(self) -> bool:
        """True once the owner called :meth:`shutdown` (the run is ending)."""
        return bool(_kernels.load(self._ctl, H_CLOSED))

    def shutdown(self) -> None:
        """Mark the ring closed and wake every sleeper (they raise RingClosedError)."""
        _kernels.set_closed(self._ctl)
        _kernels.wake_all(self._ctl, FUTEX_NR)

    def close(self) -> None:
        """Unmap the ring in this process (views handed out keep their memory alive)."""
        if self._closed_locally:
            return
        self._closed_locally = True
        del self._ctl, self._ctlf, self._frame_times, self._pixels
        del self._slot_pixels, self._slot_frame_times
        self._block.close()

    def unlink(self) -> None:
        """Remove the ring's name (owner); memory is freed when every process has unmapped."""
        self._block.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = self.owner
        if owner and not self._closed_locally:
            self.shutdown()
        self.close()
        if owner:
            self.unlink()

    def __repr__(self) -> str:
        return (f"StackRing({self.name!r}, slots={self.n_slots}, spec={self.spec}, "
                f"positions={self.positions})")

    # -- internals ---------------------------------------------------------------------------
    @staticmethod
    def _slot_word(slot: int) -> int:
        return HEADER_WORDS + slot * SLOT_WORDS

    def _frame_of(self, base: int) -> FrameRegion | None:
        """The frame region in the slot header at word ``base`` (None: the full frame).

        Read while the slot is claimed or pinned: the producer cannot reuse it meanwhile, and
        the words were stored before the release store that published the stack. A region
        changes rarely, so the last one made is handed out again while the words match (a
        claim allocates nothing for it; FrameRegion is frozen, sharing it is safe)."""
        ctl = self._ctl
        height = ctl.item(base + S_FRAME_H)
        if height == 0:
            return None
        key = (ctl.item(base + S_FRAME_Y), ctl.item(base + S_FRAME_X), height,
               ctl.item(base + S_FRAME_W))
        cached = self._frame_cache  # one tuple, replaced whole: safe from several threads
        if cached[0] == key:
            return cached[1]
        made = FrameRegion(*key)
        self._frame_cache = (key, made)
        return made

    def _doorbell_value(self) -> int:
        return int(_kernels.load(self._ctl, H_DOORBELL)) & 0xFFFFFFFF

    def _wait_s(self, deadline: float | None) -> float:
        """How long the next sleep on the doorbell may last (<= 0: the time is up)."""
        if deadline is None:
            return self.SLEEP_CAP_S
        return min(self.SLEEP_CAP_S, deadline - time.monotonic())

    def _slept(self, code: int, wait_s: float) -> None:
        """Handle a sleep's outcome other than a wake-up (see :func:`._kernels.doorbell_wait`):
        no futex here, sleep briefly instead; an unexpected futex error raises OSError.
        INTERRUPTED needs nothing: back in Python, the signal's handler runs."""
        if code == _kernels.NO_FUTEX:
            time.sleep(min(wait_s, 0.0005))
        elif code <= _kernels.OS_ERROR:
            err = _kernels.OS_ERROR - code
            raise OSError(err, f"futex wait on the ring's doorbell failed: {os.strerror(err)}")

    def _sleep(self, bell: int, deadline: float | None) -> bool:
        """Sleep until the doorbell moves past ``bell`` or ``deadline``; False on timeout."""
        wait_s = self._wait_s(deadline)
        if wait_s <= 0:
            return False
        code = _kernels.doorbell_wait(self._ctl, bell, int(wait_s * 1e9), FUTEX_NR)
        if code != 0:
            self._slept(code, wait_s)
        return True

    # -- producer ----------------------------------------------------------------------------
    def write_slot(self, seq: int | None = None) -> SlotWriter:
        """Take a slot to fill. Raises RingOverrunError (counted) when every slot is claimed,
        pinned or being written; RingClosedError after shutdown.

        Without ``seq`` the stack gets the next number of the ring's single producer (the
        camera). Several producers (workers publishing network images) each pass their own
        ``seq`` (the number of the stack the image belongs to) and may publish out of order.
        """
        if seq is not None and not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"sequence number must be 0..{MAX_SEQ}, got {seq}")
        seq_given = seq is not None
        slot, seq = _kernels.acquire(self._ctl, PRODUCER_ACTOR, -1 if seq is None else int(seq),
                                     MAX_SEQ)
        if slot < 0:
            if slot == _kernels.CLOSED:
                raise RingClosedError("ring closed")
            if slot == _kernels.EXHAUSTED:
                raise RingError(f"sequence numbers exhausted ({seq} > {MAX_SEQ})")
            raise RingOverrunError(
                f"no free slot in a ring of {self.n_slots}: every slot is claimed, pinned "
                "by the writer, or being written (the stack is lost)"
            )
        return SlotWriter(self, slot, seq, explicit=seq_given)

    # -- readers -----------------------------------------------------------------------------
    def try_claim(self, actor: int, n_timepoints: int = 1) -> Claim | None:
        """Claim a position's newest READY stack (or the time window ending at it) without
        waiting: of every position's newest READY stack, the one that has waited longest.

        ``actor`` is this reader's id (1..255, unique among live readers; the owner recovers
        claims by it). Older READY stacks of the same position are counted as skipped (never
        another position's). With ``n_timepoints`` T > 1 the claim holds stack t and the
        pixels are its position's stacks [t-T+1 .. t] (copied under sequence checks); nothing
        is claimed before its position has T stacks. None when there is nothing (new) to
        claim, or when the window could not be formed (counted).
        """
        if not 1 <= actor <= MAX_READER_ID:
            raise ValueError(f"reader id must be 1..{MAX_READER_ID}, got {actor}")
        got = _kernels.claim_now(self._ctl, actor, n_timepoints - 1)
        return self._claimed(got, actor, n_timepoints) if got[0] >= 0 else None

    def claim(
        self, actor: int, *, timeout: float | None = None, n_timepoints: int = 1
    ) -> Claim | None:
        """Like :meth:`try_claim`, but sleeps on the doorbell until a stack is published.

        Returns None on timeout; raises RingClosedError once the ring is shut down.
        """
        if not 1 <= actor <= MAX_READER_ID:
            raise ValueError(f"reader id must be 1..{MAX_READER_ID}, got {actor}")
        cap = self.SLEEP_CAP_S
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_s = cap if deadline is None else min(cap, deadline - time.monotonic())
            # One compiled call: look, sleep if there is nothing (without the GIL), look again.
            got = _kernels.claim_wait(self._ctl, actor, n_timepoints - 1,
                                      int(wait_s * 1e9) if wait_s > 0 else 0, True, FUTEX_NR)
            code = got[0]
            if code >= 0:
                claim = self._claimed(got, actor, n_timepoints)
                if claim is not None:
                    return claim
                continue  # the window could not be formed (counted): look again
            if code == _kernels.CLOSED:
                raise RingClosedError("ring closed")
            if code != _kernels.NOTHING:
                self._slept(code, wait_s)
            if wait_s <= 0:
                return None

    def _claimed(self, got: tuple[int, int, float, float, float, float, int, int],
                 actor: int, n_timepoints: int) -> Claim | None:
        """The Claim of what :func:`._kernels.claim_wait` claimed; for a time window, None
        when it could not be formed (counted, the stack released as skipped)."""
        slot, seq, t_exposure, t_published, interval_s, t_claimed, position, pseq = got
        seqs: tuple[int, ...] | None = None
        if n_timepoints == 1:
            # read-only: a worker that wrote into its stack in place would change what the
            # writer saves (the same slot) and what the next reader of a window sees
            pixels = self._slot_pixels[slot].view()
            pixels.flags.writeable = False
        else:
            try:
                pixels, seqs = self._copy_window(slot, seq, position, pseq, n_timepoints)
            except TornReadError:
                _kernels.count_window_failed(self._ctl, actor)
                _kernels.release(self._ctl, slot, actor, seq, C_SKIPPED)
                return None
        return Claim(self, slot, seq, actor, pixels, t_exposure, t_published, interval_s,
                     t_claimed, position, pseq, seqs, self._frame_of(self._slot_word(slot)))

    def _copy_window(self, slot: int, seq: int, position: int, pseq: int,
                     n: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """Position ``position``'s stacks ``pseq - n + 1 .. pseq`` (the last in ``slot``,
        claimed) and their sequence numbers, oldest first."""
        out = np.empty((n, *self.spec.shape), dtype=self.spec.np_dtype)
        out[n - 1] = self._pixels[slot]
        seqs = [seq] * n
        for k in range(1, n):
            other, other_seq = _kernels.find_pseq(self._ctl, position, pseq - k)
            if other < 0:
                raise TornReadError(f"stack {pseq - k} of position {position} (the window "
                                    f"ending at stack {seq}) is gone")
            np.copyto(out[n - 1 - k], self._pixels[other])
            if not _kernels.still_holds(self._ctl, other, other_seq):
                raise TornReadError(f"stack {other_seq} was overwritten while it was copied")
            seqs[n - 1 - k] = other_seq
        return out, tuple(seqs)

    # -- pinning consumers ------------------------------------------------------------------
    def register_pin(self) -> PinReader:
        """Register a pinning consumer: from the next published stack on, nothing it has not
        released is overwritten. At most 8 at a time."""
        bit = _kernels.register_pin(self._ctl, MAX_PINS)
        if bit < 0:
            raise RingError(f"all {MAX_PINS} pin bits are taken")
        return PinReader(self, bit)

    def pin_bits(self) -> list[int]:
        """The pin bits currently registered (pinning consumers alive or not)."""
        mask = int(_kernels.load(self._ctl, H_PIN_MASK))
        return [b for b in range(MAX_PINS) if mask & (1 << b)]

    def adopt_pin(self, bit: int) -> PinReader:
        """Take over pin ``bit`` from a consumer that died (owner), to persist what it had
        not released: read with :meth:`PinReader.next_any`, lowest sequence number first."""
        if bit not in self.pin_bits():
            raise RingError(f"pin {bit} is not registered")
        _kernels.recover_actor(self._ctl, PIN_ACTOR_BASE + bit, OWNER_ACTOR)
        return PinReader(self, bit)

    # -- observers ---------------------------------------------------------------------------
    def newest_seq(self, position: int | None = None) -> int:
        """Sequence number of the newest published stack (of ``position``, when given), or
        -1 before the first."""
        if position is None:
            return int(_kernels.load(self._ctl, H_NEXT_SEQ)) - 1
        if not 0 <= position < self.positions:
            raise ValueError(f"position {position} is not one of the ring's {self.positions}")
        return int(_kernels.load(self._ctl, self._pos_at + position * POS_WORDS + P_NEWEST)) - 1

    def position_statistics(self) -> tuple[PositionStatistics, ...]:
        """Each position's counts (see :class:`PositionStatistics`), readable from any
        process; every word is read with one atomic load (never blocks anyone)."""
        out = []
        for p in range(self.positions):
            base = self._pos_at + p * POS_WORDS
            values = {name: int(_kernels.load(self._ctl, base + k))
                      for k, name in enumerate(POSITION_COUNTER_NAMES)}
            out.append(PositionStatistics(
                position=p, **values,
                newest_seq=int(_kernels.load(self._ctl, base + P_NEWEST)) - 1))
        return tuple(out)

    def copy_stack(self, seq: int, out: np.ndarray) -> bool:
        """Copy stack ``seq`` into ``out`` without claiming or pinning it (the viewer's read).

        True when the copy is consistent; False when the stack is not in the ring or was
        overwritten during the copy (``out`` then holds garbage). Never blocks anyone.
        """
        slot = _kernels.find_seq(self._ctl, seq)
        if slot < 0:
            return False
        np.copyto(out, self._pixels[slot])
        return bool(_kernels.still_holds(self._ctl, slot, seq))

    def copy_stack_frame(self, seq: int, out: np.ndarray) -> tuple[bool, FrameRegion | None]:
        """:meth:`copy_stack`, and the sensor region the stack was read from (None: the full
        frame), read between the copy and its check, so both belong to the same stack."""
        slot = _kernels.find_seq(self._ctl, seq)
        if slot < 0:
            return False, None
        np.copyto(out, self._pixels[slot])
        frame = self._frame_of(self._slot_word(slot))
        return bool(_kernels.still_holds(self._ctl, slot, seq)), frame

    def statistics(self) -> RingStatistics:
        """A consistent snapshot of the counters, readable from any process."""
        for _ in range(20):  # a row mid-update: its actor finishes within microseconds
            if _kernels.snapshot(self._ctl, self._counters):
                break
            time.sleep(0.001)
        # else: an actor died mid-update (the owner's recovery fixes its row); the figures
        # are off by at most that one event meanwhile, and statistics never block.
        _kernels.count_states(self._ctl, self._census)
        values = dict(zip(COUNTER_NAMES, (int(v) for v in self._counters), strict=True))
        return RingStatistics(
            **values,
            next_seq=int(_kernels.load(self._ctl, H_NEXT_SEQ)),
            slots_ready=int(self._census[2]),
            slots_claimed=int(self._census[3]),
            slots_writing=int(self._census[1]),
        )

    def claims(self) -> list[tuple[int, int, float]]:
        """The claims held now, as ``(actor, seq, t_claimed)``, one per CLAIMED slot.

        A snapshot read without locking (each slot's state word is read once, atomically);
        readable from any process. ``t_claimed`` is the claimer's ``time.monotonic()``, or NaN
        in the moment between winning the slot and stamping it (the same compiled call). The
        owner's watchdog uses it to find a reader that holds one stack too long.
        """
        first = HEADER_WORDS + S_WORD
        words = self._ctl[first:first + self.n_slots * SLOT_WORDS:SLOT_WORDS].copy()
        held = np.flatnonzero((words & STATE_MASK) == CLAIMED)
        out = []
        for slot in held.tolist():
            word = int(words[slot])
            base = self._slot_word(slot)
            t_claimed = float(self._ctlf[base + S_T_CLAIMED])
            if not t_claimed >= float(self._ctlf[base + S_T_PUBLISHED]):
                t_claimed = float("nan")  # the stamp of an earlier claim of this slot
            out.append(((word & OWNER_MASK) >> OWNER_SHIFT, word >> SEQ_SHIFT, t_claimed))
        return out

    # -- owner -------------------------------------------------------------------------------
    def recover(self, actor: int) -> int:
        """Take back the claims of reader ``actor`` (its process died). Returns how many."""
        return int(_kernels.recover_actor(self._ctl, actor, OWNER_ACTOR))

    def recover_pin(self, bit: int) -> int:
        """Drop pin ``bit`` (its consumer died) everywhere. Returns the slots unpinned."""
        _kernels.recover_actor(self._ctl, PIN_ACTOR_BASE + bit, OWNER_ACTOR)
        return int(_kernels.recover_pin(self._ctl, bit, OWNER_ACTOR))

    def drain(self) -> int:
        """At the end of a run: count every unclaimed READY stack as skipped."""
        return int(_kernels.drain(self._ctl, OWNER_ACTOR))

