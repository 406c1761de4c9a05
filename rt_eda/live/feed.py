"""The viewer's read side: copies of the newest stack, network image and decisions.

The decisions are the interpreter's :class:`~rt_eda.core.messages.DecisionRecord` and
:class:`~rt_eda.core.messages.IntervalChange` records, one trace row each
(:meth:`~rt_eda.core.messages.DecisionRecord.trace_row`): the same records the writer saves
and the summary counts, never a second bookkeeping of the interval. The same trace holds a
row per event region of a result (``REGION``) and per actuator action (``ACTION``); every
reading below selects rows by their ``kind``, so a region or an action is never taken for a
decision or an interval change. Regions are kept per stack (:meth:`LiveFeed.regions_of`, the
rectangles the window draws on that stack) and actions as the newest of each actuator
(:meth:`LiveFeed.actions`, :func:`describe_actions`).

:class:`LiveFeed` maps the stack ring, the network-image ring and the decision trace of a run
and reads them **without taking part** in the run's protocol: stacks are copied with
:meth:`~rt_eda.shm.StackRing.copy_stack` (sequence-checked, never claimed, never pinned) and
the trace with :meth:`~rt_eda.shm.DecisionTrace.read` (a seqlock read). Nothing it does can
make the camera, a worker or the writer wait; if it falls behind it simply sees newer data.

Every buffer is allocated once, at attach time: two stack buffers (the one shown and the one
being copied into, swapped after a consistent copy, so a torn copy is never shown), the same
pair for the frame a network image was computed from, a pair of network-image buffers, and
fixed-size histories of the decision trace, one per stage position. The regions of the newest
:data:`REGIONS_KEPT` results are kept (a few small tuples each).

Sensor regions: a stack read from a region of the sensor (a camera ROI) fills the full frame
with stale pixels outside that region; the feed keeps the region of each copy
(:attr:`LiveFeed.stack_frame`, :attr:`LiveFeed.image_stack_frame`; None: the full frame) so
the window can blank what is stale.

Positions: a run of several positions (an acquisition plan) has one decision history per
position (every one is read, for the small multiples), and the stacks and network images
copied are the newest *of the selected position* (:meth:`LiveFeed.select`).

Imports no Qt.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rt_eda.core.errors import RingError
from rt_eda.core.messages import ACTION_KINDS, TraceKind
from rt_eda.core.regions import FrameRegion
from rt_eda.core.stats import percentiles
from rt_eda.shm import TRACE_FIELDS, DecisionTrace, StackRing

__all__ = [
    "REGIONS_KEPT",
    "ActionSeen",
    "FeedStatus",
    "LiveFeed",
    "RegionBox",
    "StackRegions",
    "describe_actions",
]

log = logging.getLogger(__name__)

_F = {name: i for i, name in enumerate(TRACE_FIELDS)}
_COPY_TRIES = 3
_LATENCY_WINDOW = 256
_RATE_PERIOD_S = 1.0
_STATE_KINDS = (TraceKind.RESULT, TraceKind.INTERVAL_CHANGE)  # rows that carry the state
REGIONS_KEPT = 512
"""How many results' regions the feed keeps (newest first out): a few seconds of a fast run,
more than the stacks a ring holds."""


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """What the status line shows (a snapshot).

    Rates are per second over the last second or so; latencies (``t_decided - t_exposure``
    of the newest results in the trace) in milliseconds, NaN before the first result.
    """

    acquired_per_s: float
    analysed_per_s: float
    published: int
    analysed: int
    skipped: int
    latency_p50_ms: float
    latency_p99_ms: float
    workers_seen: int
    interval_s: float
    fast: bool
    decisions: int
    frame_seq: int
    image_seq: int
    torn_copies: int
    run_ended: bool


@dataclass(frozen=True, slots=True)
class RegionBox:
    """A rectangle of the sensor, half-open: rows ``y0 .. y1``, columns ``x0 .. x1`` (sensor
    pixels), with the score of its event (NaN when none)."""

    y0: float
    x0: float
    y1: float
    x1: float
    score: float = math.nan

    @property
    def height(self) -> float:
        """Rows covered."""
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        """Columns covered."""
        return self.x1 - self.x0


@dataclass(frozen=True, slots=True)
class StackRegions:
    """The event regions of one stack's result (``seq``, at ``position``): what its
    ``REGION`` rows said (``regions``, possibly none: the result located nothing)."""

    seq: int
    position: int
    regions: tuple[RegionBox, ...]


@dataclass(frozen=True, slots=True)
class ActionSeen:
    """An actuator's action, from its ``ACTION`` trace row.

    ``kind``: the actuator (one of :data:`~rt_eda.core.messages.ACTION_KINDS`); ``after_seq``:
    the stack whose result caused it; ``t_decided``: when (monotonic s); ``position``: where
    (-1: every position); ``fast``: the interpreter's state; ``regions``: how many event
    regions it acts on; ``box``: the sensor region an ``roi`` action reads, else its regions
    together; None when neither (``roi``: the full frame again; ``stimulate``: a blank mask).
    """

    kind: str
    after_seq: int
    t_decided: float
    position: int
    fast: bool
    regions: int
    box: RegionBox | None

    def describe(self) -> str:
        """One short phrase: ``"roi 128x96 at (y=200,x=64)"``, ``"stimulate 2 regions"``,
        ``"channel fast"``."""
        kind, box = self.kind, self.box
        if kind == "roi":
            if box is None:
                return "roi full frame"
            return (f"roi {box.width:.0f}x{box.height:.0f} at "
                    f"(y={box.y0:.0f},x={box.x0:.0f})")
        if kind == "stimulate":
            if self.regions == 0:
                return "stimulate off (blank mask)"
            return f"stimulate {self.regions} region{'s' if self.regions != 1 else ''}"
        if kind in ("channel", "interval"):
            return f"{kind} {'fast' if self.fast else 'slow'}"
        return f"{kind} after #{self.after_seq}"


def describe_actions(actions: Mapping[str, ActionSeen]) -> str:
    """The newest action of each actuator on one line, in :data:`ACTION_KINDS` order:
    ``"roi 128x96 at (y=200,x=64) | stimulate 2 regions | channel fast"``; "" when none."""
    order = {kind: i for i, kind in enumerate(ACTION_KINDS)}
    ranked = sorted(actions.values(), key=lambda a: order.get(a.kind, len(order)))
    return " | ".join(a.describe() for a in ranked)


def _box(row: np.ndarray) -> RegionBox | None:
    """The box of a trace row (None when NaN: no box)."""
    y0, x0, y1, x1 = (float(row[_F[k]]) for k in ("y0", "x0", "y1", "x1"))
    if not (math.isfinite(y0) and math.isfinite(x0) and math.isfinite(y1)
            and math.isfinite(x1)):
        return None
    return RegionBox(y0, x0, y1, x1, float(row[_F["decision"]]))


def _copy(ring: StackRing, seq: int, out: np.ndarray) -> tuple[bool, FrameRegion | None]:
    """Copy stack ``seq`` into ``out``: ``(consistent, the sensor region it was read from)``
    (None: the full frame)."""
    return ring.copy_stack_frame(seq, out)


class _History:
    """A fixed-size history of ``(t, value)`` points, oldest first, filled in place."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._t = np.zeros(capacity)
        self._v = np.zeros(capacity)
        self.n = 0

    def extend(self, t: np.ndarray, v: np.ndarray) -> None:
        k = min(len(t), self.capacity)
        if k == 0:
            return
        t, v = t[-k:], v[-k:]
        keep = min(self.n, self.capacity - k)
        if keep and self.n - keep:  # slide the newest ``keep`` points to the front
            self._t[:keep] = self._t[self.n - keep:self.n]
            self._v[:keep] = self._v[self.n - keep:self.n]
        self._t[keep:keep + k] = t
        self._v[keep:keep + k] = v
        self.n = keep + k

    @property
    def t(self) -> np.ndarray:
        return self._t[: self.n]

    @property
    def v(self) -> np.ndarray:
        return self._v[: self.n]


