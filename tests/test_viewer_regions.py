"""The live viewer and issue 16's trace rows: event regions, actions, and stacks read from a
region of the sensor.

The feed tests write the rows the interpreter writes (``DecisionRecord.trace_row``,
``region_trace_rows``, ``action_trace_row`` of real messages) into a real
:class:`~rt_eda.shm.DecisionTrace` and read them with a :class:`~rt_eda.live.feed.LiveFeed`,
no Qt: a region or an action row must never count as a decision, a worker, a latency or a
change of the fast/slow state. The window test runs headless (``QT_QPA_PLATFORM=offscreen``)
and checks where the overlay items are, and what the rendered pixels outside the sensor
region read are (blanked).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from rt_eda.core.config import load_config
from rt_eda.core.messages import (
    Action,
    Command,
    DecisionRecord,
    IntervalChange,
    Result,
    action_trace_row,
    region_trace_rows,
)
from rt_eda.core.regions import EventRegion, FrameRegion
from rt_eda.live.feed import ActionSeen, LiveFeed, RegionBox, describe_actions
from rt_eda.live.raster import Block
from rt_eda.shm import DecisionTrace, StackRing, StackSpec

SPEC = StackSpec(1, 1, 320, 256, "uint16")  # H 320, W 256: room for a 128 x 96 ROI at (200, 64)
ROI = FrameRegion(200, 64, 96, 128)


@dataclass
class Shm:
    ring: StackRing
    trace: DecisionTrace


@pytest.fixture
def shm() -> Iterator[Shm]:
    ring = StackRing.create(SPEC, 4)
    trace = DecisionTrace.create(256)
    try:
        yield Shm(ring, trace)
    finally:
        ring.shutdown()
        ring.close()
        ring.unlink()
        trace.close()
        trace.unlink()


def region(y0: int, x0: int, y1: int, x1: int, score: float) -> EventRegion:
    return EventRegion((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2, y0, x0, y1, x1, score,
                       (y1 - y0) * (x1 - x0))


def result(seq: int, decision: float, regions: tuple[EventRegion, ...] = (), *,
           worker: int = 0, position: int = 0, t: float = 100.0) -> Result:
    return Result(seq=seq, worker=worker, decision=decision, t_exposure=t - 0.010,
                  t_published=t - 0.008, t_claimed=t - 0.007, t_done=t - 0.001,
                  position=position, regions=regions)


def record(res: Result, *, fast: bool, interval_s: float, t: float = 100.0,
           change: bool = False) -> DecisionRecord:
    cmd = IntervalChange(Command(interval_s, "test", res.seq, t, res.position, fast), fast)
    return DecisionRecord(res, t, interval_s, fast, cmd if change else None)


def write(trace: DecisionTrace, rec: DecisionRecord) -> None:
    """What the interpreter appends for one record: the result, its regions, its change."""
    trace.append(*rec.trace_row())
    for row in region_trace_rows(rec.result, rec.t_decided):
        trace.append(*row)
    if rec.change is not None:
        trace.append(*rec.change.trace_row())


def act(trace: DecisionTrace, kind: str, after: int, *, fast: bool = True,
        frame: FrameRegion | None = None, regions: tuple[EventRegion, ...] = (),
        position: int = -1, t: float = 100.0) -> None:
    trace.append(*action_trace_row(Action(kind, after, t, position, fast, frame, regions)))


TWO = (region(40, 30, 60, 58, 0.9), region(210, 100, 230, 120, 0.7))


# -- the feed (no Qt) ------------------------------------------------------------------------
def test_region_and_action_rows_are_neither_decisions_nor_state(shm: Shm) -> None:
    trace = shm.trace
    trace.append(*IntervalChange(Command(0.5, "start", -1, 99.0, -1, False), False).trace_row())
    write(trace, record(result(0, 0.1), fast=False, interval_s=0.5))
    write(trace, record(result(1, 0.95, TWO, t=101.0), fast=True, interval_s=0.05, t=101.0,
                        change=True))
    # Actions last, each with interval 0 and a worker column that is an actuator index, a
    # region row last-but-one with fast 0: a feed that took them for state would say so.
    act(trace, "roi", 1, frame=ROI, regions=TWO, t=101.0)
    act(trace, "stimulate", 1, regions=TWO, t=101.0)
    act(trace, "channel", 1, t=101.0)
    write(trace, record(result(2, 0.9, TWO[:1], t=102.0), fast=True, interval_s=0.05, t=102.0))
    act(trace, "stimulate", 2, regions=TWO[:1], t=102.0)
    with LiveFeed(shm.ring.name, "", trace.name) as feed:
        assert feed.poll_trace() == trace.count
        np.testing.assert_array_equal(feed.decisions.v, [0.1, 0.95, 0.9])
        # fast/slow: the start, three results and one change; no region or action row
        np.testing.assert_array_equal(feed.fast.v, [0, 0, 1, 1, 1])
        st = feed.status()
        assert st.decisions == 3
        assert st.interval_s == 0.05 and st.fast
        assert st.workers_seen == 1  # worker 0; the actions' kind indexes are no workers
        assert st.latency_p99_ms == pytest.approx(10.0)  # no action row (t_exposure 0)

        assert feed.regions_of(0) is not None and feed.regions_of(0).regions == ()
        got = feed.regions_of(1)
        assert got is not None and got.seq == 1 and got.position == 0
        assert got.regions == (RegionBox(40, 30, 60, 58, 0.9), RegionBox(210, 100, 230, 120, 0.7))
        assert feed.regions_of(2).regions == (RegionBox(40, 30, 60, 58, 0.9),)
        assert feed.regions_of(3) is None  # no result of stack 3 yet
        assert feed.newest_regions(3) == feed.regions_of(2)  # what is known meanwhile
        assert feed.newest_regions(1) == got and feed.newest_regions(-1) is None
        assert feed.regions_changed == 2

        actions = feed.actions()
        assert set(actions) == {"roi", "stimulate", "channel"}
        assert actions["roi"].box == RegionBox(200, 64, 296, 192)
        assert actions["stimulate"].after_seq == 2 and actions["stimulate"].regions == 1
        assert actions["stimulate"].box == RegionBox(40, 30, 60, 58)
        assert describe_actions(actions) == (
            "roi 128x96 at (y=200,x=64) | channel fast | stimulate 1 region")

        # back to slow: full frame, blank mask, slow channels
        act(trace, "roi", 3, fast=False)
        act(trace, "stimulate", 3, fast=False)
        act(trace, "channel", 3, fast=False)
        act(trace, "interval", 3, fast=False)
        assert feed.poll_trace() == 4
        assert feed.regions_changed == -1  # nothing about regions in this poll
        assert feed.decisions.n == 3 and feed.fast.n == 5 and feed.status().fast
        assert describe_actions(feed.actions()) == (
            "interval slow | roi full frame | channel slow | stimulate off (blank mask)")


def test_a_results_regions_read_in_a_later_poll_join_it(shm: Shm) -> None:
    trace = shm.trace
    rec = record(result(7, 0.9, TWO), fast=True, interval_s=0.05)
    with LiveFeed(shm.ring.name, "", trace.name) as feed:
        trace.append(*rec.trace_row())
        assert feed.poll_trace() == 1
        assert feed.regions_of(7) is not None and feed.regions_of(7).regions == ()
        assert feed.regions_changed == 7
        for row in region_trace_rows(rec.result, rec.t_decided):
            trace.append(*row)
        assert feed.poll_trace() == 2
        assert len(feed.regions_of(7).regions) == 2 and feed.decisions.n == 1


def test_regions_and_actions_are_kept_per_position() -> None:
    ring = StackRing.create(SPEC, 4, positions=2)
    trace = DecisionTrace.create(256)
    try:
        write(trace, record(result(0, 0.9, TWO[:1], position=0), fast=True, interval_s=0.05))
        write(trace, record(result(1, 0.9, TWO, position=1), fast=True, interval_s=0.05))
        act(trace, "stimulate", 1, regions=TWO, position=1)
        act(trace, "channel", 0, position=-1)  # every position
        with LiveFeed(ring.name, "", trace.name) as feed:
            feed.poll_trace()
            assert feed.newest_regions(5) == feed.regions_of(0)  # position 0's newest
            assert feed.newest_regions(5, position=1) == feed.regions_of(1)
            assert set(feed.actions()) == {"channel"}
            assert set(feed.actions(1)) == {"channel", "stimulate"}
            feed.select(1)
            assert describe_actions(feed.actions()) == "channel fast | stimulate 2 regions"
    finally:
        ring.shutdown()
        ring.close()
        ring.unlink()
        trace.close()
        trace.unlink()


def test_an_unknown_actuator_and_odd_boxes_read_safely() -> None:
    other = ActionSeen("other", 4, 1.0, 0, False, 0, None)
    assert other.describe() == "other after #4"
    assert describe_actions({}) == ""
    one = ActionSeen("stimulate", 4, 1.0, 0, True, 1, RegionBox(0, 0, 2, 2))
    assert one.describe() == "stimulate 1 region"


def publish(ring: StackRing, pixels: np.ndarray, frame: FrameRegion | None = None) -> int:
    with ring.write_slot() as slot:
        slot.pixels[...] = pixels
        slot.frame_times[:] = 0.0
        seq = slot.seq
        slot.publish(frame=frame)
    return seq


def test_the_feed_keeps_the_sensor_region_of_each_stack_copied(shm: Shm) -> None:
    stack = np.zeros(SPEC.shape, SPEC.np_dtype)
    publish(shm.ring, stack, ROI)
    with LiveFeed(shm.ring.name, "", "") as feed:
        assert feed.poll_stack() and feed.stack_frame == ROI
        publish(shm.ring, stack)
        assert feed.poll_stack() and feed.stack_frame is None
        publish(shm.ring, stack, FrameRegion.full(SPEC.height, SPEC.width))
        assert feed.poll_stack()
        full = feed.stack_frame
        assert full is None or full.is_full(SPEC.height, SPEC.width)


def test_block_within_selects_the_decimated_pixels_inside_a_region() -> None:
    block = Block(0, 320, 0, 256, 3)
    rows, cols = block.within(200, 64, 296, 192) or (slice(0), slice(0))
    ys, xs = np.arange(0, 320, 3), np.arange(0, 256, 3)
    np.testing.assert_array_equal(ys[rows], ys[(ys >= 200) & (ys < 296)])
    np.testing.assert_array_equal(xs[cols], xs[(xs >= 64) & (xs < 192)])
    assert Block(0, 100, 0, 100, 1).within(100, 0, 120, 10) is None
    assert Block(0, 100, 0, 100, 4).within(1, 1, 3, 3) is None  # between two samples


# -- the window (offscreen Qt) ---------------------------------------------------------------
def _pixel(window: Any, y: float, x: float) -> tuple[int, int, int]:
    """The rendered colour at sensor pixel (y, x) (its centre)."""
    from rt_eda.viewer._qt import QtCore

    scene = window.view.mapViewToScene(QtCore.QPointF(x + 0.5, y + 0.5))
    at = window.graphics.mapFromScene(scene)
    image = window.graphics.grab().toImage()
    color = image.pixelColor(at.x(), at.y())
    return (color.red(), color.green(), color.blue())


def _rect(item: Any) -> tuple[float, float, float, float]:
    """An item's rectangle in view (sensor pixel) coordinates: (x, y, width, height)."""
    r = item.mapRectToParent(item.rect())
    return (r.x(), r.y(), r.width(), r.height())


