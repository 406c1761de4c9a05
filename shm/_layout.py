"""Byte layout of a stack-ring block (shared by the kernels and the Python side).

One shared-memory block::

    [ control region: int64 words, padded to a page ]
        header            HEADER_WORDS words (512 B): geometry, next sequence number,
                          doorbell (on its own 64-byte cache line)
        slot headers      n_slots x SLOT_WORDS words (128 B each, 64-byte aligned):
                          state word, sequence number, timestamps, interval in force,
                          the stack's position and its number within that position,
                          the region of the sensor it was read from
        counter rows      STAT_ROWS x STAT_ROW_WORDS words (128 B each): one per actor
        position table    n_positions x POS_WORDS words (128 B each): per-position counters
                          (published, claimed, analysed, skipped, failed, recovered, torn),
                          the position's newest stack and its next number
        frame times       n_slots x frames float64: exposure time of every frame
    [ pixel region: n_slots x stride bytes, each slot page-aligned, (C, Z, H, W) C-order ]

The slot *state word* packs everything a compare-and-swap must see at once::

    bits  0..3   state     EMPTY, WRITING, READY, CLAIMED, DONE
    bits  4..11  pins      one bit per pinning consumer that has not persisted the stack
    bits 12..23  owner     actor id of the reader holding the claim (0: none)
    bits 24..63  seq       the stack's sequence number (40 bits)

Putting the sequence number in the word makes every transition ABA-safe: a slot that was
recycled between a reader's scan and its compare-and-swap carries a new number, so the swap
fails instead of claiming (or skipping) the wrong stack.

Positions: every stack carries its stage position (``S_POSITION``, 0 in a single-position
run) and its number among that position's stacks (``S_PSEQ``: 0, 1, 2, ...). Both are
written by the producer while the slot is WRITING, before the release store that publishes
it; a reader that reads them between two loads of an unchanged state word (an acquire fence
in between) knows they belong to that word's stack, since a recycled slot carries a new
sequence number.

Frame regions: a camera reading a region of interest keeps the slot's full (C, Z, H, W)
shape and writes only the region's pixels at their sensor position; the pixels outside are
whatever the slot held before (stale). ``S_FRAME_Y .. S_FRAME_W`` record the region
(``y, x, height, width``; height 0 for the full frame), written by the producer with the
position, before the publishing release store, on every publish (slots are reused), so every
reader of a stack knows which of its pixels are valid.
"""

from __future__ import annotations

MAGIC = 0x52_54_45_44_41_52_4E_47  # "RTEDARNG"
# 3: the `failed` counter; 4: positions (slot words, per-position counters); 5: the frame region
# of every stack (slot words 9..12): a ring of version 4 would hand out stale pixels as valid
VERSION = 5
PAGE = 4096

# States (bits 0..3 of the state word).
EMPTY = 0  # never written, or a write was aborted
WRITING = 1  # the producer owns it
READY = 2  # complete, published, nobody has claimed it
CLAIMED = 3  # one reader owns it (owner bits say which)
DONE = 4  # analysed, skipped, failed or recovered; pixels stay valid until the producer reuses it

STATE_MASK = 0xF
PIN_SHIFT = 4
PIN_MASK = 0xFF << PIN_SHIFT
MAX_PINS = 8
OWNER_SHIFT = 12
OWNER_MASK = 0xFFF << OWNER_SHIFT
SEQ_SHIFT = 24
MAX_SEQ = (1 << 39) - 1  # keep the word positive as an int64

# Actor ids (owner bits of a claim; each actor also owns one row of counters).
MAX_READER_ID = 255  # readers use 1..MAX_READER_ID, unique among live readers
PIN_ACTOR_BASE = 4000  # a pinning consumer with bit b acts as PIN_ACTOR_BASE + b
OWNER_ACTOR = 4094  # the ring's creator (recovery, drain)
PRODUCER_ACTOR = 4095

