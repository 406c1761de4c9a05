"""Replay of a recorded acquisition (``replay:PATH``) as an rt-eda source.

What it reads
-------------
``PATH`` is one of:

* a run folder as rt-eda's writer saves it: ``images.ome.zarr`` (or ``images.ome.tif``/
  ``images.ome.tiff``) and, optionally, ``frames.csv`` beside it;
* an OME-Zarr group (NGFF v0.4 or v0.5: ``multiscales`` in the group attributes, under ``ome``
  for v0.5; the first dataset, normally array ``"0"``, is replayed) or a bare zarr array;
* a TIFF, OME-TIFF or ImageJ hyperstack (series 0, read with tifffile).

Axes are named by the file (NGFF ``axes``, OME ``DimensionOrder``, ImageJ hyperstack axes);
the names must be among ``t, c, z, y, x`` with ``y, x`` last (missing ``t``, ``c`` or ``z``
count as size 1). A file without axis names (a plain TIFF or zarr array) must have exactly 5
dimensions, taken as ``(t, c, z, y, x)``. Pixels must be integers or floats. Anything else is a
:class:`~rt_eda.errors.ConfigError` naming the axes, shape or dtype found.

Nothing is read up front but metadata: each :meth:`~ReplaySource.read_frame` reads one plane
(one TIFF page, or one zarr selection).

Recorded timing
---------------
The time of each recorded timepoint comes from, in order: ``frames.csv`` (columns ``seq,
t_index, c, z, t_exposure, interval_s``; a timepoint's time is its earliest ``t_exposure``,
and each frame keeps its offset from it), OME-TIFF ``Plane`` ``DeltaT`` (or ``Pixels``
``TimeIncrement``), ImageJ ``finterval``, or the NGFF scale of the ``t`` axis (with its unit).
Timepoints missing from ``frames.csv`` (frames lost while recording) get times interpolated
from their neighbours.

How it replays
--------------
``timing="recorded"`` (the default when the recording has timing): the replay clock runs in
real time from :meth:`~ReplaySource.start`, aligned with the first recorded timepoint. The next
timepoint is due at ``max(previous + interval, recorded time of the next timepoint)``, and the
timepoint shown is the one recorded nearest the replay clock at that moment, never one already
shown. So at intervals shorter than the recorded spacing every timepoint plays, at its recorded
timing; at longer ones the replay skips forward in recorded time as a slow acquisition would
(``timepoints_skipped``). Free-run (interval 0) plays at the recorded timing. A caller that
comes back late gets the timepoint nearest to now.

``timing="commanded"`` (the default without recorded timing): every timepoint plays, one per
commanded interval (free-run: as fast as the caller reads).

When the recording is over, :meth:`~ReplaySource.next_timepoint` returns None and
:attr:`~ReplaySource.exhausted` is True (the camera role then ends the acquisition).

Exposure times returned by :meth:`~ReplaySource.read_frame` are on the replay clock: the
timepoint's time plus the frame's recorded offset within its timepoint (``frames.csv`` or OME
``DeltaT``), or its index in :meth:`~ReplaySource.frame_order` times ``exposure_s``.
"""

from __future__ import annotations

import csv
import logging
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from rt_eda.errors import ConfigError, SourceError
from rt_eda.shm import StackSpec
from rt_eda.sources._settings import SettingsSource

from ._protocol import StopFlag

if TYPE_CHECKING:
    from rt_eda.config import Config

__all__ = ["ReplaySettings", "ReplaySource", "ReplayTiming", "make_replay_source"]

log = logging.getLogger(__name__)

AXES: Final = "tczyx"
FRAMES_CSV: Final = "frames.csv"
CSV_COLUMNS: Final = ("seq", "t_index", "c", "z", "t_exposure")
"""Columns ``frames.csv`` must have (``interval_s`` is read when present, not needed)."""
_RUN_IMAGES: Final = ("images.ome.zarr", "images.ome.tif", "images.ome.tiff")
_TIME_UNITS: Final = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3,
    "us": 1e-6, "µs": 1e-6, "microsecond": 1e-6, "ns": 1e-9, "nanosecond": 1e-9,
    "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
}
_POLL_S: Final = 0.02
_SPIN_S: Final = 50e-6


