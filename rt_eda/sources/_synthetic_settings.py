"""Settings of the synthetic source: a frozen dataclass of primitives (it pickles to any
process), and the stack shape they give."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, NoReturn

from rt_eda.core.errors import ConfigError
from rt_eda.shm import StackSpec

__all__ = ["CHANNELS", "MAX_EXPOSURE_S", "EventTuple", "SyntheticSettings"]

CHANNELS: Final = 2
"""Channels of every synthetic stack: 0 = structure (filaments), 1 = marker (events)."""

SUPPORTED_DTYPES: Final = ("uint8", "uint16", "float32")
"""Pixel types the source renders."""

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
