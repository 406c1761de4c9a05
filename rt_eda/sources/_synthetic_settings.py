"""Settings of the synthetic source, derived from the validated configuration.

The configuration checks every value once, when it loads (:mod:`rt_eda.core.config`); the
settings never check those values again. Three ways to build them:

* :meth:`SyntheticSettings.from_config`: the engine's way. ``[camera.synthetic]``,
  ``camera.exposure_ms`` and ``run.verify`` of a loaded configuration, as they are.
* :meth:`SyntheticSettings.create`: for Python callers (tests, benchmarks, training). The
  keys of ``[camera.synthetic]`` and ``camera.exposure_ms`` go through the configuration's
  own checks, so a value not allowed is refused with the line a configuration file would get
  (``camera.synthetic.height: 4 (int) is not allowed; expected an integer from 8 to 16384
  (pixels)``).
* The plain constructor checks nothing: it is for values already valid (the result of one of
  those two, or a ``dataclasses.replace`` of it). Its defaults are the configuration's
  (a test holds them equal).

Four settings have no configuration key, because only Python callers (or an acquisition
plan) set them: ``events``, ``noise_frames``, ``focus_sigma_px`` and ``channels``.
``from_config`` and ``create`` check the first three, once, naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError
from rt_eda.shm import StackSpec

__all__ = ["CHANNELS", "CHANNEL_PRESETS", "EventTuple", "SyntheticSettings"]

CHANNEL_PRESETS: Final = ("structure", "marker", "marker2", "dark")
"""The synthetic source's channel presets, by index: what an acquisition channel can image.