class ReplayTiming(StrEnum):
    """When replayed timepoints are due (see the module docstring)."""

    AUTO = "auto"
    RECORDED = "recorded"
    COMMANDED = "commanded"


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Settings of :class:`ReplaySource` (primitives only: it pickles to any process).

    Attributes
    ----------
    path
        The recording (see the module docstring for the forms accepted).
    timing
        ``"auto"`` (recorded timing when the recording has it, else commanded),
        ``"recorded"`` (an error at open if the recording has none) or ``"commanded"``.
    exposure_s
        Offset between consecutive frames of a timepoint when the recording does not give
        per-frame times (labels time only).

    Raises
    ------
    ConfigError
        On construction, for a value not allowed.
    """

    path: str
    timing: str = ReplayTiming.AUTO.value
    exposure_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(f"replay.path must be a path, got {self.path!r}")
        allowed = [t.value for t in ReplayTiming]
        if self.timing not in allowed:
            raise ConfigError(f"replay.timing must be one of {allowed}, got {self.timing!r}")
        if (
            not isinstance(self.exposure_s, int | float)
            or isinstance(self.exposure_s, bool)
            or not math.isfinite(self.exposure_s)
            or self.exposure_s < 0
        ):
            raise ConfigError(
                f"replay.exposure_s must be a finite number >= 0 (seconds), got "
                f"{self.exposure_s!r}"
            )


def make_replay_source(config: Config) -> ReplaySource:
    """The source for ``camera.source = "replay:PATH"`` (not opened).

    The recording decides the stack shape; ``camera.exposure_ms`` spaces the frames of a
    timepoint when the recording has no per-frame times.

    Raises
    ------
    ConfigError
        ``camera.source`` is not a replay.
    """
    from rt_eda.config import SourceKind

    spec = config.camera.source_spec
    if spec.kind is not SourceKind.REPLAY or spec.path is None:
        raise ConfigError(
            f"camera.source: {config.camera.source!r} is not a replay (expected 'replay:PATH')"
        )
    return ReplaySource(
        ReplaySettings(path=str(spec.path), exposure_s=config.camera.exposure_ms / 1000.0)
    )


# --------------------------------------------------------------------------- readers


class _Reader(Protocol):
    """One opened recording: its (t, c, z, y, x) shape, and one plane at a time."""

    description: str
    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    times_s: np.ndarray | None  # per timepoint, relative seconds; None: no timing recorded
    offsets_s: np.ndarray | None  # (T, C, Z) seconds after the timepoint's time

    def read(self, t: int, c: int, z: int, out: np.ndarray) -> None: ...

    def close(self) -> None: ...


def _axis_layout(
    axes: str, shape: tuple[int, ...], where: str
) -> tuple[tuple[int | None, ...], tuple[int, int, int, int, int]]:
    """Where each of t, c, z, y, x sits in the file's axes, and the (t, c, z, y, x) shape.

    Raises
    ------
    ConfigError
        An axis outside ``tczyx``, a repeated one, ``y, x`` not the last two, or axes that do
        not match the number of dimensions (all named).
    """
    axes = axes.lower()
    allowed = f"axes among {', '.join(AXES)} with y, x last"
    if len(axes) != len(shape):
        raise ConfigError(
            f"replay: {where} has {len(shape)} dimensions {shape} but axes {axes!r}"
        )
    bad = sorted({a for a in axes if a not in AXES})
    if bad or len(set(axes)) != len(axes) or axes[-2:] != "yx":
        raise ConfigError(
            f"replay: {where} has axes {axes!r} (shape {shape}); expected {allowed}"
            + (f" (unknown: {bad})" if bad else "")
        )
    pos = tuple(axes.index(a) if a in axes else None for a in AXES)
    full = tuple(shape[p] if p is not None else 1 for p in pos)
    return pos, (full[0], full[1], full[2], full[3], full[4])


def _check_dtype(dtype: np.dtype[Any], where: str) -> np.dtype[Any]:
    if dtype.kind not in "iuf":
        raise ConfigError(
            f"replay: {where} has pixel type {dtype} ({dtype.str}); expected an integer or "
            "float type"
        )
    return dtype.newbyteorder("=")


class _TiffReader:
    times_s: np.ndarray | None
    offsets_s: np.ndarray | None

    def __init__(self, path: Path) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise ConfigError(f"replay: {path} is not a readable TIFF: {exc}") from exc
        try:
            self._setup(path)
        except BaseException:
            self._tif.close()
            raise

    def _setup(self, path: Path) -> None:
        tif = self._tif
        if not tif.series:
            raise ConfigError(f"replay: {path} holds no image series")
        series = tif.series[0]
        axes, shape = str(series.axes), tuple(int(n) for n in series.shape)
        where = f"{path} (series 0, {series.kind})"
        generic = set(axes[:-2]) <= set("QI") and axes[-2:] == "YX"
        if generic and len(shape) == 5:
            log.info("replay: %s has no axis names (%r): taking them as t, c, z, y, x",
                     path, axes)
            axes = AXES
        elif generic:
            raise ConfigError(
                f"replay: {where} has {len(shape)} dimensions {shape} with unnamed axes "
                f"{axes!r}; expected 5 dimensions (t, c, z, y, x), or axis names (OME-TIFF, "
                "ImageJ hyperstack) among t, c, z, y, x"
            )
        _, self.shape = _axis_layout(axes, shape, where)
        self.dtype = _check_dtype(np.dtype(series.dtype), where)
        self._lead_shape = shape[:-2]
        self._pages = series.pages
        n_planes = math.prod(self._lead_shape)
        if len(self._pages) != n_planes or any(
            p is None for p in (self._pages[0], self._pages[n_planes - 1])
        ):
            raise ConfigError(
                f"replay: {where} stores {len(self._pages)} pages for {n_planes} planes of "
                f"axes {axes!r}; expected one page per y, x plane"
            )
        self._axes = axes.lower()
        self.description = f"{path} ({series.kind} TIFF, axes {axes!r}, shape {shape})"
        self.times_s, self.offsets_s = _tiff_timing(tif, self.shape)

    def read(self, t: int, c: int, z: int, out: np.ndarray) -> None:
        tcz = {"t": t, "c": c, "z": z}
        index = tuple(tcz[a] for a in self._axes[:-2])
        page = self._pages[int(np.ravel_multi_index(index, self._lead_shape))]
        if page is None:
            raise SourceError(f"replay: {self.description}: plane {index} is missing")
        try:
            page.asarray(out=out)
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"replay: reading plane t={t} c={c} z={z} of {self.description} failed: {exc}"
            ) from exc

    def close(self) -> None:
        self._tif.close()


def _tiff_timing(tif: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-timepoint times (and per-frame offsets) from OME or ImageJ metadata."""
    n_t, n_c, n_z = shape[:3]
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
        except ET.ParseError as exc:
            log.warning("replay: OME-XML unreadable, no recorded timing from it: %s", exc)
            return None, None
        pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels")), None)
        if pixels is None:
            return None, None
        frame_t = np.full((n_t, n_c, n_z), np.nan)
        for plane in pixels:
            if not plane.tag.endswith("}Plane") or plane.get("DeltaT") is None:
                continue
            t, c, z = (int(plane.get(k, "0")) for k in ("TheT", "TheC", "TheZ"))
            if t < n_t and c < n_c and z < n_z:
                unit = _TIME_UNITS.get(plane.get("DeltaTUnit", "s"), 1.0)
                frame_t[t, c, z] = float(plane.get("DeltaT", "nan")) * unit
        if not np.isnan(frame_t).all():
            return _times_from_frames(frame_t)
        inc = pixels.get("TimeIncrement")
        if inc is not None:
            unit = _TIME_UNITS.get(pixels.get("TimeIncrementUnit", "s"), 1.0)
            return np.arange(n_t) * float(inc) * unit, None
    if tif.is_imagej and tif.imagej_metadata:
        finterval = tif.imagej_metadata.get("finterval")
        if finterval:
            return np.arange(n_t) * float(finterval), None
    return None, None


