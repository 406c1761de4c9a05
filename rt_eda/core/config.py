"""The rt-eda configuration: one TOML file, validated on load.

A configuration is a frozen tree of pydantic models, one per TOML section::

    [camera]             source, interval, exposure_ms, channels, channel_group, z_positions
    [camera.synthetic]   height, width, z_slices, dtype, seed, event_every_s, event_duration_s,
                         verify
    [ring]               slots, buffer_s, max_bytes
    [analysis]           worker, model, workers, threads_per_worker, n_timepoints,
                         channels_to_use, worker_modules, watchdog_s
    [analysis.options]   free-form worker settings (strings, numbers, booleans)
    [interpreter]        kind, slow_interval, fast_interval, lower_threshold, upper_threshold,
                         min_fast_frames, manual_interval, max_nonfinite_in_a_row
    [writer]             format, save_network_images
    [viewer]             enabled, max_fps
    [run]                duration, save, summary, verify, profile, debug

Guarantees
----------
- Every key has a default; :func:`load_config` with no path returns the embedded default.
- Every problem is reported at once, one line per problem, as a
  :class:`~rt_eda.core.errors.ConfigError` whose lines name the full dotted key
  (``analysis.workers``), the value given and what is allowed. An unknown key names the
  nearest valid key. No pydantic error text reaches the user.
- Values are checked strictly: ``workers = "2"`` is an error, not silently 2; integers are
  accepted where a number is asked for; NaN and infinities are refused everywhere.
- Checks that involve two keys (``lower_threshold <= upper_threshold``) run once both keys
  hold values of the right kind, so they are reported together with other sections' problems
  but after their own keys' problems are fixed.
- Relative paths (``mmconfig:``/``replay:`` sources, ``analysis.model``, ``run.save``,
  ``run.summary``, ``run.profile``) are relative to the configuration file's folder when they
  come from a file, and to the current folder when they come from overrides (the command
  line). They are stored absolute, so the saved configuration of a run is self-contained.
- A :class:`Config` is immutable and pickles (it is sent to spawned processes as is, without
  being validated again).
- An original eda_plugin ``settings.json`` (any path ending in ``.json``) is imported through
  :mod:`rt_eda.core.legacy_settings`; :func:`load_config_with_notes` also returns the notes that
  say what was taken and what has no counterpart.
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import stat
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rt_eda.core.errors import ConfigError

__all__ = [
    "AnalysisConfig",
    "CameraConfig",
    "Config",
    "InterpreterConfig",
    "RingConfig",
    "RunConfig",
    "SourceKind",
    "SourceSpec",
    "SyntheticConfig",
    "ViewerConfig",
    "WriterConfig",
    "all_keys",
    "load_config",
    "load_config_with_notes",
    "parse_source_spec",
    "path_problem",
    "read_text_input",
]

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2

# Error types raised by this module's own validators; their message is already user-facing.
_VALUE_ERROR = "rt_eda_value"  # one key's value: the line is "<key>: <message>"
_CROSS_ERROR = "rt_eda_cross"  # several keys: the message names them itself

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _field(default: Any, allowed: str, **constraints: Any) -> Any:
    """A field whose description is the "what is allowed" text of its error messages."""
    return Field(default, description=allowed, **constraints)


def _value_error(detail: str) -> PydanticCustomError:
    return PydanticCustomError(_VALUE_ERROR, "{detail}", {"detail": detail})


def _resolve_path(text: str, info: ValidationInfo) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute():
        context = info.context if isinstance(info.context, Mapping) else {}
        base = context.get("base_dir")
        path = (Path(base) if base is not None else Path.cwd()) / path
    try:
        return _resolved(path)
    except ConfigError as exc:
        raise _value_error(f"{text!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Files the user names: read, or refused with one line that says what is wrong

MAX_CONFIG_BYTES = 16 * MIB
"""The largest configuration file read (anything larger is not a configuration)."""

_ELOOP = errno.ELOOP


def _resolved(path: Path) -> Path:
    """``path`` made absolute with symbolic links resolved; ConfigError for a link loop."""
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise ConfigError(f"{path} is a symbolic link loop") from None
    except OSError as exc:
        if exc.errno == _ELOOP:
            raise ConfigError(f"{path} is a symbolic link loop") from None
        raise ConfigError(f"{path} cannot be looked at: {exc.strerror or exc}") from None


def _node_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def path_problem(path: Path, *, folder_ok: bool = False, empty_ok: bool = False) -> str | None:
    """Why ``path`` cannot be read as an input (None when it can).

    Parameters
    ----------
    path
        An absolute path (symbolic links are followed).
    folder_ok
        A folder is acceptable (a run folder, an OME-Zarr); otherwise only a regular file.
    empty_ok
        A file of 0 bytes is acceptable.

    Returns
    -------
    str | None
        "does not exist", "is a folder, not a file", "is a FIFO ...", "is empty (0 bytes)",
        "cannot be read: Permission denied", ...: the words after the path in a message.
        Never blocks (a FIFO or device is never opened) and never raises.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return "is a symbolic link to nothing" if path.is_symlink() else "does not exist"
    except NotADirectoryError:
        return "does not exist (a folder on its way is a file)"
    except OSError as exc:
        if exc.errno == _ELOOP:
            return "is a symbolic link loop"
        return f"cannot be looked at: {exc.strerror or exc}"
    try:
        if stat.S_ISDIR(st.st_mode):
            if not folder_ok:
                return "is a folder: it is not a file"
            with os.scandir(path) as entries:
                next(entries, None)
            return None
        if not stat.S_ISREG(st.st_mode):
            kind = _node_kind(st.st_mode)
            return f"is {kind}, not a {'file or folder' if folder_ok else 'regular file'}"
        if st.st_size == 0 and not empty_ok:
            return "is empty (0 bytes)"
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def read_text_input(path: str | Path, what: str) -> tuple[Path, str]:
    """Read a configuration-like file the user named, as UTF-8 text.

    Parameters
    ----------
    path
        The file (``~`` expanded, relative to the current folder).
    what
        How messages name it, e.g. ``"configuration file"``.

    Returns
    -------
    tuple[Path, str]
        The absolute path (links resolved) and the text.

    Raises
    ------
    ConfigError
        One line naming the file and what is wrong: a link loop, missing, a folder, a FIFO or
        device (never opened, so never waited on), empty, larger than
        :data:`MAX_CONFIG_BYTES`, unreadable, or not UTF-8 text.
    """
    raw = Path(path).expanduser().absolute()
    try:
        resolved = _resolved(raw)
    except ConfigError as exc:
        raise ConfigError(f"{what} {exc}") from None
    problem = path_problem(resolved)
    if problem is not None:
        named = f"{raw} (a link to {resolved})" if raw != resolved else str(raw)
        raise ConfigError(f"{what} {named} {problem}")
    size = resolved.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {resolved} is {size / MIB:.0f} MiB; a configuration is at "
                          f"most {MAX_CONFIG_BYTES // MIB} MiB (is it the right file?)")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {resolved} cannot be read: {exc.strerror or exc}") from None
    try:
        return resolved, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {resolved} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}): is it a binary file?"
        ) from None


