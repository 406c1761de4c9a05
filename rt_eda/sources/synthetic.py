"""The synthetic image source: two-channel microscopy-like stacks with scheduled events.

The embedded default source of ``rt-eda run``. It imitates the original lab's data: channel 0
("structure") is a network of curved tubular filaments (mitochondria-like), blurred, plus
camera noise; channel 1 ("marker") is a low background plus noise, where an *event* (a
division-marker focus) sitting on a filament grows and fades over the event's duration
(intensity ``sin(pi * u)`` for ``u`` from 0 to 1 across the event, so 0 -> 1 -> 0). With
``z_slices > 1`` the filaments wander in z and a focus sits at one slice, blurred into its
neighbours.

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

    source = SyntheticSource(SyntheticSettings())   # cheap; picklable until open()
    spec = source.open()                             # renders the base images (~0.1-0.5 s)
    source.start(1.0)
    t = source.next_timepoint(stop)                  # sleeps until the scheduled time
    source.set_sequence(seq)                         # only needed with verify=True
    for c, z in source.frame_order():
        t_exp = source.read_frame(c, z, slot[c, z])
    source.stop(); source.close()
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeVar, cast

import numpy as np
from numba import njit

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.shm import StackSpec, stamp_frame
from rt_eda.sources._settings import SettingsSource

from ._pacing import checked_interval, skip_missed, wait_until
from ._protocol import StopFlag

__all__ = ["MAX_EXPOSURE_S", "SyntheticEvent", "SyntheticSettings", "SyntheticSource",
           "open_peak_bytes"]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)`` keeping the function's static type for mypy."""
    return cast(_F, njit(cache=True, nogil=True)(fn))


def _jit_fast(fn: _F) -> _F:
    """Like :func:`_jit` with ``fastmath`` (lets LLVM vectorise the per-pixel loops)."""
    return cast(_F, njit(cache=True, nogil=True, fastmath=True)(fn))


CHANNELS: Final = 2
"""Channels of every synthetic stack: 0 = structure (filaments), 1 = marker (events)."""

SUPPORTED_DTYPES: Final = ("uint8", "uint16", "float32")
"""Pixel types the source renders."""

_FULL_SCALE: Final = {"uint8": 255.0, "uint16": 4095.0, "float32": 1.0}
# Image levels as fractions of the full scale (a 12-bit camera for uint16, so bright pixels
# keep headroom below 65535 and add-ups of overlapping filaments are not clipped).
_OFFSET: Final = 0.025  # camera offset (100 counts of 4095)
_STRUCTURE_GAIN: Final = 0.55  # a single filament's peak above the offset
_BLEED_THROUGH: Final = 0.03  # faint structure seen in the marker channel
_FOCUS_PEAK: Final = 0.5  # a focus at full intensity, above the background
_NOISE_STD: Final = 0.008  # read noise (33 counts of 4095)
_NOISE_UNIT: Final = 24.0  # int8 noise-bank units per standard deviation
_NOISE_PAD: Final = 64  # a noise frame is this much larger than an image, for offsets
_FILAMENTS_PER_MPX: Final = 240.0  # filaments per 2**20 pixels (60 in a 512 x 512 image)
_FILAMENT_SIGMA_PX: Final = (1.2, 2.2)  # tube width (Gaussian sigma) range
_FILAMENT_LENGTH_PX: Final = (40.0, 200.0)
_AXIAL_SIGMA: Final = 0.8  # z blur of filaments and foci, in slices
_FRESH_HORIZON_S: Final = 600.0  # random events are scheduled ahead in blocks of this span
_MASK64: Final = (1 << 64) - 1
MAX_EXPOSURE_S: Final = 3600.0
"""The longest exposure (seconds): ``camera.exposure_ms`` allows no more. 1e12 ms once hung the
source for minutes, generating random events up to the frame's time 31 000 years ahead."""