def test_window_draws_the_regions_the_roi_and_blanks_stale_pixels(qtbot: Any, shm: Shm) -> None:
    from rt_eda.viewer._plots import _STALE_BRUSH
    from rt_eda.viewer._qt import QtCore
    from rt_eda.viewer._window import ViewerWindow

    yy, xx = np.mgrid[0:SPEC.height, 0:SPEC.width]
    stack = np.full(SPEC.shape, 60000, SPEC.np_dtype)  # stale: bright everywhere
    ramp = (1000 + 20 * yy + 7 * xx).astype(SPEC.np_dtype)
    inside = (slice(ROI.y, ROI.y1), slice(ROI.x, ROI.x1))
    stack[0, 0][inside] = ramp[inside]
    seq = publish(shm.ring, stack, ROI)
    write(shm.trace, record(result(seq, 0.95, TWO), fast=True, interval_s=0.05, change=True))
    act(shm.trace, "roi", seq, frame=ROI, regions=TWO)
    act(shm.trace, "stimulate", seq, regions=TWO)
    act(shm.trace, "channel", seq)

    feed = LiveFeed(shm.ring.name, "", shm.trace.name)
    window = ViewerWindow(feed, load_config(None).interpreter, max_fps=30, sender=None)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    try:
        qtbot.waitUntil(lambda: window.frames_shown >= 1 and window.regions_exact,
                        timeout=10_000)
        if feed.stack_frame is None:  # the ring does not hand out frame regions yet
            feed.stack_frame = ROI
            window._dirty = True
        qtbot.waitUntil(lambda: window.roi_shown == ROI, timeout=5_000)
        # the image is the full frame, at sensor coordinates
        r = window.image.mapRectToParent(window.image.boundingRect())
        assert (r.x(), r.y(), r.width(), r.height()) == pytest.approx((0, 0, 256, 320), abs=1)

        # the result's regions, at sensor coordinates (x, y, width, height)
        assert window.regions_seq == seq
        shown = [i for i in window.region_items if i.isVisible()]
        assert sorted(_rect(i) for i in shown) == [(30, 40, 28, 20), (100, 210, 20, 20)]
        assert all(i.zValue() > window.image.zValue() for i in shown)

        # the sensor region read: dashed outline; outside it blanked, opaque, above the image
        assert window.roi_item.isVisible()
        assert _rect(window.roi_item) == (64, 200, 128, 96)
        assert window.roi_item.pen().style() == QtCore.Qt.PenStyle.DashLine
        mask = window.stale_mask
        assert mask.isVisible() and mask.brush().color().alpha() == 255
        assert mask.zValue() > window.image.zValue()
        assert mask.path().contains(QtCore.QPointF(10, 10))
        assert not mask.path().contains(QtCore.QPointF(100, 250))  # inside the ROI
        grey = _STALE_BRUSH[:3]
        assert _pixel(window, 20, 200) == grey  # stale bright pixels: not shown
        assert _pixel(window, 310, 10) == grey
        assert _pixel(window, 280, 160) != grey  # read pixels: shown
        # auto contrast and the histogram from the pixels read: the stale 60000 is in neither
        lo, hi = window._levels
        assert hi < 60000 and lo >= 1000
        window._next_histogram = 0.0
        window._dirty = True

        def histogram_top() -> float:
            x, _y = window.histogram.plot.getData()
            return float(np.max(x)) if x is not None and len(x) else math.nan

        qtbot.waitUntil(lambda: histogram_top() < 9000, timeout=5_000)

        # the newest action of each actuator, in the status bar
        qtbot.waitUntil(lambda: "stimulate" in window.actions_label.text(), timeout=5_000)
        text = window.actions_label.text()
        assert "roi 128x96 at (y=200,x=64)" in text and "stimulate 2 regions" in text
        assert "channel fast" in text and window.actions_label.isVisible()
        state = window.state()
        assert state["roi_shown"] == [200, 64, 96, 128]
        assert sorted(state["regions_shown"]) == [[40, 30, 60, 58], [210, 100, 230, 120]]

        # a newer stack, full frame, its result not in yet: the earlier regions, dotted
        feed.stack_frame = None
        seq2 = publish(shm.ring, np.asarray(ramp)[None, None])
        qtbot.waitUntil(lambda: window._shown_key[0] == seq2, timeout=5_000)
        assert not window.regions_exact and window.regions_seq == seq
        assert window.roi_shown is None
        assert not window.roi_item.isVisible() and not window.stale_mask.isVisible()
        assert all(i.pen().style() == QtCore.Qt.PenStyle.DotLine
                   for i in window.region_items if i.isVisible())
        # its result comes in (no new stack): its own regions replace them
        write(shm.trace, record(result(seq2, 0.9, (region(5, 6, 15, 26, 0.8),)), fast=True,
                                interval_s=0.05))
        qtbot.waitUntil(lambda: window.regions_exact and window.regions_seq == seq2,
                        timeout=5_000)
        assert [_rect(i) for i in window.region_items if i.isVisible()] == [(6, 5, 20, 10)]
        assert math.isfinite(window.last_status.interval_s if window.last_status else 0.0)
    finally:
        window.close()
    assert feed.run_ended
