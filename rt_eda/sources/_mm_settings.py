"""Settings of the Micro-Manager source: a frozen dataclass of primitives (it pickles to any
process), and the acquisition mode they choose for an interval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from rt_eda.core.errors import ConfigError

__all__ = ["AcquisitionMode", "MicroManagerSettings"]


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
