"""Micro-Manager cameras through pymmcore-plus: the demo camera (``mm-demo``) and real
hardware (``mmconfig:PATH``).

One class, :class:`MicroManagerSource`, drives any Micro-Manager hardware configuration. It is
built from :class:`MicroManagerSettings` (primitives only: it pickles to the camera process)
and imports pymmcore-plus only inside :meth:`~MicroManagerSource.open`, so the engine process
never loads Micro-Manager.

How frames are acquired
-----------------------
Two modes, chosen per interval (:attr:`AcquisitionMode`):

``sequence``
    ``startContinuousSequenceAcquisition``: the camera free-runs into Micro-Manager's circular
    buffer and frames are popped as they come. Used when a stack is one frame (one channel,
    one z position) *and* the interval is shorter than ``sequence_below_s`` (default 50 ms) or
    than twice the exposure; free-run (interval 0) included. With interval 0 every frame the
    camera produces becomes a timepoint. With an interval > 0 the interval is passed to the
    camera, but many cameras (the DemoCamera among them) ignore it and run at their exposure:
    the source then *decimates*, keeping the first frame exposed no earlier than half a camera
    frame period before the timepoint is due (the schedule is drift-free), so the frame kept
    is the one nearest the due time; the others are popped as they come (at most 1 ms after
    they arrive) and counted in ``mm_frames_skipped``. A camera that honours the interval
    has every frame kept.
``snap``
    Timed ``snapImage`` calls: the source sleeps until the timepoint is due, then for each
    frame applies the channel preset and the z position (only when they change) and snaps.
    Used for slow intervals and for every multi-frame stack (several channels or z
    positions): switching presets and moving the stage between frames of a running sequence
    would need hardware sequencing (triggered stages, sequenceable presets), which this
    source does not assume a configuration provides.

An interval change (:meth:`~MicroManagerSource.set_interval`) takes effect at the next
timepoint: a running sequence is stopped (frames still in the buffer are dropped and counted
in ``mm_frames_discarded``) and restarted with the new interval, or replaced by snaps.

Exposure times
--------------
:meth:`~MicroManagerSource.read_frame` returns when the frame's exposure began, on the
``time.monotonic()`` clock:

* sequence frames: Micro-Manager's ``TimeReceivedByCore`` tag (wall-clock, local time, set when
  the camera's thread inserted the frame into the circular buffer, after the exposure ended)
  converted to the monotonic clock with an offset sampled when the sequence started, minus
  the exposure time (readout time is not known and ignored). A frame without the tag, or one
  whose converted time is implausible (in the future, or before the sequence started), gets
  the time it was popped instead and is counted (``mm_timestamp_fallbacks``).
* snapped frames: the monotonic time just before ``snapImage`` was called.

Faults
------
Micro-Manager's circular buffer overflowing is detected from gaps in the ``ImageNumber`` tag
(the core numbers every frame it inserts; a camera that does not stop on overflow clears the
buffer and carries on, so ``isBufferOverflowed`` alone would miss it): each gap counts one
``mm_buffer_overflows`` and its size in ``mm_frames_lost``, with a warning in the log. A
sequence that stops by itself raises :class:`~rt_eda.core.errors.SourceError` (naming the overflow
when the buffer reports one). Every Micro-Manager call that fails raises
:class:`~rt_eda.core.errors.SourceError` with Micro-Manager's own message, on one line.

Bad configuration is found at :meth:`~MicroManagerSource.open` and raised as
:class:`~rt_eda.core.errors.ConfigError` (the run exits 2 before acquisition starts), keeping
Micro-Manager's message on one line: a hardware configuration that does not load (a device
library or device that does not exist, a property value refused, a syntax error, an empty
file), one that sets no camera, and an exposure outside the camera's own limits of its
``Exposure`` property (the DemoCamera allows 0 to 10 000 ms unless its
``MaximumExposureMs`` pre-init property says more). A camera that sets an exposure other than
the one asked (rounding) is logged, and the exposure it reports is used for the timestamps.

A stop is seen between frames (the camera role checks it) and while waiting for a timepoint
or a sequence frame; a snap or the stop of a sequence waits for the exposure in progress (the
DemoCamera cannot abort one, and leaving a device mid-exposure could leave its shutter open),
so a run with a long exposure ends within about one exposure of the stop.

Lifecycle (the :class:`~rt_eda.sources.Source` protocol; one thread drives it)::

    source = MicroManagerSource(MicroManagerSettings(exposure_ms=5))  # picklable until open()
    spec = source.open()                     # loads the configuration, sets exposure etc.
    source.start(0.0)                        # free-run: sequence acquisition
    t = source.next_timepoint(stop)
    for c, z in source.frame_order():
        t_exp = source.read_frame(c, z, slot[c, z])
    source.stop(); source.close()
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import numpy as np

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.core.stats import RecentWindow
from rt_eda.shm import StackSpec
from rt_eda.sources._settings import SettingsSource

from ._pacing import checked_interval, skip_missed, wait_until
from ._protocol import StopFlag

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from rt_eda.core.config import Config

__all__ = [
    "DEMO_CONFIG_NAME",
    "AcquisitionMode",
    "MicroManagerSettings",
    "MicroManagerSource",
    "demo_adapter_path",
    "make_micromanager_source",
]

log = logging.getLogger(__name__)

DEMO_CONFIG_NAME: Final = "MMConfig_demo.cfg"
"""The DemoCamera configuration shipped in the mm-test-adapters package's adapter folder."""

