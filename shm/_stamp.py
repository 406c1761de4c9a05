"""Verification stamps: a frame carries its stack's sequence number in its first pixels.

With ``--verify`` the producer stamps every frame of stack ``seq`` (channel ``c``, slice
``z``) and every reader checks each stack it claims. A stack whose frames carry different
sequence numbers (or the wrong one) was torn: the producer overwrote it while it was read, or
published it before it was complete. The ring's own design forbids both; the stamp proves it.

Layout: the first :data:`STAMP_PIXELS` pixels of row 0 hold ``seq`` in 12-bit pieces (so the
value survives any integer or float pixel type of at least 12 significant bits; 8-bit and
float16 pixels get 4-bit pieces), followed by ``c`` and ``z``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STAMP_PIXELS", "check_stack", "read_stamp", "stamp_frame"]

STAMP_PIXELS = 8
"""Pixels of row 0 that a stamp overwrites (6 for the sequence number, then c and z)."""


def _bits(dtype: np.dtype[np.generic]) -> int:
    # float16 holds 11 significant bits: it gets the small pieces too.
    return 4 if dtype.itemsize == 1 or dtype == np.float16 else 12


def stamp_frame(frame: np.ndarray, seq: int, c: int, z: int) -> None:
    """Write ``seq``, ``c`` and ``z`` into the first pixels of ``frame`` (2-D, width >= 8)."""
    bits = _bits(frame.dtype)
    mask = (1 << bits) - 1
    row = frame[0]
    for i in range(6):
        row[i] = (seq >> (bits * i)) & mask
    row[6] = c & mask
    row[7] = z & mask


def read_stamp(frame: np.ndarray) -> tuple[int, int, int]:
    """``(seq, c, z)`` as stamped by :func:`stamp_frame` (seq modulo 2**24 for 8-bit pixels)."""
    bits = _bits(frame.dtype)
    row = frame[0, :STAMP_PIXELS].astype(np.int64)
    seq = 0
    for i in range(6):
        seq |= int(row[i]) << (bits * i)
    return seq, int(row[6]), int(row[7])


def check_stack(stack: np.ndarray, seq: int) -> bool:
    """True when every frame of ``stack`` (C, Z, H, W) carries ``seq`` and its own c and z.

    Each stamp pixel must hold exactly the piece :func:`stamp_frame` writes there (a pixel
    outside a piece's range never passes). A worker with ``--verify`` checks every stack it
    claims, so this is on the way to every decision: the stamps are read in one go.
    """
    bits = _bits(stack.dtype)
    piece = (1 << bits) - 1
    pieces = [(seq >> (bits * i)) & piece for i in range(6)]
    stamps: list[list[list[int | float]]] = stack[:, :, 0, :STAMP_PIXELS].tolist()
    for c, frames in enumerate(stamps):
        for z, stamp in enumerate(frames):
            if stamp[:6] != pieces or stamp[6] != c & piece or stamp[7] != z & piece:
                return False
    return True