# --------------------------------------------------------------------------------------------
# Source specs


class SourceKind(StrEnum):
    """The kinds of image source a ``camera.source`` spec can name."""

    SYNTHETIC = "synthetic"
    MM_DEMO = "mm-demo"
    MMCONFIG = "mmconfig"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed ``camera.source`` spec: its kind and, for ``mmconfig``/``replay``, its path."""

    kind: SourceKind
    path: Path | None = None


_SOURCE_FORMS = "'synthetic', 'mm-demo', 'mmconfig:PATH' or 'replay:PATH'"


def _parse_source(spec: str) -> tuple[SourceSpec | None, str]:
    """Parse without touching the disk; ``(None, why)`` when the form is wrong."""
    if spec in (SourceKind.SYNTHETIC, SourceKind.MM_DEMO):
        return SourceSpec(SourceKind(spec)), ""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in (SourceKind.MMCONFIG, SourceKind.REPLAY):
        if not rest.strip():
            return None, f"{spec!r} names no path after '{prefix}:'"
        return SourceSpec(SourceKind(prefix), Path(rest)), ""
    return None, f"{spec!r} is not a source spec; expected {_SOURCE_FORMS}"


def parse_source_spec(spec: str) -> SourceSpec:
    """Parse a ``camera.source`` spec.

    Parameters
    ----------
    spec
        ``synthetic``, ``mm-demo``, ``mmconfig:PATH`` or ``replay:PATH``.

    Returns
    -------
    SourceSpec
        The kind, and the path as written (not resolved, not checked).

    Raises
    ------
    ConfigError
        The spec has none of the four forms (the message quotes it).
    """
    parsed, why = _parse_source(spec)
    if parsed is None:
        raise ConfigError(f"camera.source: {why}")
    return parsed


# --------------------------------------------------------------------------------------------
# Sections


class _Section(BaseModel):
    """Base of every section: strict, frozen, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    #: The dotted path of this section in the configuration ("" for the root).
    section: ClassVar[str] = ""

    def with_changes(self, changes: Mapping[str, object], *, source: str = "") -> Self:
        """A validated copy of this section with some keys changed.

        Parameters
        ----------
        changes
            Keys of this section (not dotted) and their new values.
        source
            Where the change comes from, for the error header (e.g. ``"run-time control"``).

        Returns
        -------
        Self
            A new section; this one is unchanged (it is frozen).

        Raises
        ------
        ConfigError
            A value is not allowed or a key is unknown; nothing is changed.
        """
        data = self.model_dump(mode="python")
        data.update(changes)
        return _validate(type(self), data, source=source or "change", base_dir=None)


