"""The viewer window (Qt, pyqtgraph): frames, network-image overlay, decisions, controls.

One timer drives everything at ``viewer.max_fps``: each tick polls the
:class:`~rt_eda.live.feed.LiveFeed` (copies of the newest stack, network image and
decision records) and redraws what changed. Frames are drawn through a
:class:`~rt_eda.live.raster.Raster` (only the visible part, at about screen resolution),
so a 2048 x 2048 frame costs what the window's pixels cost.

Layout::

    +-------------------------------------------+-----------+--------------+
    | frame (+ network image, inferno, opacity) | histogram | display      |
    |                                           | / LUT     | interpreter  |
    +-------------------------------------------+-----------+ intervals    |
    | decision over time, lower/upper thresholds, fast/slow shaded         | manual, pause|
    +----------------------------------------------------------------------+--------------+
    status: acquired/s, analysed/s, skipped, latency p50/p99, workers, interval, display fps

Controls are checked locally against the interpreter's settings (a value the interpreter
would refuse is refused here, with its message) and handed to a
:class:`~rt_eda.live.controls.ControlSender`, which never blocks; with no sender the
controls are disabled and the window says why. Every control has a key (:data:`SHORTCUTS`,
listed in the panel): Alt+C/Z/A/N/O for the display, Alt+L/U/M/S/F/I to edit a setting
(type a value, Enter sends it), Alt+T fast/slow in manual mode, Alt+P pause, Alt+R reset.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.core.config import InterpreterConfig
from rt_eda.core.errors import ConfigError
from rt_eda.live.controls import ControlSender
from rt_eda.live.feed import FeedStatus, LiveFeed
from rt_eda.live.raster import Raster, visible_block

from ._qt import QtCore, QtGui, QtWidgets, pg

__all__ = ["SHORTCUTS", "ViewerWindow", "run_window"]

log = logging.getLogger(__name__)

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

_STATUS_PERIOD_S = 0.25
_AUTO_LEVEL_SAMPLES = 16384
_HISTOGRAM_PERIOD_S = 0.25  # the histogram costs ~3 ms a frame at 2048 x 2048: 4 Hz is plenty
_FAST_BRUSH = (255, 140, 0, 70)
_OVERLAY_OPACITY = 80  # percent; the overlay is transparent where the network sees nothing

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Alt+C", "next channel"),
    ("Alt+Z", "next z slice"),
    ("Alt+A", "auto contrast on/off"),
    ("Alt+N", "network image on/off"),
    ("Alt+O", "opacity (then arrow keys)"),
    ("Alt+L / Alt+U", "lower / upper threshold"),
    ("Alt+M", "min fast frames"),
    ("Alt+S / Alt+F", "slow / fast interval"),
    ("Alt+I", "manual interval (type a value, Enter sends it)"),
    ("Alt+T", "manual mode fast/slow"),
    ("Alt+P", "pause/resume analysis"),
    ("Alt+R", "reset the view"),
    ("Ctrl+W", "close the window (the run goes on)"),
)
"""Every control has a key (shown in the window's panel): a person without a mouse, and the
tests driving a real window through the X server, reach each one."""
_SLOW_BRUSH = (70, 130, 255, 35)


def _overlay_lut() -> np.ndarray:
    """Inferno, transparent at the low end: where the network sees nothing the frame shows
    through unchanged; opaque from half of the range up."""
    rgb = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=False)
    alpha = np.clip(np.linspace(0.0, 2.0, 256), 0.0, 1.0) * 255
    return np.column_stack([rgb, alpha]).astype(np.uint8)


def _spin(value: float, lo: float, hi: float, decimals: int, suffix: str = "") -> Any:
    box = QtWidgets.QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setValue(value)
    box.setKeyboardTracking(False)
    if suffix:
        box.setSuffix(suffix)
    return box


class ViewerWindow(QtWidgets.QMainWindow):
    """The live view of one run.

    Parameters
    ----------
    feed
        The run's shared memory, mapped read-only. The window closes it when it closes.
    settings
        The interpreter's settings at start (kind, thresholds, intervals): the initial values
        of the controls and of the threshold lines.
    max_fps
        Redraws per second at most (``viewer.max_fps``).
    sender
        Where controls go, or None (controls disabled: ``read_only_reason`` is shown).
    stop
        Polled every tick; when it returns True the window closes (the run is stopping).
    quit_on_end
        Close when the engine shuts the ring (the engine's own viewer); otherwise keep the
        last images and say the run ended (a viewer attached by name).
    workers
        Configured worker count (0 = unknown); shown beside the workers seen in the trace.
    state_path
        If set, the window writes :meth:`state` there as JSON (atomically) four times a
        second: what a test driving the real window from outside (through the X server) reads
        back. The engine's viewer takes it from ``RT_EDA_VIEWER_STATE``.
    """

    closed = QtCore.pyqtSignal()

    def __init__(
        self,
        feed: LiveFeed,
        settings: InterpreterConfig,
        *,
        max_fps: float = 30.0,
        sender: ControlSender | None = None,
        read_only_reason: str = "",
        stop: Callable[[], bool] | None = None,
        quit_on_end: bool = True,
        workers: int = 0,
        state_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        self._state_path = Path(state_path) if state_path else None
        self.settings = settings
        self.control_sender = sender
        self._stop = stop
        self._quit_on_end = quit_on_end
        self._workers = workers
        self._read_only_reason = read_only_reason or "read-only"
        self._closing = False
        self.end_reason = "window closed"
        self.frames_shown = 0  # draws of a stack not drawn before
        self.image_max = float("nan")  # maximum of the visible network image last drawn
        self.draws = 0
        self._shown_key: tuple[int, int, int, bool] = (-1, -1, -1, False)
        self._dirty = True
        self._levels: tuple[float, float] = (0.0, 1.0)
        self._setting_levels = False
        self._follow_y = True
        self._next_status = 0.0
        self._fps_mark = (time.monotonic(), 0)
        self._display_fps = 0.0
        self.last_status: FeedStatus | None = None
        spec = feed.spec
        self._raster = Raster(spec.height, spec.width, spec.np_dtype)
        shape = feed.image_shape
        self._net_raster = Raster(*shape, np.float32) if shape else None
        cap = feed.decisions.capacity
        self._step_x = np.zeros(cap + 1)
        self.setWindowTitle(f"rt-eda viewer: {spec.channels} ch x {spec.z_slices} z x "
                            f"{spec.height} x {spec.width} {spec.dtype}")
        self._build()
        self._add_shortcuts()
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.setInterval(max(1, round(1000.0 / max_fps)))
        self._timer.timeout.connect(self.tick)
        self._timer.start()

    # -- construction ------------------------------------------------------------------------
    def _build(self) -> None:
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
        self.overlay.setOpacity(_OVERLAY_OPACITY / 100)
        self.overlay.setZValue(10)
        self.view.addItem(self.overlay, ignoreBounds=True)
        self.histogram = pg.HistogramLUTItem(image=self.image)
        # Recomputed at _HISTOGRAM_PERIOD_S, not on every new image.
        self.image.sigImageChanged.disconnect(self.histogram.imageChanged)
        self._next_histogram = 0.0
        self.graphics.addItem(self.histogram)
        self.histogram.sigLevelChangeFinished.connect(self._levels_edited)
        self.view.sigRangeChanged.connect(self._mark_dirty)
        self.view.autoRange(padding=0)

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

        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        left.addWidget(self.graphics)
        left.addWidget(self.plot)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 1)
        main = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        main.addWidget(left)
        main.addWidget(self._build_panel())
        main.setStretchFactor(0, 1)
        self.setCentralWidget(main)
        self.status_label = QtWidgets.QLabel("waiting for the first stack")
        self.status_label.setTextInteractionFlags(
            QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        # A long status line is cut at the window's edge; it never makes the window wider.
        self.status_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                                        QtWidgets.QSizePolicy.Policy.Preferred)
        status_bar = QtWidgets.QStatusBar()
        status_bar.addWidget(self.status_label, 1)
        self.setStatusBar(status_bar)
        self.resize(1200, 850)

    def _build_panel(self) -> QtWidgets.QWidget:
        spec = self.feed.spec
        s = self.settings
        panel = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(panel)

        display = QtWidgets.QGroupBox("Display")
        form = QtWidgets.QFormLayout(display)
        self.channel_box = QtWidgets.QComboBox()
        self.channel_box.addItems([f"channel {c}" for c in range(spec.channels)])
        self.channel_box.currentIndexChanged.connect(self._mark_dirty)
        form.addRow("channel", self.channel_box)
        self.z_box = QtWidgets.QSpinBox()
        self.z_box.setRange(0, spec.z_slices - 1)
        self.z_box.setEnabled(spec.z_slices > 1)
        self.z_box.valueChanged.connect(self._mark_dirty)
        form.addRow("z slice", self.z_box)
        self.auto_contrast = QtWidgets.QCheckBox("&auto contrast")
        self.auto_contrast.setChecked(True)
        self.auto_contrast.toggled.connect(self._mark_dirty)
        form.addRow(self.auto_contrast)
        self.overlay_box = QtWidgets.QCheckBox("&network image (inferno)")
        self.overlay_box.setChecked(self.feed.has_images)
        self.overlay_box.setEnabled(self.feed.has_images)
        self.overlay_box.toggled.connect(self._mark_dirty)
        form.addRow(self.overlay_box)
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(_OVERLAY_OPACITY)
        self.opacity.setEnabled(self.feed.has_images)
        self.opacity.valueChanged.connect(lambda v: self.overlay.setOpacity(v / 100.0))
        form.addRow("&opacity", self.opacity)
        outer.addWidget(display)

        binary = s.kind == "binary"
        interp = QtWidgets.QGroupBox(f"Interpreter ({s.kind})")
        form = QtWidgets.QFormLayout(interp)
        self.lower_box = _spin(s.lower_threshold, -1e9, 1e9, 4)
        self.upper_box = _spin(s.upper_threshold, -1e9, 1e9, 4)
        self.min_fast_box = QtWidgets.QSpinBox()
        self.min_fast_box.setRange(1, 1_000_000)
        self.min_fast_box.setValue(s.min_fast_frames)
        self.min_fast_box.setKeyboardTracking(False)
        self.slow_box = _spin(s.slow_interval, 0.0, 86400.0, 3, " s")
        self.fast_box = _spin(s.fast_interval, 0.0, 86400.0, 3, " s")
        manual = s.manual_interval if s.manual_interval is not None else s.slow_interval
        self.manual_box = _spin(manual, 0.0, 86400.0, 3, " s")
        self.mode_button = QtWidgets.QPushButton("fast")
        self.mode_button.setCheckable(True)
        self.pause_button = QtWidgets.QPushButton("pause analysis")
        self.pause_button.setCheckable(True)
        for label, box, key, enabled in (
            ("&lower threshold", self.lower_box, "lower_threshold", binary),
            ("&upper threshold", self.upper_box, "upper_threshold", binary),
            ("&min fast frames", self.min_fast_box, "min_fast_frames", binary),
            ("&slow interval", self.slow_box, "slow_interval", True),
            ("&fast interval", self.fast_box, "fast_interval", True),
            ("manual &interval", self.manual_box, "manual_interval", not binary),
        ):
            box.setEnabled(enabled)
            box.editingFinished.connect(lambda k=key, b=box: self._edit(k, float(b.value())))
            form.addRow(label, box)
        self.mode_button.setEnabled(not binary)
        self.mode_button.toggled.connect(self._mode_toggled)
        form.addRow("manual mode", self.mode_button)
        self.pause_button.toggled.connect(self._pause_toggled)
        form.addRow(self.pause_button)
        self.control_note = QtWidgets.QLabel(
            "controls go to the interpreter" if self.control_sender is not None
            else f"controls off: {self._read_only_reason}")
        self.control_note.setWordWrap(True)
        form.addRow(self.control_note)
        interp.setEnabled(self.control_sender is not None)
        self.controls_group = interp
        outer.addWidget(interp)
        outer.addStretch(1)
        self.keys_label = QtWidgets.QLabel(
            "keys: " + " \N{MIDDLE DOT} ".join(f"{k} {what}" for k, what in SHORTCUTS))
        self.keys_label.setWordWrap(True)
        font = self.keys_label.font()
        font.setPointSizeF(font.pointSizeF() * 0.85)
        self.keys_label.setFont(font)
        outer.addWidget(self.keys_label)
        panel.setMaximumWidth(320)
        return panel

    def _add_shortcuts(self) -> None:
        """The keys of :data:`SHORTCUTS` that act rather than focus (the others are the
        labels' and check boxes' own mnemonics)."""
        for keys, action in (
            ("Alt+C", lambda: self._cycle(self.channel_box)),
            ("Alt+Z", lambda: self._cycle(self.z_box)),
            ("Alt+T", self.mode_button.click),  # no-op while disabled (binary interpreter)
            ("Alt+P", self.pause_button.click),  # no-op while read-only
            ("Alt+R", self.reset_view),
            ("Ctrl+W", self.close),
        ):
            shortcut = QtGui.QShortcut(QtGui.QKeySequence(keys), self)
            shortcut.activated.connect(action)

    @staticmethod
    def _cycle(box: QtWidgets.QComboBox | QtWidgets.QSpinBox) -> None:
        if not box.isEnabled():
            return
        if isinstance(box, QtWidgets.QComboBox):
            box.setCurrentIndex((box.currentIndex() + 1) % max(1, box.count()))
        else:
            box.setValue(box.minimum() if box.value() >= box.maximum() else box.value() + 1)

    def reset_view(self) -> None:
        """Show the whole frame and let the decision plot follow the data again."""
        self.view.autoRange(padding=0)
        self.plot.getViewBox().enableAutoRange(x=True)
        self._follow_y = True
        self._dirty = True

    # -- controls ----------------------------------------------------------------------------
    def _edit(self, key: str, value: float) -> bool:
        """A control edited by a person: check it, send it, update the plot's lines."""
        current = getattr(self.settings, key, None)
        if current is not None and float(current) == value:
            return False
        try:
            changed = self.settings.with_changes(
                {key: int(value) if key == "min_fast_frames" else value}, source="viewer")
        except ConfigError as exc:
            message = str(exc).splitlines()[-1].strip()
            self._note(f"refused: {message}")
            self._show_settings()
            return False
        if not self._send(key, value):
            self._show_settings()
            return False
        self.settings = changed
        self._show_settings()
        return True

    def _send(self, key: str, value: float) -> bool:
        if self.control_sender is None:
            self._note(f"controls off: {self._read_only_reason}")
            return False
        if self.control_sender.send(key, value):
            self._note(f"sent {key} = {value:g}")
            return True
        self._note(f"{key} = {value:g} dropped: the interpreter is not reading controls")
        return False

    def _mode_toggled(self, fast: bool) -> None:
        self.mode_button.setText("fast" if fast else "slow")
        self._send("mode", 1.0 if fast else 0.0)

    def _pause_toggled(self, paused: bool) -> None:
        self.pause_button.setText("resume analysis" if paused else "pause analysis")
        self._send("paused", 1.0 if paused else 0.0)

    def _show_settings(self) -> None:
        s = self.settings
        for box, value in ((self.lower_box, s.lower_threshold),
                           (self.upper_box, s.upper_threshold),
                           (self.slow_box, s.slow_interval), (self.fast_box, s.fast_interval)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.min_fast_box.blockSignals(True)
        self.min_fast_box.setValue(s.min_fast_frames)
        self.min_fast_box.blockSignals(False)
        self.lower_line.setValue(s.lower_threshold)
        self.upper_line.setValue(s.upper_threshold)

    def _note(self, text: str) -> None:
        self.control_note.setText(text)
        log.info("viewer: %s", text)

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

    # -- the loop ----------------------------------------------------------------------------
    def tick(self) -> None:
        """One timer tick: poll the feed, redraw what changed, refresh the status line."""
        if self._closing:
            return
        if self._stop is not None and self._stop():
            self.end_reason = "run stopped"
            self.close()
            return
        feed = self.feed
        if feed.run_ended:
            self._run_ended()
            return
        new_image = False
        if self.overlay_box.isChecked() and feed.has_images:
            # Draw the stack the network saw: its copy comes with the image's.
            new_image = feed.poll_image()
            new_stack = not feed.image_stack_ok and feed.poll_stack()
        else:
            new_stack = feed.poll_stack()
        new_rows = feed.poll_trace()
        if new_stack or new_image or self._dirty:
            self._draw_frame()
        if new_rows:
            self._draw_plot()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + _STATUS_PERIOD_S
            self._draw_status(now)

    def _shown_stack(self) -> tuple[np.ndarray, int, bool]:
        """(stack, seq, with overlay): the frame a network image came from when the overlay
        is on and that stack was still in the ring, else the newest stack."""
        feed = self.feed
        if (self.overlay_box.isChecked() and feed.image_seq >= 0 and feed.image_stack_ok
                and feed.image_stack is not None):
            return feed.image_stack, feed.image_seq, True
        return feed.stack, feed.stack_seq, self.overlay_box.isChecked() and feed.image_seq >= 0

    def _draw_frame(self) -> None:
        stack, seq, with_overlay = self._shown_stack()
        if seq < 0:
            return
        c, z = self.channel_box.currentIndex(), self.z_box.value()
        frame = stack[c, z]
        spec = self.feed.spec
        (x0, x1), (y0, y1) = self.view.viewRange()
        px = self.view.viewPixelSize()
        block = visible_block(spec.height, spec.width, (x0, x1), (y0, y1), min(px))
        shown = self._raster.fill(frame, block)
        if self.auto_contrast.isChecked():
            self._levels = self._auto_levels(shown)
        self.image.setImage(shown, autoLevels=False, levels=self._levels)
        rows, cols = block.shape
        self.image.setRect(QtCore.QRectF(block.x0, block.y0, cols * block.step,
                                         rows * block.step))
        now = time.monotonic()
        if now >= self._next_histogram:
            self._next_histogram = now + _HISTOGRAM_PERIOD_S
            self._setting_levels = True
            self.histogram.imageChanged()  # histogram of what is shown; region = its levels
            self._setting_levels = False
        self.overlay.setVisible(with_overlay)
        if with_overlay:
            self._draw_overlay((x0, x1), (y0, y1), min(px))
        self.draws += 1
        key = (seq, c, z, with_overlay)
        if key[0] != self._shown_key[0]:
            self.frames_shown += 1
        self._shown_key = key
        self._dirty = False

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

    def _draw_status(self, now: float) -> None:
        st = self.feed.status()
        self.last_status = st
        t_mark, n_mark = self._fps_mark
        if now - t_mark >= 1.0:
            self._display_fps = (self.frames_shown - n_mark) / (now - t_mark)
            self._fps_mark = (now, self.frames_shown)
        workers = f"{st.workers_seen}" + (f"/{self._workers}" if self._workers else "")
        state = "fast" if st.fast else "slow"
        if self.settings.kind == "manual":
            state = "manual"
        latency = (f"{st.latency_p50_ms:.1f}/{st.latency_p99_ms:.1f} ms"
                   if math.isfinite(st.latency_p50_ms) else "-")
        self.status_label.setText(
            f"shown stack #{self._shown_key[0]}  newest image #{st.image_seq}  |  "
            f"acquired {st.acquired_per_s:.1f}/s  analysed {st.analysed_per_s:.1f}/s  "
            f"skipped {st.skipped}  |  "
            f"exposure->decision p50/p99 {latency}  |  workers {workers}  |  interval "
            f"{st.interval_s:.3g} s ({state})  |  decisions {st.decisions}  |  "
            f"display {self._display_fps:.1f} fps")
        if self._state_path is not None:
            self._write_state()

    def state(self) -> dict[str, object]:
        """What the window shows and every control's value, as plain JSON types."""
        s = self.settings
        geometry = self.geometry()
        return {
            "pid": os.getpid(), "t": time.monotonic(),
            "frames_shown": self.frames_shown, "draws": self.draws,
            "display_fps": self._display_fps, "shown_stack": self._shown_key[0],
            "image_seq": self.feed.image_seq,
            "image_max": self.image_max if math.isfinite(self.image_max) else None,
            "overlay_enabled": self.overlay_box.isEnabled(),
            "overlay_checked": self.overlay_box.isChecked(),
            "overlay_visible": self.overlay.isVisible(),
            "channel": self.channel_box.currentIndex(), "z": self.z_box.value(),
            "auto_contrast": self.auto_contrast.isChecked(), "opacity": self.opacity.value(),
            "paused": self.pause_button.isChecked(), "mode_fast": self.mode_button.isChecked(),
            "lower_threshold": s.lower_threshold, "upper_threshold": s.upper_threshold,
            "min_fast_frames": s.min_fast_frames, "slow_interval": s.slow_interval,
            "fast_interval": s.fast_interval, "manual_interval": s.manual_interval,
            "controls_sent": getattr(self.control_sender, "sent", 0),
            "controls_dropped": getattr(self.control_sender, "dropped", 0),
            "note": self.control_note.text(), "follow_y": self._follow_y,
            "geometry": [geometry.x(), geometry.y(), geometry.width(), geometry.height()],
            "view_range": [list(map(float, r)) for r in self.view.viewRange()],
        }

    def _write_state(self) -> None:
        assert self._state_path is not None
        tmp = self._state_path.with_name(self._state_path.name + ".tmp")
        with contextlib.suppress(OSError):  # a probe for tests: never a reason to fail
            tmp.write_text(json.dumps(self.state()))
            tmp.replace(self._state_path)

    def _run_ended(self) -> None:
        self.end_reason = "run ended"
        if self._quit_on_end:
            self.close()
            return
        self._timer.stop()
        self.feed.close()
        self.controls_group.setEnabled(False)
        self.status_label.setText(self.status_label.text() + "  |  RUN ENDED")
        log.info("viewer: the run has ended")

    # -- lifecycle ---------------------------------------------------------------------------
    def statistics(self) -> dict[str, float]:
        """Counters for tests and benchmarks: stacks shown, draws, display fps."""
        return {"frames_shown": self.frames_shown, "draws": self.draws,
                "display_fps": self._display_fps}

    def closeEvent(self, event: QtGui.QCloseEvent | None) -> None:
        """Stop the timer, the control sender and the feed, then close."""
        self._closing = True
        self._timer.stop()
        if self.control_sender is not None:
            self.control_sender.close()
        self.feed.close()
        self.closed.emit()
        super().closeEvent(event)


def run_window(feed: LiveFeed, settings: InterpreterConfig, *, max_fps: float,
               sender: ControlSender | None, read_only_reason: str = "",
               stop: Callable[[], bool] | None = None, quit_on_end: bool = True,
               workers: int = 0,
               on_shown: Callable[[ViewerWindow], None] | None = None,
               state_path: str | Path | None = None) -> str:
    """Show a :class:`ViewerWindow` and run the Qt event loop until it closes.

    Returns why it closed: ``"window closed"`` (by a person), ``"run stopped"`` (``stop``
    returned True) or ``"run ended"`` (the ring was shut). Creates the ``QApplication`` if
    there is none.
    """
    app = pg.mkQApp("rt-eda viewer")
    window = ViewerWindow(feed, settings, max_fps=max_fps, sender=sender,
                          read_only_reason=read_only_reason, stop=stop,
                          quit_on_end=quit_on_end, workers=workers, state_path=state_path)
    window.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose, False)
    window.closed.connect(app.quit)
    window.show()
    shape = feed.image_shape
    log.info("viewer: window shown; %s", f"network-image overlay on ({shape[0]} x {shape[1]})"
             if shape else "this run makes no network images (overlay off)")
    if on_shown is not None:
        on_shown(window)
    app.exec()
    reason = window.end_reason
    # Delete the widgets now, not in the interpreter's final garbage collection (pyqtgraph
    # items finalized in arbitrary order there can touch deleted C++ objects).
    window.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    del window
    gc.collect()
    return reason
