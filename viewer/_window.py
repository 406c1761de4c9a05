"""The viewer window (Qt, pyqtgraph): frames, network-image overlay, decisions, controls.

One timer drives everything at ``viewer.max_fps``: each tick polls the
:class:`~rt_eda.live.feed.LiveFeed` (copies of the newest stack, network image and
decision records) and redraws what changed. Frames are drawn through a
:class:`~rt_eda.live.raster.Raster` (only the visible part, at about screen resolution),
so a 2048 x 2048 frame costs what the window's pixels cost.

Layout::

    +-------------------------------------------+-----------+--------------+
    | frame (+ network image, inferno, opacity) | histogram | display      |
    |                                           | / LUT     | (position)   |
    +-------------------------------------------+-----------+ interpreter  |
    | decision over time, lower/upper thresholds, fast/slow shaded         | intervals    |
    +----------------------------------------------------------------------+ manual, pause|
    | several positions: every position's decisions, small multiples       |              |
    +----------------------------------------------------------------------+--------------+
    status: acquired/s, analysed/s, skipped, latency p50/p99, ...   (actions: in the panel)

The frame shows the shown stack's event regions and, for a stack read from a region of the
sensor, that region (dashed) with the stale pixels outside it blanked (:mod:`._plots`); the
status bar's right end says the newest action of each actuator at the position shown
(``roi 128x96 at (y=200,x=64) | stimulate 2 regions | channel fast``).

With several stage positions (an acquisition plan) the frame and the large decision plot are
the selected position's (the position selector, Alt+E), and a grid of small plots shows every
position's decisions and fast periods at once, the selected one framed.

The window is three modules, one concern each: this one (the window itself: the timer loop,
the status line, :meth:`ViewerWindow.state`, closing), :mod:`._plots` (the frame with its
overlay and histogram, the decision plot) and :mod:`._panel` (the controls and their keys),
the last two as mixins of :class:`ViewerWindow`.

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

import numpy as np

from rt_eda.core.config import InterpreterConfig
from rt_eda.live.controls import ControlSender
from rt_eda.live.feed import FeedStatus, LiveFeed, describe_actions
from rt_eda.live.raster import Raster

from ._panel import SHORTCUTS, ControlPanel
from ._plots import Plots
from ._qt import QtCore, QtGui, QtWidgets, pg

__all__ = ["SHORTCUTS", "ViewerWindow", "run_window"]

log = logging.getLogger(__name__)

_STATUS_PERIOD_S = 0.25


class ViewerWindow(ControlPanel, Plots, QtWidgets.QMainWindow):
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
        position_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.feed = feed
        self.position_names = tuple(position_names)
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
        graphics = self._build_frame_view()
        plot = self._build_decision_plot()
        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        left.addWidget(graphics)
        left.addWidget(plot)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 1)
        self.small_plots = []
        if self.feed.positions > 1:
            left.addWidget(self._build_small_multiples())
            left.setStretchFactor(2, 2)
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

    def reset_view(self) -> None:
        """Show the whole frame and let the decision plot follow the data again."""
        self.view.autoRange(padding=0)
        self.plot.getViewBox().enableAutoRange(x=True)
        self._follow_y = True
        self._dirty = True

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
        elif new_rows and feed.regions_changed >= 0:
            self._draw_regions()  # the shown stack's result may have come in since
        if new_rows:
            self._draw_plot()
            if self.small_plots:
                self._draw_small_multiples()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + _STATUS_PERIOD_S
            self._draw_status(now)

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
        actions = describe_actions(self.feed.actions())
        self.actions_label.setText(f"actions: {actions}" if actions else "")
        self.actions_group.setVisible(bool(actions))
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
            "position": self.feed.position, "positions": self.feed.positions,
            "position_choice": self.position_box.currentIndex(),
            "small_multiples": len(self.small_plots),
            "position_decisions": [h.n for h in self.feed.position_decisions],
            "position_fast_now": [bool(h.n and h.v[h.n - 1] > 0.5)
                                  for h in self.feed.position_fast],
            "image_max": self.image_max if math.isfinite(self.image_max) else None,
            "overlay_enabled": self.overlay_box.isEnabled(),
            "overlay_checked": self.overlay_box.isChecked(),
            "overlay_visible": self.overlay.isVisible(),
            "regions_seq": self.regions_seq, "regions_exact": self.regions_exact,
            "regions_shown": [[b.y0, b.x0, b.y1, b.x1] for b in self.regions_shown],
            "roi_shown": (None if self.roi_shown is None else
                          [self.roi_shown.y, self.roi_shown.x, self.roi_shown.height,
                           self.roi_shown.width]),
            "actions": self.actions_label.text(),
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
               state_path: str | Path | None = None,
               position_names: tuple[str, ...] = ()) -> str:
    """Show a :class:`ViewerWindow` and run the Qt event loop until it closes.

    Returns why it closed: ``"window closed"`` (by a person), ``"run stopped"`` (``stop``
    returned True) or ``"run ended"`` (the ring was shut). Creates the ``QApplication`` if
    there is none.
    """
    app = pg.mkQApp("rt-eda viewer")
    window = ViewerWindow(feed, settings, max_fps=max_fps, sender=sender,
                          read_only_reason=read_only_reason, stop=stop,
                          quit_on_end=quit_on_end, workers=workers, state_path=state_path,
                          position_names=position_names)
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
