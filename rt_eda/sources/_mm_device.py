"""Setting up a Micro-Manager device for the Micro-Manager source: loading a hardware
configuration, checking it against the settings, and applying a frame's preset and position.

* :func:`load_core`: finds the device adapters and the configuration file (the DemoCamera's
  from the mm-test-adapters package for ``mm-demo``) and makes the pymmcore-plus core;
  pymmcore-plus is imported here, inside the call, so the engine never loads it.
* :func:`configure`: loads the configuration and applies the settings (properties, exposure
  within the camera's own limits, circular buffer), checks the channel group, presets and
  focus device the settings name, and returns the stack shape. Bad configuration is a
  :class:`~rt_eda.core.errors.ConfigError` naming the key (``camera.source``,
  ``camera.exposure_ms``, ``camera.channel_group``, ``camera.channels``,
  ``camera.z_positions``), with Micro-Manager's own message on one line.
* :class:`Positioner`: applies a frame's channel preset and z position, only when they change.
* :func:`call`: every Micro-Manager call whose failure is a
  :class:`~rt_eda.core.errors.SourceError` goes through it, keeping Micro-Manager's message.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.shm import StackSpec

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from ._mm_settings import MicroManagerSettings

__all__ = [
    "DEMO_CONFIG_NAME",
    "Positioner",
    "call",
    "configure",
    "demo_adapter_path",
    "load_core",
    "one_line",
    "wall_to_monotonic",
]

log = logging.getLogger("rt_eda.sources.micromanager")

DEMO_CONFIG_NAME: Final = "MMConfig_demo.cfg"
"""The DemoCamera configuration shipped in the mm-test-adapters package's adapter folder."""

_DTYPES: Final = {1: "uint8", 2: "uint16", 4: "uint32"}


def demo_adapter_path() -> str:
    """The mm-test-adapters folder (DemoCamera and :data:`DEMO_CONFIG_NAME`).

    Raises
    ------
    SourceError
        The mm-test-adapters package is not installed.
    """
    try:
        import mm_test_adapters
    except ImportError as exc:
        raise SourceError(
            f"mm-demo needs the mm-test-adapters package (pip install mm-test-adapters): {exc}"
        ) from exc
    return str(mm_test_adapters.device_adapter_path())