class LiveFeed:
    """Read-only copies of a run's newest data (see the module docstring).

    Parameters
    ----------
    ring
        Name of the stack ring.
    output_ring
        Name of the network-image ring, or "" (no overlay).
    trace
        Name of the decision trace, or "" (no decision plot).
    history
        How many decisions (and state changes) the plot keeps.

    Raises
    ------
    RingError
        A name does not exist (the run has ended) or is not an rt-eda block.

    Notes
    -----
    Not thread-safe: one thread (the GUI's) polls. Call :meth:`close` to unmap.
    """

    def __init__(self, ring: str, output_ring: str = "", trace: str = "", *,
                 history: int = 4096) -> None:
        self._ring = StackRing.attach(ring)
        self.positions = self._ring.positions
        self.position = 0
        self._out: StackRing | None = None
        self._trace: DecisionTrace | None = None
        try:
            if output_ring:
                self._out = StackRing.attach(output_ring)
            if trace:
                self._trace = DecisionTrace.attach(trace)
        except RingError:
            self.close()
            raise
        spec = self._ring.spec
        self.spec = spec
        self.stack = np.zeros(spec.shape, dtype=spec.np_dtype)
        self._stack_next = np.zeros_like(self.stack)
        self.stack_seq = -1
        self.stack_frame: FrameRegion | None = None
        self.image: np.ndarray | None = None
        self._image_next: np.ndarray | None = None
        self.image_stack = np.zeros_like(self.stack) if self._out is not None else None
        self._image_stack_next = np.zeros_like(self.stack) if self._out is not None else None
        self.image_seq = -1
        self.image_stack_ok = False
        self.image_stack_frame: FrameRegion | None = None
        if self._out is not None:
            out_shape = self._out.spec.shape
            self.image = np.zeros(out_shape, dtype=self._out.spec.np_dtype)
            self._image_next = np.zeros_like(self.image)
        per = history if self.positions == 1 else max(256, history // 4)
        self.position_decisions = [_History(per) for _ in range(self.positions)]
        self.position_fast = [_History(per) for _ in range(self.positions)]
        self._trace_next = 0
        self._latency = np.full(_LATENCY_WINDOW, np.nan)
        self._latency_n = 0
        self._workers = np.zeros(_LATENCY_WINDOW, dtype=np.int64)
        self._interval = float("nan")
        self._fast_now = False
        self._n_decisions = 0
        self._regions: OrderedDict[int, StackRegions] = OrderedDict()
        self._actions: list[dict[str, ActionSeen]] = [{} for _ in range(self.positions)]
        self.regions_changed = -1  # the newest stack whose regions the last poll added
        self.torn_copies = 0
        self.t0 = time.monotonic()
        self._rate_mark = (time.monotonic(), -1, -1)
        self._rates = (0.0, 0.0)
        self._closed = False

    # -- properties --------------------------------------------------------------------------
    @property
    def decisions(self) -> _History:
        """The selected position's decisions ``(t, value)`` (the only one's, with one)."""
        return self.position_decisions[self.position]

    @property
    def fast(self) -> _History:
        """The selected position's fast (1) / slow (0) state over time."""
        return self.position_fast[self.position]

    def select(self, position: int) -> None:
        """Show position ``position`` from now on: the next polls copy its newest stack and
        network image.

        Raises
        ------
        ValueError
            Not one of the run's positions.
        """
        if not 0 <= position < self.positions:
            raise ValueError(f"position {position} is not one of the run's {self.positions}")
        if position != self.position:
            self.position = position
            self.stack_seq = -1
            self.image_seq = -1
            self.image_stack_ok = False

    def _newest(self, ring: StackRing) -> int:
        if ring.positions > 1:
            return ring.newest_seq(min(self.position, ring.positions - 1))
        return ring.newest_seq()

    @property
    def has_images(self) -> bool:
        """True when the run publishes network images (the overlay is possible)."""
        return self._out is not None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(H', W') of the network images, or None."""
        return None if self.image is None else (self.image.shape[2], self.image.shape[3])

    @property
    def run_ended(self) -> bool:
        """True once the engine has shut the stack ring (or this feed was closed)."""
        return self._closed or self._ring.closed

    # -- polling -----------------------------------------------------------------------------
    def poll_stack(self) -> bool:
        """Copy the newest stack if it is newer than the one held; True if ``stack`` changed.

        The copy goes into a spare buffer and is swapped in only when the sequence check
        passes (a producer lapping the copy is retried with the then-newest stack, a few
        times, and counted in ``torn_copies``).
        """
        if self._closed:
            return False
        for _ in range(_COPY_TRIES):
            seq = self._newest(self._ring)
            if seq <= self.stack_seq:
                return False
            ok, frame = _copy(self._ring, seq, self._stack_next)
            if ok:
                self.stack, self._stack_next = self._stack_next, self.stack
                self.stack_seq = seq
                self.stack_frame = frame
                return True
            self.torn_copies += 1
        return False

    def poll_image(self) -> bool:
        """Copy the newest network image and, if still in the ring, the stack it was computed
        from (``image_stack``, ``image_stack_ok``); True if ``image`` changed."""
        out = self._out
        if out is None or self._closed:
            return False
        assert self._image_next is not None
        for _ in range(_COPY_TRIES):
            seq = self._newest(out)
            if seq <= self.image_seq:
                return False
            if out.copy_stack(seq, self._image_next):
                self.image, self._image_next = self._image_next, self.image
                self.image_seq = seq
                self._copy_image_stack(seq)
                return True
            self.torn_copies += 1
        return False

    def _copy_image_stack(self, seq: int) -> None:
        assert self._image_stack_next is not None
        if seq == self.stack_seq:
            np.copyto(self._image_stack_next, self.stack)
            ok, frame = True, self.stack_frame
        else:
            ok, frame = _copy(self._ring, seq, self._image_stack_next)
        if ok:
            self.image_stack, self._image_stack_next = self._image_stack_next, self.image_stack
            self.image_stack_frame = frame
        self.image_stack_ok = ok

    def poll_trace(self) -> int:
        """Read the trace records appended since the last poll; returns how many.

        Results feed the decision histories and the latencies; results and interval changes
        (only those: never a region or an action row) the fast/slow state and the interval;
        region rows the regions of their stack (:meth:`regions_of`); action rows the newest
        action of each actuator (:meth:`actions`). ``regions_changed`` is the newest stack
        whose result or regions this poll read (-1: none).
        """
        self.regions_changed = -1
        if self._trace is None or self._closed:
            return 0
        limit = self.position_decisions[0].capacity * self.positions
        first, rows = self._trace.read(self._trace_next, limit=limit)
        self._trace_next = first + len(rows)
        if len(rows) == 0:
            return 0
        kind = rows[:, _F["kind"]]
        state = rows[np.isin(kind, _STATE_KINDS)]
        results = rows[kind == TraceKind.RESULT]
        t = state[:, _F["t_decided"]] - self.t0
        where = state[:, _F["position"]]
        for p in range(self.positions):
            mine = (where == p) | (where < 0)  # -1: a change of every position
            if self.positions == 1:
                mine = np.ones(len(state), dtype=bool)
            if mine.any():
                self.position_fast[p].extend(t[mine], state[mine, _F["fast"]])
            got = results[results[:, _F["position"]] == p] if self.positions > 1 else results
            if len(got):
                self.position_decisions[p].extend(got[:, _F["t_decided"]] - self.t0,
                                                  got[:, _F["decision"]])
        self._n_decisions += len(results)
        for row in results[-_LATENCY_WINDOW:]:
            i = self._latency_n % _LATENCY_WINDOW
            self._latency[i] = (row[_F["t_decided"]] - row[_F["t_exposure"]]) * 1e3
            self._workers[i] = int(row[_F["worker"]])
            self._latency_n += 1
        mine = state[(where == self.position) | (where < 0)] if self.positions > 1 else state
        if len(mine):
            self._interval = float(mine[-1, _F["interval_s"]])
            self._fast_now = bool(mine[-1, _F["fast"]])
        located = (kind == TraceKind.RESULT) | (kind == TraceKind.REGION)
        if located.any():
            self._read_regions(rows[located])
        acted = rows[kind == TraceKind.ACTION]
        if len(acted):
            self._read_actions(acted)
        return len(rows)

    def _read_regions(self, rows: np.ndarray) -> None:
        """Results open their stack's entry (no regions yet: the interpreter appends a
        result's region rows right after it); region rows add to it."""
        kept = self._regions
        for row in rows:
            seq = int(row[_F["seq"]])
            entry = kept.get(seq)
            if entry is None:
                entry = StackRegions(seq, int(row[_F["position"]]), ())
            if int(row[_F["kind"]]) == TraceKind.REGION:
                box = _box(row)
                if box is not None:
                    entry = StackRegions(seq, entry.position, (*entry.regions, box))
            kept[seq] = entry
            self.regions_changed = max(self.regions_changed, seq)
        while len(kept) > REGIONS_KEPT:
            kept.popitem(last=False)

    def _read_actions(self, rows: np.ndarray) -> None:
        for row in rows:
            index = int(row[_F["worker"]])
            kind = ACTION_KINDS[index] if 0 <= index < len(ACTION_KINDS) else ACTION_KINDS[-1]
            position = int(row[_F["position"]])
            box = _box(row)
            action = ActionSeen(
                kind=kind, after_seq=int(row[_F["seq"]]), t_decided=float(row[_F["t_decided"]]),
                position=position, fast=bool(row[_F["fast"]]),
                regions=int(row[_F["decision"]]) if math.isfinite(row[_F["decision"]]) else 0,
                box=None if box is None else RegionBox(box.y0, box.x0, box.y1, box.x1))
            for p, newest in enumerate(self._actions):
                if position < 0 or position == p or self.positions == 1:
                    newest[kind] = action

    def regions_of(self, seq: int) -> StackRegions | None:
        """The event regions of stack ``seq``'s result; None when no result of that stack
        has been read (not analysed yet, skipped, or older than :data:`REGIONS_KEPT`)."""
        return self._regions.get(seq)

    def newest_regions(self, seq: int, position: int | None = None) -> StackRegions | None:
        """The regions of the newest result at or before stack ``seq`` of ``position`` (the
        selected one by default): what is known about a stack whose own result is not in
        yet. None when there is none."""
        p = self.position if position is None else position
        for entry in reversed(self._regions.values()):
            if entry.seq <= seq and (entry.position == p or self.positions == 1):
                return entry
        return None

    def actions(self, position: int | None = None) -> dict[str, ActionSeen]:
        """The newest action of each actuator at ``position`` (the selected one by default;
        actions for every position count for each), by kind."""
        return dict(self._actions[self.position if position is None else position])

    def status(self) -> FeedStatus:
        """A snapshot for the status line (ring counters are read here)."""
        st = None if self._closed else self._ring.statistics()
        now = time.monotonic()
        published = st.published if st else 0
        analysed = st.completed if st else 0
        t_mark, p_mark, a_mark = self._rate_mark
        if p_mark < 0:
            self._rate_mark = (now, published, analysed)
        elif now - t_mark >= _RATE_PERIOD_S:
            dt = now - t_mark
            self._rates = ((published - p_mark) / dt, (analysed - a_mark) / dt)
            self._rate_mark = (now, published, analysed)
        n = min(self._latency_n, _LATENCY_WINDOW)
        lat = percentiles(self._latency[:n]) if n else None
        return FeedStatus(
            acquired_per_s=self._rates[0],
            analysed_per_s=self._rates[1],
            published=published,
            analysed=analysed,
            skipped=(st.skipped + st.recovered) if st else 0,
            latency_p50_ms=lat.p50 if lat is not None else float("nan"),
            latency_p99_ms=lat.p99 if lat is not None else float("nan"),
            workers_seen=len(np.unique(self._workers[:n])) if n else 0,
            interval_s=self._interval,
            fast=self._fast_now,
            decisions=self._n_decisions,
            frame_seq=self.stack_seq,
            image_seq=self.image_seq,
            torn_copies=self.torn_copies,
            run_ended=self.run_ended,
        )

    def close(self) -> None:
        """Unmap every block (idempotent). The copies held stay valid."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for shared in (getattr(self, "_trace", None), getattr(self, "_out", None), self._ring):
            if shared is not None:
                shared.close()

    def __enter__(self) -> LiveFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