_TAG_TIME: Final = "TimeReceivedByCore"
_TAG_NUMBER: Final = "ImageNumber"
_SEQ_POLL_S: Final = 0.0002  # sleep while waiting for the next frame of a sequence
_SEQ_DRAIN_S: Final = 0.001  # longest sleep while frames come that are too early to keep
_ERRORS_KEPT: Final = 100_000  # interval errors kept for the percentiles (the newest)
_DTYPES: Final = {1: "uint8", 2: "uint16", 4: "uint32"}


class AcquisitionMode(StrEnum):
    """How the frames of a timepoint are acquired (see the module docstring)."""

    SEQUENCE = "sequence"
    SNAP = "snap"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(key: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"micromanager.{key} must be {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class MicroManagerSettings:
    """Settings of :class:`MicroManagerSource` (primitives only: it pickles to any process).

    Attributes
    ----------
    config_path
        A Micro-Manager hardware configuration (``.cfg``), or None for the DemoCamera
        configuration (:data:`DEMO_CONFIG_NAME` from the mm-test-adapters package).
    exposure_ms
        Camera exposure in milliseconds (> 0); set at :meth:`MicroManagerSource.open`.
    channel_group, channels
        The configuration group holding the channel presets and the presets of one stack, in
        acquisition order. No channels: the stack has one channel and no preset is applied.
    z_positions
        Absolute positions (micrometres) of the focus device, in acquisition order; none:
        one z-slice at wherever the stage is.
    buffer_mb
        Micro-Manager's circular-buffer size in MB (``setCircularBufferMemoryFootprint``);
        None keeps Micro-Manager's default.
    sequence_below_s
        Single-frame stacks use sequence acquisition for intervals below this (seconds), or
        below twice the exposure; 0 means only below twice the exposure (and free-run).
    properties
        ``(device, property, value)`` triples set after the configuration is loaded (for
        example ``("Camera", "FastImage", "1")`` for a faster DemoCamera).
    adapter_path
        Folder of the device adapters; None: mm-test-adapters' folder for the demo, else
        ``pymmcore_plus.find_micromanager()``.

    Raises
    ------
    ConfigError
        On construction, for any value not allowed (the key, the value and what is allowed).
    """

    config_path: str | None = None
    exposure_ms: float = 10.0
    channel_group: str = ""
    channels: tuple[str, ...] = ()
    z_positions: tuple[float, ...] = ()
    buffer_mb: int | None = None
    sequence_below_s: float = 0.05
    properties: tuple[tuple[str, str, str], ...] = ()
    adapter_path: str | None = None

    def __post_init__(self) -> None:
        if self.config_path is not None and not isinstance(self.config_path, str):
            _bad("config_path", self.config_path, "a path (str) or None for the demo")
        if (
            not _is_number(self.exposure_ms)
            or not math.isfinite(self.exposure_ms)
            or self.exposure_ms <= 0
        ):
            _bad("exposure_ms", self.exposure_ms, "a finite number > 0 (milliseconds)")
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "z_positions", tuple(self.z_positions))
        object.__setattr__(self, "properties", tuple(tuple(p) for p in self.properties))
        if not all(isinstance(c, str) and c for c in self.channels):
            _bad("channels", self.channels, "a list of non-empty preset names")
        if self.channels and not (isinstance(self.channel_group, str) and self.channel_group):
            _bad("channel_group", self.channel_group, "the group of the channel presets")
        if not all(_is_number(z) and math.isfinite(z) for z in self.z_positions):
            _bad("z_positions", self.z_positions, "a list of finite numbers (micrometres)")
        if self.buffer_mb is not None and (
            not isinstance(self.buffer_mb, int) or isinstance(self.buffer_mb, bool)
            or self.buffer_mb < 1
        ):
            _bad("buffer_mb", self.buffer_mb, "an integer >= 1 (MB) or None")
        if (
            not _is_number(self.sequence_below_s)
            or not math.isfinite(self.sequence_below_s)
            or self.sequence_below_s < 0
        ):
            _bad("sequence_below_s", self.sequence_below_s, "a finite number >= 0 (seconds)")
        for prop in self.properties:
            if len(prop) != 3 or not all(isinstance(p, str) for p in prop):
                _bad("properties", prop, "(device, property, value) string triples")

    @property
    def exposure_s(self) -> float:
        """The exposure in seconds."""
        return self.exposure_ms / 1000.0

    @property
    def frames_per_stack(self) -> int:
        """Channels x z positions (each at least 1)."""
        return max(1, len(self.channels)) * max(1, len(self.z_positions))

    def mode_for(self, interval_s: float) -> AcquisitionMode:
        """The acquisition mode used at ``interval_s`` (see the module docstring)."""
        if self.frames_per_stack == 1 and (
            interval_s < self.sequence_below_s or interval_s < 2.0 * self.exposure_s
        ):
            return AcquisitionMode.SEQUENCE
        return AcquisitionMode.SNAP


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