def one_line(exc: BaseException) -> str:
    """Micro-Manager's message on one line (it spans several: the line of the .cfg, then
    what went wrong, nested in brackets)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``; a Micro-Manager failure becomes SourceError keeping its message."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:
        raise SourceError(f"Micro-Manager: {what} failed: {one_line(exc)}") from exc


def wall_to_monotonic() -> float:
    """``time.monotonic() - time.time()``, from the tightest of a few paired readings."""
    best_gap, offset = math.inf, 0.0
    for _ in range(5):
        m0 = time.monotonic()
        w = time.time()
        m1 = time.monotonic()
        if m1 - m0 < best_gap:
            best_gap, offset = m1 - m0, (m0 + m1) / 2 - w
    return offset


def load_core(settings: MicroManagerSettings) -> tuple[CMMCorePlus, str, str]:
    """A pymmcore-plus core for ``settings`` (nothing loaded yet), its adapter folder and the
    configuration file to load.

    Raises
    ------
    SourceError
        pymmcore-plus (or, for the demo, mm-test-adapters) is not installed.
    ConfigError
        The configuration file does not exist.
    """
    try:
        from pymmcore_plus import CMMCorePlus, find_micromanager
    except ImportError as exc:
        raise SourceError(f"micromanager source needs pymmcore-plus: {exc}") from exc
    s = settings
    if s.adapter_path is not None:
        adapters = s.adapter_path
    elif s.config_path is None:
        adapters = demo_adapter_path()
    else:
        found = find_micromanager()
        adapters = found if found is not None else demo_adapter_path()
    cfg = s.config_path if s.config_path is not None else str(Path(adapters) / DEMO_CONFIG_NAME)
    if not Path(cfg).is_file():
        raise ConfigError(f"camera.source: Micro-Manager configuration {cfg} does not exist")
    if s.python_devices:
        from pymmcore_plus.experimental.unicore import UniMMCore

        return UniMMCore(mm_path=adapters), adapters, cfg
    return CMMCorePlus(mm_path=adapters), adapters, cfg


class Positioner:
    """Applies a frame's channel preset and z position, only when they change.

    A preset or position whose change failed is forgotten, so the next frame tries again.
    The presets start as the settings' channels and can be changed between timepoints
    (:meth:`set_presets`, an actuator's choice); the next :meth:`apply` of a channel whose
    preset changed applies it.
    """

    def __init__(self, settings: MicroManagerSettings) -> None:
        self._settings = settings
        self._channel: int | None = None
        self._z: int | None = None
        self.z_base = 0.0  # added to the z positions when they are relative (a plan's)
        self.group = settings.channel_group
        self.presets: tuple[str, ...] = settings.channels

    def set_base(self, z: float) -> None:
        """Relative z positions are offsets from ``z`` from now on (a new position)."""
        if z != self.z_base:
            self.z_base = z
            self._z = None

    def use_group(self, core: CMMCorePlus) -> None:
        """Find the channel group and the presets once the configuration is loaded.

        With channels in the settings: their group and presets. Without: the settings'
        group, else the configuration's channel group (``ChannelGroup`` of the core), and
        the one preset its state matches now (``""`` when none), taken as applied: nothing
        is changed until :meth:`set_presets` asks.
        """
        s = self._settings
        if s.channels:
            return
        self.group = s.channel_group or str(core.getChannelGroup())
        if self.group and self.group in core.getAvailableConfigGroups():
            self.presets = (str(core.getCurrentConfig(self.group)),)
            self._channel = 0
        else:
            self.group, self.presets = "", ()

    def set_presets(self, presets: tuple[str, ...]) -> None:
        """Image channel ``c`` with ``presets[c]`` from the next :meth:`apply` of it on."""
        if presets != self.presets:
            self.presets = presets
            self._channel = None

    def apply(self, core: CMMCorePlus, c: int, z: int) -> None:
        """Apply channel preset ``c`` and z position ``z`` if not already applied.

        Raises
        ------
        SourceError
            Micro-Manager refused the preset or the position (its message kept).
        """
        s = self._settings
        if self.presets and self._channel != c:
            preset, group = self.presets[c], self.group
            self._channel = None
            call(f"applying preset {group!r}/{preset!r} (channel {c})",
                 core.setConfig, group, preset)
            call(f"waiting for preset {preset!r}", core.waitForConfig, group, preset)
            self._channel = c
        if s.z_positions and self._z != z:
            pos = s.z_positions[z] + (self.z_base if s.z_relative else 0.0)
            focus = core.getFocusDevice()
            self._z = None
            call(f"moving {focus} to z = {pos} um (z index {z})", core.setPosition, pos)
            call(f"waiting for {focus}", core.waitForDevice, focus)
            self._z = z


def configure(core: CMMCorePlus, cfg: str, settings: MicroManagerSettings,
              positioner: Positioner) -> tuple[StackSpec, float]:
    """Load ``cfg`` into ``core`` and apply ``settings``; the stack shape and the exposure
    the camera reports (seconds).

    Raises
    ------
    ConfigError
        The configuration does not load or sets no camera; the exposure is outside the
        camera's limits; the channel group, a preset or the focus device is missing.
    SourceError
        A property or the exposure is refused, the camera gives colour images or a pixel
        size rt-eda does not take.
    """
    from pymmcore_plus import CMMCorePlus

    s = settings
    try:
        # Micro-Manager's own (C++) loader, also on a UniMMCore, whose Python re-implementation
        # tries a missing adapter as a Python module (an ImportError instead of Micro-Manager's
        # message): the configuration loads, and fails, the same with or without
        # ``python_devices`` (Python devices are loaded later, by whoever needs one).
        CMMCorePlus.loadSystemConfiguration(core, cfg)
    except (RuntimeError, OSError) as exc:  # pymmcore-plus re-raises load errors as OSError
        raise ConfigError(
            f"camera.source: Micro-Manager could not load {cfg}: {one_line(exc)}"
        ) from None
    for device, prop, value in s.properties:
        call(f"setting {device}.{prop} = {value!r}", core.setProperty, device, prop, value)
    camera = core.getCameraDevice()
    if not camera:
        raise ConfigError(
            f"camera.source: Micro-Manager configuration {cfg} sets no camera device "
            f"(devices: {list(core.getLoadedDevices())[:12]})"
        )
    exposure_s = set_exposure(core, camera, s.exposure_ms)
    if s.buffer_mb is not None:
        call(
            f"setting the circular buffer to {s.buffer_mb} MB",
            core.setCircularBufferMemoryFootprint, s.buffer_mb,
        )
    if core.getNumberOfComponents() != 1:
        raise SourceError(
            f"micromanager source: camera {camera} gives {core.getNumberOfComponents()}-"
            "component (colour) images; rt-eda acquires one grey value per pixel"
        )
    if s.channels:
        groups = list(core.getAvailableConfigGroups())
        if s.channel_group not in groups:
            raise ConfigError(
                f"camera.channel_group: {s.channel_group!r} is not a group of {cfg} "
                f"(groups: {groups})"
            )
        presets = list(core.getAvailableConfigs(s.channel_group))
        missing = [c for c in s.channels if c not in presets]
        if missing:
            raise ConfigError(
                f"camera.channels: {missing} not in group {s.channel_group!r} of {cfg} "
                f"(presets: {presets})"
            )
    if s.z_positions and not core.getFocusDevice():
        raise ConfigError(
            f"camera.z_positions: {list(s.z_positions)} given, but {cfg} sets no focus device"
        )
    if any(x is not None and y is not None for x, y, _ in s.positions) and (
            not core.getXYStageDevice()):
        raise ConfigError(f"camera.plan: its positions give x and y, but {cfg} sets no XY "
                          f"stage (devices: {list(core.getLoadedDevices())[:12]})")
    if any(z is not None for _, _, z in s.positions) and not core.getFocusDevice():
        raise ConfigError(f"camera.plan: its positions give z, but {cfg} sets no focus device")
    positioner.use_group(core)
    if s.z_relative and s.z_positions:
        positioner.set_base(float(core.getPosition()))
    if s.frames_per_stack == 1:  # the one preset / position, once, for sequences too
        positioner.apply(core, 0, 0)
    nbytes = core.getBytesPerPixel()
    if nbytes not in _DTYPES:
        raise SourceError(
            f"micromanager source: camera {camera} has {nbytes} bytes per pixel "
            f"(bit depth {core.getImageBitDepth()}); supported: {sorted(_DTYPES)}"
        )
    spec = StackSpec(
        max(1, len(s.channels)), max(1, len(s.z_positions)),
        core.getImageHeight(), core.getImageWidth(), _DTYPES[nbytes],
    )
    return spec, exposure_s


def set_exposure(core: CMMCorePlus, camera: str, asked: float) -> float:
    """Set the exposure (ms) after checking it against the camera's own limits; the
    exposure the camera then reports, in seconds (logged when it differs from the one asked).

    Raises
    ------
    ConfigError
        ``asked`` is outside the limits of the camera's ``Exposure`` property (both named).
    SourceError
        The camera refused it (Micro-Manager's message kept).
    """
    if core.hasProperty(camera, "Exposure") and core.hasPropertyLimits(camera, "Exposure"):
        low = core.getPropertyLowerLimit(camera, "Exposure")
        high = core.getPropertyUpperLimit(camera, "Exposure")
        if not low <= asked <= high:
            raise ConfigError(
                f"camera.exposure_ms: {asked:g} ms is outside what camera {camera!r} "
                f"({core.getDeviceLibrary(camera)} {core.getDeviceName(camera)}) allows: "
                f"{low:g} to {high:g} ms (the limits of its Exposure property)"
            )
    call(f"setting exposure {asked:g} ms on {camera}", core.setExposure, asked)
    got = float(core.getExposure())
    if not math.isclose(got, asked, rel_tol=0.01, abs_tol=1e-3):
        log.warning("micromanager source: camera %s set exposure %.6g ms (asked %.6g ms); "
                    "using %.6g ms", camera, got, asked, got)
    return got / 1000.0
