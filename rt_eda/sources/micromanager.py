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

With an acquisition plan (``camera.plan``) every stack is snapped: the camera's scheduler
moves the XY stage (and the focus, for a position with z) between stacks with
:meth:`~MicroManagerSource.move_to` (``setXYPosition``, then ``waitForDevice``: the move's
time is measured and counted), and the plan's channels and z plan are the stack's presets
and z positions (a relative z plan from each position's z).

An interval change (:meth:`~MicroManagerSource.set_interval`) takes effect at the next
timepoint: a running sequence is stopped (frames still in the buffer are dropped and counted
in ``mm_frames_discarded``) and restarted with the new interval, or replaced by snaps.

Event-driven actuation
----------------------
An actuator changes what the camera reads, between timepoints, from the camera's thread; each
change applies from the next timepoint:

* :meth:`~MicroManagerSource.set_roi`: the camera's ROI (``setROI``; ``clearROI`` for the
  full frame). The camera may round it to its granularity: the ROI it reports back
  (``getROI``) is the one used, and :attr:`~MicroManagerSource.frame_region` reports it.
  :meth:`~MicroManagerSource.read_frame` still receives the full-frame view of the ring slot
  and writes only ``out[frame_region.slices()]``. A running sequence is stopped (its
  buffered frames, of the old ROI, discarded and counted) and restarted around the change:
  Micro-Manager sizes its circular buffer when a sequence starts, and a camera may refuse
  (or mishandle) an ROI change while capturing. Each change is timed (``roi_changes``,
  ``roi_change_ms_mean`` in :meth:`~MicroManagerSource.statistics`; DEBUG log).
* :meth:`~MicroManagerSource.set_channel_presets`: the preset of each acquisition channel,
  from the source's channel group (``camera.channel_group``, else the configuration's
  channel group). Snaps apply it before the channel's next frame; a running sequence (one
  channel) is stopped, the preset applied and the sequence restarted, so no frame of the
  new timepoint was exposed with the old preset.
* :meth:`~MicroManagerSource.slm_core`: the core, for a stimulation device loaded beside
  the camera (:mod:`rt_eda.sources._slm`); it must be a ``UniMMCore``
  (``MicroManagerSettings.python_devices``).

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

    settings = MicroManagerSettings.from_config(config)  # or .create(exposure_ms=5)
    source = MicroManagerSource(settings)    # picklable until open()
    spec = source.open()                     # loads the configuration, sets exposure etc.
    source.start(0.0)                        # free-run: sequence acquisition
    t = source.next_timepoint(stop)
    for c, z in source.frame_order():
        t_exp = source.read_frame(c, z, slot[c, z])
    source.stop(); source.close()

Where each part lives: :mod:`rt_eda.sources._mm_settings` (the settings and the mode they
choose), :mod:`rt_eda.sources._mm_device` (loading and checking the configuration, presets and
positions), :mod:`rt_eda.sources._mm_sequence` (sequence acquisition: popping, numbering,
timestamps, decimation); this module holds the source: its modes, its snaps, its statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from rt_eda.core.errors import SourceError
from rt_eda.core.regions import FrameRegion
from rt_eda.core.stats import RecentWindow
from rt_eda.shm import StackSpec
from rt_eda.sources._settings import SettingsSource

from ._mm_device import (
    DEMO_CONFIG_NAME,
    Positioner,
    call,
    configure,
    demo_adapter_path,
    load_core,
)
from ._mm_sequence import Counters, Sequence
from ._mm_settings import AcquisitionMode, MicroManagerSettings
from ._pacing import checked_interval, skip_missed, wait_until
from ._protocol import StopFlag, describe_statistics

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

_ERRORS_KEPT = 100_000  # interval errors kept for the percentiles (the newest)


def make_micromanager_source(config: Config) -> MicroManagerSource:
    """The source for ``camera.source = "mm-demo"`` or ``"mmconfig:PATH"`` (not opened),
    with :meth:`MicroManagerSettings.from_config` (nothing checked again).

    Raises
    ------
    ConfigError
        ``camera.source`` is not a Micro-Manager source.
    """
    acts = config.actuation
    stimulate = "stimulate" in acts.actuators and not acts.options.get(
        "stimulate", {}).get("device")
    # rt-eda's own DMD is a Python device: it needs a UniMMCore (the same core as the
    # camera's, so both run on the camera's thread). An ROI or preset change restarts a
    # running sequence, and Micro-Manager re-sizes its circular buffer at every start: 36 ms
    # with its default 250 MB, 10 ms with 32 MB (bench/test_roi_bench.py), so a run that
    # changes them keeps a 64 MB buffer (128 frames of 512 x 512 x 16 bit).
    restarts = any(n in acts.actuators for n in ("roi", "channel"))
    return MicroManagerSource(MicroManagerSettings.from_config(
        config, python_devices=stimulate, buffer_mb=64 if restarts else None))