def make_micromanager_source(config: Config) -> MicroManagerSource:
    """The source for ``camera.source = "mm-demo"`` or ``"mmconfig:PATH"`` (not opened).

    Raises
    ------
    ConfigError
        ``camera.source`` is not a Micro-Manager source, or a camera value is not allowed.
    """
    from rt_eda.core.config import SourceKind

    spec = config.camera.source_spec
    if spec.kind not in (SourceKind.MM_DEMO, SourceKind.MMCONFIG):
        raise ConfigError(
            f"camera.source: {config.camera.source!r} is not a Micro-Manager source "
            "(expected 'mm-demo' or 'mmconfig:PATH')"
        )
    cam = config.camera
    return MicroManagerSource(
        MicroManagerSettings(
            config_path=None if spec.path is None else str(spec.path),
            exposure_ms=float(cam.exposure_ms),
            channel_group=cam.channel_group,
            channels=tuple(cam.channels),
            z_positions=tuple(float(z) for z in cam.z_positions),
        )
    )


@dataclass(slots=True)
class _Counters:
    timepoints: int = 0
    frames: int = 0
    popped: int = 0
    skipped: int = 0
    discarded: int = 0
    overflows: int = 0
    lost: int = 0
    camera_frames_done: int = 0  # frames numbered by the core in sequences already stopped
    sequence_starts: int = 0
    mode_switches: int = 0
    timepoints_late: int = 0
    timestamp_fallbacks: int = 0
    freerun_first: float = math.nan
    freerun_last: float = math.nan
    freerun_frames: int = 0