EventTuple = tuple[float, float, float, float, int]
"""An explicit event as configured: ``(start_s, duration_s, y, x, z)``."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class SyntheticSettings:
    """Settings of :class:`SyntheticSource` (primitives only: it pickles to any process).

    Attributes
    ----------
    height, width
        Image size in pixels (each >= 8: a verification stamp takes 8 pixels of row 0).
    z_slices
        Slices per stack (>= 1).
    dtype
        ``"uint8"``, ``"uint16"`` or ``"float32"``. Integer images use a fixed full scale
        (255, and 4095 like a 12-bit camera for ``uint16``) and are clipped to the type;
        ``float32`` images are on a 0..1 scale and are not clipped.
    seed
        Seeds the filaments, the noise bank, the random event schedule and the per-frame noise
        choice: two sources with the same settings driven by the same calls render identical
        pixels.
    event_every_s
        Mean spacing of the random events' starts, in seconds; 0 schedules none. Spacings are
        ``event_duration_s + Exp(event_every_s - event_duration_s)``, so random events never
        overlap and the first one starts no earlier than ``event_duration_s``.
    event_duration_s
        How long one random event lasts (its focus grows then fades), in seconds; at most
        ``event_every_s``.
    exposure_s
        Exposure of one frame: frame ``i`` of a timepoint (in :meth:`SyntheticSource.frame_order`)
        is stamped ``t + i * exposure_s``. It labels time only; it does not slow the source.
        At most :data:`MAX_EXPOSURE_S` (1 hour): events are rendered at each frame's time, and
        the random schedule is generated up to it.
    verify
        Stamp every frame read with :meth:`SyntheticSource.read_frame` with its sequence
        number (:func:`rt_eda.shm.stamp_frame`) so readers can prove they saw no torn stack.
    events
        Explicit events ``(start_s, duration_s, y, x, z)`` that replace the random schedule
        when given (lists are accepted and stored as tuples).
    noise_frames
        Noise frames kept in the bank (2..256).
    focus_sigma_px
        Gaussian radius of an event's focus (and of :meth:`SyntheticSource.event_mask`).

    Raises
    ------
    ConfigError
        On construction, for any value not allowed; the message names the key
        (``synthetic.<key>``), the value and what is allowed.
    """

    height: int = 512
    width: int = 512
    z_slices: int = 1
    dtype: str = "uint16"
    seed: int = 0
    event_every_s: float = 8.0
    event_duration_s: float = 3.0
    exposure_s: float = 0.01
    verify: bool = False
    events: tuple[EventTuple, ...] = ()
    noise_frames: int = 16
    focus_sigma_px: float = 3.0

    def __post_init__(self) -> None:
        for key, low, high in (
            ("height", 8, 16384),
            ("width", 8, 16384),
            ("z_slices", 1, 1024),
            ("noise_frames", 2, 256),
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                _bad(key, value, f"an integer from {low} to {high}")
        if self.dtype not in SUPPORTED_DTYPES:
            _bad("dtype", self.dtype, "one of " + ", ".join(repr(d) for d in SUPPORTED_DTYPES))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            _bad("seed", self.seed, "an integer >= 0")
        if not isinstance(self.verify, bool):
            _bad("verify", self.verify, "true or false")
        for key in ("event_every_s", "event_duration_s", "exposure_s"):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                _bad(key, value, "a finite number >= 0 (seconds)")
        if self.exposure_s > MAX_EXPOSURE_S:
            _bad("exposure_s", self.exposure_s, f"at most {MAX_EXPOSURE_S:g} (seconds: 1 hour)")
        if not _is_number(self.focus_sigma_px) or not 0.5 <= self.focus_sigma_px <= 50:
            _bad("focus_sigma_px", self.focus_sigma_px, "a number from 0.5 to 50 (pixels)")
        if 0 < self.event_every_s < self.event_duration_s:
            raise ConfigError(
                f"synthetic.event_duration_s ({self.event_duration_s!r}) must be <= "
                f"synthetic.event_every_s ({self.event_every_s!r}), or event_every_s 0 "
                "for no random events"
            )
        object.__setattr__(self, "events", self._checked_events())

    def _checked_events(self) -> tuple[EventTuple, ...]:
        if not isinstance(self.events, tuple | list):
            _bad("events", self.events, "a list of [start_s, duration_s, y, x, z] entries")
        checked: list[EventTuple] = []
        for i, entry in enumerate(self.events):
            key = f"events[{i}]"
            allowed = "[start_s, duration_s, y, x, z] with start_s >= 0, duration_s > 0, " + (
                f"0 <= y < {self.height}, 0 <= x < {self.width}, integer 0 <= z < {self.z_slices}"
            )
            if not isinstance(entry, tuple | list) or len(entry) != 5:
                _bad(key, entry, allowed)
            start, duration, y, x, z = entry
            if not all(_is_number(v) and math.isfinite(v) for v in (start, duration, y, x)):
                _bad(key, entry, allowed)
            if (
                start < 0
                or duration <= 0
                or not 0 <= y < self.height
                or not 0 <= x < self.width
                or not isinstance(z, int)
                or isinstance(z, bool)
                or not 0 <= z < self.z_slices
            ):
                _bad(key, entry, allowed)
            checked.append((float(start), float(duration), float(y), float(x), int(z)))
        return tuple(checked)

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack: ``(2, z_slices, height, width)`` of ``dtype``."""
        return StackSpec(CHANNELS, self.z_slices, self.height, self.width, self.dtype)


