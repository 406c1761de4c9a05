"""The synthetic image source: two-channel microscopy-like stacks with scheduled events.

The embedded default source of ``rt-eda run``. It imitates the original lab's data: channel 0
("structure") is a network of curved tubular filaments (mitochondria-like), blurred, plus
camera noise; channel 1 ("marker") is a low background plus noise, where an *event* (a
division-marker focus) sitting on a filament grows and fades over the event's duration
(intensity ``sin(pi * u)`` for ``u`` from 0 to 1 across the event, so 0 -> 1 -> 0). With
``z_slices > 1`` the filaments wander in z and a focus sits at one slice, blurred into its
neighbours.

Actuation (what a microscope's camera and filter wheel offer, driven between timepoints by
the camera process; each applies from the next timepoint):

* a camera ROI, :meth:`~SyntheticSource.set_roi`: only that rectangle of the sensor is
  rendered (really: the kernels loop over it alone, so a small ROI costs its own pixels), and
  its pixels are exactly those a full-frame render would have had there;
* channel presets, :meth:`~SyntheticSource.set_channel_presets`: which of ``structure``,
  ``marker`` and ``marker2`` (a second, dimmer marker of the same events, see
  :data:`~rt_eda.sources._synthetic_settings.CHANNEL_PRESETS`) each acquisition channel
  images; the number of channels never changes;
* the ground truth where the events are, :meth:`~SyntheticSource.true_events`, in sensor
  pixels, for scoring locations, ROIs and stimulation masks.

Events live on the *acquisition clock*: seconds since :meth:`SyntheticSource.start`, measured
at each frame's exposure time. Imaging fast therefore shows more frames of one event, exactly
as on a microscope. The ground truth (:meth:`~SyntheticSource.ground_truth`,
:meth:`~SyntheticSource.has_event`, :meth:`~SyntheticSource.event_mask`) is a pure function of
that clock, so the decisions of a run can be scored afterwards.

Speed: everything that is expensive (the filament image, a bank of noise frames) is computed
once, at :meth:`~SyntheticSource.open`. A frame is then one numba pass (base + a noise frame
picked pseudo-randomly, read at a random row/column offset so it does not visibly repeat, then
clipped to the pixel type) plus a pass over the bounding box of each active focus. A 512 x 512
two-channel ``uint16`` stack takes about 0.15 ms on one core (``tests/test_synthetic.py``
prints the figure measured on the machine running it).

Lifecycle (the :class:`~rt_eda.sources.Source` protocol; one thread drives it)::

    settings = SyntheticSettings.from_config(config)  # or SyntheticSettings.create(height=256)
    source = SyntheticSource(settings)               # cheap; picklable until open()
    spec = source.open()                             # renders the base images (~0.1-0.5 s)
    source.start(1.0)
    t = source.next_timepoint(stop)                  # sleeps until the scheduled time
    source.set_sequence(seq)                         # only needed with verify=True
    for c, z in source.frame_order():
        t_exp = source.read_frame(c, z, slot[c, z])
    source.stop(); source.close()

Where each part lives: :mod:`rt_eda.sources._synthetic_settings` (the settings, derived from
the validated ``[camera.synthetic]`` section),
:mod:`rt_eda.sources._synthetic_scene` (filaments, images, the event schedule),
:mod:`rt_eda.sources._synthetic_kernels` (the numba loops); this module holds the source: its
clock, its counters, the ground truth it answers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rt_eda.core.errors import SourceError
from rt_eda.core.location_truth import TrueEvent
from rt_eda.core.regions import FrameRegion
from rt_eda.shm import STAMP_PIXELS, StackSpec, stamp_frame
from rt_eda.sources._settings import SettingsSource

from ._pacing import checked_interval, skip_missed, wait_until
from ._protocol import StopFlag, describe_statistics
from ._synthetic_kernels import max_focus
from ._synthetic_scene import (
    FRESH_HORIZON_S,
    EventSchedule,
    Filaments,
    Images,
    SyntheticEvent,
    make_filaments,
    make_images,
    open_peak_bytes,
    splitmix64,
)
from ._synthetic_settings import CHANNEL_PRESETS, SyntheticSettings

__all__ = ["SyntheticEvent", "SyntheticSettings", "SyntheticSource", "open_peak_bytes"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the source


@dataclass(slots=True)
class _Clock:
    """Timing state of a started acquisition (monotonic seconds)."""

    t0: float
    interval_s: float
    t_current: float | None = None  # the scheduled time of the current timepoint
    running: bool = True


@dataclass(slots=True)
class _Counters:
    timepoints: int = 0
    frames: int = 0
    timepoints_late: int = 0
    timepoints_skipped: int = 0
    render_s: float = 0.0
    pixels: int = 0
    wake_late_s_sum: float = 0.0
    wake_late_s_max: float = 0.0
    woken: int = 0



class SyntheticSource(SettingsSource[SyntheticSettings]):
    """Synthetic two-channel source with scheduled events and ground truth.

    Satisfies :class:`~rt_eda.sources.Source`. One thread drives an instance (the camera
    role); nothing here is thread-safe. Before :meth:`open` an instance holds only its settings
    and pickles as them; a pickled copy is always an unopened source (the copy re-renders its
    images, identical for the same settings, when it is opened).

    Parameters
    ----------
    settings
        Image size, pixel type, seed, event schedule (see :class:`SyntheticSettings`).
    """

    def __init__(self, settings: SyntheticSettings | None = None) -> None:
        self._settings = settings if settings is not None else SyntheticSettings()
        seeds = np.random.SeedSequence(self._settings.seed).spawn(3)
        self._seed_geometry, self._seed_events, self._seed_noise = seeds
        self._filaments: Filaments | None = None
        self._images: Images | None = None
        self._schedule = EventSchedule(self._settings, self._seed_events, self._geometry)
        self._opened = False
        self._clock: _Clock | None = None
        self._counters = _Counters()
        self._frame_counter = 0
        self._sequence: int | None = None
        s = self._settings
        # What the current timepoint is read with, and what the next one will be (the
        # setters change the latter; next_timepoint() makes it current).
        self._region = FrameRegion.full(s.height, s.width)
        self._next_region = self._region
        self._presets: tuple[int, ...] = tuple(s.channels)
        self._next_presets = self._presets

    # ------------------------------------------------------------------ properties

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack (also what :meth:`open` returns)."""
        return self._settings.spec

    @property
    def events(self) -> tuple[SyntheticEvent, ...]:
        """The event schedule, sorted by start.

        Explicit events: all of them. Random events: those starting within the first 600 s,
        or further if the ground truth or the acquisition has looked further ahead (the
        schedule extends lazily and deterministically: it never changes, it only grows).
        """
        return self._schedule.known()

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the full frame (the spec's)."""
        return (self._settings.height, self._settings.width)

    @property
    def frame_region(self) -> FrameRegion:
        """The region of the sensor the next timepoint is read from: the current one's too,
        unless :meth:`set_roi` was called since :meth:`next_timepoint` (the full frame when
        no ROI is set)."""
        return self._next_region

    @property
    def channel_presets(self) -> tuple[str, ...]:
        """The preset each acquisition channel images, in order (from the next timepoint on:
        the current one's too, unless :meth:`set_channel_presets` was called since)."""
        return tuple(CHANNEL_PRESETS[i] for i in self._next_presets)

    @property
    def available_channel_presets(self) -> tuple[str, ...]:
        """Every preset a channel can image: ``("structure", "marker", "marker2", "dark")``."""
        return CHANNEL_PRESETS

    # ------------------------------------------------------------------ actuation

    def set_roi(self, region: FrameRegion | None) -> None:
        """Read only ``region`` of the sensor from the next timepoint on (None: the full frame).

        :meth:`read_frame` still takes the full (H, W) frame and writes only
        ``out[region.slices()]``, leaving the pixels outside as they are. Call it between
        timepoints (the camera thread, like every call here); a timepoint already begun keeps
        its region. With ``verify`` the stamp goes into the region's own first row (its
        top-left :data:`~rt_eda.shm.STAMP_PIXELS` pixels), where a reader of the region finds
        it.

        Raises
        ------
        SourceError
            ``region`` is not inside the sensor, or (with ``verify``) narrower than the stamp.
        """
        h, w = self.sensor_shape
        if region is None or region.is_full(h, w):
            self._next_region = FrameRegion.full(h, w)
            return
        if not region.inside(h, w):
            raise SourceError(f"synthetic source: ROI {region.describe()} is not inside the "
                              f"{w}x{h} sensor")
        if self._settings.verify and region.width < STAMP_PIXELS:
            raise SourceError(f"synthetic source: ROI {region.describe()} is narrower than the "
                              f"{STAMP_PIXELS}-pixel verification stamp")
        self._next_region = region

    def set_channel_presets(self, presets: Sequence[str]) -> None:
        """Image acquisition channel ``i`` with ``presets[i]`` from the next timepoint on.

        Parameters
        ----------
        presets
            One name of :attr:`available_channel_presets` per channel of the spec (a preset
            may repeat).

        Raises
        ------
        SourceError
            The count differs from the spec's channels, or a name is not a preset (the
            message names it and the allowed ones).
        """
        names = tuple(presets)
        n_c = len(self._settings.channels)
        if len(names) != n_c:
            raise SourceError(f"synthetic source: {len(names)} channel presets {list(names)} "
                              f"for a stack of {n_c} channels")
        for name in names:
            if name not in CHANNEL_PRESETS:
                raise SourceError(f"synthetic source: unknown channel preset {name!r}; the "
                                  f"presets are {', '.join(CHANNEL_PRESETS)}")
        self._next_presets = tuple(CHANNEL_PRESETS.index(name) for name in names)

    def true_events(self, t_exposure: float) -> tuple[TrueEvent, ...]:
        """The events active at ``t_exposure`` (a frame's exposure time on the
        ``time.monotonic()`` clock, as :meth:`read_frame` returns it), by start.

        Each is its focus centre in sensor pixels (the renderer's convention: pixel ``(y, x)``
        has its centre at ``(y, x)``, whatever the ROI), ``focus_sigma_px`` and its intensity
        (0..1) at that moment, invisible ones included (the caller filters). Its slice is
        projected out, and it is listed whatever the channels image.

        Raises
        ------
        SourceError
            The acquisition was never started (the clock is not known).
        """
        clock = self._started("true_events")
        t_s = t_exposure - clock.t0
        sigma = self._settings.focus_sigma_px
        active = sorted(self._schedule.active(t_s), key=lambda e: e.start_s)
        return tuple(TrueEvent(e.y, e.x, sigma, e.intensity(t_s)) for e in active)

    # ------------------------------------------------------------------ Source protocol

    def open(self) -> StackSpec:
        """Render the base images and the noise bank, warm the kernels; return the stack shape.

        Takes ~0.1-0.5 s for 512 x 512 (longer the first time on a machine, while numba
        compiles into its cache). Calling it again on an open source is a no-op.
        """
        if not self._opened:
            t = time.perf_counter()
            self._prepare()
            self._opened = True
            log.info(
                "synthetic source open: %s %s, seed %d, %d events in the first %.0f s "
                "(%.2f s to prepare)",
                self.spec.shape,
                self.spec.dtype,
                self._settings.seed,
                sum(1 for e in self.events if e.start_s < FRESH_HORIZON_S),
                FRESH_HORIZON_S,
                time.perf_counter() - t,
            )
        return self.spec

    def start(self, interval_s: float, *, t0: float | None = None) -> None:
        """Start the acquisition clock now (or at ``t0``, a ``time.monotonic()`` time: the
        sources of a plan's positions share one clock); the first timepoint is due at once.

        Raises
        ------
        SourceError
            The source is not open.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if not self._opened:
            raise SourceError("synthetic source: start() called before open()")
        self._clock = _Clock(t0=time.monotonic() if t0 is None else float(t0),
                             interval_s=checked_interval(interval_s))

    def set_interval(self, interval_s: float) -> None:
        """Change the interval; the next timepoint is due ``interval_s`` after the current one,
        or now if that moment has passed.

        Raises
        ------
        SourceError
            The acquisition was not started.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        clock = self._started("set_interval")
        clock.interval_s = checked_interval(interval_s)
        now = time.monotonic()
        if clock.t_current is not None and clock.t_current + clock.interval_s < now:
            # A shorter interval whose next timepoint would lie in the past: the next
            # timepoint is now (an exposure time is never earlier than the command).
            clock.t_current = now - clock.interval_s

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """Sleep until the next timepoint is due; return its scheduled monotonic time.

        The schedule has no drift: ``t_k = t_{k-1} + interval`` (the first one at
        :meth:`start`). When the caller comes back more than one interval late, the missed
        timepoints are skipped (``timepoints_skipped``, and ``timepoints_late`` counts the
        occasions) and the latest one already due is returned at once: never a burst of
        catch-up frames. With interval 0 (free-run) the timepoint is now.

        Waits on the pacing clock (:func:`rt_eda.sources._pacing.wait_until`): sleeps in
        steps of at most 20 ms, checking ``stop`` in between, and busy-waits the last 50 us.

        Returns
        -------
        float or None
            The timepoint's scheduled ``time.monotonic()`` time, or None when ``stop`` is set
            or :meth:`stop` was called.

        Raises
        ------
        SourceError
            The acquisition was never started.
        """
        clock = self._started("next_timepoint")
        if not clock.running or stop.is_set():
            return None
        interval = clock.interval_s
        if clock.t_current is None:
            # The first timepoint is at the start (free-run: now, the start or later: the
            # fields of a plan's positions share a start and are first visited in turn).
            due = clock.t0 if interval > 0.0 else max(clock.t0, time.monotonic())
        elif interval == 0.0:
            due = time.monotonic()
        else:
            due = clock.t_current + interval
        now = time.monotonic()
        due, missed = skip_missed(due, interval, now)
        if missed:
            self._counters.timepoints_late += 1
            self._counters.timepoints_skipped += missed
            log.debug("synthetic source %.3f s late: skipped %d timepoints", now - due, missed)
        woke = wait_until(due, stop)
        if woke is None:
            return None
        c = self._counters
        if woke < (interval or math.inf):
            c.woken += 1
            c.wake_late_s_sum += woke
            c.wake_late_s_max = max(c.wake_late_s_max, woke)
        clock.t_current = due
        c.timepoints += 1
        self._sequence = None
        self._region = self._next_region
        self._presets = self._next_presets
        return due

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major: ``(0, 0), (0, 1), ... (0, Z-1), (1, 0), ... (1, Z-1)``."""
        for c in range(len(self._settings.channels)):
            for z in range(self._settings.z_slices):
                yield c, z

    def set_sequence(self, seq: int) -> None:
        """The sequence number of the current timepoint's stack, stamped when ``verify``.

        Call it after :meth:`next_timepoint`, before the frames; without it the stamp is the
        number of timepoints before this one (0-based).
        """
        self._sequence = int(seq)

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Render frame (c, z) of the current timepoint into ``out`` (H, W) of the spec's dtype.

        Only the timepoint's region (:meth:`set_roi`) of ``out`` is written, with channel
        ``c``'s preset (:meth:`set_channel_presets`); with ``verify`` the stamp goes into the
        region's first row.

        Returns
        -------
        float
            The frame's exposure time: the timepoint's scheduled time plus the frame's index in
            :meth:`frame_order` times ``exposure_s`` (the simulated camera's clock, not when
            this call ran). Events are rendered for that time.

        Raises
        ------
        SourceError
            No current timepoint, ``c``/``z`` out of range, or ``out`` of the wrong shape or
            dtype (the message names both).
        """
        clock = self._started("read_frame")
        if clock.t_current is None:
            raise SourceError("synthetic source: read_frame() called before next_timepoint()")
        nz = self._settings.z_slices
        n_c = len(self._settings.channels)
        if not (0 <= c < n_c and 0 <= z < nz):
            raise SourceError(
                f"synthetic source: frame (c={c}, z={z}) out of range: "
                f"{n_c} channels x {nz} z-slices"
            )
        t_exp = clock.t_current + (c * nz + z) * self._settings.exposure_s
        t = time.perf_counter()
        region = self._region
        self._counters.pixels += self._render_frame(self._presets[c], z, t_exp - clock.t0, out,
                                                    region)
        if self._settings.verify:
            seq = self._sequence if self._sequence is not None else self._counters.timepoints - 1
            stamp_frame(out[region.slices()], seq, c, z)
        self._counters.render_s += time.perf_counter() - t
        self._counters.frames += 1
        return t_exp

    def stop(self) -> None:
        """Stop the acquisition: :meth:`next_timepoint` returns None from now on."""
        if self._clock is not None and self._clock.running:
            self._clock.running = False
            log.info("synthetic source stopped: %s", describe_statistics(self.statistics()))

    def close(self) -> None:
        """Drop the rendered images. Safe to call twice, and on a source never opened."""
        self.stop()
        self._images = None
        self._opened = False

    def statistics(self) -> dict[str, float]:
        """Counters since construction.

        Keys: ``timepoints``, ``frames``, ``timepoints_late`` (times the caller came back more
        than an interval late), ``timepoints_skipped`` (timepoints dropped because of that),
        ``events_scheduled`` (events starting before the current timepoint),
        ``pixels_rendered`` (pixels the frames read wrote: a region's, plus the foci's
        within it), ``render_ms_mean`` (per frame, stamp included), ``wake_late_ms_mean`` and
        ``wake_late_ms_max`` (how long after its scheduled time a timepoint was returned,
        over timepoints not skipped ahead).
        """
        c = self._counters
        clock = self._clock
        if clock is not None and clock.t_current is not None:
            scheduled = self._schedule.started(clock.t_current - clock.t0)
        else:
            scheduled = 0
        return {
            "timepoints": c.timepoints,
            "frames": c.frames,
            "timepoints_late": c.timepoints_late,
            "timepoints_skipped": c.timepoints_skipped,
            "events_scheduled": scheduled,
            "pixels_rendered": c.pixels,
            "render_ms_mean": 1e3 * c.render_s / c.frames if c.frames else 0.0,
            "wake_late_ms_mean": 1e3 * c.wake_late_s_sum / c.woken if c.woken else 0.0,
            "wake_late_ms_max": 1e3 * c.wake_late_s_max,
        }

    # ------------------------------------------------------------------ beyond the protocol

    def render_stack(self, t_s: float, out: np.ndarray, seq: int | None = None) -> None:
        """Render a whole stack for acquisition time ``t_s`` into ``out`` (C, Z, H, W).

        No timing, no counters (for training data and tests); works on an unopened source
        (the first call prepares the images, as :meth:`open` does). Frame ``i`` of
        :meth:`frame_order` shows the events at ``t_s + i * exposure_s``, as in an
        acquisition. Always the full frame (an ROI is the acquisition's), with the current
        timepoint's channel presets. With ``seq`` every frame is stamped with it (whatever
        ``verify`` says).

        Raises
        ------
        SourceError
            ``out`` has the wrong shape or dtype (both named).
        """
        if out.shape != self.spec.shape:
            raise SourceError(
                f"synthetic source: stack buffer of shape {out.shape}, expected {self.spec.shape}"
            )
        nz = self._settings.z_slices
        full = FrameRegion.full(self._settings.height, self._settings.width)
        for c, z in self.frame_order():
            self._render_frame(self._presets[c], z, t_s + (c * nz + z) * self._settings.exposure_s,
                               out[c, z], full)
            if seq is not None:
                stamp_frame(out[c, z], seq, c, z)

    def ground_truth(self, t_s: float) -> float:
        """Intensity (0..1) of the strongest event active at acquisition time ``t_s``."""
        return max((e.intensity(t_s) for e in self._schedule.active(t_s)), default=0.0)

    def has_event(self, t_s: float, min_intensity: float = 0.2) -> bool:
        """Whether an event of intensity >= ``min_intensity`` is visible at ``t_s``."""
        return self.ground_truth(t_s) >= min_intensity

    def event_windows(self, t_end: float, min_intensity: float = 0.0
                      ) -> list[tuple[float, float]]:
        """The ground truth as ``(start, end)`` on the ``time.monotonic()`` clock, for every
        event that starts before ``t_end`` (monotonic), in order. With ``min_intensity`` > 0
        each event is cut to the part where its intensity reaches it (``sin(pi u)``).

        Raises
        ------
        SourceError
            The acquisition was never started (the clock is not known).
        """
        clock = self._started("event_windows")
        until = t_end - clock.t0
        self._schedule.extend(until)
        cut = 0.0
        if min_intensity > 0:
            cut = math.asin(min(1.0, min_intensity)) / math.pi  # fraction of the event
        out = []
        for e in self._schedule.known():
            if e.start_s >= until:
                break
            d = e.duration_s
            out.append((clock.t0 + e.start_s + cut * d, clock.t0 + e.end_s - cut * d))
        return out

    def event_mask(self, t_s: float) -> np.ndarray:
        """The target image at acquisition time ``t_s``: (H, W) float32 in 0..1.

        Each active event contributes its focus (a Gaussian of ``focus_sigma_px``) times its
        intensity; where foci overlap the larger value wins. Z is projected out. All zeros when
        no event is active.
        """
        s = self._settings
        mask = np.zeros((s.height, s.width), np.float32)
        for e in self._schedule.active(t_s):
            max_focus(mask, e.y, e.x, s.focus_sigma_px, e.intensity(t_s))
        return mask

    # ------------------------------------------------------------------ internals

    def _started(self, what: str) -> _Clock:
        if self._clock is None:
            raise SourceError(f"synthetic source: {what}() called before start()")
        return self._clock

    def _geometry(self) -> Filaments:
        if self._filaments is None:
            self._filaments = make_filaments(
                self._settings, np.random.default_rng(self._seed_geometry)
            )
        return self._filaments

    def _prepare(self) -> Images:
        if self._images is not None:
            return self._images
        s = self._settings
        images = make_images(s, self._geometry(), self._seed_noise)
        self._images = images
        scratch = np.empty((s.height, s.width), s.dtype)  # compile or load the kernels now
        self._render_frame(1, 0, -1.0, scratch, FrameRegion.full(s.height, s.width))
        images.warm_up(scratch)
        return images

    def _render_frame(self, preset: int, z: int, t_s: float, out: np.ndarray,
                      window: FrameRegion) -> int:
        """Render ``window`` of frame (preset, z) at acquisition time ``t_s`` into the full
        frame ``out``; return the pixels written. Every frame draws its noise from the next
        value of the frame counter, whatever its window, so an ROI render equals the full
        render of the same frame inside the ROI."""
        images = self._images if self._images is not None else self._prepare()
        s = self._settings
        if out.shape != (s.height, s.width) or out.dtype != images.base.dtype:
            raise SourceError(
                f"synthetic source: frame buffer {out.shape} {out.dtype}, expected "
                f"{(s.height, s.width)} {images.base.dtype}"
            )
        r = splitmix64(s.seed * 0x100000001B3 + self._frame_counter)
        self._frame_counter += 1
        active = self._schedule.active(t_s) if images.shows_events(preset) else []
        return images.render(preset, z, r, t_s, active, s.focus_sigma_px, out, window)
