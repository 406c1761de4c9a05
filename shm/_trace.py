"""A decision trace in shared memory: one writer appends records, any process reads them.

The interpreter appends one record per result it receives (and per interval change): the
rows of its ``DecisionRecord`` and ``IntervalChange`` messages (``trace_row()``, in
:mod:`rt_eda.core.messages`, which checks the field order against :data:`TRACE_FIELDS`); the
viewer, in another process, reads the newest records at its own pace. The writer never
waits for a reader and a reader never blocks the writer: a reader that falls more than the
trace's capacity behind simply gets the newest records it can still see.

Layout (one block): a header (magic, capacity, fields, count) then ``capacity`` x ``fields``
float64. The writer fills record ``count % capacity``, then publishes by storing
``count + 1`` (release). A reader copies a range and re-reads ``count``: records the writer
may have overwritten meanwhile are dropped from the copy (a seqlock per range).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import numpy as np

from . import _kernels
from ._block import SharedBlock
from ._errors import RingError

__all__ = ["TRACE_FIELDS", "DecisionTrace"]

TRACE_FIELDS = (
    "seq", "t_exposure", "t_decided", "decision", "interval_s", "fast", "worker", "kind",
    "position", "y0", "x0", "y1", "x1",
)
"""Columns of a trace record. ``kind``: 0 a result, 1 an interval change, 2 an event region,
3 an action (``rt_eda.core.messages.TraceKind``); ``position``: the stage position (-1: every
one); ``y0, x0, y1, x1``: a box of the sensor (NaN: none): a result's regions together, one
region, or what an action acts on."""

_MAGIC = 0x5254_4544_4154_5243  # "RTEDATRC"
_HEADER = 8  # words: magic, capacity, fields, count, spare


class DecisionTrace:
    """A single-writer, many-reader trace of decision records (see the module docstring)."""

    def __init__(self, block: SharedBlock) -> None:
        _kernels.warm_up()
        self._block = block
        head = np.frombuffer(block.buf, dtype=np.int64, count=_HEADER)
        if int(head[0]) != _MAGIC:
            raise RingError(f"shared block {block.name!r} is not an rt-eda decision trace")
        self.capacity = int(head[1])
        self.fields = int(head[2])
        del head
        self._ctl = np.frombuffer(block.buf, dtype=np.int64, count=_HEADER)
        self._rows = np.frombuffer(
            block.buf, dtype=np.float64, count=self.capacity * self.fields, offset=_HEADER * 8
        ).reshape(self.capacity, self.fields)
        self._closed = False

    @classmethod
    def create(cls, capacity: int = 65536) -> DecisionTrace:
        """A new trace holding the newest ``capacity`` records (this process owns it)."""
        if capacity < 2:
            raise ValueError(f"a trace needs a capacity >= 2, got {capacity}")
        fields = len(TRACE_FIELDS)
        block = SharedBlock.create(_HEADER * 8 + capacity * fields * 8, tag="trace")
        head = np.frombuffer(block.buf, dtype=np.int64, count=_HEADER)
        head[1], head[2] = capacity, fields
        head[0] = _MAGIC
        del head
        return cls(block)

    @classmethod
    def attach(cls, name: str) -> DecisionTrace:
        """Map an existing trace by name."""
        try:
            return cls(SharedBlock.attach(name))
        except FileNotFoundError:
            raise RingError(f"no decision trace named {name!r} (has the run ended?)") from None

    @property
    def name(self) -> str:
        """The shared-memory name to attach by."""
        return self._block.name

    @property
    def count(self) -> int:
        """Records appended so far (the newest has index ``count - 1``)."""
        return int(_kernels.load(self._ctl, 3))

    def append(self, *values: float) -> None:
        """Append one record (writer only; not safe from two writers at once)."""
        n = int(self._ctl[3])
        self._rows[n % self.capacity] = values
        _kernels.store(self._ctl, 3, n + 1)

    def read(self, start: int, limit: int | None = None) -> tuple[int, np.ndarray]:
        """Records ``start`` .. ``count - 1`` still held (at most ``limit``, the newest).

        Returns ``(first_index, rows)``: ``first_index`` may be greater than ``start`` when
        older records were overwritten. Never blocks the writer.
        """
        while True:
            end = self.count
            first = max(start, end - self.capacity, 0)
            if limit is not None:
                first = max(first, end - limit)
            if first >= end:
                return end, np.empty((0, self.fields))
            idx = np.arange(first, end) % self.capacity
            rows = self._rows[idx]
            # Anything the writer reached during the copy may have been overwritten.
            overwritten = self.count - self.capacity
            if overwritten <= first:
                return first, rows
            start = overwritten + 1

    def close(self) -> None:
        """Unmap in this process."""
        if not self._closed:
            self._closed = True
            del self._ctl, self._rows
            self._block.close()

    def unlink(self) -> None:
        """Remove the name (owner)."""
        self._block.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        owner = self._block.owner
        self.close()
        if owner:
            self.unlink()
