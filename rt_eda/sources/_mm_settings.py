"""Settings of the Micro-Manager source, derived from the validated configuration, and the
acquisition mode they choose for an interval.

The configuration checks every value once, when it loads (:mod:`rt_eda.core.config`); the
settings never check those values again. Three ways to build them:

* :meth:`MicroManagerSettings.from_config`: the engine's way. ``camera.source``
  (``mm-demo`` or ``mmconfig:PATH``), ``camera.exposure_ms``, ``camera.channel_group``,
  ``camera.channels`` and ``camera.z_positions`` of a loaded configuration, as they are.
* :meth:`MicroManagerSettings.create`: for Python callers (tests, benchmarks). Those keys go
  through the configuration's own checks, so a value not allowed is refused with the line a
  configuration file would get (``camera.exposure_ms: 0 (int) is not allowed; ...``).
* The plain constructor checks nothing: it is for values already valid (the result of one of
  those two, or a ``dataclasses.replace`` of it). Its defaults are the configuration's
  (a test holds them equal).

Five settings have no configuration key, because only Python callers set them:
``buffer_mb``, ``sequence_below_s``, ``properties``, ``adapter_path`` and ``python_devices``.
``from_config`` and ``create`` check those, once, naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NoReturn

from rt_eda.core.config import Config, SourceKind
from rt_eda.core.errors import ConfigError

__all__ = ["AcquisitionMode", "MicroManagerSettings"]

_SEQUENCE_BELOW_S: Final = 0.05


class AcquisitionMode(StrEnum):
    """How the frames of a timepoint are acquired (see :mod:`rt_eda.sources.micromanager`)."""

    SEQUENCE = "sequence"
    SNAP = "snap"


@dataclass(frozen=True, slots=True)
class MicroManagerSettings:
    """Settings of :class:`~rt_eda.sources.micromanager.MicroManagerSource` (primitives only:
    it pickles to any process). Build them with :meth:`from_config` or :meth:`create` (see
    the module docstring); the constructor checks nothing.

    Attributes
    ----------
    config_path
        ``camera.source``'s path: a Micro-Manager hardware configuration (``.cfg``), or None
        for ``mm-demo``, the DemoCamera configuration
        (:data:`~rt_eda.sources.micromanager.DEMO_CONFIG_NAME` from mm-test-adapters).
    exposure_ms
        ``camera.exposure_ms``; set at ``open``, within the camera's own limits.
    channel_group, channels
        ``camera.channel_group`` and ``camera.channels``: the configuration group holding the
        channel presets and the presets of one stack, in acquisition order. No channels: the
        stack has one channel and no preset is applied.
    z_positions
        ``camera.z_positions``: absolute positions (micrometres) of the focus device, in
        acquisition order; none: one z-slice at wherever the stage is.
    buffer_mb
        Micro-Manager's circular-buffer size in MB (``setCircularBufferMemoryFootprint``);
        None keeps Micro-Manager's default (no configuration key).
    sequence_below_s
        Single-frame stacks use sequence acquisition for intervals below this (seconds), or
        below twice the exposure; 0 means only below twice the exposure (and free-run) (no
        configuration key).
    properties
        ``(device, property, value)`` triples set after the configuration is loaded (for
        example ``("Camera", "FastImage", "1")`` for a faster DemoCamera) (no configuration
        key).
    adapter_path
        Folder of the device adapters; None: mm-test-adapters' folder for the demo, else
        ``pymmcore_plus.find_micromanager()`` (no configuration key).
    positions, position_names
        An acquisition plan's stage positions, ``(x, y, z)`` in micrometres (None: that
        axis is not moved), and their names; empty without a plan. With positions, every
        stack is snapped (the camera's scheduler moves the XY stage between them).
    z_relative
        ``z_positions`` are offsets from each position's z (a plan's relative z plan; the
        focus position at ``open`` for a position without z), not absolute positions.
    python_devices
        Make the core a pymmcore-plus ``UniMMCore`` (a ``CMMCorePlus`` that also takes
        Python devices) instead of a plain ``CMMCorePlus``, so the stimulation actuator can
        load a :class:`~rt_eda.sources._slm.VirtualDMD` into the camera's own core
        (:meth:`~rt_eda.sources.micromanager.MicroManagerSource.slm_core`). Off by default:
        the C++ devices work the same either way, but every core call then goes through
        ``UniMMCore``'s Python-device dispatch first (no configuration key).
    """

    config_path: str | None = None
    exposure_ms: float = 10.0
    channel_group: str = ""
    channels: tuple[str, ...] = ()
    z_positions: tuple[float, ...] = ()
    buffer_mb: int | None = None
    sequence_below_s: float = _SEQUENCE_BELOW_S
    properties: tuple[tuple[str, str, str], ...] = ()
    adapter_path: str | None = None
    positions: tuple[tuple[float | None, float | None, float | None], ...] = ()
    position_names: tuple[str, ...] = ()
    z_relative: bool = False
    python_devices: bool = False

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        buffer_mb: int | None = None,
        sequence_below_s: float = _SEQUENCE_BELOW_S,
        properties: Sequence[Sequence[str]] = (),
        adapter_path: str | None = None,
        python_devices: bool = False,
    ) -> MicroManagerSettings:
        """The settings a validated configuration gives (nothing of it is checked again).

        Parameters
        ----------
        config
            A loaded configuration whose ``camera.source`` is ``mm-demo`` or
            ``mmconfig:PATH``.
        buffer_mb, sequence_below_s, properties, adapter_path, python_devices
            The settings without a configuration key (see the class docstring).

        Raises
        ------
        ConfigError
            ``camera.source`` is not a Micro-Manager source; a setting without a key is not
            allowed (the argument, the value and what is allowed are named).
        """
        cam = config.camera
        spec = cam.source_spec
        if spec.kind not in (SourceKind.MM_DEMO, SourceKind.MMCONFIG):
            raise ConfigError(
                f"camera.source: {cam.source!r} is not a Micro-Manager source "
                "(expected 'mm-demo' or 'mmconfig:PATH')"
            )
        channel_group = cam.channel_group
        channels = tuple(cam.channels)
        z_positions = tuple(float(z) for z in cam.z_positions)
        z_relative = False
        positions: tuple[tuple[float | None, float | None, float | None], ...] = ()
        names: tuple[str, ...] = ()
        if cam.plan:  # checked against camera.channels / z_positions when it loaded
            from rt_eda.core.plan import load_plan

            plan = load_plan(cam.plan)
            if plan.channels:
                channels = plan.channel_names
                channel_group = plan.channels[0].group or channel_group or "Channel"
            if plan.z:
                z_positions, z_relative = plan.z, plan.z_relative
            positions = tuple((p.x, p.y, p.z) for p in plan.positions)
            names = tuple(p.name for p in plan.positions)
        return cls(
            config_path=None if spec.path is None else str(spec.path),
            exposure_ms=float(cam.exposure_ms),
            channel_group=channel_group,
            channels=channels,
            z_positions=z_positions,
            buffer_mb=_checked_buffer(buffer_mb),
            sequence_below_s=_checked_sequence_below(sequence_below_s),
            properties=_checked_properties(properties),
            adapter_path=_checked_adapter_path(adapter_path),
            positions=positions,
            position_names=names,
            z_relative=z_relative,
            python_devices=_checked_flag("python_devices", python_devices),
        )

    @classmethod
    def create(
        cls,
        *,
        config_path: str | None = None,
        exposure_ms: float | None = None,
        channel_group: str | None = None,
        channels: Sequence[str] | None = None,
        z_positions: Sequence[float] | None = None,
        buffer_mb: int | None = None,
        sequence_below_s: float = _SEQUENCE_BELOW_S,
        properties: Sequence[Sequence[str]] = (),
        adapter_path: str | None = None,
        python_devices: bool = False,
    ) -> MicroManagerSettings:
        """Settings from keyword arguments, checked as a configuration would be.

        Parameters
        ----------
        config_path
            The ``.cfg`` file (``camera.source = "mmconfig:PATH"``: it must exist; a relative
            path is taken from the current folder and stored absolute), or None for
            ``mm-demo``.
        exposure_ms, channel_group, channels, z_positions
            The ``[camera]`` keys of that name (None: the configuration's default).
        buffer_mb, sequence_below_s, properties, adapter_path, python_devices
            As for :meth:`from_config`.

        Raises
        ------
        ConfigError
            Every key of the configuration not allowed, one line each, named as in a
            configuration file (``camera.exposure_ms``, ``camera.channel_group`` ...); then
            the settings without a key, as for :meth:`from_config`.
        """
        overrides: dict[str, object] = {
            "camera.source": "mm-demo" if config_path is None else f"mmconfig:{config_path}"
        }
        for key, value in (("exposure_ms", exposure_ms), ("channel_group", channel_group),
                           ("channels", channels), ("z_positions", z_positions)):
            if value is not None:
                overrides[f"camera.{key}"] = value
        config = Config().with_overrides(overrides, source="Micro-Manager source settings")
        return cls.from_config(config, buffer_mb=buffer_mb, sequence_below_s=sequence_below_s,
                               properties=properties, adapter_path=adapter_path,
                               python_devices=python_devices)

    @property
    def exposure_s(self) -> float:
        """The exposure in seconds."""
        return self.exposure_ms / 1000.0

    @property
    def frames_per_stack(self) -> int:
        """Channels x z positions (each at least 1)."""
        return max(1, len(self.channels)) * max(1, len(self.z_positions))

    def mode_for(self, interval_s: float) -> AcquisitionMode:
        """The acquisition mode used at ``interval_s`` (see :mod:`rt_eda.sources.micromanager`;
        always snaps with a plan's positions: the stage moves between stacks)."""
        if not self.positions and self.frames_per_stack == 1 and (
            interval_s < self.sequence_below_s or interval_s < 2.0 * self.exposure_s
        ):
            return AcquisitionMode.SEQUENCE
        return AcquisitionMode.SNAP


# ------------------------------------------------------------------ settings without a key


def _bad(key: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"Micro-Manager source settings: {key} must be {allowed}, got {value!r}")


def _checked_buffer(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    _bad("buffer_mb", value, "an integer >= 1 (MB) or None")


def _checked_sequence_below(value: object) -> float:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    _bad("sequence_below_s", value, "a finite number >= 0 (seconds)")


def _checked_properties(value: object) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(value, tuple | list):
        _bad("properties", value, "a list of (device, property, value) string triples")
    checked: list[tuple[str, str, str]] = []
    for prop in value:
        if (
            not isinstance(prop, tuple | list)
            or len(prop) != 3
            or not all(isinstance(p, str) for p in prop)
        ):
            _bad("properties", prop, "(device, property, value) string triples")
        checked.append((str(prop[0]), str(prop[1]), str(prop[2])))
    return tuple(checked)


def _checked_adapter_path(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    _bad("adapter_path", value, "a folder path (str) or None")


def _checked_flag(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    _bad(key, value, "True or False")