def _times_from_frames(frame_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, C, Z) frame times (NaN = unknown) -> timepoint times and per-frame offsets."""
    known = ~np.isnan(frame_t).all(axis=(1, 2))
    starts = np.full(frame_t.shape[0], np.nan)
    starts[known] = np.nanmin(frame_t[known], axis=(1, 2))
    idx = np.arange(frame_t.shape[0])
    if not known.all():
        log.warning("replay: %d of %d timepoints have no recorded time: interpolated",
                    int((~known).sum()), frame_t.shape[0])
        starts = np.interp(idx, idx[known], starts[known])
    offsets = np.nan_to_num(frame_t - starts[:, None, None], nan=0.0)
    return starts, offsets


class _ZarrReader:
    times_s: np.ndarray | None
    offsets_s: np.ndarray | None

    def __init__(self, path: Path) -> None:
        import zarr

        try:
            node = zarr.open(store=str(path), mode="r")
        except (OSError, ValueError, KeyError, zarr.errors.BaseZarrError) as exc:
            raise ConfigError(f"replay: {path} is not a readable zarr group or array: {exc}") \
                from exc
        axes: str | None = None
        t_step: float | None = None
        if isinstance(node, zarr.Group):
            attrs = dict(node.attrs)
            ome = attrs.get("ome", attrs)
            multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
            if not multiscales:
                raise ConfigError(
                    f"replay: {path} is a zarr group without OME-NGFF 'multiscales' metadata "
                    f"(attributes: {sorted(attrs)})"
                )
            ms = multiscales[0]
            datasets = ms.get("datasets") or [{"path": "0"}]
            name = str(datasets[0].get("path", "0"))
            if name not in node:
                raise ConfigError(f"replay: {path} has no array {name!r} (its first dataset)")
            found = node[name]
            if not isinstance(found, zarr.Array):
                raise ConfigError(f"replay: {path}/{name} (its first dataset) is not an array")
            array = found
            raw_axes = ms.get("axes")
            if raw_axes:
                names = [str(a["name"] if isinstance(a, dict) else a) for a in raw_axes]
                if any(len(n) != 1 for n in names):
                    raise ConfigError(
                        f"replay: {path} has axes {names} (shape {tuple(array.shape)}); "
                        f"expected axes among {', '.join(AXES)} with y, x last"
                    )
                axes = "".join(names)
                t_step = _ngff_t_step(ms, datasets[0], raw_axes, names)
            where = f"{path}/{name}"
        else:
            array = node
            where = str(path)
        shape = tuple(int(n) for n in array.shape)
        if axes is None:
            if len(shape) != 5:
                raise ConfigError(
                    f"replay: {where} has {len(shape)} dimensions {shape} and no axis names; "
                    "expected 5 dimensions (t, c, z, y, x) or OME-NGFF axes"
                )
            axes = AXES
        self._pos, self.shape = _axis_layout(axes, shape, where)
        self.dtype = _check_dtype(np.dtype(str(array.dtype)), where)
        self._array: zarr.Array[Any] | None = array
        self._axes = axes.lower()
        self.description = f"{where} (zarr, axes {axes!r}, shape {shape})"
        self.times_s = None if t_step is None else np.arange(self.shape[0]) * t_step
        self.offsets_s = None

    def read(self, t: int, c: int, z: int, out: np.ndarray) -> None:
        tcz = {"t": t, "c": c, "z": z}
        index = tuple(tcz[a] if a in tcz else slice(None) for a in self._axes)
        if self._array is None:
            raise SourceError(f"replay: {self.description} is closed")
        try:
            plane = np.asarray(self._array[index])
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"replay: reading plane t={t} c={c} z={z} of {self.description} failed: {exc}"
            ) from exc
        np.copyto(out, plane)

    def close(self) -> None:
        self._array = None


def _ngff_t_step(
    ms: dict[str, Any], dataset: dict[str, Any], raw_axes: list[Any], names: list[str]
) -> float | None:
    """Seconds per timepoint from the NGFF scale of the t axis, if there is one."""
    if "t" not in names:
        return None
    i = names.index("t")
    scale = 1.0
    found = False
    for transforms in (dataset.get("coordinateTransformations"), ms.get(
            "coordinateTransformations")):
        for tr in transforms or []:
            if isinstance(tr, dict) and tr.get("type") == "scale" and "scale" in tr:
                scale *= float(tr["scale"][i])
                found = True
    if not found:
        return None
    axis = raw_axes[i]
    unit = str(axis.get("unit", "")) if isinstance(axis, dict) else ""
    if unit not in _TIME_UNITS:
        log.warning("replay: unknown time unit %r of the t axis; taking seconds", unit)
    return scale * _TIME_UNITS.get(unit, 1.0)


def _read_frames_csv(
    path: Path, shape: tuple[int, int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``frames.csv`` -> per-timepoint times and per-frame offsets (see the module docstring).

    Raises
    ------
    ConfigError
        Missing columns, an unparsable row, or an index outside the recording's shape.
    """
    n_t, n_c, n_z = shape[:3]
    frame_t = np.full((n_t, n_c, n_z), np.nan)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise ConfigError(
                f"replay: {path} lacks columns {missing} (has {columns}; expected "
                f"{', '.join(CSV_COLUMNS)}, interval_s)"
            )
        for line, row in enumerate(reader, start=2):
            try:
                t, c, z = int(row["t_index"]), int(row["c"]), int(row["z"])
                t_exp = float(row["t_exposure"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"replay: {path} line {line}: {exc} in {row}") from exc
            if not (0 <= t < n_t and 0 <= c < n_c and 0 <= z < n_z):
                raise ConfigError(
                    f"replay: {path} line {line}: frame (t_index={t}, c={c}, z={z}) is "
                    f"outside the recording's {n_t} timepoints x {n_c} channels x {n_z} "
                    "z-slices"
                )
            frame_t[t, c, z] = t_exp
    if np.isnan(frame_t).all():
        raise ConfigError(f"replay: {path} lists no frames")
    return _times_from_frames(frame_t)


def _open_reader(path: Path) -> tuple[_Reader, Path | None]:
    """The reader for ``path`` and the ``frames.csv`` that goes with it (if any)."""
    if not path.exists():
        raise ConfigError(f"replay: {path} does not exist")
    images = path
    if path.is_dir() and not _is_zarr(path):
        found = [path / name for name in _RUN_IMAGES if (path / name).exists()]
        if not found:
            raise ConfigError(
                f"replay: {path} is a folder but neither a zarr store nor a run folder "
                f"(none of {list(_RUN_IMAGES)} in it)"
            )
        images = found[0]
    csv_path = images.parent / FRAMES_CSV
    reader: _Reader
    if images.is_dir():
        reader = _ZarrReader(images)
    elif images.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8"):
        reader = _TiffReader(images)
    else:
        raise ConfigError(
            f"replay: {images} is neither a TIFF (.tif, .tiff) nor a zarr store (a folder)"
        )
    return reader, csv_path if csv_path.is_file() else None


def _is_zarr(path: Path) -> bool:
    return any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


# --------------------------------------------------------------------------- the source


@dataclass(slots=True)
class _Counters:
    timepoints: int = 0
    frames: int = 0
    skipped: int = 0
    late: int = 0
    read_s: float = 0.0


class ReplaySource(SettingsSource[ReplaySettings]):
    """A recorded acquisition replayed as a source (see the module docstring).

    Not thread-safe: the camera role's thread drives it.
    """

    def __init__(self, settings: ReplaySettings) -> None:
        self._settings = settings
        self._reader: _Reader | None = None
        self._spec: StackSpec | None = None
        self._timing = ReplayTiming.COMMANDED
        self._times: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self._csv: Path | None = None
        self._started = False
        self._running = False
        self._exhausted = False
        self._interval = 0.0
        self._t0 = 0.0
        self._index = -1  # the recorded timepoint being shown
        self._due = 0.0
        self._counters = _Counters()


    # ------------------------------------------------------------------ properties

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack, ``(C, Z, Y, X)`` of the recording (after :meth:`open`).

        Raises
        ------
        SourceError
            The source is not open.
        """
        if self._spec is None:
            raise SourceError("replay source: spec is known only after open()")
        return self._spec

    @property
    def exhausted(self) -> bool:
        """True once the recording has been played to its end."""
        return self._exhausted

    @property
    def timing(self) -> ReplayTiming:
        """The timing in use (``recorded`` or ``commanded``; known after :meth:`open`)."""
        return self._timing

    @property
    def n_timepoints(self) -> int:
        """Timepoints in the recording (after :meth:`open`)."""
        return 0 if self._reader is None else self._reader.shape[0]

    @property
    def current_index(self) -> int:
        """The recorded timepoint of the current stack (-1 before the first)."""
        return self._index

    @property
    def recorded_times(self) -> np.ndarray | None:
        """Recorded time of each timepoint, seconds from the first; None if not recorded."""
        return None if self._times is None else self._times.copy()

    # ------------------------------------------------------------------ Source protocol

    def open(self) -> StackSpec:
        """Open the recording (metadata only) and return the stack shape.

        Calling it again on an open source is a no-op.

        Raises
        ------
        ConfigError
            Missing path, unknown format, wrong axes, dimensions or dtype, a bad
            ``frames.csv``, or ``timing="recorded"`` for a recording without timing (what
            was found is named).
        """
        if self._reader is not None:
            return self.spec
        reader, csv_path = _open_reader(Path(self._settings.path))
        try:
            times, offsets = reader.times_s, reader.offsets_s
            if csv_path is not None:
                times, offsets = _read_frames_csv(csv_path, reader.shape)
            if times is not None:
                times = times - times[0]
                if np.any(np.diff(times) < 0):
                    raise ConfigError(
                        f"replay: recorded times of {reader.description} go backwards "
                        f"(first ones: {np.round(times[:8], 4).tolist()})"
                    )
            timing = ReplayTiming(self._settings.timing)
            if timing is ReplayTiming.AUTO:
                timing = ReplayTiming.RECORDED if times is not None else ReplayTiming.COMMANDED
            elif timing is ReplayTiming.RECORDED and times is None:
                raise ConfigError(
                    f"replay: timing 'recorded' asked, but {reader.description} has no "
                    f"recorded timing (no {FRAMES_CSV}, OME DeltaT/TimeIncrement, ImageJ "
                    "finterval or NGFF t scale)"
                )
            _, n_c, n_z, h, w = reader.shape
            spec = StackSpec(n_c, n_z, h, w, reader.dtype.name)
        except BaseException:
            reader.close()
            raise
        self._reader, self._spec, self._timing = reader, spec, timing
        self._times, self._offsets, self._csv = times, offsets, csv_path
        log.info(
            "replay source open: %s, %d timepoints, %s timing%s%s", reader.description,
            reader.shape[0], timing.value,
            f" from {csv_path}" if csv_path is not None else "",
            f" ({times[-1]:.4g} s recorded)" if times is not None else "",
        )
        return spec

    def start(self, interval_s: float) -> None:
        """Start the replay clock now; the first recorded timepoint is due at once.

        Raises
        ------
        SourceError
            The source is not open.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if self._reader is None:
            raise SourceError("replay source: start() called before open()")
        self._interval = _checked_interval(interval_s)
        self._t0 = time.monotonic()
        self._index = -1
        self._exhausted = False
        self._started = self._running = True

    def set_interval(self, interval_s: float) -> None:
        """Change the interval from the next timepoint.

        Raises
        ------
        SourceError
            The replay was not started.
        ConfigError
            ``interval_s`` is negative or not finite.
        """
        if not self._started:
            raise SourceError("replay source: set_interval() called before start()")
        self._interval = _checked_interval(interval_s)

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """Sleep until the next timepoint is due; return its time on the replay clock.

        Returns
        -------
        float or None
            The timepoint's ``time.monotonic()`` time; None when ``stop`` is set, :meth:`stop`
            was called, or the recording is over (then :attr:`exhausted` is True).

        Raises
        ------
        SourceError
            The replay was not started.
        """
        if not self._started:
            raise SourceError("replay source: next_timepoint() called before start()")
        if not self._running or self._exhausted or stop.is_set():
            return None
        assert self._reader is not None
        n_t = self._reader.shape[0]
        nxt = self._index + 1
        if nxt >= n_t:
            self._end()
            return None
        now = time.monotonic()
        interval = self._interval
        if self._timing is ReplayTiming.RECORDED:
            times = self._times
            assert times is not None
            if self._index < 0:
                due, index = self._t0, 0
            else:
                due = max(self._due + interval, self._t0 + float(times[nxt]))
                if due < now:
                    self._counters.late += 1
                    due = now
                rec = due - self._t0
                last_spacing = float(times[-1] - times[-2]) if n_t > 1 else 0.0
                if rec > float(times[-1]) + 0.5 * last_spacing:
                    self._end()
                    return None
                index = max(nxt, _nearest(times, rec))
        else:
            index = nxt
            if self._index < 0 or interval == 0.0:
                due = now
            else:
                due = self._due + interval
                if due < now - interval:
                    self._counters.late += 1
                    due = now
        while (remaining := due - time.monotonic()) > _SPIN_S:
            if stop.is_set():
                return None
            time.sleep(min(remaining - _SPIN_S, _POLL_S))
        while time.monotonic() < due:  # at most _SPIN_S
            pass
        self._counters.skipped += index - nxt
        self._counters.timepoints += 1
        self._index, self._due = index, due
        return due

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major: every z of channel 0, then of channel 1, ..."""
        spec = self.spec
        for c in range(spec.channels):
            for z in range(spec.z_slices):
                yield c, z

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Read frame (c, z) of the current recorded timepoint into ``out`` (H, W).

        Returns
        -------
        float
            The frame's exposure time on the replay clock (see the module docstring).

        Raises
        ------
        SourceError
            No current timepoint, ``c``/``z`` out of range, ``out`` of the wrong shape or
            dtype (both named), or the file could not be read.
        """
        spec = self.spec
        if self._index < 0 or not self._started:
            raise SourceError("replay source: read_frame() called before next_timepoint()")
        if not (0 <= c < spec.channels and 0 <= z < spec.z_slices):
            raise SourceError(
                f"replay source: frame (c={c}, z={z}) out of range: "
                f"{spec.channels} channels x {spec.z_slices} z-slices"
            )
        if out.shape != (spec.height, spec.width) or out.dtype != spec.np_dtype:
            raise SourceError(
                f"replay source: frame buffer {out.shape} {out.dtype}, expected "
                f"{(spec.height, spec.width)} {spec.dtype}"
            )
        assert self._reader is not None
        t = time.perf_counter()
        self._reader.read(self._index, c, z, out)
        self._counters.read_s += time.perf_counter() - t
        self._counters.frames += 1
        if self._offsets is not None:
            return self._due + float(self._offsets[self._index, c, z])
        return self._due + (c * spec.z_slices + z) * self._settings.exposure_s

    def stop(self) -> None:
        """Stop the replay: :meth:`next_timepoint` returns None from now on."""
        if self._running:
            self._running = False
            log.info("replay source stopped: %s", self.statistics())

    def close(self) -> None:
        """Close the file. Safe to call twice, and on a source never opened."""
        self._running = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def statistics(self) -> dict[str, float]:
        """Counters since construction.

        Keys: ``timepoints`` (played), ``frames``, ``recorded_timepoints``,
        ``timepoints_skipped`` (recorded timepoints passed over: slow interval or late
        caller), ``timepoints_late`` (times the caller came back after the next timepoint was
        due), ``last_index`` (recorded timepoint last shown, -1 before), ``exhausted`` (1.0
        once over), ``read_ms_mean`` (per frame).
        """
        c = self._counters
        return {
            "timepoints": c.timepoints,
            "frames": c.frames,
            "recorded_timepoints": self.n_timepoints,
            "timepoints_skipped": c.skipped,
            "timepoints_late": c.late,
            "last_index": self._index,
            "exhausted": 1.0 if self._exhausted else 0.0,
            "read_ms_mean": 1e3 * c.read_s / c.frames if c.frames else 0.0,
        }

    # ------------------------------------------------------------------ internals

    def _end(self) -> None:
        if not self._exhausted:
            self._exhausted = True
            log.info("replay source: recording over after %d timepoints (%d skipped)",
                     self._counters.timepoints, self._counters.skipped)


def _nearest(times: np.ndarray, t: float) -> int:
    """Index of the element of sorted ``times`` nearest ``t`` (the earlier one on a tie)."""
    i = int(np.searchsorted(times, t))
    if i <= 0:
        return 0
    if i >= len(times):
        return len(times) - 1
    return i - 1 if t - float(times[i - 1]) <= float(times[i]) - t else i


def _checked_interval(interval_s: float) -> float:
    if (
        not isinstance(interval_s, int | float)
        or isinstance(interval_s, bool)
        or not math.isfinite(interval_s)
        or interval_s < 0
    ):
        raise ConfigError(f"interval_s must be a finite number >= 0 (seconds), got {interval_s!r}")
    return float(interval_s)
