"""What the synthetic source shows: the filament network, the images and noise bank made
from it, and the event schedule (the ground truth).

* :func:`make_filaments`: a network of curved tubes (smooth random walks, some branching off
  others), drawn once from the geometry seed;
* :class:`Images` (:func:`make_images`): the base image of each channel preset
  (structure, marker, marker2) and z-slice and a bank of noise frames, made once at
  ``open``; :meth:`Images.render` makes one frame, or one window of it (a camera ROI), from
  them (one numba pass, plus a pass over each active focus);
* :class:`EventSchedule`: explicit events, or random ones generated lazily, in order, from
  one stream, so the schedule never changes, it only grows; :meth:`EventSchedule.active`
  is what the frames show and what the ground truth reports;
* :func:`open_peak_bytes`: what making the images costs in memory.

Image levels are fractions of a full scale (a 12-bit camera for ``uint16``, so bright
pixels keep headroom below 65535 and add-ups of overlapping filaments are not clipped).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from rt_eda.core.regions import FrameRegion

from ._synthetic_kernels import add_focus, render_float, render_int, splat_filaments
from ._synthetic_settings import CHANNELS, SyntheticSettings

__all__ = [
    "FRESH_HORIZON_S",
    "EventSchedule",
    "Filaments",
    "Images",
    "SyntheticEvent",
    "make_filaments",
    "make_images",
    "open_peak_bytes",
    "splitmix64",
]

_FULL_SCALE: Final = {"uint8": 255.0, "uint16": 4095.0, "float32": 1.0}
_OFFSET: Final = 0.025  # camera offset (100 counts of 4095)
_STRUCTURE_GAIN: Final = 0.55  # a single filament's peak above the offset
_BLEED_THROUGH: Final = 0.03  # faint structure seen in the marker channel
_BLEED_THROUGH_2: Final = 0.08  # marker2: a fluorophore that picks up more of the structure
_FOCUS_PEAK: Final = 0.5  # a focus at full intensity, above the background
_FOCUS_GAIN: Final = (0.0, 1.0, 0.6, 0.0)  # of _FOCUS_PEAK, per preset: none in structure, dark
_NOISE_STD: Final = 0.008  # read noise (33 counts of 4095)
_NOISE_UNIT: Final = 24.0  # int8 noise-bank units per standard deviation
_NOISE_PAD: Final = 64  # a noise frame is this much larger than an image, for offsets
_FILAMENTS_PER_MPX: Final = 240.0  # filaments per 2**20 pixels (60 in a 512 x 512 image)
_FILAMENT_SIGMA_PX: Final = (1.2, 2.2)  # tube width (Gaussian sigma) range
_FILAMENT_LENGTH_PX: Final = (40.0, 200.0)
_AXIAL_SIGMA: Final = 0.8  # z blur of filaments and foci, in slices
FRESH_HORIZON_S: Final = 600.0
"""Random events are scheduled ahead in blocks of this span (seconds)."""
_MASK64: Final = (1 << 64) - 1


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



# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class Filaments:
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


def make_filaments(settings: SyntheticSettings, rng: np.random.Generator) -> Filaments:
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
    return Filaments(
        np.concatenate(ys),
        np.concatenate(xs),
        np.concatenate(zs),
        np.concatenate(sig),
        np.concatenate(wts),
        starts,
    )



def splitmix64(x: int) -> int:
    """SplitMix64: a well-mixed 64-bit hash of ``x`` (picks each frame's noise)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


# --------------------------------------------------------------------------- images


@dataclass(slots=True)
class Images:
    """What :meth:`SyntheticSource.open` precomputes: base images, noise bank, constants."""

    base: np.ndarray  # (presets, Z, H, W) of the output dtype (float32 for float output)
    noise: np.ndarray  # (N, H + pad, W + pad) int8, _NOISE_UNIT per standard deviation
    scale: np.float32  # noise-bank unit -> output counts
    hi: np.float32  # the clip ceiling of integer output
    integer: bool
    focus_amp: float  # counts of a focus at full intensity (the marker's)

    @staticmethod
    def shows_events(preset: int) -> bool:
        """Whether frames of ``preset`` (an index of ``CHANNEL_PRESETS``) show the foci."""
        return _FOCUS_GAIN[preset] > 0.0

    def render(self, preset: int, z: int, r: int, t_s: float, active: list[SyntheticEvent],
               focus_sigma_px: float, out: np.ndarray, window: FrameRegion) -> int:
        """Frame (preset, z) into ``window`` of ``out``: the base image plus the noise frame
        picked by ``r`` (a :func:`splitmix64` value, read at an offset it also picks), plus,
        in the marker presets, the focus of each event of ``active`` at time ``t_s``.

        ``out`` must be the full (H, W) frame of the base's dtype and ``window`` inside it
        (the caller checks both); pixels outside the window are not touched, and those inside
        are what a full-frame render with the same ``r`` gives there. Returns the pixels
        written (the window, plus the foci's pixels within it).
        """
        k = r % self.noise.shape[0]
        dy = (r >> 16) % (_NOISE_PAD + 1)
        dx = (r >> 32) % (_NOISE_PAD + 1)
        y0, x0, y1, x1 = window.y, window.x, window.y1, window.x1
        if self.integer:
            pixels = render_int(self.base[preset, z], self.noise[k], dy, dx, self.scale,
                                self.hi, out, y0, x0, y1, x1)
        else:
            pixels = render_float(self.base[preset, z], self.noise[k], dy, dx, self.scale, out,
                                  y0, x0, y1, x1)
        peak = self.focus_amp * _FOCUS_GAIN[preset]
        if peak <= 0.0:
            return int(pixels)
        for e in active:
            dz = z - e.z
            amp = peak * e.intensity(t_s) * math.exp(-dz * dz / (2 * _AXIAL_SIGMA**2))
            if amp >= 0.1 * self.scale * _NOISE_UNIT:  # skip below a tenth of the noise sd
                pixels += add_focus(out, e.y, e.x, focus_sigma_px, amp, float(self.hi),
                                    self.integer, y0, x0, y1, x1)
        return int(pixels)

    def warm_up(self, scratch: np.ndarray) -> None:
        """Compile (or load from numba's cache) the focus kernel, drawing into ``scratch``."""
        h, w = scratch.shape
        add_focus(scratch, 1.0, 1.0, 1.0, 1.0, float(self.hi), self.integer, 0, 0, h, w)


def make_images(settings: SyntheticSettings, filaments: Filaments,
                seed_noise: np.random.SeedSequence) -> Images:
    """The base images (filaments blurred, at each preset's levels) and the noise bank."""
    s = settings
    fil = filaments
    structure = np.zeros((s.z_slices, s.height, s.width), np.float64)
    splat_filaments(structure, fil.ys, fil.xs, fil.zs, fil.sigmas, fil.weights, _AXIAL_SIGMA)
    full = _FULL_SCALE[s.dtype]
    levels = np.empty((CHANNELS, *structure.shape), np.float64)
    levels[0] = (_OFFSET + _STRUCTURE_GAIN * structure) * full
    levels[1] = (_OFFSET + _BLEED_THROUGH * structure) * full
    levels[2] = (_OFFSET + _BLEED_THROUGH_2 * structure) * full
    levels[3] = _OFFSET * full  # dark: no excitation, the offset (and the noise) only
    integer = s.dtype != "float32"
    dtype = np.dtype(s.dtype)
    hi = float(np.iinfo(dtype).max) if integer else math.inf
    base = (np.clip(np.rint(levels), 0, hi).astype(dtype) if integer
            else levels.astype(np.float32))
    rng = np.random.default_rng(seed_noise)
    bank = rng.standard_normal(
        (s.noise_frames, s.height + _NOISE_PAD, s.width + _NOISE_PAD), np.float32
    )
    noise = np.clip(np.rint(bank * _NOISE_UNIT), -127, 127).astype(np.int8)
    return Images(
        base=base,
        noise=noise,
        scale=np.float32(_NOISE_STD * full / _NOISE_UNIT),
        hi=np.float32(hi if integer else 0.0),
        integer=integer,
        focus_amp=_FOCUS_PEAK * full,
    )


def open_peak_bytes(settings: SyntheticSettings) -> int:
    """Peak bytes :meth:`SyntheticSource.open` allocates for ``settings``.

    :func:`make_images` keeps the structure (float64) and the levels of every preset
    (float64) while it makes the base images (rounding and clipping make two more float64
    copies of the levels), then draws the noise bank (float32, scaled, rounded and clipped
    copies, then int8). The engine refuses a run whose renderer cannot fit before anything
    starts.
    """
    zhw = settings.z_slices * settings.height * settings.width
    item = np.dtype(settings.dtype).itemsize
    levels = CHANNELS * 8
    base_step = zhw * (8 + 3 * levels + CHANNELS * item)
    noise = settings.noise_frames * (settings.height + _NOISE_PAD) * (settings.width + _NOISE_PAD)
    noise_step = zhw * (8 + levels + CHANNELS * item) + 12 * noise
    return int(max(base_step, noise_step))


# --------------------------------------------------------------------------- events


class EventSchedule:
    """Events sorted by start; random ones are generated lazily, in order, from one stream.

    Explicit events (``settings.events``) replace the random schedule. Random events start
    ``event_duration_s + Exp(event_every_s - event_duration_s)`` apart and sit on filament
    points inside the image; they are generated ahead in blocks of :data:`FRESH_HORIZON_S`
    whenever a time past the known horizon is asked about, so the schedule is the same
    however it is explored. One thread only.

    Parameters
    ----------
    settings
        The source's settings (events, spacing, duration, image size).
    seed
        The event stream's seed.
    geometry
        Gives the filaments (made on first use; shared with the images).
    """

    def __init__(self, settings: SyntheticSettings, seed: np.random.SeedSequence,
                 geometry: Callable[[], Filaments]) -> None:
        self._settings = settings
        self._seed = seed
        self._geometry = geometry
        self._rng: np.random.Generator | None = None
        self._events: list[SyntheticEvent] = []
        self._starts: list[float] = []
        self._max_duration = 0.0
        self._horizon_s = -1.0  # random events are known for start times up to here
        self._next_start = 0.0
        self._tuple_cache: tuple[SyntheticEvent, ...] | None = None
        if settings.events:
            for start, duration, y, x, z in sorted(settings.events):
                self._append(SyntheticEvent(start, duration, y, x, z))
            self._horizon_s = math.inf

    def known(self) -> tuple[SyntheticEvent, ...]:
        """Every event known so far (at least those starting in the first 600 s), by start."""
        self.extend(0.0)
        if self._tuple_cache is None:
            self._tuple_cache = tuple(self._events)
        return self._tuple_cache

    def started(self, t_s: float) -> int:
        """How many events start at or before ``t_s``."""
        self.extend(t_s)
        return bisect.bisect_right(self._starts, t_s)

    def active(self, t_s: float) -> list[SyntheticEvent]:
        """Events with ``start_s <= t_s < end_s``."""
        self.extend(t_s)
        i = bisect.bisect_right(self._starts, t_s) - 1
        active: list[SyntheticEvent] = []
        while i >= 0 and self._starts[i] > t_s - self._max_duration:
            event = self._events[i]
            if t_s < event.end_s:
                active.append(event)
            i -= 1
        return active

    def extend(self, t_s: float) -> None:
        """Generate random events until their starts cover ``t_s`` (and the first 600 s)."""
        s = self._settings
        if t_s <= self._horizon_s:
            return
        if s.event_every_s == 0 or s.event_duration_s == 0:
            self._horizon_s = math.inf
            return
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
            self._next_start = self._gap()
        fil = self._geometry()
        rng = self._rng
        # Foci sit on filament points inside the image (2 px from the border if it can).
        inside = np.flatnonzero(
            (fil.ys >= 2) & (fil.ys < s.height - 2) & (fil.xs >= 2) & (fil.xs < s.width - 2)
        )
        target = max(t_s, self._horizon_s) + FRESH_HORIZON_S
        while self._next_start <= target:
            if inside.size:
                i = int(inside[rng.integers(inside.size)])
                y, x, z = float(fil.ys[i]), float(fil.xs[i]), round(float(fil.zs[i]))
            else:
                y, x, z = (s.height - 1) / 2, (s.width - 1) / 2, 0
            self._append(SyntheticEvent(self._next_start, s.event_duration_s, y, x, z))
            self._next_start += self._gap()
        self._horizon_s = target

    def _append(self, event: SyntheticEvent) -> None:
        self._events.append(event)
        self._starts.append(event.start_s)
        self._max_duration = max(self._max_duration, event.duration_s)
        self._tuple_cache = None

    def _gap(self) -> float:
        s = self._settings
        assert self._rng is not None
        return s.event_duration_s + float(
            self._rng.exponential(s.event_every_s - s.event_duration_s)
            if s.event_every_s > s.event_duration_s
            else 0.0
        )