class MicroManagerSource(SettingsSource[MicroManagerSettings]):
    """A Micro-Manager camera (and its channel presets and z stage) as an rt-eda source.

    Not thread-safe: the camera role's thread drives it (the pymmcore-plus core belongs to
    that thread). See the module docstring for the modes, the timestamps and the faults.
    """

    def __init__(self, settings: MicroManagerSettings) -> None:
        self._settings = settings
        self._core: CMMCorePlus | None = None
        self._spec: StackSpec | None = None
        self._running = False
        self._started = False
        self._interval = 0.0
        self._mode = AcquisitionMode.SNAP
        self._interval_changed = False
        self._t_current: float | None = None  # the current timepoint's scheduled time
        self._t_first: float | None = None  # its first frame's exposure time
        self._prev_first: float | None = None
        self._prev_interval: float | None = None
        self._sequence: Sequence | None = None  # after open()
        self._held: np.ndarray | None = None  # the current timepoint's sequence frame
        self._held_t = 0.0
        self._positioner = Positioner(settings)
        self._counters = Counters()
        self._errors_ms = RecentWindow(_ERRORS_KEPT)
        self._stage_at: int | None = None
        self._z_home = 0.0
        self._moves_s: dict[tuple[int | None, int], float] = {}
        self._moves = 0
        self._moves_off = 0
        self._move_s_sum = 0.0
        self._region: FrameRegion | None = None  # None: the full frame
        self._roi_changes = 0
        self._roi_change_s = 0.0
        self._roi_change_s_max = 0.0
        self._preset_changes = 0

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
        t = time.perf_counter()
        core, adapters, cfg = load_core(self._settings)
        self._core = core
        try:
            self._spec, exposure_s = configure(core, cfg, self._settings, self._positioner)
            self._sequence = Sequence(core, self._counters, exposure_s)
            if core.getFocusDevice():
                self._z_home = float(core.getPosition())
        except BaseException:
            self.close()
            raise
        import pymmcore_plus

        log.info(
            "micromanager source open: %s from %s (adapters %s, pymmcore-plus %s): %s %s, "
            "exposure %.4g ms, buffer %d MB, %.2f s to load",
            core.getCameraDevice(), cfg, adapters, pymmcore_plus.__version__,
            self.spec.shape, self.spec.dtype, core.getExposure(),
            core.getCircularBufferMemoryFootprint(), time.perf_counter() - t,
        )
        return self.spec

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
            self._started_sequence().start(self._interval)
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
            got = self._started_sequence().next_frame(stop, self._t_current, self._interval)
            if got is None:
                return None
            self._held, self._held_t, self._t_current = got
        elif self._next_snap_time(stop) is None:
            return None
        self._counters.timepoints += 1
        return self._t_current

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
            self._positioner.apply(core, c, z)
            t_exp = time.monotonic()
            call(f"snapping frame (c={c}, z={z})", core.snapImage)
            image = call("reading the snapped image", core.getImage, fix=False)
        region = self._region
        if out.shape != (spec.height, spec.width) or out.dtype != spec.dtype:
            raise SourceError(
                f"micromanager source: frame buffer {out.shape} {out.dtype} is not the full "
                f"frame {(spec.height, spec.width)} {spec.dtype}"
            )
        expected = (spec.height, spec.width) if region is None else region.shape
        if image.shape != expected or image.dtype != out.dtype:
            roi = "full frame" if region is None else f"ROI {region.describe()}"
            raise SourceError(
                f"micromanager source: camera image {image.shape} {image.dtype} does not fit "
                f"the {roi} {expected} {out.dtype} (did a property change the ROI, binning "
                "or pixel type?)"
            )
        np.copyto(out if region is None else out[region.slices()], image)
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
        log.info("micromanager source stopped: %s", describe_statistics(self.statistics()))

    def close(self) -> None:
        """Unload every device and let go of the core. Safe to call twice, and after a
        failed :meth:`open`.

        A failure to unload is logged, not raised (nothing more can be done about it). The
        source keeps no reference to the core after it (its sequence held one): cores of
        pymmcore 12.5 still alive when the interpreter exits made it abort now and then
        (``FATAL: exception not rethrown``, exit status 134; a dozen closed DemoCamera cores
        kept alive to exit aborted 4 runs of 6, none when they were freed first).
        """
        core, self._core = self._core, None
        sequence, self._sequence = self._sequence, None
        if sequence is not None:  # a sequence still running: its frames stay counted
            self._counters.camera_frames_done += sequence.camera_frames()
        if core is None:
            return
        self._running = False
        try:
            if core.isSequenceRunning():
                core.stopSequenceAcquisition()
            core.unloadAllDevices()
        except RuntimeError as exc:
            log.warning("micromanager source: unloading the devices failed: %s", exc)

    # ------------------------------------------------------------------ event-driven actuation

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the full frame (the spec's).

        Raises
        ------
        SourceError
            The source is not open.
        """
        spec = self.spec
        return (spec.height, spec.width)

    @property
    def frame_region(self) -> FrameRegion:
        """The region of the sensor the next (or current) timepoint is read from: the ROI
        the camera reported after the last :meth:`set_roi`, else the full frame.

        Raises
        ------
        SourceError
            The source is not open.
        """
        return self._region if self._region is not None else FrameRegion.full(
            *self.sensor_shape)

    def set_roi(self, region: FrameRegion | None) -> None:
        """Read only ``region`` of the sensor from the next timepoint on (None: the full
        frame).

        Call it between timepoints, from the camera's thread. The camera's ROI is set now
        (``setROI``, or ``clearROI`` for the full frame); a running sequence is stopped
        around it (frames still buffered, of the old ROI, are counted in
        ``mm_frames_discarded``) and restarted with the same interval. The camera may round
        the ROI to its own granularity: the ROI it reports back (``getROI``) becomes
        :attr:`frame_region` (a difference is logged). A region equal to the current one
        changes nothing. Its time is measured (DEBUG log, ``roi_change_*`` statistics).

        Raises
        ------
        SourceError
            The source is not open; ``region`` is not inside the sensor; the camera refused
            it (Micro-Manager's message kept) or reported an ROI outside its sensor. After a
            refusal :attr:`frame_region` is the ROI the camera reports, and a sequence that
            was running runs again.
        """
        core = self.core
        h, w = self.sensor_shape
        target = FrameRegion.full(h, w) if region is None else region
        camera = core.getCameraDevice()
        if not target.inside(h, w):
            raise SourceError(
                f"micromanager source: ROI {target.describe()} is outside the {w}x{h} sensor "
                f"of camera {camera}"
            )
        if target == self.frame_region:
            return
        t0 = time.perf_counter()
        sequence = self._started_sequence()
        restart = sequence.interval
        if restart is not None:
            self._stop_sequence()
        try:
            if target.is_full(h, w):
                call(f"clearing the ROI of {camera}", core.clearROI)
            else:
                call(f"setting the ROI of {camera} to {target.describe()}", core.setROI,
                     target.x, target.y, target.width, target.height)
        finally:
            self._region = self._camera_roi()
            if restart is not None:
                sequence.start(restart)
        took = time.perf_counter() - t0
        got = self.frame_region
        self._roi_changes += 1
        self._roi_change_s += took
        self._roi_change_s_max = max(self._roi_change_s_max, took)
        if got != target:
            log.info("micromanager source: camera %s set ROI %s (asked %s)",
                     camera, got.describe(), target.describe())
        log.debug("micromanager source: ROI %s in %.3f ms (%s)", got.describe(), took * 1e3,
                  "sequence restarted" if restart is not None else self._mode)

    def _camera_roi(self) -> FrameRegion | None:
        """The ROI the camera reports (None when it is the full frame).

        Raises
        ------
        SourceError
            Reading it failed, or it is empty or outside the sensor.
        """
        core = self.core
        h, w = self.sensor_shape
        x, y, width, height = (int(v) for v in call("reading the camera's ROI", core.getROI))
        if width < 1 or height < 1 or not FrameRegion(y, x, height, width).inside(h, w):
            raise SourceError(
                f"micromanager source: camera {core.getCameraDevice()} reports ROI x={x}, "
                f"y={y}, {width}x{height}, not inside its {w}x{h} sensor"
            )
        got = FrameRegion(y, x, height, width)
        return None if got.is_full(h, w) else got

    @property
    def channel_presets(self) -> tuple[str, ...]:
        """The preset each acquisition channel is imaged with now (from the next timepoint
        on, after :meth:`set_channel_presets`).

        With ``camera.channels``: those presets at first. Without: the one preset of the
        channel group that the devices' state matched at :meth:`open` (``""`` if none).
        Empty when the configuration has no channel group.
        """
        return self._positioner.presets

    @property
    def available_channel_presets(self) -> tuple[str, ...]:
        """The presets of the source's channel group (``camera.channel_group``, else the
        configuration's channel group); empty when there is none.

        Raises
        ------
        SourceError
            The source is not open.
        """
        group = self._positioner.group
        core = self.core
        return tuple(str(p) for p in core.getAvailableConfigs(group)) if group else ()

    def set_channel_presets(self, presets: tuple[str, ...]) -> None:
        """Image acquisition channel ``c`` with preset ``presets[c]`` from the next
        timepoint on.

        Call it between timepoints, from the camera's thread. Snaps apply a changed preset
        before that channel's next frame. A running sequence (one channel) is stopped, the
        preset applied (``setConfig``, ``waitForConfig``) and the sequence restarted, so the
        next timepoint's frame was exposed with it. Presets equal to the current ones
        change nothing.

        Raises
        ------
        SourceError
            The source is not open; the count is not the stack's channel count; there is
            no channel group; a preset is not in the group (the unknown and the allowed ones
            named); Micro-Manager refused it (its message kept).
        """
        presets = tuple(presets)
        spec = self.spec
        group = self._positioner.group
        if not group:
            raise SourceError(
                "micromanager source: no channel group (camera.channel_group is empty and "
                "the configuration sets no ChannelGroup) to take presets from"
            )
        if len(presets) != spec.channels:
            raise SourceError(
                f"micromanager source: {len(presets)} channel presets {list(presets)} for "
                f"{spec.channels} channel(s)"
            )
        allowed = self.available_channel_presets
        unknown = [p for p in presets if p not in allowed]
        if unknown:
            raise SourceError(
                f"micromanager source: channel preset(s) {unknown} not in group {group!r} "
                f"(presets: {list(allowed)})"
            )
        if presets == self._positioner.presets:
            return
        self._positioner.set_presets(presets)
        self._preset_changes += 1
        sequence = self._started_sequence()
        restart = sequence.interval
        if restart is None:
            log.debug("micromanager source: channel presets %s from the next snap", presets)
            return
        t0 = time.perf_counter()
        self._stop_sequence()
        try:
            self._positioner.apply(self.core, 0, 0)
        finally:
            sequence.start(restart)
        log.debug("micromanager source: channel presets %s, sequence restarted in %.3f ms",
                  presets, (time.perf_counter() - t0) * 1e3)

    def slm_core(self) -> CMMCorePlus:
        """The source's core, to load a stimulation device beside the camera
        (:func:`rt_eda.sources._slm.open_slm` with ``core=source.slm_core()``).

        Raises
        ------
        SourceError
            The source is not open, or its core is a plain ``CMMCorePlus``: a Python device
            needs a ``UniMMCore`` (``MicroManagerSettings.python_devices=True``).
        """
        core = self.core
        from pymmcore_plus.experimental.unicore import UniMMCore

        if not isinstance(core, UniMMCore):
            raise SourceError(
                "micromanager source: its core is a plain CMMCorePlus, which cannot load a "
                "Python SLM device; make the source with MicroManagerSettings(..., "
                "python_devices=True) for a UniMMCore"
            )
        return core

    # ------------------------------------------------------------------ positions (a plan)

    @property
    def position_names(self) -> tuple[str, ...]:
        """The plan's position names (one, ``p0``, without a plan)."""
        names = self._settings.position_names
        return names if names else ("p0",)

    @property
    def stack_s(self) -> float:
        """One stack's exposures: frames x exposure."""
        return self._settings.frames_per_stack * self._settings.exposure_s

    def move_to(self, position: int, stop: StopFlag) -> float:
        """Move the XY stage (and the focus, for a position with z) to plan position
        ``position`` and wait for them (``waitForDevice``); the seconds it took.

        Raises
        ------
        SourceError
            Not open; ``position`` not one of the plan's; the stage refused or failed
            (Micro-Manager's message kept).
        """
        s = self._settings
        if not 0 <= position < len(s.positions):
            raise SourceError(f"micromanager source: position {position} is not one of the "
                              f"plan's {len(s.positions)}")
        core = self.core
        x, y, z = s.positions[position]
        t = time.monotonic()
        if x is not None and y is not None:
            xy = core.getXYStageDevice()
            call(f"moving {xy} to x = {x}, y = {y} um (position {position})",
                 core.setXYPosition, xy, x, y)
            call(f"waiting for {xy}", core.waitForDevice, xy)
            at = call(f"reading {xy}", core.getXYPosition, xy)
            if abs(float(at[0]) - x) > 1.0 or abs(float(at[1]) - y) > 1.0:
                self._moves_off += 1
                log.warning("micromanager source: %s is at (%g, %g) um after moving to "
                            "(%g, %g) um (position %d)", xy, at[0], at[1], x, y, position)
        focus = core.getFocusDevice()
        if z is not None and not (s.z_positions and not s.z_relative):
            if not s.z_positions:  # no z plan: the position's z is the one slice
                call(f"moving {focus} to z = {z} um (position {position})",
                     core.setPosition, z)
                call(f"waiting for {focus}", core.waitForDevice, focus)
            self._positioner.set_base(z)
        elif s.z_relative:
            self._positioner.set_base(self._z_home)
        took = time.monotonic() - t
        self._moves_s[(self._stage_at, position)] = took
        self._moves += 1
        self._move_s_sum += took
        self._stage_at = position
        return took

    def move_estimate(self, src: int | None, dst: int) -> float:
        """The last measured move between the two positions; else the mean move so far;
        else 20 ms (0 when the stage is there already)."""
        if src == dst:
            return 0.0
        known = self._moves_s.get((src, dst))
        if known is not None:
            return known
        return self._move_s_sum / self._moves if self._moves else 0.02

    def event_windows(self, position: int, t_end: float,
                      min_intensity: float = 0.0) -> list[tuple[float, float]] | None:
        """None: a real sample has no ground truth."""
        return None

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
        free-run timepoints; with a plan, ``stage_moves``, ``stage_move_ms_mean`` and
        ``stage_moves_off_target`` (moves after which the XY stage reported a position more
        than 1 um from the one asked); ``roi_changes`` (:meth:`set_roi` calls that changed
        the ROI), ``roi_change_s`` (their total time, a running sequence's stop and restart
        included), ``roi_change_ms_mean`` and ``roi_change_ms_max``; ``preset_changes``
        (:meth:`set_channel_presets` calls that changed a preset).
        """
        c = self._counters
        errors = self._errors_ms.percentiles()
        span = c.freerun_last - c.freerun_first
        current = self._sequence.camera_frames() if self._sequence is not None else 0
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
            "stage_moves": self._moves,
            "stage_moves_off_target": self._moves_off,
            "stage_move_ms_mean": 1e3 * self._move_s_sum / self._moves if self._moves else 0.0,
            "roi_changes": self._roi_changes,
            "roi_change_s": self._roi_change_s,
            "roi_change_ms_mean": 1e3 * self._roi_change_s / self._roi_changes
            if self._roi_changes else 0.0,
            "roi_change_ms_max": 1e3 * self._roi_change_s_max,
            "preset_changes": self._preset_changes,
        }

    # ------------------------------------------------------------------ internals

    def _started_sequence(self) -> Sequence:
        if self._sequence is None:
            raise SourceError("micromanager source: not open")
        return self._sequence

    def _switch(self) -> None:
        """Apply an interval change: change mode, or restart the sequence with the interval."""
        self._interval_changed = False
        mode = self._settings.mode_for(self._interval)
        if mode is not self._mode:
            self._counters.mode_switches += 1
            log.info("micromanager source: %s -> %s mode at interval %.4g s",
                     self._mode, mode, self._interval)
        sequence = self._started_sequence()
        if sequence.interval is not None and (
            mode is AcquisitionMode.SNAP or sequence.interval != self._interval
        ):
            self._stop_sequence()
        self._mode = mode
        if mode is AcquisitionMode.SEQUENCE and sequence.interval is None:
            sequence.start(self._interval)
        if self._t_current is not None and self._t_current + self._interval < time.monotonic():
            self._t_current = time.monotonic() - self._interval  # next one due now

    def _stop_sequence(self) -> None:
        if self._sequence is not None and self._core is not None:
            self._sequence.stop()
        self._held = None

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