class MicroManagerSource(SettingsSource[MicroManagerSettings]):
    """A Micro-Manager camera (and its channel presets and z stage) as an rt-eda source.

    Not thread-safe: the camera role's thread drives it (the pymmcore-plus core belongs to
    that thread). See the module docstring for the modes, the timestamps and the faults.
    """

    def __init__(self, settings: MicroManagerSettings) -> None:
        self._settings = settings
        self._core: CMMCorePlus | None = None
        self._md: Any = None  # a pymmcore.Metadata, reused for every pop
        self._spec: StackSpec | None = None
        self._adapter_path = ""
        self._config_file = ""
        self._running = False
        self._started = False
        self._interval = 0.0
        self._mode = AcquisitionMode.SNAP
        self._interval_changed = False
        self._t_current: float | None = None  # the current timepoint's scheduled time
        self._t_first: float | None = None  # its first frame's exposure time
        self._prev_first: float | None = None
        self._prev_interval: float | None = None
        # sequence state
        self._seq_interval: float | None = None  # None: no sequence running
        self._seq_t_start = 0.0
        self._wall_to_mono = 0.0
        self._expected_number: int | None = None
        self._last_number = -1
        self._prev_pop_t: float | None = None
        self._period = settings.exposure_s
        self._exposure_s = settings.exposure_s  # what the camera reports after open()
        self._held: np.ndarray | None = None
        self._held_t = 0.0
        self._warned_timestamps = False
        # snap state
        self._channel_applied: int | None = None
        self._z_applied: int | None = None
        self._counters = _Counters()
        self._errors_ms = RecentWindow(_ERRORS_KEPT)


    # ------------------------------------------------------------------ properties

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack (what :meth:`open` returned).

        Raises
        ------
        SourceError
            The source is not open.
        """
        if self._spec is None:
            raise SourceError("micromanager source: spec is known only after open()")
        return self._spec

    @property
    def core(self) -> CMMCorePlus:
        """The pymmcore-plus core (after :meth:`open`), for inspection and tests.

        Raises
        ------
        SourceError
            The source is not open.
        """
        if self._core is None:
            raise SourceError("micromanager source: not open")
        return self._core

    @property
    def mode(self) -> AcquisitionMode:
        """The acquisition mode of the current timepoint."""
        return self._mode

    # ------------------------------------------------------------------ Source protocol

    def open(self) -> StackSpec:
        """Load the configuration, apply the settings, and return the stack shape.

        The DemoCamera configuration is 512 x 512 ``uint16`` unless ``properties`` change it.
        Calling it again on an open source is a no-op.

        Returns
        -------
        StackSpec
            ``(len(channels) or 1, len(z_positions) or 1, height, width)``, ``dtype`` from the
            camera's bytes per pixel (1: uint8, 2: uint16, 4: uint32).

        Raises
        ------
        SourceError
            pymmcore-plus missing, a property, the exposure or the stage refuses a value
            (Micro-Manager's message kept), or the camera is colour or of an unsupported
            pixel size.
        ConfigError
            The configuration does not load (Micro-Manager's message kept, on one line) or
            sets no camera; the exposure is outside the camera's limits (named);
            ``channel_group`` or a preset of ``channels`` is not in the configuration, or z
            positions are given without a focus device (available names listed).
        """
        if self._core is not None:
            return self.spec
        s = self._settings
        try:
            from pymmcore_plus import CMMCorePlus, find_micromanager
        except ImportError as exc:
            raise SourceError(f"micromanager source needs pymmcore-plus: {exc}") from exc
        import pymmcore_plus

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
        t = time.perf_counter()
        core = CMMCorePlus(mm_path=adapters)
        self._core = core
        self._adapter_path, self._config_file = adapters, cfg
        try:
            self._configure(core, cfg)
        except BaseException:
            self.close()
            raise
        import pymmcore

        self._md = pymmcore.Metadata()
        log.info(
            "micromanager source open: %s from %s (adapters %s, pymmcore-plus %s): %s %s, "
            "exposure %.4g ms, buffer %d MB, %.2f s to load",
            core.getCameraDevice(), cfg, adapters, pymmcore_plus.__version__,
            self.spec.shape, self.spec.dtype, core.getExposure(),
            core.getCircularBufferMemoryFootprint(), time.perf_counter() - t,
        )
        return self.spec

    def _configure(self, core: CMMCorePlus, cfg: str) -> None:
        s = self._settings
        try:
            core.loadSystemConfiguration(cfg)
        except (RuntimeError, OSError) as exc:  # pymmcore-plus re-raises load errors as OSError
            raise ConfigError(
                f"camera.source: Micro-Manager could not load {cfg}: {_one_line(exc)}"
            ) from None
        for device, prop, value in s.properties:
            _call(f"setting {device}.{prop} = {value!r}", core.setProperty, device, prop, value)
        camera = core.getCameraDevice()
        if not camera:
            raise ConfigError(
                f"camera.source: Micro-Manager configuration {cfg} sets no camera device "
                f"(devices: {list(core.getLoadedDevices())[:12]})"
            )
        self._set_exposure(core, camera)
        if s.buffer_mb is not None:
            _call(
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
        if s.frames_per_stack == 1:  # the one preset / position, once, for sequences too
            self._apply(core, 0, 0)
        nbytes = core.getBytesPerPixel()
        if nbytes not in _DTYPES:
            raise SourceError(
                f"micromanager source: camera {camera} has {nbytes} bytes per pixel "
                f"(bit depth {core.getImageBitDepth()}); supported: {sorted(_DTYPES)}"
            )
        self._spec = StackSpec(
            max(1, len(s.channels)), max(1, len(s.z_positions)),
            core.getImageHeight(), core.getImageWidth(), _DTYPES[nbytes],
        )

    def _set_exposure(self, core: CMMCorePlus, camera: str) -> None:
        """Set the exposure after checking it against the camera's own limits."""
        asked = self._settings.exposure_ms
        if core.hasProperty(camera, "Exposure") and core.hasPropertyLimits(camera, "Exposure"):
            low = core.getPropertyLowerLimit(camera, "Exposure")
            high = core.getPropertyUpperLimit(camera, "Exposure")
            if not low <= asked <= high:
                raise ConfigError(
                    f"camera.exposure_ms: {asked:g} ms is outside what camera {camera!r} "
                    f"({core.getDeviceLibrary(camera)} {core.getDeviceName(camera)}) allows: "
                    f"{low:g} to {high:g} ms (the limits of its Exposure property)"
                )
        _call(f"setting exposure {asked:g} ms on {camera}", core.setExposure, asked)
        got = float(core.getExposure())
        if not math.isclose(got, asked, rel_tol=0.01, abs_tol=1e-3):
            log.warning("micromanager source: camera %s set exposure %.6g ms (asked %.6g ms); "
                        "using %.6g ms", camera, got, asked, got)
        self._exposure_s = self._period = got / 1000.0

    def start(self, interval_s: float) -> None:
        """Begin acquiring: a sequence starts now if the interval asks for one.

        The first timepoint is due at once.

        Raises
        ------
        SourceError
            The source is not open, or Micro-Manager refuses to start the sequence.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if self._core is None:
            raise SourceError("micromanager source: start() called before open()")
        self._interval = checked_interval(interval_s)
        self._started = self._running = True
        self._t_current = None
        self._prev_first = None
        self._mode = self._settings.mode_for(self._interval)
        self._interval_changed = False
        if self._mode is AcquisitionMode.SEQUENCE:
            self._start_sequence(self._interval)
        log.info(
            "micromanager source started: interval %.4g s, %s mode", self._interval, self._mode
        )

    def set_interval(self, interval_s: float) -> None:
        """Change the interval from the next timepoint (due ``interval_s`` after the current
        one, or at once if that moment has passed); a mode change or sequence restart happens
        in the next :meth:`next_timepoint`.

        Raises
        ------
        SourceError
            The acquisition was not started.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if not self._started:
            raise SourceError("micromanager source: set_interval() called before start()")
        interval = checked_interval(interval_s)
        if interval != self._interval:
            self._interval = interval
            self._interval_changed = True

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """Block until the next timepoint is due; return its scheduled monotonic time.

        Snap mode: a drift-free schedule (``t_k = t_{k-1} + interval``); when called more
        than an interval late, the missed timepoints are skipped (``timepoints_late``) and the
        timepoint is now. Sequence mode: returns when the timepoint's frame has been popped
        (free-run: the frame's exposure time; else the scheduled time, re-anchored to the
        frame when the camera is more than half an interval late).

        Returns
        -------
        float or None
            The timepoint's time, or None when ``stop`` is set or :meth:`stop` was called.

        Raises
        ------
        SourceError
            Not started; a sequence stopped by itself (overflow named when reported); a
            Micro-Manager call failed (its message kept).
        """
        if not self._started:
            raise SourceError("micromanager source: next_timepoint() called before start()")
        if not self._running or stop.is_set():
            return None
        if self._interval_changed:
            self._switch()
        self._t_first = None
        self._held = None
        if self._mode is AcquisitionMode.SEQUENCE:
            due = self._next_sequence_frame(stop)
        else:
            due = self._next_snap_time(stop)
        if due is None:
            return None
        self._counters.timepoints += 1
        return due

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major: every z position of channel 0, then of channel 1, ...

        A channel preset changes C times per stack (filter wheels are slow), the stage
        C x Z times.
        """
        spec = self.spec
        for c in range(spec.channels):
            for z in range(spec.z_slices):
                yield c, z

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Acquire frame (c, z) of the current timepoint into ``out`` (H, W).

        Returns
        -------
        float
            When the frame's exposure began, ``time.monotonic()`` clock (see the module
            docstring for how it is obtained in each mode).

        Raises
        ------
        SourceError
            No current timepoint (or its sequence frame was already read); ``c``/``z`` out of
            range; ``out`` or the camera's image of an unexpected shape or dtype (both
            named); a preset, the stage or the snap failed (Micro-Manager's message kept).
        """
        spec = self.spec
        if not (0 <= c < spec.channels and 0 <= z < spec.z_slices):
            raise SourceError(
                f"micromanager source: frame (c={c}, z={z}) out of range: "
                f"{spec.channels} channels x {spec.z_slices} z-slices"
            )
        if self._t_current is None:
            raise SourceError("micromanager source: read_frame() called before next_timepoint()")
        if self._mode is AcquisitionMode.SEQUENCE:
            if self._held is None:
                raise SourceError(
                    "micromanager source: the timepoint's frame was already read "
                    "(one frame per timepoint in sequence mode)"
                )
            image, t_exp = self._held, self._held_t
            self._held = None
        else:
            core = self.core
            self._apply(core, c, z)
            t_exp = time.monotonic()
            _call(f"snapping frame (c={c}, z={z})", core.snapImage)
            image = _call("reading the snapped image", core.getImage, fix=False)
        if image.shape != out.shape or image.dtype != out.dtype:
            raise SourceError(
                f"micromanager source: camera image {image.shape} {image.dtype} does not fit "
                f"the frame buffer {out.shape} {out.dtype} (did a property change the ROI, "
                "binning or pixel type?)"
            )
        np.copyto(out, image)
        self._counters.frames += 1
        if self._t_first is None:
            self._t_first = t_exp
            self._note_interval(t_exp)
        return t_exp

    def stop(self) -> None:
        """Stop acquiring: a running sequence is stopped (frames left in the buffer are
        counted in ``mm_frames_discarded``); :meth:`next_timepoint` returns None from now on.
        The devices stay loaded.

        Raises
        ------
        SourceError
            Micro-Manager failed to stop the sequence (its message kept).
        """
        if not self._running:
            return
        self._running = False
        self._stop_sequence()
        log.info("micromanager source stopped: %s", self.statistics())

    def close(self) -> None:
        """Unload every device. Safe to call twice, and after a failed :meth:`open`.

        A failure to unload is logged, not raised (nothing more can be done about it).
        """
        core, self._core = self._core, None
        if core is None:
            return
        self._running = False
        try:
            if core.isSequenceRunning():
                core.stopSequenceAcquisition()
            core.unloadAllDevices()
        except RuntimeError as exc:
            log.warning("micromanager source: unloading the devices failed: %s", exc)

    def statistics(self) -> dict[str, float]:
        """Counters since construction.

        Keys: ``timepoints``, ``frames`` (read into rt-eda), ``mm_frames_popped`` (taken from
        the circular buffer), ``mm_frames_skipped`` (popped but not used: decimation to the
        interval), ``mm_frames_discarded`` (left in the buffer at a stop or interval change),
        ``mm_camera_frames`` (numbered by the core in all sequences), ``mm_buffer_overflows``
        and ``mm_frames_lost`` (gaps in the numbering: the buffer overflowed), so
        ``mm_frames_popped + mm_frames_lost + frames still in the buffer == mm_camera_frames``;
        ``mm_sequence_starts``, ``mode_switches``, ``timepoints_late``,
        ``mm_timestamp_fallbacks``; ``interval_error_ms_p50/p99/max``: ``|achieved -
        requested|`` between consecutive timepoints' first-frame exposure times at an
        unchanged interval > 0 (percentiles of the newest 100 000, the maximum of all);
        ``freerun_fps``: frames per second over
        free-run timepoints.
        """
        c = self._counters
        errors = self._errors_ms.percentiles()
        span = c.freerun_last - c.freerun_first
        current = self._last_number + 1 if self._seq_interval is not None else 0
        return {
            "timepoints": c.timepoints,
            "frames": c.frames,
            "mm_frames_popped": c.popped,
            "mm_frames_skipped": c.skipped,
            "mm_frames_discarded": c.discarded,
            "mm_camera_frames": c.camera_frames_done + current,
            "mm_buffer_overflows": c.overflows,
            "mm_frames_lost": c.lost,
            "mm_sequence_starts": c.sequence_starts,
            "mode_switches": c.mode_switches,
            "timepoints_late": c.timepoints_late,
            "mm_timestamp_fallbacks": c.timestamp_fallbacks,
            "interval_error_ms_p50": errors.p50,
            "interval_error_ms_p99": errors.p99,
            "interval_error_ms_max": errors.max,
            "freerun_fps": (c.freerun_frames - 1) / span if c.freerun_frames > 1 and span > 0
            else 0.0,
        }

    # ------------------------------------------------------------------ internals

    def _apply(self, core: CMMCorePlus, c: int, z: int) -> None:
        """Apply channel preset ``c`` and z position ``z`` if not already applied."""
        s = self._settings
        if s.channels and self._channel_applied != c:
            preset = s.channels[c]
            self._channel_applied = None
            _call(
                f"applying preset {s.channel_group!r}/{preset!r} (channel {c})",
                core.setConfig, s.channel_group, preset,
            )
            _call(f"waiting for preset {preset!r}", core.waitForConfig, s.channel_group, preset)
            self._channel_applied = c
        if s.z_positions and self._z_applied != z:
            pos = s.z_positions[z]
            focus = core.getFocusDevice()
            self._z_applied = None
            _call(f"moving {focus} to z = {pos} um (z index {z})", core.setPosition, pos)
            _call(f"waiting for {focus}", core.waitForDevice, focus)
            self._z_applied = z

    def _switch(self) -> None:
        """Apply an interval change: change mode, or restart the sequence with the interval."""
        self._interval_changed = False
        mode = self._settings.mode_for(self._interval)
        if mode is not self._mode:
            self._counters.mode_switches += 1
            log.info("micromanager source: %s -> %s mode at interval %.4g s",
                     self._mode, mode, self._interval)
        if self._seq_interval is not None and (
            mode is AcquisitionMode.SNAP or self._seq_interval != self._interval
        ):
            self._stop_sequence()
        self._mode = mode
        if mode is AcquisitionMode.SEQUENCE and self._seq_interval is None:
            self._start_sequence(self._interval)
        if self._t_current is not None and self._t_current + self._interval < time.monotonic():
            self._t_current = time.monotonic() - self._interval  # next one due now

    def _start_sequence(self, interval: float) -> None:
        core = self.core
        self._wall_to_mono = _wall_to_monotonic()
        self._seq_t_start = time.monotonic()
        _call(
            f"starting a sequence acquisition at {interval * 1e3:.4g} ms",
            core.startContinuousSequenceAcquisition, interval * 1e3,
        )
        self._seq_interval = interval
        self._expected_number = None
        self._last_number = -1
        self._prev_pop_t = None
        self._counters.sequence_starts += 1

    def _stop_sequence(self) -> None:
        core = self._core
        if self._seq_interval is None or core is None:
            return
        _call("stopping the sequence acquisition", core.stopSequenceAcquisition)
        left = core.getRemainingImageCount()
        c = self._counters
        c.discarded += left
        c.camera_frames_done += self._last_number + 1 + left
        core.clearCircularBuffer()
        self._seq_interval = None
        self._held = None

    def _pop(self) -> tuple[np.ndarray, float]:
        """Pop the next frame; account its number; return it and its exposure start."""
        core = self.core
        md = self._md
        image: np.ndarray = _call("popping a frame", core.popNextImageMD, md)
        now = time.monotonic()
        c = self._counters
        c.popped += 1
        if md.HasTag(_TAG_NUMBER):
            number = int(md.GetSingleTag(_TAG_NUMBER).GetValue())
            expected = self._expected_number
            if expected is not None and number > expected:
                lost = number - expected
                c.overflows += 1
                c.lost += lost
                log.warning(
                    "micromanager source: circular buffer overflowed (%d MB): %d frames lost "
                    "(image %d follows %d)", core.getCircularBufferMemoryFootprint(), lost,
                    number, expected - 1,
                )
                self._prev_pop_t = None
            self._expected_number = number + 1
            self._last_number = number
        else:
            self._last_number += 1
        t = now
        if md.HasTag(_TAG_TIME):
            stamp = md.GetSingleTag(_TAG_TIME).GetValue()
            try:
                received = datetime.fromisoformat(stamp).timestamp() + self._wall_to_mono
            except ValueError:
                received = math.nan
            if self._seq_t_start - 0.5 <= received <= now + 0.5:
                t = received
            else:
                self._timestamp_fallback(f"{_TAG_TIME} {stamp!r}")
        else:
            self._timestamp_fallback(f"no {_TAG_TIME} tag")
        t -= self._exposure_s
        if self._prev_pop_t is not None and t > self._prev_pop_t:
            self._period += 0.1 * (t - self._prev_pop_t - self._period)
        self._prev_pop_t = t
        return image, t

    def _timestamp_fallback(self, why: str) -> None:
        self._counters.timestamp_fallbacks += 1
        if not self._warned_timestamps:
            self._warned_timestamps = True
            log.warning(
                "micromanager source: frame timestamp unusable (%s); using the time it was "
                "popped (counted in mm_timestamp_fallbacks)", why,
            )

    def _next_sequence_frame(self, stop: StopFlag) -> float | None:
        core = self.core
        interval = self._interval
        target = None if self._t_current is None or interval == 0.0 else (
            self._t_current + interval
        )
        slack = 0.0 if target is None else min(0.5 * self._period, 0.5 * interval)
        while True:
            if stop.is_set():
                return None
            if core.getRemainingImageCount() == 0:
                if not core.isSequenceRunning():
                    self._sequence_died()
                # Frames are popped as they come, also the early ones that are skipped: a
                # backlog popped in one burst at the due time delayed the camera's own thread
                # (p99 interval error 4 ms -> see bench/test_sources_bench.py).
                wait = _SEQ_POLL_S if target is None else min(
                    max(target - slack - time.monotonic(), _SEQ_POLL_S), _SEQ_DRAIN_S)
                time.sleep(wait)
                continue
            image, t = self._pop()
            if target is None or t >= target - slack:
                break
            self._counters.skipped += 1
        self._held, self._held_t = image, t
        if target is None:
            self._t_current = t
            c = self._counters
            if interval == 0.0:
                if c.freerun_frames == 0:
                    c.freerun_first = t
                c.freerun_frames += 1
                c.freerun_last = t
        elif t - target >= 0.5 * interval:
            self._counters.timepoints_late += 1
            self._t_current = t
        else:
            self._t_current = target
        return self._t_current

    def _sequence_died(self) -> NoReturn:
        core = self.core
        overflowed = core.isBufferOverflowed()
        self._seq_interval = None
        if overflowed:
            self._counters.overflows += 1
            raise SourceError(
                f"micromanager source: camera {core.getCameraDevice()} stopped its sequence "
                f"acquisition: the circular buffer ({core.getCircularBufferMemoryFootprint()} "
                f"MB, {core.getBufferTotalCapacity()} frames) overflowed"
            )
        raise SourceError(
            f"micromanager source: camera {core.getCameraDevice()} stopped its sequence "
            f"acquisition by itself after image {self._last_number}"
        )

    def _next_snap_time(self, stop: StopFlag) -> float | None:
        interval = self._interval
        now = time.monotonic()
        if self._t_current is None or interval == 0.0:
            due = now
        else:
            due, missed = skip_missed(self._t_current + interval, interval, now)
            if missed:
                self._counters.timepoints_late += 1
        if wait_until(due, stop) is None:
            return None
        self._t_current = due
        return due

    def _note_interval(self, t_first: float) -> None:
        interval = self._interval
        if (
            self._prev_first is not None
            and interval > 0.0
            and self._prev_interval == interval
        ):
            self._errors_ms.add(abs((t_first - self._prev_first) - interval) * 1e3)
        self._prev_first, self._prev_interval = t_first, interval


def _one_line(exc: BaseException) -> str:
    """Micro-Manager's message on one line (it spans several: the line of the .cfg, then
    what went wrong, nested in brackets)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``; a Micro-Manager failure becomes SourceError keeping its message."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:
        raise SourceError(f"Micro-Manager: {what} failed: {_one_line(exc)}") from exc


def _wall_to_monotonic() -> float:
    """``time.monotonic() - time.time()``, from the tightest of a few paired readings."""
    best_gap, offset = math.inf, 0.0
    for _ in range(5):
        m0 = time.monotonic()
        w = time.time()
        m1 = time.monotonic()
        if m1 - m0 < best_gap:
            best_gap, offset = m1 - m0, (m0 + m1) / 2 - w
    return offset
