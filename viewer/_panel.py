"""The viewer window's control panel: display choices, the interpreter's controls, the keys.

A mixin of :class:`~rt_eda.viewer._window.ViewerWindow`: its widgets are attributes of the
window (``window.upper_box``...), as the tests and the state file know them.
:meth:`ControlPanel._build_panel` makes the widgets, :meth:`ControlPanel._add_shortcuts`
gives every control a key (:data:`SHORTCUTS`), and the controls are checked locally against
the interpreter's settings (a value the interpreter would refuse is refused here, with its
message) before a :class:`~rt_eda.live.controls.ControlSender` sends them, never blocking.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rt_eda.core.config import InterpreterConfig
from rt_eda.core.errors import ConfigError
from rt_eda.live.controls import ControlSender
from rt_eda.live.feed import LiveFeed

from ._plots import OVERLAY_OPACITY
from ._qt import QtCore, QtGui, QtWidgets

__all__ = ["SHORTCUTS", "ControlPanel"]

log = logging.getLogger(__name__)

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Alt+E", "next stage position (a run of several)"),
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


def _spin(value: float, lo: float, hi: float, decimals: int, suffix: str = "") -> Any:
    box = QtWidgets.QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setValue(value)
    box.setKeyboardTracking(False)
    if suffix:
        box.setSuffix(suffix)
    return box


if TYPE_CHECKING:
    _Window = QtWidgets.QMainWindow
else:
    _Window = object


class ControlPanel(_Window):
    """The panel beside the frame and what its controls do (a mixin of the window).

    Uses the window's ``feed``, ``settings``, ``control_sender``, its threshold lines
    (``lower_line``, ``upper_line``, from :class:`~rt_eda.viewer._plots.Plots`),
    ``overlay``, ``reset_view`` and ``_mark_dirty``.
    """

    feed: LiveFeed
    settings: InterpreterConfig
    control_sender: ControlSender | None
    position_names: tuple[str, ...]
    _read_only_reason: str
    lower_line: Any
    upper_line: Any
    overlay: Any

    if TYPE_CHECKING:  # the window's and Plots' own (not defined here: the MRO finds theirs)

        def reset_view(self) -> None: ...

        def _mark_dirty(self, *_: object) -> None: ...

        def _position_changed(self) -> None: ...

    def _build_panel(self) -> QtWidgets.QWidget:
        spec = self.feed.spec
        s = self.settings
        panel = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(panel)

        display = QtWidgets.QGroupBox("Display")
        form = QtWidgets.QFormLayout(display)
        self.position_box = QtWidgets.QComboBox()
        names = list(self.position_names)
        self.position_box.addItems([f"{p}: {names[p]}" if p < len(names) else str(p)
                                    for p in range(self.feed.positions)])
        self.position_box.setEnabled(self.feed.positions > 1)
        self.position_box.currentIndexChanged.connect(self._position_chosen)
        # Alt+E is a shortcut (next position), so no mnemonic here: with both, Qt finds the
        # key ambiguous and neither fires
        form.addRow("stage position", self.position_box)
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
        self.opacity.setValue(OVERLAY_OPACITY)
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
        # The newest action of each actuator (issue 16); hidden until there is one.
        self.actions_group = QtWidgets.QGroupBox("Actions")
        actions_layout = QtWidgets.QVBoxLayout(self.actions_group)
        self.actions_label = QtWidgets.QLabel("")
        self.actions_label.setWordWrap(True)
        self.actions_label.setToolTip("the newest action of each actuator at this position")
        actions_layout.addWidget(self.actions_label)
        self.actions_group.setVisible(False)
        outer.addWidget(self.actions_group)
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
            ("Alt+E", lambda: self._cycle(self.position_box)),
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

    def _position_chosen(self, position: int) -> None:
        """Show another stage position: its newest frame and its decisions in the large
        plot (the small multiples show every one)."""
        if 0 <= position < self.feed.positions:
            self.feed.select(position)
            self._mark_dirty()
            self._position_changed()

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