``structure``: the filament network (mitochondria-like). ``marker``: a low background with the
event foci (division markers), the channel the demo model reads. ``marker2``: a second,
dimmer marker of the same events (its foci at 60 % of the marker's peak) over more
bleed-through of the structure: the same sites in another fluorophore. ``dark``: no
excitation (the camera's offset and read noise only): a channel whose light is off, e.g. a
second marker imaged only while an event lasts (``examples/second_marker.yaml``).
"""

CHANNELS: Final = len(CHANNEL_PRESETS)
"""Base images the synthetic source renders from, one per preset of :data:`CHANNEL_PRESETS`."""

EventTuple = tuple[float, float, float, float, int]
"""An explicit event: ``(start_s, duration_s, y, x, z)``."""

_NOISE_FRAMES: Final = 16
_FOCUS_SIGMA_PX: Final = 3.0


@dataclass(frozen=True, slots=True)
class SyntheticSettings:
    """Settings of :class:`~rt_eda.sources.synthetic.SyntheticSource` (primitives only: it
    pickles to any process). Build them with :meth:`from_config` or :meth:`create` (see the
    module docstring); the constructor checks nothing.

    Attributes
    ----------
    height, width, z_slices, dtype, seed, event_every_s, event_duration_s
        The keys of ``[camera.synthetic]`` (what each allows is the configuration's). Integer
        images use a fixed full scale (255, and 4095 like a 12-bit camera for ``uint16``) and
        are clipped to the type; ``float32`` images are on a 0..1 scale and are not clipped.
        ``seed`` seeds the filaments, the noise bank, the random event schedule and the
        per-frame noise choice: two sources with the same settings driven by the same calls
        render identical pixels. Random events start ``event_duration_s +
        Exp(event_every_s - event_duration_s)`` apart, so they never overlap and the first
        starts no earlier than ``event_duration_s``; ``event_every_s`` 0 schedules none.
    exposure_s
        ``camera.exposure_ms`` in seconds: frame ``i`` of a timepoint (in
        :meth:`~rt_eda.sources.synthetic.SyntheticSource.frame_order`) is stamped ``t + i *
        exposure_s``. It labels time only; it does not slow the source.
    verify
        ``camera.synthetic.verify`` or ``run.verify``: stamp every frame read with its
        sequence number (:func:`rt_eda.shm.stamp_frame`) so readers can prove they saw no
        torn stack.
    events
        Explicit events ``(start_s, duration_s, y, x, z)`` that replace the random schedule
        when given (no configuration key).
    noise_frames
        Noise frames kept in the bank, 2..256 (no configuration key).
    focus_sigma_px
        Gaussian radius of an event's focus (and of the event mask), 0.5..50 pixels (no
        configuration key).
    channels
        The preset (an index of :data:`CHANNEL_PRESETS`: 0 structure, 1 marker, 2 marker2)
        each acquisition channel of a stack starts with, in order: structure and marker by
        default; an acquisition plan's ``channels`` choose them by name. Their count is the
        stack's channels; :meth:`~rt_eda.sources.synthetic.SyntheticSource.set_channel_presets`
        changes the presets during a run, never the count.
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
    noise_frames: int = _NOISE_FRAMES
    focus_sigma_px: float = _FOCUS_SIGMA_PX
    channels: tuple[int, ...] = (0, 1)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        events: Sequence[Sequence[float]] = (),
        noise_frames: int = _NOISE_FRAMES,
        focus_sigma_px: float = _FOCUS_SIGMA_PX,
    ) -> SyntheticSettings:
        """The settings a validated configuration gives (nothing of it is checked again).

        Parameters
        ----------
        config
            A loaded configuration: ``[camera.synthetic]``, ``camera.exposure_ms`` and
            ``run.verify`` are used.
        events, noise_frames, focus_sigma_px
            The settings without a configuration key (see the class docstring); lists are
            accepted and stored as tuples.

        Raises
        ------
        ConfigError
            ``events``, ``noise_frames`` or ``focus_sigma_px`` is not allowed (the argument,
            the value and what is allowed are named).
        """
        syn = config.camera.synthetic
        return cls(
            height=syn.height,
            width=syn.width,
            z_slices=syn.z_slices,
            dtype=syn.dtype,
            seed=syn.seed,
            event_every_s=syn.event_every_s,
            event_duration_s=syn.event_duration_s,
            exposure_s=config.camera.exposure_ms / 1000.0,
            verify=syn.verify or config.run.verify,
            events=_checked_events(events, syn.height, syn.width, syn.z_slices),
            noise_frames=_checked_noise_frames(noise_frames),
            focus_sigma_px=_checked_focus_sigma(focus_sigma_px),
        )

    @classmethod
    def create(
        cls,
        *,
        exposure_ms: float | None = None,
        events: Sequence[Sequence[float]] = (),
        noise_frames: int = _NOISE_FRAMES,
        focus_sigma_px: float = _FOCUS_SIGMA_PX,
        **synthetic: object,
    ) -> SyntheticSettings:
        """Settings from keyword arguments, checked as a configuration would be.

        Parameters
        ----------
        exposure_ms
            ``camera.exposure_ms`` (None: the configuration's default).
        events, noise_frames, focus_sigma_px
            As for :meth:`from_config`.
        **synthetic
            Keys of ``[camera.synthetic]``: ``height``, ``width``, ``z_slices``, ``dtype``,
            ``seed``, ``event_every_s``, ``event_duration_s``, ``verify``.

        Raises
        ------
        ConfigError
            Every key of the configuration not allowed, one line each, named as in a
            configuration file (``camera.synthetic.<key>``, ``camera.exposure_ms``; an
            unknown key names the nearest one); then the settings without a key, as for
            :meth:`from_config`.
        """
        overrides: dict[str, object] = {
            f"camera.synthetic.{key}": value for key, value in synthetic.items()
        }
        if exposure_ms is not None:
            overrides["camera.exposure_ms"] = exposure_ms
        config = Config().with_overrides(overrides, source="synthetic source settings")
        return cls.from_config(
            config, events=events, noise_frames=noise_frames, focus_sigma_px=focus_sigma_px
        )

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack: ``(len(channels), z_slices, height, width)`` of
        ``dtype``."""
        return StackSpec(len(self.channels), self.z_slices, self.height, self.width,
                         self.dtype)


# ------------------------------------------------------------------ settings without a key


def _bad(key: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"synthetic source settings: {key} must be {allowed}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked_noise_frames(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 256:
        _bad("noise_frames", value, "an integer from 2 to 256")
    return value


def _checked_focus_sigma(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.5 <= value <= 50:
        _bad("focus_sigma_px", value, "a number from 0.5 to 50 (pixels)")
    return float(value)


def _checked_events(
    events: object, height: int, width: int, z_slices: int
) -> tuple[EventTuple, ...]:
    if not isinstance(events, tuple | list):
        _bad("events", events, "a list of [start_s, duration_s, y, x, z] entries")
    allowed = "[start_s, duration_s, y, x, z] with start_s >= 0, duration_s > 0, " + (
        f"0 <= y < {height}, 0 <= x < {width}, integer 0 <= z < {z_slices}"
    )
    checked: list[EventTuple] = []
    for i, entry in enumerate(events):
        key = f"events[{i}]"
        if not isinstance(entry, tuple | list) or len(entry) != 5:
            _bad(key, entry, allowed)
        start, duration, y, x, z = entry
        if not all(_is_number(v) and math.isfinite(v) for v in (start, duration, y, x)):
            _bad(key, entry, allowed)
        if (
            start < 0
            or duration <= 0
            or not 0 <= y < height
            or not 0 <= x < width
            or not isinstance(z, int)
            or isinstance(z, bool)
            or not 0 <= z < z_slices
        ):
            _bad(key, entry, allowed)
        checked.append((float(start), float(duration), float(y), float(x), int(z)))
    return tuple(checked)
