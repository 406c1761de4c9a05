"""The viewer window's pictures: the frame with its network-image overlay and histogram, the
decision plot (decisions over time, thresholds, fast/slow shading) of the position shown, and
with several stage positions, the decision traces of every position as small multiples (one
small plot each, the position shown framed).

Over the frame, in sensor pixels (the frame shown is always the full sensor): the event
regions of the shown stack's result (solid rectangles; dotted and dimmer while that result is
not in yet, the newest earlier result's regions), and when the stack was read from a region
of the sensor (a camera ROI), that region as a dashed rectangle with everything outside it
blanked: those pixels are stale (whatever the ring slot held before), never shown as data.

A mixin of :class:`~rt_eda.viewer._window.ViewerWindow`. Frames are drawn through a
:class:`~rt_eda.live.raster.Raster` (only the visible part, at about screen resolution), so a
2048 x 2048 frame costs what the window's pixels cost; the histogram is recomputed four times
a second, not per frame.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_eda.core.config import InterpreterConfig
from rt_eda.core.regions import FrameRegion
from rt_eda.live.feed import LiveFeed, RegionBox
from rt_eda.live.raster import Raster, visible_block

from ._qt import QtCore, QtGui, QtWidgets, pg

__all__ = ["MAX_REGIONS_DRAWN", "OVERLAY_OPACITY", "Plots"]

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

_AUTO_LEVEL_SAMPLES = 16384
_HISTOGRAM_PERIOD_S = 0.25  # the histogram costs ~3 ms a frame at 2048 x 2048: 4 Hz is plenty
_FAST_BRUSH = (255, 140, 0, 70)
_SLOW_BRUSH = (70, 130, 255, 35)
MAX_SMALL_MULTIPLES = 36
"""The most positions drawn as small multiples (the others: through the position selector)."""
OVERLAY_OPACITY = 80  # percent; the overlay is transparent where the network sees nothing
MAX_REGIONS_DRAWN = 64
"""The most event regions drawn on a frame (those with the highest scores)."""
_REGION_COLOR = (0, 255, 140)
_ROI_COLOR = (90, 200, 255)
_STALE_BRUSH = (48, 48, 48, 255)  # opaque: stale pixels are blanked, not dimmed
_Z_OVERLAY, _Z_STALE, _Z_ROI, _Z_REGIONS = 10, 15, 18, 20


def _overlay_lut() -> np.ndarray:
    """Inferno, transparent at the low end: where the network sees nothing the frame shows
    through unchanged; opaque from half of the range up."""
    rgb = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=False)
    alpha = np.clip(np.linspace(0.0, 2.0, 256), 0.0, 1.0) * 255
    return np.column_stack([rgb, alpha]).astype(np.uint8)


if TYPE_CHECKING:
    _Window = QtWidgets.QMainWindow
else:
    _Window = object


class Plots(_Window):
    """The frame view and the decision plot, built and drawn (a mixin of the window).

    Uses the window's ``feed``, ``settings``, its panel's display choices (``channel_box``,
    ``z_box``, ``auto_contrast``, ``overlay_box``, from
    :class:`~rt_eda.viewer._panel.ControlPanel`) and the counters it keeps.
    """

    feed: LiveFeed
    settings: InterpreterConfig
    channel_box: QtWidgets.QComboBox
    z_box: QtWidgets.QSpinBox
    auto_contrast: QtWidgets.QCheckBox
    overlay_box: QtWidgets.QCheckBox
    _raster: Raster
    _net_raster: Raster | None
    _step_x: np.ndarray
    _levels: tuple[float, float]
    _setting_levels: bool
    _follow_y: bool
    _dirty: bool
    _shown_key: tuple[int, int, int, bool]
    frames_shown: int
    draws: int
    image_max: float
    regions_seq: int
    regions_exact: bool
    regions_shown: list[RegionBox]
    roi_shown: FrameRegion | None

    # -- construction ------------------------------------------------------------------------
    def _build_frame_view(self) -> Any:
        """The frame, its overlay and the histogram/LUT beside it."""
        spec = self.feed.spec
        self.graphics = pg.GraphicsLayoutWidget()
        self.view = self.graphics.addViewBox(lockAspect=True, invertY=True)
        self.view.setMenuEnabled(False)
        outline = QtWidgets.QGraphicsRectItem(0, 0, spec.width, spec.height)
        outline.setPen(pg.mkPen((90, 90, 90), width=0))
        self.view.addItem(outline)  # the only item with bounds: auto-range shows the frame
        self.image = pg.ImageItem()
        self.view.addItem(self.image, ignoreBounds=True)
        self.overlay = pg.ImageItem()
        self.overlay.setLookupTable(_overlay_lut())
        self.overlay.setOpacity(OVERLAY_OPACITY / 100)
        self.overlay.setZValue(_Z_OVERLAY)
        self.view.addItem(self.overlay, ignoreBounds=True)
        self._build_region_items()
        self.histogram = pg.HistogramLUTItem(image=self.image)
        # Recomputed at _HISTOGRAM_PERIOD_S, not on every new image.
        self.image.sigImageChanged.disconnect(self.histogram.imageChanged)
        self._next_histogram = 0.0
        self.graphics.addItem(self.histogram)
        self.histogram.sigLevelChangeFinished.connect(self._levels_edited)
        self.view.sigRangeChanged.connect(self._mark_dirty)
        self.view.autoRange(padding=0)
        return self.graphics

    def _build_region_items(self) -> None:
        """The stale-pixel mask, the sensor region's outline and the event regions' pool
        (rectangles made as needed, up to :data:`MAX_REGIONS_DRAWN`, hidden when unused)."""
        self.stale_mask = QtWidgets.QGraphicsPathItem()
        self.stale_mask.setPen(pg.mkPen(None))
        self.stale_mask.setBrush(pg.mkBrush(*_STALE_BRUSH))
        self.stale_mask.setZValue(_Z_STALE)
        self.stale_mask.setVisible(False)
        self.view.addItem(self.stale_mask, ignoreBounds=True)
        self.roi_item = QtWidgets.QGraphicsRectItem()
        self.roi_item.setPen(pg.mkPen(_ROI_COLOR, width=2, style=QtCore.Qt.PenStyle.DashLine))
        self.roi_item.setZValue(_Z_ROI)
        self.roi_item.setVisible(False)
        self.view.addItem(self.roi_item, ignoreBounds=True)
        self.region_items: list[Any] = []
        self._region_pen = pg.mkPen(_REGION_COLOR, width=2)
        self._earlier_pen = pg.mkPen((*_REGION_COLOR, 120), width=1,
                                     style=QtCore.Qt.PenStyle.DotLine)
        self.regions_seq = -1
        self.regions_exact = False
        self.regions_shown = []
        self.roi_shown = None

    def _build_decision_plot(self) -> Any:
        """Decisions over time with the threshold lines and the fast/slow shading."""
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setLabel("left", "decision parameter")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setMinimumHeight(160)
        pvb = self.plot.getViewBox()
        # Shading as rectangles, one per run of the same interval (two items, whatever the
        # number of switches).
        self.fast_shade = pg.BarGraphItem(x0=[], width=[], y0=0.0, height=1.0, pen=None,
                                          brush=pg.mkBrush(*_FAST_BRUSH))
        self.slow_shade = pg.BarGraphItem(x0=[], width=[], y0=0.0, height=1.0, pen=None,
                                          brush=pg.mkBrush(*_SLOW_BRUSH))
        pvb.addItem(self.slow_shade, ignoreBounds=True)
        pvb.addItem(self.fast_shade, ignoreBounds=True)
        self.curve = self.plot.plot(pen=pg.mkPen((230, 230, 230), width=1), symbol="o",
                                    symbolSize=3, symbolPen=None,
                                    symbolBrush=(230, 230, 230))
        self.lower_line = pg.InfiniteLine(
            self.settings.lower_threshold, angle=0, movable=False,
            pen=pg.mkPen((80, 160, 255), style=QtCore.Qt.PenStyle.DashLine),
            label="lower {value:.3g}", labelOpts={"position": 0.05, "color": (80, 160, 255)})
        self.upper_line = pg.InfiniteLine(
            self.settings.upper_threshold, angle=0, movable=False,
            pen=pg.mkPen((255, 110, 80), style=QtCore.Qt.PenStyle.DashLine),
            label="upper {value:.3g}", labelOpts={"position": 0.05, "color": (255, 110, 80)})
        self.plot.addItem(self.lower_line, ignoreBounds=True)
        self.plot.addItem(self.upper_line, ignoreBounds=True)
        pvb.sigRangeChangedManually.connect(self._plot_moved)
        pvb.enableAutoRange(x=True)
        return self.plot

    def _build_small_multiples(self) -> Any:
        """One small decision plot per position (at most :data:`MAX_SMALL_MULTIPLES`)."""
        n = min(self.feed.positions, MAX_SMALL_MULTIPLES)
        self.small = pg.GraphicsLayoutWidget()
        self.small.setMinimumHeight(120)
        cols = max(1, math.ceil(math.sqrt(n * 2)))
        names = list(getattr(self, "position_names", ()))
        self.small_plots: list[Any] = []
        self.small_curves: list[Any] = []
        self.small_shades: list[Any] = []
        for p in range(n):
            label = f"{p}: {names[p]}" if p < len(names) else f"position {p}"
            item = self.small.addPlot(row=p // cols, col=p % cols, title=label)
            item.hideAxis("bottom")
            item.getAxis("left").setWidth(28)
            item.setMenuEnabled(False)
            item.setMouseEnabled(x=False, y=False)
            shade = pg.BarGraphItem(x0=[], width=[], y0=0.0, height=1.0, pen=None,
                                    brush=pg.mkBrush(*_FAST_BRUSH))
            item.getViewBox().addItem(shade, ignoreBounds=True)
            curve = item.plot(pen=pg.mkPen((230, 230, 230), width=1))
            for value, color in ((self.settings.lower_threshold, (80, 160, 255)),
                                 (self.settings.upper_threshold, (255, 110, 80))):
                item.addItem(pg.InfiniteLine(value, angle=0, movable=False,
                                             pen=pg.mkPen(color, width=0.5)),
                             ignoreBounds=True)
            self.small_plots.append(item)
            self.small_curves.append(curve)
            self.small_shades.append(shade)
        self._frame_selected()
        return self.small

    def _frame_selected(self) -> None:
        for p, item in enumerate(getattr(self, "small_plots", ())):
            selected = p == self.feed.position
            item.getViewBox().setBorder(pg.mkPen((255, 200, 0), width=2) if selected
                                        else None)

    def _position_changed(self) -> None:
        self._frame_selected()
        self._draw_plot()

    def _draw_small_multiples(self) -> None:
        feed = self.feed
        now_x = time.monotonic() - feed.t0
        for p, (curve, shade) in enumerate(zip(self.small_curves, self.small_shades,
                                               strict=True)):
            d, f = feed.position_decisions[p], feed.position_fast[p]
            curve.setData(d.t, d.v)
            if f.n == 0:
                continue
            x = np.append(f.t, max(float(f.t[-1]), now_x))
            flags = f.v > 0.5
            edges = np.flatnonzero(flags[1:] != flags[:-1]) + 1
            starts = np.concatenate(([0], edges))
            ends = np.concatenate((edges, [f.n]))
            runs = flags[starts]
            x0 = x[starts[runs]]
            shade.setOpts(x0=x0, width=x[ends[runs]] - x0, y0=0.0, height=1.0)

    # -- view state --------------------------------------------------------------------------
    def _mark_dirty(self, *_: object) -> None:
        self._dirty = True

    def _plot_moved(self, *_: object) -> None:
        self._follow_y = False

    def _levels_edited(self, *_: object) -> None:
        lo, hi = (float(v) for v in self.histogram.getLevels())
        tol = 1e-6 * max(1.0, abs(self._levels[1] - self._levels[0]))
        if self._setting_levels or (abs(lo - self._levels[0]) <= tol
                                    and abs(hi - self._levels[1]) <= tol):
            return  # our own change (auto contrast), not a person's
        self._levels = (lo, hi)
        if self.auto_contrast.isChecked():
            self.auto_contrast.blockSignals(True)
            self.auto_contrast.setChecked(False)  # the person set the contrast: keep it
            self.auto_contrast.blockSignals(False)

    # -- drawing -----------------------------------------------------------------------------
    def _shown_stack(self) -> tuple[np.ndarray, int, bool, FrameRegion | None]:
        """(stack, seq, with overlay, sensor region): the frame a network image came from
        when the overlay is on and that stack was still in the ring, else the newest stack;
        the region of the sensor it was read from (None: the full frame)."""
        feed = self.feed
        if (self.overlay_box.isChecked() and feed.image_seq >= 0 and feed.image_stack_ok
                and feed.image_stack is not None):
            return feed.image_stack, feed.image_seq, True, feed.image_stack_frame
        with_overlay = self.overlay_box.isChecked() and feed.image_seq >= 0
        return feed.stack, feed.stack_seq, with_overlay, feed.stack_frame

    def _draw_frame(self) -> None:
        stack, seq, with_overlay, roi = self._shown_stack()
        if seq < 0:
            return
        c, z = self.channel_box.currentIndex(), self.z_box.value()
        frame = stack[c, z]
        spec = self.feed.spec
        if roi is not None and roi.is_full(spec.height, spec.width):
            roi = None
        (x0, x1), (y0, y1) = self.view.viewRange()
        px = self.view.viewPixelSize()
        block = visible_block(spec.height, spec.width, (x0, x1), (y0, y1), min(px))
        shown = self._raster.fill(frame, block)
        # Contrast and histogram from the pixels read, never from the stale ones around them
        # (none visible: the levels are kept).
        inside = None if roi is None else block.within(roi.y, roi.x, roi.y1, roi.x1)
        fresh = shown if roi is None else (shown[inside] if inside is not None else None)
        if self.auto_contrast.isChecked() and fresh is not None:
            self._levels = self._auto_levels(fresh)
        self.image.setImage(shown, autoLevels=False, levels=self._levels)
        rows, cols = block.shape
        self.image.setRect(QtCore.QRectF(block.x0, block.y0, cols * block.step,
                                         rows * block.step))
        now = time.monotonic()
        if now >= self._next_histogram:
            self._next_histogram = now + _HISTOGRAM_PERIOD_S
            self._setting_levels = True
            self.histogram.imageChanged()  # histogram of what is shown; region = its levels
            if roi is not None:
                self._histogram_of(fresh)
            self._setting_levels = False
        self.overlay.setVisible(with_overlay)
        if with_overlay:
            self._draw_overlay((x0, x1), (y0, y1), min(px))
        self._draw_roi(roi)
        self.draws += 1
        key = (seq, c, z, with_overlay)
        if key[0] != self._shown_key[0]:
            self.frames_shown += 1
        self._shown_key = key
        self._draw_regions()
        self._dirty = False

    def _draw_roi(self, roi: FrameRegion | None) -> None:
        """Outline the sensor region the shown stack was read from and blank the rest."""
        self.roi_shown = roi
        self.roi_item.setVisible(roi is not None)
        self.stale_mask.setVisible(roi is not None)
        if roi is None:
            return
        rect = QtCore.QRectF(roi.x, roi.y, roi.width, roi.height)
        self.roi_item.setRect(rect)
        spec = self.feed.spec
        path = QtGui.QPainterPath()
        path.setFillRule(QtCore.Qt.FillRule.OddEvenFill)  # the full frame with a hole
        path.addRect(QtCore.QRectF(0, 0, spec.width, spec.height))
        path.addRect(rect)
        self.stale_mask.setPath(path)

    def _draw_regions(self) -> None:
        """The event regions of the shown stack's result; while it is not in yet (or the
        stack was never analysed), those of the newest earlier result of the position,
        with a dotted, dimmer pen (``regions_exact`` False)."""
        seq = self._shown_key[0]
        feed = self.feed
        entry = feed.regions_of(seq) if seq >= 0 else None
        exact = entry is not None
        if entry is None and seq >= 0:
            entry = feed.newest_regions(seq)
        boxes: list[RegionBox] = []
        if entry is not None:  # the highest scores first (a NaN score last)
            boxes = sorted(entry.regions, key=lambda b: -b.score if math.isfinite(b.score)
                           else math.inf)[:MAX_REGIONS_DRAWN]
        pen = self._region_pen if exact else self._earlier_pen
        while len(self.region_items) < len(boxes):
            item = QtWidgets.QGraphicsRectItem()
            item.setZValue(_Z_REGIONS)
            self.view.addItem(item, ignoreBounds=True)
            self.region_items.append(item)
        for i, item in enumerate(self.region_items):
            if i < len(boxes):
                b = boxes[i]
                item.setRect(QtCore.QRectF(b.x0, b.y0, b.width, b.height))
                item.setPen(pen)
                item.setToolTip(f"score {b.score:.3g}: rows {b.y0:.0f}-{b.y1:.0f}, "
                                f"columns {b.x0:.0f}-{b.x1:.0f}")
            item.setVisible(i < len(boxes))
        self.regions_seq = entry.seq if entry is not None else -1
        self.regions_exact = exact
        self.regions_shown = boxes

    def _draw_overlay(self, xr: tuple[float, float], yr: tuple[float, float],
                      px: float) -> None:
        image = self.feed.image
        if image is None or self._net_raster is None:
            return
        net = image[0, 0]
        spec = self.feed.spec
        sy, sx = net.shape[0] / spec.height, net.shape[1] / spec.width
        block = visible_block(net.shape[0], net.shape[1], (xr[0] * sx, xr[1] * sx),
                              (yr[0] * sy, yr[1] * sy), px * min(sx, sy))
        shown = self._net_raster.fill(net, block)
        sample = shown.ravel()[:: max(1, shown.size // _AUTO_LEVEL_SAMPLES)]
        # Levels span at least 0..1 (a probability map is shown as it is, so an image with
        # nothing in it stays transparent instead of stretching its noise); wider outputs
        # (logits, distances) are stretched to their own range.
        lo, hi = float(np.nanmin(sample)), float(np.nanmax(sample))
        self.image_max = hi
        lo = min(lo, 0.0) if math.isfinite(lo) else 0.0
        hi = max(hi, 1.0) if math.isfinite(hi) else 1.0
        self.overlay.setImage(shown, autoLevels=False, levels=(lo, hi))
        rows, cols = block.shape
        self.overlay.setRect(QtCore.QRectF(block.x0 / sx, block.y0 / sy,
                                           cols * block.step / sx, rows * block.step / sy))

    def _histogram_of(self, pixels: np.ndarray | None) -> None:
        """Replace the histogram with that of ``pixels`` (bins as pyqtgraph makes them: one
        per integer value up to 500 bins); an empty one for None."""
        if pixels is None or pixels.size == 0:
            self.histogram.plot.setData([], [])
            return
        sample = pixels.ravel()[:: max(1, pixels.size // _AUTO_LEVEL_SAMPLES)]
        lo, hi = float(sample.min()), float(sample.max())
        bins: int | np.ndarray = 500
        if np.issubdtype(sample.dtype, np.integer):
            step = max(1.0, math.ceil((hi - lo) / 500))
            bins = np.arange(lo, hi + 1.01 * step, step)
        counts, edges = np.histogram(sample, bins=bins)
        self.histogram.plot.setData(edges[:-1], counts)

    @staticmethod
    def _auto_levels(shown: np.ndarray) -> tuple[float, float]:
        sample = shown.ravel()[:: max(1, shown.size // _AUTO_LEVEL_SAMPLES)]
        lo, hi = np.percentile(sample, (0.5, 99.8))
        lo, hi = float(lo), float(hi)
        if not hi > lo:
            hi = lo + 1.0
        return lo, hi

    def _draw_plot(self) -> None:
        feed = self.feed
        d = feed.decisions
        self.curve.setData(d.t, d.v)
        f = feed.fast
        n = f.n
        if n == 0:
            return
        values = d.v[np.isfinite(d.v)] if d.n else d.v
        lo = min(self.settings.lower_threshold, float(values.min()) if values.size else 0.0)
        hi = max(self.settings.upper_threshold, float(values.max()) if values.size else 1.0)
        pad = max(hi - lo, 1e-6) * 0.08
        lo, hi = lo - pad, hi + pad
        x = self._step_x[: n + 1]
        x[:n] = f.t
        x[n] = max(float(f.t[-1]), time.monotonic() - feed.t0)
        flags = f.v[:n] > 0.5
        edges = np.flatnonzero(flags[1:] != flags[:-1]) + 1
        starts = np.concatenate(([0], edges))
        ends = np.concatenate((edges, [n]))
        for shade, want in ((self.fast_shade, True), (self.slow_shade, False)):
            runs = flags[starts] == want
            x0 = x[starts[runs]]
            shade.setOpts(x0=x0, width=x[ends[runs]] - x0, y0=lo, height=hi - lo)
        if self._follow_y:
            self.plot.getViewBox().setYRange(lo, hi, padding=0)