class SyntheticConfig(_Section):
    """``[camera.synthetic]``: the synthetic source (two channels, scheduled events)."""

    section: ClassVar[str] = "camera.synthetic"

    height: int = _field(512, "an integer from 8 to 16384 (pixels)", ge=8, le=16384)
    width: int = _field(512, "an integer from 8 to 16384 (pixels)", ge=8, le=16384)
    z_slices: int = _field(1, "an integer from 1 to 1024", ge=1, le=1024)
    dtype: Literal["uint8", "uint16", "float32"] = _field(
        "uint16", "one of 'uint8', 'uint16', 'float32'"
    )
    seed: int = _field(0, "an integer >= 0", ge=0)
    event_every_s: float = _field(
        8.0, "a number >= 0 (mean seconds between event starts; 0 = no events)", ge=0
    )
    event_duration_s: float = _field(
        3.0,
        "a number >= 0 and <= camera.synthetic.event_every_s unless that is 0 (seconds)",
        ge=0,
    )
    verify: bool = _field(False, "true or false (stamp each frame with its sequence number)")

    @model_validator(mode="after")
    def _check_events(self) -> Self:
        if 0 < self.event_every_s < self.event_duration_s:
            raise PydanticCustomError(
                _CROSS_ERROR,
                "{detail}",
                {
                    "detail": (
                        f"camera.synthetic.event_duration_s ({self.event_duration_s:g}) must be "
                        f"<= camera.synthetic.event_every_s ({self.event_every_s:g}), or "
                        "event_every_s 0 for no events"
                    )
                },
            )
        return self


