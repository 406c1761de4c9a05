"""The sections of the configuration, one pydantic model per TOML table (the root,
:class:`~rt_eda.core.config.Config`, holds them).

Each field states what it allows (the text of its error messages); the checks that involve
two keys of a section are model validators raising :func:`cross_error`, so they run once both
keys hold values of the right kind.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal, Self

from pydantic import ValidationInfo, field_validator, model_validator

from ._files import GIB, MIB, path_problem
from ._source_spec import SOURCE_FORMS, SourceKind, SourceSpec, parse_source
from ._validation import Section, cross_error, key_field, resolve_path, value_error

__all__ = [
    "ActuationConfig",
    "AnalysisConfig",
    "CameraConfig",
    "InterpreterConfig",
    "RingConfig",
    "RunConfig",
    "SyntheticConfig",
    "ViewerConfig",
    "WriterConfig",
]

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DEVICE_RE = re.compile(r"^(cpu|gpu|gpu:[0-9]+)$")


class SyntheticConfig(Section):
    """``[camera.synthetic]``: the synthetic source (two channels, scheduled events)."""

    section: ClassVar[str] = "camera.synthetic"

    height: int = key_field(512, "an integer from 8 to 16384 (pixels)", ge=8, le=16384)
    width: int = key_field(512, "an integer from 8 to 16384 (pixels)", ge=8, le=16384)
    z_slices: int = key_field(1, "an integer from 1 to 1024", ge=1, le=1024)
    dtype: Literal["uint8", "uint16", "float32"] = key_field(
        "uint16", "one of 'uint8', 'uint16', 'float32'"
    )
    seed: int = key_field(0, "an integer >= 0", ge=0)
    event_every_s: float = key_field(
        8.0, "a number >= 0 (mean seconds between event starts; 0 = no events)", ge=0
    )
    event_duration_s: float = key_field(
        3.0,
        "a number >= 0 and <= camera.synthetic.event_every_s unless that is 0 (seconds)",
        ge=0,
    )
    verify: bool = key_field(False, "true or false (stamp each frame with its sequence number)")
    stage_move_ms: float = key_field(
        10.0, "a number >= 0 and at most 60000 (milliseconds a simulated stage move between "
        "two plan positions takes)", ge=0, le=60_000
    )

    @model_validator(mode="after")
    def _check_events(self) -> Self:
        if 0 < self.event_every_s < self.event_duration_s:
            raise cross_error(
                f"camera.synthetic.event_duration_s ({self.event_duration_s:g}) must be <= "
                f"camera.synthetic.event_every_s ({self.event_every_s:g}), or event_every_s 0 "
                "for no events"
            )
        return self


class CameraConfig(Section):
    """``[camera]``: the image source and the acquisition it runs."""

    section: ClassVar[str] = "camera"

    source: str = key_field("synthetic", SOURCE_FORMS + " (the path must exist)")
    interval: float = key_field(
        1.0, "a number >= 0 (starting interval in seconds; 0 = free-run)", ge=0
    )
    # 1 hour: longer is not a microscope frame but a unit slip (us or ns given as ms); 1e12 ms
    # once hung the synthetic source for minutes, generating random events up to the frame's
    # time 31 000 years ahead. A camera's own limits are checked when it opens
    # (Micro-Manager's Exposure limits).
    exposure_ms: float = key_field(
        10.0, "a number > 0 and at most 3600000 (milliseconds: 1 hour)", gt=0, le=3_600_000
    )
    channels: tuple[str, ...] = key_field(
        (), "a list of strings (Micro-Manager channel preset names)", strict=False
    )
    channel_group: str = key_field(
        "", "a string (the Micro-Manager channel group)", validate_default=True
    )
    z_positions: tuple[float, ...] = key_field(
        (), "a list of numbers (z positions in micrometres)", strict=False
    )
    realtime_priority: int = key_field(
        10, "an integer from 0 to 99 (SCHED_FIFO priority of the camera process; the "
        "interpreter runs one below it; 0 = off)",
        ge=0, le=99,
    )
    plan: str = key_field(
        "", "'' (no plan: one position) or the path of a useq-schema MDASequence, YAML or "
        "JSON (stage positions, channels, z plan)"
    )
    settle_ms: float = key_field(
        0.0, "a number >= 0 and at most 60000 (milliseconds waited after every stage move "
        "before exposing)", ge=0, le=60_000
    )
    synthetic: SyntheticConfig = key_field(SyntheticConfig(), "a table of [camera.synthetic] keys")

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str, info: ValidationInfo) -> str:
        parsed, why = parse_source(value)
        if parsed is None:
            raise value_error(why)
        if parsed.path is None:
            return value
        path = resolve_path(str(parsed.path), info)
        # What a file holds is the source's to judge (at open, before anything starts);
        # here: that it is there and can be read.
        if parsed.kind is SourceKind.MMCONFIG:
            problem = path_problem(path, empty_ok=True)
            expected = "a Micro-Manager configuration (.cfg) file"
        else:
            problem = path_problem(path, folder_ok=True, empty_ok=True)
            expected = "a recording: a run folder, an OME-Zarr or an (OME-)TIFF file"
        if problem is not None:
            raise value_error(f"{value!r}: {path} {problem}; expected {expected}")
        return f"{parsed.kind.value}:{path}"

    @field_validator("channel_group")
    @classmethod
    def _check_group(cls, value: str, info: ValidationInfo) -> str:
        # Declared after ``channels``, so ``channels`` (when valid) is in ``info.data``.
        channels = info.data.get("channels", ())
        if channels and not value:
            raise cross_error(
                f"camera.channel_group is empty but camera.channels is {list(channels)!r}; "
                "name the group the presets belong to"
            )
        return value

    @field_validator("plan")
    @classmethod
    def _check_plan_path(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        path = resolve_path(value, info)
        problem = path_problem(path)
        if problem is not None:
            raise value_error(f"{value!r}: {path} {problem}; expected a useq-schema "
                              "MDASequence (YAML or JSON)")
        return str(path)

    @model_validator(mode="after")
    def _check_plan(self) -> Self:
        """The plan itself (one line per problem) and what it asks of the source."""
        if not self.plan:
            return self
        from rt_eda.core.errors import ConfigError
        from rt_eda.core.plan import load_plan

        try:
            plan = load_plan(self.plan)
        except ConfigError as exc:
            raise cross_error(str(exc)) from None
        kind = self.source_spec.kind
        where = f"camera.plan: {self.plan}"
        if kind is SourceKind.REPLAY:
            raise cross_error(f"{where}: {self.source} replays the recording's own positions, "
                              "channels and z; a plan does not apply to a replay (leave "
                              "camera.plan out)")
        if kind is SourceKind.SYNTHETIC:
            from rt_eda.core.plan import SYNTHETIC_CHANNELS

            other = [c for c in plan.channel_names if c not in SYNTHETIC_CHANNELS]
            if other:
                raise cross_error(f"{where}: channels {other} are not channels of the "
                                  f"synthetic source (it has {list(SYNTHETIC_CHANNELS)})")
            n_z = self.synthetic.z_slices
            if plan.z and n_z != 1 and n_z != len(plan.z):
                raise cross_error(f"{where}: z_plan gives {len(plan.z)} z positions, "
                                  f"camera.synthetic.z_slices is {n_z}; set one of them")
            return self
        if plan.channels and self.channels and tuple(self.channels) != plan.channel_names:
            raise cross_error(f"{where}: channels {list(plan.channel_names)} contradict "
                              f"camera.channels {list(self.channels)}; set one of them")
        if plan.channels and self.channel_group and plan.channels[0].group and (
                plan.channels[0].group != self.channel_group):
            raise cross_error(f"{where}: channel group {plan.channels[0].group!r} contradicts "
                              f"camera.channel_group {self.channel_group!r}")
        if plan.z and self.z_positions:
            raise cross_error(f"{where}: z_plan and camera.z_positions both give z "
                              "positions; set one of them")
        return self

    @property
    def source_spec(self) -> SourceSpec:
        """The parsed source (its path, if any, is absolute and existed at load)."""
        parsed, _ = parse_source(self.source)
        assert parsed is not None  # validated on construction
        return parsed


class RingConfig(Section):
    """``[ring]``: the shared-memory stack ring."""

    section: ClassVar[str] = "ring"

    slots: int = key_field(0, "0 (automatic, from ring.buffer_s) or an integer from 2 to 4096")
    buffer_s: float = key_field(
        2.0, "a number > 0 (seconds of acquisition the automatic ring holds)", gt=0
    )
    max_bytes: int = key_field(2 * GIB, f"an integer >= {MIB} (bytes; 1 MiB)", ge=MIB)

    @field_validator("slots")
    @classmethod
    def _check_slots(cls, value: int) -> int:
        if value == 1 or value < 0 or value > 4096:
            raise value_error(
                f"{value} is not allowed; expected 0 (automatic) or an integer from 2 to 4096")
        return value


_Primitive = str | int | float | bool


class AnalysisConfig(Section):
    """``[analysis]``: the worker processes and what they run."""

    section: ClassVar[str] = "analysis"

    worker: str = key_field(
        "DemoModelWorker", "a worker class name (built-in or from analysis.worker_modules)"
    )
    model: str = key_field(
        "",
        "'' (the worker's own default) or the path of an existing .keras/.h5/.hdf5 file",
    )
    workers: int = key_field(1, "an integer >= 1 (worker processes)", ge=1)
    threads_per_worker: int = key_field(
        1, "an integer >= 1 (compute threads per worker process)", ge=1
    )
    n_timepoints: int = key_field(1, "an integer >= 1 (stacks per analysis window)", ge=1)
    channels_to_use: tuple[int, ...] = key_field(
        (),
        "a list of integers >= 0 (acquisition channel per model input channel; [] = all)",
        strict=False,
    )
    worker_modules: tuple[str, ...] = key_field(
        (), "a list of dotted Python module names", strict=False
    )
    watchdog_s: float = key_field(
        0.0,
        "a number >= 0: the seconds a worker may hold one stack before it is killed and "
        "restarted (0 = automatic: 10 x the worker's own p99 analysis time, at least 5 s)",
        ge=0,
    )
    options: dict[str, _Primitive] = key_field(
        {}, "a table of worker settings (strings, numbers or booleans)"
    )
    device: str = key_field(
        "cpu", "'cpu', 'gpu' (the first GPU) or 'gpu:N' (GPU number N >= 0), where the "
        "workers run the model"
    )

    @field_validator("worker")
    @classmethod
    def _check_worker(cls, value: str) -> str:
        if not value.strip():
            raise value_error("'' is not allowed; expected a worker class name")
        return value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        path = resolve_path(value, info)
        if path.suffix.lower() not in _MODEL_SUFFIXES:
            raise value_error(
                f"{value!r} is not a model file; expected '' or a path ending in "
                + ", ".join(_MODEL_SUFFIXES)
            )
        problem = path_problem(path, empty_ok=True)  # what it holds: the model loader's
        if problem is not None:
            raise value_error(f"{value!r}: model file {path} {problem}")
        return str(path)

    @field_validator("channels_to_use")
    @classmethod
    def _check_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [c for c in value if c < 0]
        if bad:
            raise value_error(
                f"{list(value)!r} holds negative channel indices {bad}; "
                "expected a list of integers >= 0"
            )
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise value_error(f"{value!r} is not 'cpu', 'gpu' or 'gpu:N' (N >= 0)")
        return value

    @field_validator("worker_modules")
    @classmethod
    def _check_modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in value if not _MODULE_RE.match(m)]
        if bad:
            raise value_error(f"{bad!r} are not dotted module names (like 'my_lab.workers')")
        return value


class InterpreterConfig(Section):
    """``[interpreter]``: how results change the acquisition.

    ``binary``: slow until a decision exceeds ``upper_threshold``, then fast until a decision
    falls below ``lower_threshold`` after at least ``min_fast_frames`` fast stacks.
    ``manual``: holds ``manual_interval`` (unset = ``camera.interval``) until changed at run
    time. Non-finite decisions (NaN, inf) are never acted on; ``max_nonfinite_in_a_row`` of
    them in a row make the run a fault (the detector is broken).
    """

    section: ClassVar[str] = "interpreter"

    kind: Literal["binary", "manual"] = key_field("binary", "one of 'binary', 'manual'")
    slow_interval: float = key_field(1.0, "a number >= 0 (seconds; 0 = free-run)", ge=0)
    fast_interval: float = key_field(
        0.1, "a number >= 0 and <= interpreter.slow_interval (seconds)", ge=0
    )
    lower_threshold: float = key_field(0.3, "a number <= interpreter.upper_threshold")
    upper_threshold: float = key_field(0.48, "a number >= interpreter.lower_threshold")
    min_fast_frames: int = key_field(1, "an integer >= 1", ge=1)
    manual_interval: float | None = key_field(
        None, "a number >= 0 (seconds), or unset for camera.interval", ge=0
    )
    max_nonfinite_in_a_row: int = key_field(
        20, "an integer >= 0 (0: never a fault)", ge=0
    )

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        problems = []
        if self.lower_threshold > self.upper_threshold:
            problems.append(
                f"interpreter.lower_threshold ({self.lower_threshold:g}) must be <= "
                f"interpreter.upper_threshold ({self.upper_threshold:g})"
            )
        if self.fast_interval > self.slow_interval:
            problems.append(
                f"interpreter.fast_interval ({self.fast_interval:g}) must be <= "
                f"interpreter.slow_interval ({self.slow_interval:g})"
            )
        if problems:
            raise cross_error("\n".join(problems))
        return self


class ActuationConfig(Section):
    """``[actuation]``: what a decision does besides the interval (``rt_eda.actuators``).

    ``actuators`` names them (``rt-eda actuators`` lists them; ``--actuator NAME`` on the
    command line, repeatable); ``interval`` is the interpreter's own fast/slow interval and
    is always on, whether named or not. ``actuator_modules`` are importable modules whose
    actuators become selectable, as ``analysis.worker_modules`` for workers. ``options``
    holds one table per actuator (``[actuation.options.roi] margin_px = 24``).
    """

    section: ClassVar[str] = "actuation"

    actuators: tuple[str, ...] = key_field(
        ("interval",), "a list of actuator names (see `rt-eda actuators`)", strict=False
    )
    actuator_modules: tuple[str, ...] = key_field(
        (), "a list of dotted Python module names", strict=False
    )
    options: dict[str, dict[str, _Primitive | list[_Primitive]]] = key_field(
        {}, "a table of tables: [actuation.options.<actuator>] key = value"
    )

    @field_validator("actuators")
    @classmethod
    def _check_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: list[str] = []
        for name in value:
            if not name.strip():
                raise value_error("'' is not allowed; expected an actuator name")
            if name not in seen:
                seen.append(name)
        return tuple(seen)

    @field_validator("actuator_modules")
    @classmethod
    def _check_modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _MODULE_RE.match(name):
                raise value_error(f"{name!r} is not a dotted Python module name")
        return value


class WriterConfig(Section):
    """``[writer]``: how a run is saved (only with ``run.save``)."""

    section: ClassVar[str] = "writer"

    format: Literal["zarr", "tiff"] = key_field("zarr", "one of 'zarr', 'tiff'")
    save_network_images: bool = key_field(True, "true or false")


class ViewerConfig(Section):
    """``[viewer]``: the live viewer (``auto`` = when a display is available)."""

    section: ClassVar[str] = "viewer"

    enabled: Literal["auto"] | bool = key_field("auto", "'auto', true or false")
    max_fps: float = key_field(30.0, "a number > 0 (redraws per second)", gt=0)


class RunConfig(Section):
    """``[run]``: how long to run and what to write; unset keys have no value."""

    section: ClassVar[str] = "run"

    duration: float | None = key_field(
        None, "a number > 0 (seconds), or unset to run until Ctrl-C", gt=0
    )
    save: str | None = key_field(None, "a folder path, or unset to save nothing")
    summary: str | None = key_field(None, "a file path for the JSON summary, or unset")
    verify: bool = key_field(False, "true or false (workers check frame stamps)")
    profile: str | None = key_field(None, "a path for profiling output, or unset")
    debug: bool = key_field(False, "true or false")
    strict: bool = key_field(
        False, "true or false (refuse a run that exceeds the disk or cores measured)"
    )

    @field_validator("save", "summary", "profile")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise value_error("'' is not allowed; expected a path, or leave the key out")
        return str(resolve_path(value, info))