def _bad(key: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"synthetic.{key} must be {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class SyntheticEvent:
    """One scheduled event: a marker focus at ``(z, y, x)`` from ``start_s`` for ``duration_s``.

    Times are on the acquisition clock (seconds since :meth:`SyntheticSource.start`).
    """

    start_s: float
    duration_s: float
    y: float
    x: float
    z: int

    @property
    def end_s(self) -> float:
        """When the event is over (exclusive)."""
        return self.start_s + self.duration_s

    def intensity(self, t_s: float) -> float:
        """0..1: ``sin(pi * u)`` with ``u`` the fraction of the event elapsed; 0 outside it."""
        if not self.start_s <= t_s < self.end_s:
            return 0.0
        return math.sin(math.pi * (t_s - self.start_s) / self.duration_s)


# --------------------------------------------------------------------------- numba kernels


@_jit_fast
def _render_int(
    base: np.ndarray,
    noise: np.ndarray,
    dy: int,
    dx: int,
    scale: np.float32,
    hi: np.float32,
    out: np.ndarray,
) -> None:
    """``out = clip(round(base + noise[dy:, dx:] * scale), 0, hi)`` for integer ``out``."""
    h, w = out.shape
    zero = np.float32(0.0)
    half = np.float32(0.5)
    for y in range(h):
        b = base[y]
        n = noise[y + dy, dx : dx + w]
        o = out[y]
        for x in range(w):
            v = np.float32(b[x]) + np.float32(n[x]) * scale
            v = max(v, zero)
            v = min(v, hi)
            o[x] = np.int32(v + half)


@_jit_fast
def _render_float(
    base: np.ndarray, noise: np.ndarray, dy: int, dx: int, scale: np.float32, out: np.ndarray
) -> None:
    """``out = base + noise[dy:, dx:] * scale`` for float ``out`` (no clipping)."""
    h, w = out.shape
    for y in range(h):
        b = base[y]
        n = noise[y + dy, dx : dx + w]
        o = out[y]
        for x in range(w):
            o[x] = b[x] + np.float32(n[x]) * scale


@_jit
def _add_focus(
    out: np.ndarray, cy: float, cx: float, sigma: float, amp: float, hi: float, integer: bool
) -> None:
    """Add ``amp * exp(-r**2 / 2 sigma**2)`` around (cy, cx), within 3.5 sigma only.

    Integer images are rounded and clipped to ``0..hi``.
    """
    h, w = out.shape
    r = math.ceil(3.5 * sigma)
    y0 = max(0, math.floor(cy) - r)
    y1 = min(h, math.floor(cy) + r + 2)
    x0 = max(0, math.floor(cx) - r)
    x1 = min(w, math.floor(cx) + r + 2)
    k = 1.0 / (2.0 * sigma * sigma)
    for y in range(y0, y1):
        ey = (y - cy) * (y - cy)
        for x in range(x0, x1):
            v = out[y, x] + amp * math.exp(-(ey + (x - cx) * (x - cx)) * k)
            if integer:
                v = math.floor(v + 0.5)
                v = min(max(v, 0.0), hi)
            out[y, x] = v


@_jit
def _max_focus(mask: np.ndarray, cy: float, cx: float, sigma: float, amp: float) -> None:
    """``mask = max(mask, amp * exp(-r**2 / 2 sigma**2))`` within 3.5 sigma of (cy, cx)."""
    h, w = mask.shape
    r = math.ceil(3.5 * sigma)
    y0 = max(0, math.floor(cy) - r)
    y1 = min(h, math.floor(cy) + r + 2)
    x0 = max(0, math.floor(cx) - r)
    x1 = min(w, math.floor(cx) + r + 2)
    k = 1.0 / (2.0 * sigma * sigma)
    for y in range(y0, y1):
        ey = (y - cy) * (y - cy)
        for x in range(x0, x1):
            v = amp * math.exp(-(ey + (x - cx) * (x - cx)) * k)
            if v > mask[y, x]:
                mask[y, x] = v


@_jit
def _splat_filaments(
    img: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    zs: np.ndarray,
    sigmas: np.ndarray,
    weights: np.ndarray,
    axial_sigma: float,
) -> None:
    """Draw tubes: a Gaussian (radius ``sigmas[i]``) per path point, into ``img`` (Z, H, W).

    Points 1 px apart with weight ``w / (sqrt(2 pi) sigma)`` add up to a tube whose crest is
    ``w``: a tube convolved with the optical blur. Slices are weighted by the axial blur.
    """
    nz, h, w = img.shape
    kz = 1.0 / (2.0 * axial_sigma * axial_sigma)
    for i in range(ys.shape[0]):
        s = sigmas[i]
        r = math.ceil(3.0 * s)
        cy = ys[i]
        cx = xs[i]
        k = 1.0 / (2.0 * s * s)
        norm = weights[i] / (math.sqrt(2.0 * math.pi) * s)
        y0 = max(0, math.floor(cy) - r)
        y1 = min(h, math.floor(cy) + r + 2)
        x0 = max(0, math.floor(cx) - r)
        x1 = min(w, math.floor(cx) + r + 2)
        for z in range(nz):
            wz = math.exp(-(z - zs[i]) * (z - zs[i]) * kz) * norm
            if wz < 1e-4 * norm:
                continue
            for y in range(y0, y1):
                ey = (y - cy) * (y - cy)
                for x in range(x0, x1):
                    img[z, y, x] += wz * math.exp(-(ey + (x - cx) * (x - cx)) * k)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class _Filaments:
    """Path points of every filament (concatenated) and where each filament starts."""

    ys: np.ndarray
    xs: np.ndarray
    zs: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray
    starts: np.ndarray  # index of each filament's first point; len = filaments + 1


def _wander(steps: np.ndarray, keep: float) -> np.ndarray:
    """A mean-reverting walk: ``v[i] = keep * v[i-1] + steps[i]`` (gently wiggling, no loops)."""
    out = np.empty_like(steps)
    v = 0.0
    for i, step in enumerate(steps.tolist()):
        v = keep * v + step
        out[i] = v
    return out


def _make_filaments(settings: SyntheticSettings, rng: np.random.Generator) -> _Filaments:
    """A network of curved filaments: smooth random walks, some branching off others."""
    h, w, nz = settings.height, settings.width, settings.z_slices
    count = max(4, round(_FILAMENTS_PER_MPX * h * w / 2**20))
    ys: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    headings: list[np.ndarray] = []
    sig: list[np.ndarray] = []
    wts: list[np.ndarray] = []
    while len(ys) < count:
        length = int(rng.uniform(*_FILAMENT_LENGTH_PX))
        if ys and rng.random() < 0.4:  # branch off a point of an earlier filament
            parent = int(rng.integers(len(ys)))
            at = int(rng.integers(len(ys[parent])))
            y0, x0, z0 = ys[parent][at], xs[parent][at], zs[parent][at]
            theta0 = headings[parent][at] + rng.choice((-1.0, 1.0)) * rng.uniform(0.6, 1.4)
        else:
            y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
            z0 = rng.uniform(0, nz - 1) if nz > 1 else 0.0
            theta0 = rng.uniform(0, 2 * math.pi)
        curvature = _wander(rng.normal(0.0, 0.006, length), 0.95)
        theta = theta0 + np.cumsum(curvature)
        y = y0 + np.cumsum(np.sin(theta))
        x = x0 + np.cumsum(np.cos(theta))
        z = np.clip(z0 + np.cumsum(rng.normal(0.0, 0.015, length)), 0, nz - 1)
        inside = (y > -5) & (y < h + 5) & (x > -5) & (x < w + 5)
        n = length if inside.all() else int(np.argmin(inside))
        if n < 8:
            continue
        s = np.arange(n, dtype=np.float64)
        texture = 0.75 + 0.25 * np.sin(2 * math.pi * s / rng.uniform(15, 40) + rng.uniform(0, 6))
        ys.append(y[:n])
        xs.append(x[:n])
        zs.append(z[:n] if nz > 1 else np.zeros(n))
        headings.append(theta[:n])
        sig.append(np.full(n, rng.uniform(*_FILAMENT_SIGMA_PX)))
        wts.append(rng.uniform(0.6, 1.0) * texture)
    starts = np.concatenate(([0], np.cumsum([len(a) for a in ys]))).astype(np.int64)
    return _Filaments(
        np.concatenate(ys),
        np.concatenate(xs),
        np.concatenate(zs),
        np.concatenate(sig),
        np.concatenate(wts),
        starts,
    )


@dataclass(slots=True)
class _Assets:
    """What :meth:`SyntheticSource.open` precomputes: base images, noise bank, constants."""

    base: np.ndarray  # (C, Z, H, W) of the output dtype (float32 for float output)
    noise: np.ndarray  # (N, H + pad, W + pad) int8, _NOISE_UNIT per standard deviation
    scale: np.float32  # noise-bank unit -> output counts
    hi: np.float32  # the clip ceiling of integer output
    integer: bool
    focus_amp: float  # counts of a focus at full intensity


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


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
    wake_late_s_sum: float = 0.0
    wake_late_s_max: float = 0.0
    woken: int = 0


@dataclass(slots=True)
class _Schedule:
    """Events sorted by start; random ones are generated lazily, in order, from one stream."""

    events: list[SyntheticEvent] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    max_duration: float = 0.0
    horizon_s: float = -1.0  # random events are known for start times up to here
    next_start: float = 0.0


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
        self._filaments: _Filaments | None = None
        self._assets: _Assets | None = None
        self._schedule = _Schedule()
        self._event_rng: np.random.Generator | None = None
        self._opened = False
        self._clock: _Clock | None = None
        self._counters = _Counters()
        self._frame_counter = 0
        self._sequence: int | None = None
        self._tuple_cache: tuple[SyntheticEvent, ...] | None = None
        if self._settings.events:
            for start, duration, y, x, z in sorted(self._settings.events):
                self._append_event(SyntheticEvent(start, duration, y, x, z))
            self._schedule.horizon_s = math.inf


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
        self._extend_schedule(0.0)
        if self._tuple_cache is None:
            self._tuple_cache = tuple(self._schedule.events)
        return self._tuple_cache

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
                sum(1 for e in self.events if e.start_s < _FRESH_HORIZON_S),
                _FRESH_HORIZON_S,
                time.perf_counter() - t,
            )
        return self.spec

    def start(self, interval_s: float) -> None:
        """Start the acquisition clock now; the first timepoint is due at once.

        Raises
        ------
        SourceError
            The source is not open.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if not self._opened:
            raise SourceError("synthetic source: start() called before open()")
        self._clock = _Clock(t0=time.monotonic(), interval_s=checked_interval(interval_s))

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
            due = clock.t0
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
        return due

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major: ``(0, 0), (0, 1), ... (0, Z-1), (1, 0), ... (1, Z-1)``."""
        for c in range(CHANNELS):
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
        if not (0 <= c < CHANNELS and 0 <= z < nz):
            raise SourceError(
                f"synthetic source: frame (c={c}, z={z}) out of range: "
                f"{CHANNELS} channels x {nz} z-slices"
            )
        t_exp = clock.t_current + (c * nz + z) * self._settings.exposure_s
        t = time.perf_counter()
        self._render_frame(c, z, t_exp - clock.t0, out)
        if self._settings.verify:
            seq = self._sequence if self._sequence is not None else self._counters.timepoints - 1
            stamp_frame(out, seq, c, z)
        self._counters.render_s += time.perf_counter() - t
        self._counters.frames += 1
        return t_exp

    def stop(self) -> None:
        """Stop the acquisition: :meth:`next_timepoint` returns None from now on."""
        if self._clock is not None and self._clock.running:
            self._clock.running = False
            log.info("synthetic source stopped: %s", self.statistics())

    def close(self) -> None:
        """Drop the rendered images. Safe to call twice, and on a source never opened."""
        self.stop()
        self._assets = None
        self._opened = False

    def statistics(self) -> dict[str, float]:
        """Counters since construction.

        Keys: ``timepoints``, ``frames``, ``timepoints_late`` (times the caller came back more
        than an interval late), ``timepoints_skipped`` (timepoints dropped because of that),
        ``events_scheduled`` (events starting before the current timepoint),
        ``render_ms_mean`` (per frame, stamp included), ``wake_late_ms_mean`` and
        ``wake_late_ms_max`` (how long after its scheduled time a timepoint was returned,
        over timepoints not skipped ahead).
        """
        c = self._counters
        clock = self._clock
        if clock is not None and clock.t_current is not None:
            elapsed = clock.t_current - clock.t0
            self._extend_schedule(elapsed)
            scheduled = bisect.bisect_right(self._schedule.starts, elapsed)
        else:
            scheduled = 0
        return {
            "timepoints": c.timepoints,
            "frames": c.frames,
            "timepoints_late": c.timepoints_late,
            "timepoints_skipped": c.timepoints_skipped,
            "events_scheduled": scheduled,
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
        acquisition. With ``seq`` every frame is stamped with it (whatever ``verify`` says).

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
        for c, z in self.frame_order():
            self._render_frame(c, z, t_s + (c * nz + z) * self._settings.exposure_s, out[c, z])
            if seq is not None:
                stamp_frame(out[c, z], seq, c, z)

    def ground_truth(self, t_s: float) -> float:
        """Intensity (0..1) of the strongest event active at acquisition time ``t_s``."""
        return max((e.intensity(t_s) for e in self._active(t_s)), default=0.0)

    def has_event(self, t_s: float, min_intensity: float = 0.2) -> bool:
        """Whether an event of intensity >= ``min_intensity`` is visible at ``t_s``."""
        return self.ground_truth(t_s) >= min_intensity

    def event_mask(self, t_s: float) -> np.ndarray:
        """The target image at acquisition time ``t_s``: (H, W) float32 in 0..1.

        Each active event contributes its focus (a Gaussian of ``focus_sigma_px``) times its
        intensity; where foci overlap the larger value wins. Z is projected out. All zeros when
        no event is active.
        """
        s = self._settings
        mask = np.zeros((s.height, s.width), np.float32)
        for e in self._active(t_s):
            _max_focus(mask, e.y, e.x, s.focus_sigma_px, e.intensity(t_s))
        return mask

    # ------------------------------------------------------------------ internals

    def _started(self, what: str) -> _Clock:
        if self._clock is None:
            raise SourceError(f"synthetic source: {what}() called before start()")
        return self._clock

    def _geometry(self) -> _Filaments:
        if self._filaments is None:
            self._filaments = _make_filaments(
                self._settings, np.random.default_rng(self._seed_geometry)
            )
        return self._filaments

    def _prepare(self) -> _Assets:
        if self._assets is not None:
            return self._assets
        s = self._settings
        fil = self._geometry()
        structure = np.zeros((s.z_slices, s.height, s.width), np.float64)
        _splat_filaments(structure, fil.ys, fil.xs, fil.zs, fil.sigmas, fil.weights, _AXIAL_SIGMA)
        full = _FULL_SCALE[s.dtype]
        levels = np.empty((CHANNELS, *structure.shape), np.float64)
        levels[0] = (_OFFSET + _STRUCTURE_GAIN * structure) * full
        levels[1] = (_OFFSET + _BLEED_THROUGH * structure) * full
        integer = s.dtype != "float32"
        dtype = np.dtype(s.dtype)
        hi = float(np.iinfo(dtype).max) if integer else math.inf
        if integer:
            base = np.clip(np.rint(levels), 0, hi).astype(dtype)
        else:
            base = levels.astype(np.float32)
        rng = np.random.default_rng(self._seed_noise)
        bank = rng.standard_normal(
            (s.noise_frames, s.height + _NOISE_PAD, s.width + _NOISE_PAD), np.float32
        )
        noise = np.clip(np.rint(bank * _NOISE_UNIT), -127, 127).astype(np.int8)
        assets = _Assets(
            base=base,
            noise=noise,
            scale=np.float32(_NOISE_STD * full / _NOISE_UNIT),
            hi=np.float32(hi if integer else 0.0),
            integer=integer,
            focus_amp=_FOCUS_PEAK * full,
        )
        self._assets = assets
        scratch = np.empty((s.height, s.width), dtype)  # compile or load the kernels now
        self._render_frame(1, 0, -1.0, scratch)
        if integer:
            _add_focus(scratch, 1.0, 1.0, 1.0, 1.0, float(hi), True)
        else:
            _add_focus(scratch, 1.0, 1.0, 1.0, 1.0, 0.0, False)
        return assets

    def _render_frame(self, c: int, z: int, t_s: float, out: np.ndarray) -> None:
        a = self._assets if self._assets is not None else self._prepare()
        s = self._settings
        if out.shape != (s.height, s.width) or out.dtype != a.base.dtype:
            raise SourceError(
                f"synthetic source: frame buffer {out.shape} {out.dtype}, expected "
                f"{(s.height, s.width)} {a.base.dtype}"
            )
        r = _splitmix64(s.seed * 0x100000001B3 + self._frame_counter)
        self._frame_counter += 1
        k = r % s.noise_frames
        dy = (r >> 16) % (_NOISE_PAD + 1)
        dx = (r >> 32) % (_NOISE_PAD + 1)
        if a.integer:
            _render_int(a.base[c, z], a.noise[k], dy, dx, a.scale, a.hi, out)
        else:
            _render_float(a.base[c, z], a.noise[k], dy, dx, a.scale, out)
        if c != 1:
            return
        for e in self._active(t_s):
            dz = z - e.z
            amp = a.focus_amp * e.intensity(t_s) * math.exp(-dz * dz / (2 * _AXIAL_SIGMA**2))
            if amp >= 0.1 * a.scale * _NOISE_UNIT:  # skip below a tenth of the noise sd
                _add_focus(out, e.y, e.x, s.focus_sigma_px, amp, float(a.hi), a.integer)

    def _active(self, t_s: float) -> list[SyntheticEvent]:
        """Events with ``start_s <= t_s < end_s``."""
        self._extend_schedule(t_s)
        sched = self._schedule
        i = bisect.bisect_right(sched.starts, t_s) - 1
        active: list[SyntheticEvent] = []
        while i >= 0 and sched.starts[i] > t_s - sched.max_duration:
            event = sched.events[i]
            if t_s < event.end_s:
                active.append(event)
            i -= 1
        return active

    def _append_event(self, event: SyntheticEvent) -> None:
        self._schedule.events.append(event)
        self._schedule.starts.append(event.start_s)
        self._schedule.max_duration = max(self._schedule.max_duration, event.duration_s)
        self._tuple_cache = None

    def _extend_schedule(self, t_s: float) -> None:
        """Generate random events until their starts cover ``t_s`` (and the first 600 s)."""
        sched = self._schedule
        s = self._settings
        if t_s <= sched.horizon_s:
            return
        if s.event_every_s == 0 or s.event_duration_s == 0:
            sched.horizon_s = math.inf
            return
        if self._event_rng is None:
            self._event_rng = np.random.default_rng(self._seed_events)
            sched.next_start = self._gap()
        fil = self._geometry()
        rng = self._event_rng
        # Foci sit on filament points inside the image (2 px from the border if it can).
        inside = np.flatnonzero(
            (fil.ys >= 2) & (fil.ys < s.height - 2) & (fil.xs >= 2) & (fil.xs < s.width - 2)
        )
        target = max(t_s, sched.horizon_s) + _FRESH_HORIZON_S
        while sched.next_start <= target:
            if inside.size:
                i = int(inside[rng.integers(inside.size)])
                y, x, z = float(fil.ys[i]), float(fil.xs[i]), round(float(fil.zs[i]))
            else:
                y, x, z = (s.height - 1) / 2, (s.width - 1) / 2, 0
            self._append_event(SyntheticEvent(sched.next_start, s.event_duration_s, y, x, z))
            sched.next_start += self._gap()
        sched.horizon_s = target

    def _gap(self) -> float:
        s = self._settings
        assert self._event_rng is not None
        return s.event_duration_s + float(
            self._event_rng.exponential(s.event_every_s - s.event_duration_s)
            if s.event_every_s > s.event_duration_s
            else 0.0
        )


def open_peak_bytes(settings: SyntheticSettings) -> int:
    """Peak bytes :meth:`SyntheticSource.open` allocates for ``settings``.

    ``_prepare`` keeps the structure (float64) and two channel levels (float64) while it
    makes the base images (rounding and clipping make two more float64 copies of the
    levels), then draws the noise bank (float32, scaled, rounded and clipped copies, then
    int8). The engine refuses a run whose renderer cannot fit before anything starts.
    """
    zhw = settings.z_slices * settings.height * settings.width
    item = np.dtype(settings.dtype).itemsize
    base_step = zhw * (8 + 16 + 16 + 16 + CHANNELS * item)
    noise = settings.noise_frames * (settings.height + _NOISE_PAD) * (settings.width + _NOISE_PAD)
    noise_step = zhw * (8 + 16 + CHANNELS * item) + 12 * noise
    return int(max(base_step, noise_step))