class CameraConfig(_Section):
    """``[camera]``: the image source and the acquisition it runs."""

    section: ClassVar[str] = "camera"

    source: str = _field("synthetic", _SOURCE_FORMS + " (the path must exist)")
    interval: float = _field(
        1.0, "a number >= 0 (starting interval in seconds; 0 = free-run)", ge=0
    )
    # 1 hour: longer is not a microscope frame but a unit slip (us or ns given as ms); 1e12 ms
    # once hung the synthetic source for minutes, generating random events up to the frame's
    # time 31 000 years ahead. A camera's own limits are checked when it opens
    # (Micro-Manager's Exposure limits).
    exposure_ms: float = _field(
        10.0, "a number > 0 and at most 3600000 (milliseconds: 1 hour)", gt=0, le=3_600_000
    )
    channels: tuple[str, ...] = _field(
        (), "a list of strings (Micro-Manager channel preset names)", strict=False
    )
    channel_group: str = _field(
        "", "a string (the Micro-Manager channel group)", validate_default=True
    )
    z_positions: tuple[float, ...] = _field(
        (), "a list of numbers (z positions in micrometres)", strict=False
    )
    realtime_priority: int = _field(
        10, "an integer from 0 to 99 (SCHED_FIFO priority of the camera process; 0 = off)",
        ge=0, le=99,
    )
    synthetic: SyntheticConfig = _field(SyntheticConfig(), "a table of [camera.synthetic] keys")

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str, info: ValidationInfo) -> str:
        parsed, why = _parse_source(value)
        if parsed is None:
            raise _value_error(why)
        if parsed.path is None:
            return value
        path = _resolve_path(str(parsed.path), info)
        # What a file holds is the source's to judge (at open, before anything starts);
        # here: that it is there and can be read.
        if parsed.kind is SourceKind.MMCONFIG:
            problem = path_problem(path, empty_ok=True)
            expected = "a Micro-Manager configuration (.cfg) file"
        else:
            problem = path_problem(path, folder_ok=True, empty_ok=True)
            expected = "a recording: a run folder, an OME-Zarr or an (OME-)TIFF file"
        if problem is not None:
            raise _value_error(f"{value!r}: {path} {problem}; expected {expected}")
        return f"{parsed.kind.value}:{path}"

    @field_validator("channel_group")
    @classmethod
    def _check_group(cls, value: str, info: ValidationInfo) -> str:
        # Declared after ``channels``, so ``channels`` (when valid) is in ``info.data``.
        channels = info.data.get("channels", ())
        if channels and not value:
            raise PydanticCustomError(
                _CROSS_ERROR,
                "{detail}",
                {
                    "detail": (
                        f"camera.channel_group is empty but camera.channels is "
                        f"{list(channels)!r}; name the group the presets belong to"
                    )
                },
            )
        return value

    @property
    def source_spec(self) -> SourceSpec:
        """The parsed source (its path, if any, is absolute and existed at load)."""
        parsed, _ = _parse_source(self.source)
        assert parsed is not None  # validated on construction
        return parsed


class RingConfig(_Section):
    """``[ring]``: the shared-memory stack ring."""

    section: ClassVar[str] = "ring"

    slots: int = _field(0, "0 (automatic, from ring.buffer_s) or an integer from 2 to 4096")
    buffer_s: float = _field(
        2.0, "a number > 0 (seconds of acquisition the automatic ring holds)", gt=0
    )
    max_bytes: int = _field(2 * GIB, f"an integer >= {MIB} (bytes; 1 MiB)", ge=MIB)

    @field_validator("slots")
    @classmethod
    def _check_slots(cls, value: int) -> int:
        if value == 1 or value < 0 or value > 4096:
            raise _value_error(
                f"{value} is not allowed; expected 0 (automatic) or an integer from 2 to 4096")
        return value


_Primitive = str | int | float | bool


class AnalysisConfig(_Section):
    """``[analysis]``: the worker processes and what they run."""

    section: ClassVar[str] = "analysis"

    worker: str = _field(
        "DemoModelWorker", "a worker class name (built-in or from analysis.worker_modules)"
    )
    model: str = _field(
        "",
        "'' (the worker's own default) or the path of an existing .keras/.h5/.hdf5 file",
    )
    workers: int = _field(1, "an integer >= 1 (worker processes)", ge=1)
    threads_per_worker: int = _field(
        1, "an integer >= 1 (compute threads per worker process)", ge=1
    )
    n_timepoints: int = _field(1, "an integer >= 1 (stacks per analysis window)", ge=1)
    channels_to_use: tuple[int, ...] = _field(
        (),
        "a list of integers >= 0 (acquisition channel per model input channel; [] = all)",
        strict=False,
    )
    worker_modules: tuple[str, ...] = _field(
        (), "a list of dotted Python module names", strict=False
    )
    watchdog_s: float = _field(
        0.0,
        "a number >= 0: the seconds a worker may hold one stack before it is killed and "
        "restarted (0 = automatic: 10 x the worker's own p99 analysis time, at least 5 s)",
        ge=0,
    )
    options: dict[str, _Primitive] = _field(
        {}, "a table of worker settings (strings, numbers or booleans)"
    )

    @field_validator("worker")
    @classmethod
    def _check_worker(cls, value: str) -> str:
        if not value.strip():
            raise _value_error("'' is not allowed; expected a worker class name")
        return value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        path = _resolve_path(value, info)
        if path.suffix.lower() not in _MODEL_SUFFIXES:
            raise _value_error(
                f"{value!r} is not a model file; expected '' or a path ending in "
                + ", ".join(_MODEL_SUFFIXES)
            )
        problem = path_problem(path, empty_ok=True)  # what it holds: the model loader's
        if problem is not None:
            raise _value_error(f"{value!r}: model file {path} {problem}")
        return str(path)

    @field_validator("channels_to_use")
    @classmethod
    def _check_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [c for c in value if c < 0]
        if bad:
            raise _value_error(
                f"{list(value)!r} holds negative channel indices {bad}; "
                "expected a list of integers >= 0"
            )
        return value

    @field_validator("worker_modules")
    @classmethod
    def _check_modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in value if not _MODULE_RE.match(m)]
        if bad:
            raise _value_error(f"{bad!r} are not dotted module names (like 'my_lab.workers')")
        return value