# Header words.
H_MAGIC = 0
H_VERSION = 1
H_NSLOTS = 2
H_SLOT_WORDS = 3
H_PIX_OFFSET = 4
H_PIX_STRIDE = 5
H_C = 6
H_Z = 7
H_H = 8
H_W = 9
H_DTYPE = 10  # the dtype name, ASCII, packed little-endian into 8 bytes
H_CREATOR = 11
H_CLOSED = 12
H_NEXT_SEQ = 13
H_PIN_MASK = 14
H_FRAMES_OFFSET = 15  # word index of the frame-time table
H_ROWS_OFFSET = 16  # word index of the counter rows
H_NPOS = 17  # positions the ring was made for (stacks carry 0 .. H_NPOS - 1)
H_POS_OFFSET = 18  # word index of the position table
# Counters: one row per actor (the producer, the owner, 8 pinning consumers, the readers),
# each written only by its actor: word 0 is the row's version (odd while its actor updates
# it, a seqlock with a single writer, so no lock is ever taken), then the counters.
STAT_ROWS = 10 + MAX_READER_ID
STAT_ROW_WORDS = 16
C_PUBLISHED = 1
C_CLAIMED = 2
C_COMPLETED = 3
C_SKIPPED = 4
C_OVERRUNS = 5
C_RECOVERED = 6
C_TORN = 7
C_UNPINNED = 8
C_ABORTED = 9
C_WINDOWS_FAILED = 10
C_FAILED = 11  # released by a reader whose analysis raised
COUNTER_FIRST = 1
COUNTER_COUNT = 11
COUNTER_NAMES = (
    "published",
    "claimed",
    "completed",
    "skipped",
    "overruns",
    "recovered",
    "torn_reads",
    "unpinned",
    "aborted",
    "windows_failed",
    "failed",
)
# Doorbell: an int32 futex word at word 40 (bytes 320..323), sleepers at word 41.
H_DOORBELL = 40
H_SLEEPERS = 41
HEADER_WORDS = 64

# Slot header words (relative to the slot's first word).
SLOT_WORDS = 16
S_WORD = 0
S_SEQ = 1
S_T_EXPOSURE = 2  # float64: exposure of the first frame
S_T_PUBLISHED = 3  # float64
S_T_CLAIMED = 4  # float64: set by the reader that claimed it
S_INTERVAL = 5  # float64: interval in force when it was acquired
S_T_LAST_EXPOSURE = 6  # float64: exposure of the last frame
S_POSITION = 7  # int64: the stack's position (0 .. n_positions - 1)
S_PSEQ = 8  # int64: the stack's number among its position's stacks (0, 1, 2, ...)
S_FRAME_Y = 9  # int64: first sensor row the stack was read from (its frame region)
S_FRAME_X = 10  # int64: first sensor column
S_FRAME_H = 11  # int64: rows read; 0: the full frame (then 9, 10 and 12 are 0 too)
S_FRAME_W = 12  # int64: columns read

# The position table: POS_WORDS words per position, updated by fetch-and-add (several actors
# count into one position's row; each count is one atomic add, so the row is exact once the
# ring is drained, and a snapshot taken while it runs is off by the events in flight).
MAX_POSITIONS = 4096
POS_WORDS = 16
P_PUBLISHED = 0
P_CLAIMED = 1
P_COMPLETED = 2
P_SKIPPED = 3
P_FAILED = 4
P_RECOVERED = 5
P_TORN = 6
P_NEXT = 7  # the position's next stack number (S_PSEQ of its next stack); 0: none yet
P_NEWEST = 8  # 1 + the sequence number of the position's newest published stack; 0: none
POSITION_COUNTER_NAMES = (
    "published",
    "claimed",
    "completed",
    "skipped",
    "failed",
    "recovered",
    "torn_reads",
)


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def pack_dtype(name: str) -> int:
    """A dtype name (at most 8 ASCII characters) as one int64."""
    raw = name.encode("ascii")
    if len(raw) > 8:
        raise ValueError(f"dtype name {name!r} is longer than 8 characters")
    return int.from_bytes(raw.ljust(8, b"\0"), "little", signed=True)


def unpack_dtype(value: int) -> str:
    """Inverse of :func:`pack_dtype`."""
    return value.to_bytes(8, "little", signed=True).rstrip(b"\0").decode("ascii")