class InterpreterConfig(_Section):
    """``[interpreter]``: how results change the acquisition.

    ``binary``: slow until a decision exceeds ``upper_threshold``, then fast until a decision
    falls below ``lower_threshold`` after at least ``min_fast_frames`` fast stacks.
    ``manual``: holds ``manual_interval`` (unset = ``camera.interval``) until changed at run
    time. Non-finite decisions (NaN, inf) are never acted on; ``max_nonfinite_in_a_row`` of
    them in a row make the run a fault (the detector is broken).
    """

    section: ClassVar[str] = "interpreter"

    kind: Literal["binary", "manual"] = _field("binary", "one of 'binary', 'manual'")
    slow_interval: float = _field(1.0, "a number >= 0 (seconds; 0 = free-run)", ge=0)
    fast_interval: float = _field(
        0.1, "a number >= 0 and <= interpreter.slow_interval (seconds)", ge=0
    )
    lower_threshold: float = _field(0.3, "a number <= interpreter.upper_threshold")
    upper_threshold: float = _field(0.48, "a number >= interpreter.lower_threshold")
    min_fast_frames: int = _field(1, "an integer >= 1", ge=1)
    manual_interval: float | None = _field(
        None, "a number >= 0 (seconds), or unset for camera.interval", ge=0
    )
    max_nonfinite_in_a_row: int = _field(
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
            raise PydanticCustomError(_CROSS_ERROR, "{detail}", {"detail": "\n".join(problems)})
        return self


class WriterConfig(_Section):
    """``[writer]``: how a run is saved (only with ``run.save``)."""

    section: ClassVar[str] = "writer"

    format: Literal["zarr", "tiff"] = _field("zarr", "one of 'zarr', 'tiff'")
    save_network_images: bool = _field(True, "true or false")


class ViewerConfig(_Section):
    """``[viewer]``: the live viewer (``auto`` = when a display is available)."""

    section: ClassVar[str] = "viewer"

    enabled: Literal["auto"] | bool = _field("auto", "'auto', true or false")
    max_fps: float = _field(30.0, "a number > 0 (redraws per second)", gt=0)


class RunConfig(_Section):
    """``[run]``: how long to run and what to write; unset keys have no value."""

    section: ClassVar[str] = "run"

    duration: float | None = _field(
        None, "a number > 0 (seconds), or unset to run until Ctrl-C", gt=0
    )
    save: str | None = _field(None, "a folder path, or unset to save nothing")
    summary: str | None = _field(None, "a file path for the JSON summary, or unset")
    verify: bool = _field(False, "true or false (workers check frame stamps)")
    profile: str | None = _field(None, "a path for profiling output, or unset")
    debug: bool = _field(False, "true or false")

    @field_validator("save", "summary", "profile")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise _value_error("'' is not allowed; expected a path, or leave the key out")
        return str(_resolve_path(value, info))


class Config(_Section):
    """The whole configuration (immutable; see the module docstring for the guarantees)."""

    camera: CameraConfig = _field(CameraConfig(), "a table of [camera] keys")
    ring: RingConfig = _field(RingConfig(), "a table of [ring] keys")
    analysis: AnalysisConfig = _field(AnalysisConfig(), "a table of [analysis] keys")
    interpreter: InterpreterConfig = _field(InterpreterConfig(), "a table of [interpreter] keys")
    writer: WriterConfig = _field(WriterConfig(), "a table of [writer] keys")
    viewer: ViewerConfig = _field(ViewerConfig(), "a table of [viewer] keys")
    run: RunConfig = _field(RunConfig(), "a table of [run] keys")

    def to_dict(self) -> dict[str, Any]:
        """The full configuration as plain JSON-compatible values (lists, not tuples).

        Unset values are ``None``. ``Config.model_validate(c.to_dict())`` gives back ``c``.
        """
        return self.model_dump(mode="json")

    def to_toml(self) -> str:
        """The full effective configuration as TOML, for saving with a run.

        TOML has no null: keys whose value is unset (``None``) are left out, which loads back
        as unset. ``load_config`` of the text gives back an equal ``Config``.
        """
        header = (
            "# rt-eda effective configuration: every key, defaults included.\n"
            "# Keys not listed are unset.\n\n"
        )
        return header + tomli_w.dumps(_drop_none(self.to_dict()))

    def with_overrides(
        self, overrides: Mapping[str, object], *, source: str = "overrides"
    ) -> Config:
        """A validated copy with dotted keys changed (how command-line flags apply).

        Parameters
        ----------
        overrides
            ``{"analysis.workers": 2, "camera.source": "replay:run.tif"}``. Relative paths are
            relative to the current folder. A value of ``None`` unsets an optional key.
        source
            Where the changes come from, for the error header (``invalid configuration
            (<source>): ...``).

        Returns
        -------
        Config
            A new configuration; this one is unchanged.

        Raises
        ------
        ConfigError
            Every problem at once, as for a file: unknown keys (with the nearest valid key),
            values not allowed.
        """
        if not overrides:
            return self
        data = self.model_dump(mode="python")
        problems = [f"{key}: {_show(value)} is not valid UTF-8 text (rt-eda writes every "
                    "value into its TOML and JSON records)"
                    for key, value in overrides.items() if not _utf8(value)]
        problems += _apply_dotted(data, overrides)
        if problems:
            raise ConfigError(_header(source, len(problems)) + "\n".join(problems))
        return _validate(Config, data, source=source, base_dir=None)


def _utf8(value: object) -> bool:
    """False for a string (or a string in a list or table) that cannot be UTF-8 encoded: a
    command-line byte that was not UTF-8 arrives as a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list | tuple):
        return all(_utf8(v) for v in value)
    if isinstance(value, dict):
        return all(_utf8(k) and _utf8(v) for k, v in value.items())
    return True


# --------------------------------------------------------------------------------------------
# Validation and error translation

_M = TypeVar("_M", bound=_Section)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _section_type(annotation: Any) -> type[_Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return annotation
    return None


def all_keys(model: type[_Section] = Config) -> list[str]:
    """Every dotted key of the configuration (``analysis.options`` as one key), sorted."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        sub = _section_type(info.annotation)
        if sub is None:
            keys.append(name)
        else:
            keys.extend(f"{name}.{k}" for k in all_keys(sub))
    return sorted(keys)


def _suggest(name: str, parent: str, candidates: list[str]) -> str:
    """The nearest valid key (full dotted name), or the list of valid keys at that level."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if close:
        return f"did you mean {(parent + '.' if parent else '') + close[0]!r}?"
    return "valid keys here: " + ", ".join(repr(c) for c in sorted(candidates))


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _header(source: str, n: int) -> str:
    return f"invalid configuration ({source}): {n} problem{'s' if n != 1 else ''}\n"


def _locate(
    root: type[_Section], prefix: str, loc: tuple[int | str, ...]
) -> tuple[str, str | None, type[_Section], str]:
    """Map an error location onto (dotted key, allowed text, owning section, last name)."""
    model = root
    parts = [prefix] if prefix else []
    allowed: str | None = None
    last = ""
    items = list(loc)
    while items:
        name = items.pop(0)
        last = str(name)
        if not isinstance(name, str) or name not in model.model_fields:
            parts.append(last)
            break
        parts.append(name)
        info = model.model_fields[name]
        allowed = info.description
        sub = _section_type(info.annotation)
        if sub is None:
            if items:
                nxt = items[0]
                if isinstance(nxt, int):
                    parts[-1] += f"[{nxt}]"
                elif typing.get_origin(info.annotation) is dict:
                    parts.append(str(nxt))
            break
        model = sub
    return ".".join(parts), allowed, model, last


def _translate(
    exc: ValidationError,
    root: type[_Section],
    origins: Mapping[str, str] | None,
) -> list[str]:
    """One line per problem, in the order pydantic found them; a key is reported once."""
    lines: list[str] = []
    seen: set[str] = set()
    for error in exc.errors(include_url=False):
        key, allowed, owner, last = _locate(root, root.section, tuple(error["loc"]))
        kind = error["type"]
        if kind == _CROSS_ERROR:
            new = str(error["msg"]).split("\n")
        elif kind == _VALUE_ERROR:
            new = [f"{key}: {error['msg']}"]
        elif kind == "extra_forbidden":
            suggestion = _suggest(last, key.rpartition(".")[0], list(owner.model_fields))
            new = [f"{key}: unknown key; {suggestion}"]
        else:
            expected = allowed or "a valid value"
            new = [f"{key}: {_show(error['input'])} is not allowed; expected {expected}"]
        for line in new:
            dedupe = line if kind == _CROSS_ERROR else key
            if dedupe in seen:
                continue
            seen.add(dedupe)
            origin = (origins or {}).get(key)
            lines.append(f"{line} (from {origin})" if origin else line)
    return lines


def _validate(
    model: type[_M],
    data: Mapping[str, Any],
    *,
    source: str,
    base_dir: Path | None,
    origins: Mapping[str, str] | None = None,
) -> _M:
    """Validate ``data`` as ``model``; every problem becomes one line of a ConfigError."""
    try:
        return model.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = _translate(exc, model, origins)
    raise ConfigError(_header(source, len(lines)) + "\n".join(lines))


def _apply_dotted(data: dict[str, Any], overrides: Mapping[str, object]) -> list[str]:
    """Set dotted keys in the nested ``data``; problems that stop a key being placed."""
    problems = []
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict) and part not in node:
                # An unknown section: let validation name the nearest key.
                node = node.setdefault(part, {})
                continue
            if not isinstance(child, dict):
                problems.append(f"{dotted}: {'.'.join(parts[: i + 1])} is a value, not a table")
                break
            node = child
        else:
            node[parts[-1]] = value
    return problems


def _read_toml(path: Path) -> tuple[Path, dict[str, Any]]:
    path, text = read_text_input(path, "configuration file")
    try:
        return path, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"configuration file {path} nests tables or arrays too deeply to "
                          "be read") from None


def load_config_with_notes(path: str | Path | None) -> tuple[Config, list[str]]:
    """Load and validate a configuration file, with notes about how it was read.

    Parameters
    ----------
    path
        A TOML file; a path ending in ``.json`` is read as an original eda_plugin
        ``settings.json`` and mapped onto rt-eda's keys; ``None`` gives the embedded default.

    Returns
    -------
    tuple[Config, list[str]]
        The configuration and human-readable notes (empty for TOML and for the default; for a
        ``settings.json``, what was taken and which keys have no counterpart).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, or any value is not allowed (all problems at once).
    """
    if path is None:
        return Config(), []
    path = Path(path).expanduser()
    if path.suffix.lower() == ".json":
        from rt_eda.core.legacy_settings import read_legacy_settings

        imported = read_legacy_settings(path)  # ConfigError: one line for an unreadable file
        path = _resolved(path)
        data: dict[str, Any] = {}
        problems = _apply_dotted(data, imported.values)
        if problems:  # pragma: no cover - the mapping only produces known keys
            raise ConfigError(_header(str(path), len(problems)) + "\n".join(problems))
        config = _validate(
            Config,
            data,
            source=f"{path}, an original eda_plugin settings.json",
            base_dir=path.parent,
            origins=imported.origins,
        )
        for note in imported.notes:
            log.info("settings.json import: %s", note)
        return config, list(imported.notes)
    path, data = _read_toml(path)
    return _validate(Config, data, source=str(path), base_dir=path.parent), []


def load_config(path: str | Path | None) -> Config:
    """Load and validate a configuration; see :func:`load_config_with_notes`.

    The notes of a ``settings.json`` import are logged (INFO) rather than returned.
    """
    config, _ = load_config_with_notes(path)
    return config
