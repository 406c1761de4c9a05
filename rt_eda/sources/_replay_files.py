"""The files a replay reads: TIFF, OME-Zarr and rt-eda run folders, and their recorded timing.

Each reader opens one recording and holds, after its constructor:

* ``shape`` ``(t, c, z, y, x)`` and ``dtype``; a stack of timepoint ``t`` is read with
  ``read_stack(t, out)`` into ``out`` of shape ``(c, z, y, x)``;
* ``frame_times``: ``(T, C, Z)`` recorded exposure times in seconds (NaN where unknown), or
  None when the file records none; ``step_s``: a fixed spacing of timepoints (NGFF ``t``
  scale, ImageJ ``finterval``, OME ``TimeIncrement``) or None;
* ``gaps``: the timepoints it found it cannot replay and why, one :class:`Gap` per class of
  problem (a chunk file missing, a chunk file of the wrong size, a TIFF cut short);
* ``notes``: problems that do not remove a timepoint, one line each (chunks absent from a
  generic zarr store read as its fill value, what tifffile said about a damaged file).

What is checked when a reader opens (metadata and ``stat`` only; no pixel is read):

* zarr on a local folder: every chunk file of every timepoint exists, and, for uncompressed
  chunks, has exactly the bytes its chunk shape needs. In a store rt-eda wrote (group
  attribute ``rt_eda``) every chunk is written, so a missing one is a missing timepoint (also
  when the array's shape is larger than the data written). Other writers omit chunks that
  hold only the fill value (zarr-python does by default), so there an absent chunk replays as
  the fill value, with a note naming the timepoints (``chunks_absent``).
* TIFF: one page per plane. A TIFF in a run folder whose pages or OME-XML were lost (cut
  short, or its writer died before writing them) is read with rt-eda's own layout instead:
  every stack is contiguous from the first page's data, C and Z come from ``frames.csv`` (or
  ``summary.json``), and the stacks whose bytes lie past the end of the file are missing.

``frames.csv`` (:func:`read_frames_csv`) never fails a replay: unreadable rows are counted
and skipped, an unreadable file gives no timing; both are reported by the caller.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from rt_eda.core.errors import ConfigError, SourceError

__all__ = [
    "AXES",
    "CSV_COLUMNS",
    "FRAMES_CSV",
    "CsvTiming",
    "Gap",
    "GapKind",
    "Reader",
    "format_indices",
    "open_reader",
    "read_frames_csv",
]

log = logging.getLogger("rt_eda.sources.replay")

AXES: Final = "tczyx"
FRAMES_CSV: Final = "frames.csv"
CSV_COLUMNS: Final = ("seq", "t_index", "c", "z", "t_exposure")
"""Columns ``frames.csv`` must have (``interval_s`` is read when present, not needed)."""
SUMMARY_JSON: Final = "summary.json"
RUN_IMAGES: Final = ("images.ome.zarr", "images.ome.tif", "images.ome.tiff")
_TIFF_SUFFIXES: Final = (".tif", ".tiff", ".btf", ".tf8")
_TIME_UNITS: Final = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3,
    "us": 1e-6, "µs": 1e-6, "microsecond": 1e-6, "ns": 1e-9, "nanosecond": 1e-9,
    "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
}
_READ_ERRORS: Final = (OSError, ValueError, RuntimeError, KeyError, IndexError)
"""What reading damaged data raises (zarr codecs: RuntimeError, short chunks: ValueError)."""


class GapKind(StrEnum):
    """Why a timepoint cannot be replayed."""

    MISSING = "missing"  # no data recorded for it (no chunk file; past the end of the file)
    DAMAGED = "damaged"  # data present but unreadable (wrong size, a read that failed)


@dataclass(frozen=True, slots=True)
class Gap:
    """Timepoints that cannot be replayed, for one reason."""

    kind: GapKind
    timepoints: tuple[int, ...]
    why: str


def format_indices(indices: Iterable[int], limit: int = 6) -> str:
    """``0, 3..7, 12`` (runs as ranges; at most ``limit`` runs, then how many more)."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(int(i) for i in indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    parts = [f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"... ({len(runs) - limit} more runs)")
    return ", ".join(parts)


class Reader(Protocol):
    """One opened recording (see the module docstring)."""

    description: str
    shape: tuple[int, int, int, int, int]
    dtype: np.dtype[Any]
    frame_times: np.ndarray | None
    step_s: float | None
    gaps: list[Gap]
    notes: list[str]
    rt_eda: bool  # written by rt-eda (its NGFF t scale is a placeholder, not timing)
    chunks_absent: int  # zarr chunk files absent but read as the fill value

    def read_stack(self, t: int, out: np.ndarray) -> None: ...

    def close(self) -> None: ...


def _axis_layout(
    axes: str, shape: tuple[int, ...], where: str
) -> tuple[int, int, int, int, int]:
    """The (t, c, z, y, x) shape of a file with axes ``axes``.

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
    full = tuple(shape[axes.index(a)] if a in axes else 1 for a in AXES)
    return full[0], full[1], full[2], full[3], full[4]


def _check_dtype(dtype: np.dtype[Any], where: str) -> np.dtype[Any]:
    if dtype.kind not in "iuf":
        raise ConfigError(
            f"replay: {where} has pixel type {dtype} ({dtype.str}); expected an integer or "
            "float type"
        )
    return dtype.newbyteorder("=")


def _as_czyx(block: np.ndarray, axes: str) -> np.ndarray:
    """A timepoint's block with axes ``axes`` (some of c, z, y, x) as (c, z, y, x)."""
    for a in "zc":
        if a not in axes:
            block, axes = block[np.newaxis], a + axes
    return np.transpose(block, [axes.index(a) for a in "czyx"])


# --------------------------------------------------------------------------- TIFF


class _TiffLog(logging.Handler):
    """Collects what tifffile logs while a file is opened (it logs damage, then carries on)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if text not in self.messages:
            self.messages.append(text)

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        logger = logging.getLogger("tifffile")
        logger.addHandler(self)
        propagate, logger.propagate = logger.propagate, False
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.propagate = propagate

    def said(self) -> str:
        return f" (tifffile: {'; '.join(self.messages[:3])})" if self.messages else ""


def _open_tiff(path: Path, said: _TiffLog) -> Any:
    import tifffile

    try:
        with said.capture():
            tif = tifffile.TiffFile(path)
            tif.series  # noqa: B018  (parses the series now, under the capture)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ConfigError(f"replay: {path} is not a readable TIFF: {exc}") from exc
    return tif


class _TiffReader:
    """A TIFF, OME-TIFF or ImageJ hyperstack, one page per plane (series 0)."""

    frame_times: np.ndarray | None
    step_s: float | None
    rt_eda = False
    chunks_absent = 0

    def __init__(self, path: Path) -> None:
        said = _TiffLog()
        self._tif = _open_tiff(path, said)
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        try:
            self._setup(path, said)
        except BaseException:
            self._tif.close()
            raise
        if said.messages:
            self.notes.append(f"{path}: tifffile reported {'; '.join(said.messages[:3])}")

    def _setup(self, path: Path, said: _TiffLog) -> None:
        tif = self._tif
        if not tif.series:
            raise ConfigError(f"replay: {path} holds no image series{said.said()}")
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
                f"ImageJ hyperstack) among t, c, z, y, x{said.said()}"
            )
        try:
            self.shape = _axis_layout(axes, shape, where)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{said.said()}") from None
        self.dtype = _check_dtype(np.dtype(series.dtype), where)
        self._lead_shape = shape[:-2]
        self._pages = series.pages
        n_planes = math.prod(self._lead_shape)
        if len(self._pages) != n_planes or any(
            p is None for p in (self._pages[0], self._pages[n_planes - 1])
        ):
            raise ConfigError(
                f"replay: {where} stores {len(self._pages)} pages for {n_planes} planes of "
                f"axes {axes!r}; expected one page per y, x plane{said.said()}"
            )
        self._axes = axes.lower()
        self.description = f"{path} ({series.kind} TIFF, axes {axes!r}, shape {shape})"
        self.frame_times, self.step_s = _tiff_timing(tif, self.shape)

    def read_stack(self, t: int, out: np.ndarray) -> None:
        for c in range(out.shape[0]):
            for z in range(out.shape[1]):
                tcz = {"t": t, "c": c, "z": z}
                index = tuple(tcz[a] for a in self._axes[:-2])
                page = self._pages[int(np.ravel_multi_index(index, self._lead_shape))]
                if page is None:
                    raise SourceError(f"replay: {self.description}: plane {index} is missing")
                try:
                    page.asarray(out=out[c, z])
                except _READ_ERRORS as exc:
                    raise SourceError(
                        f"reading plane t={t} c={c} z={z} of {self.description} failed: {exc}"
                    ) from exc

    def close(self) -> None:
        self._tif.close()


class _RunTiffReader:
    """rt-eda's TIFF layout read without its IFDs: stacks contiguous from the first page.

    For an ``images.ome.tif`` whose OME-XML or later pages are lost (cut short, or its
    writer died). Timepoints whose bytes lie past the end of the file are missing.
    """

    frame_times: np.ndarray | None = None
    step_s: float | None = None
    rt_eda = True
    chunks_absent = 0

    def __init__(self, path: Path, n_t: int, n_c: int, n_z: int, why: str) -> None:
        said = _TiffLog()
        tif = _open_tiff(path, said)
        try:
            page = tif.pages.first
            offset = int(page.dataoffsets[0])
            y, x = int(page.shape[-2]), int(page.shape[-1])
            dtype = _check_dtype(np.dtype(page.dtype), str(path))
        except (AttributeError, IndexError, ValueError, TypeError) as exc:
            raise ConfigError(f"replay: {path}: no readable first page ({exc})") from exc
        finally:
            tif.close()
        size = path.stat().st_size
        stack_bytes = n_c * n_z * y * x * dtype.itemsize
        whole = max(0, (size - offset) // stack_bytes)
        n_t = max(n_t, 1) if n_t else int(whole)
        self.shape = (n_t, n_c, n_z, y, x)
        self.dtype = dtype
        self.description = (f"{path} (rt-eda contiguous TIFF layout, {n_t} timepoints of "
                            f"(C, Z, Y, X) {(n_c, n_z, y, x)} {dtype})")
        self.gaps = []
        self.notes = [f"{path}: {why}; read with rt-eda's contiguous stack layout "
                      f"(C, Z from {FRAMES_CSV} or {SUMMARY_JSON})"]
        if whole < n_t:
            self.gaps.append(Gap(
                GapKind.MISSING, tuple(range(int(whole), n_t)),
                f"past the end of {path.name} ({size} bytes: the file was cut short)"))
        self._map: np.ndarray | None = None
        if whole:
            self._map = np.memmap(path, dtype=dtype, mode="r", offset=offset,
                                  shape=(int(min(whole, n_t)), n_c, n_z, y, x))

    def read_stack(self, t: int, out: np.ndarray) -> None:
        if self._map is None or t >= self._map.shape[0]:
            raise SourceError(f"replay: timepoint {t} is past the end of {self.description}")
        np.copyto(out, self._map[t])

    def close(self) -> None:
        self._map = None


def _tiff_timing(tif: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, float | None]:
    """Per-frame times (OME ``DeltaT``) or a fixed step (``TimeIncrement``, ``finterval``)."""
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
            try:
                t, c, z = (int(plane.get(k, "0")) for k in ("TheT", "TheC", "TheZ"))
                value = float(plane.get("DeltaT", "nan"))
            except ValueError:
                continue
            if 0 <= t < n_t and 0 <= c < n_c and 0 <= z < n_z and math.isfinite(value):
                unit = _TIME_UNITS.get(plane.get("DeltaTUnit", "s"), 1.0)
                frame_t[t, c, z] = value * unit
        if not np.isnan(frame_t).all():
            return frame_t, None
        inc = pixels.get("TimeIncrement")
        if inc is not None:
            unit = _TIME_UNITS.get(pixels.get("TimeIncrementUnit", "s"), 1.0)
            return None, float(inc) * unit
    if tif.is_imagej and tif.imagej_metadata:
        finterval = tif.imagej_metadata.get("finterval")
        if finterval:
            return None, float(finterval)
    return None, None


# --------------------------------------------------------------------------- zarr


class _ZarrReader:
    """An OME-Zarr group (NGFF 0.4/0.5, first dataset) or a bare zarr array."""

    frame_times: np.ndarray | None = None
    step_s: float | None

    def __init__(self, path: Path) -> None:
        import zarr

        try:
            node = zarr.open(store=str(path), mode="r")
        except (OSError, ValueError, KeyError, TypeError, zarr.errors.BaseZarrError) as exc:
            raise ConfigError(
                f"replay: {path} is not a readable zarr group or array: {exc}"
            ) from exc
        axes: str | None = None
        self.step_s = None
        self.rt_eda = False
        if isinstance(node, zarr.Group):
            attrs = dict(node.attrs)
            self.rt_eda = "rt_eda" in attrs
            ome = attrs.get("ome", attrs)
            multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
            if not multiscales or not isinstance(multiscales, list) or not isinstance(
                    multiscales[0], dict):
                raise ConfigError(
                    f"replay: {path} is a zarr group without OME-NGFF 'multiscales' metadata "
                    f"(attributes: {sorted(attrs)})"
                )
            ms = multiscales[0]
            datasets = ms.get("datasets") or [{"path": "0"}]
            name = str(datasets[0].get("path", "0"))
            try:
                found = node[name]
            except KeyError:
                raise ConfigError(
                    f"replay: {path} has no array {name!r} (its first dataset)") from None
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(
                    f"replay: {path}/{name} (its first dataset) is not a readable zarr "
                    f"array: {exc}") from exc
            if not isinstance(found, zarr.Array):
                raise ConfigError(f"replay: {path}/{name} (its first dataset) is not an array")
            array = found
            raw_axes = ms.get("axes")
            if raw_axes:
                names = [str(a.get("name") if isinstance(a, dict) else a) for a in raw_axes]
                if any(len(n) != 1 for n in names):
                    raise ConfigError(
                        f"replay: {path} has axes {names} (shape {tuple(array.shape)}); "
                        f"expected axes among {', '.join(AXES)} with y, x last"
                    )
                axes = "".join(names)
                if not self.rt_eda:  # rt-eda's t scale is a placeholder: frames.csv times
                    self.step_s = _ngff_t_step(ms, datasets[0], raw_axes, names)
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
        self.shape = _axis_layout(axes, shape, where)
        self.dtype = _check_dtype(np.dtype(str(array.dtype)), where)
        self._array: zarr.Array[Any] | None = array
        self._axes = axes.lower()
        self.description = f"{where} (zarr, axes {axes!r}, shape {shape})"
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        self.chunks_absent = 0
        self._check_chunks(array, where)

    def _check_chunks(self, array: Any, where: str) -> None:
        """Missing and wrong-sized chunk files (see the module docstring)."""
        from zarr.codecs import BytesCodec
        from zarr.core.chunk_grids import RegularChunkGrid
        from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata

        root = getattr(array.store, "root", None)
        meta = array.metadata
        if root is None:
            return  # not a local folder: nothing to stat
        folder = Path(root) / array.path if array.path else Path(root)
        if isinstance(meta, ArrayV3Metadata) and isinstance(meta.chunk_grid, RegularChunkGrid):
            chunk_shape = tuple(int(n) for n in meta.chunk_grid.chunk_shape)
            raw = all(isinstance(c, BytesCodec) for c in meta.codecs)
        elif isinstance(meta, ArrayV2Metadata):
            chunk_shape = tuple(int(n) for n in meta.chunks)
            raw = meta.compressor is None and not meta.filters
        else:
            return
        sizes: dict[str, int] = {}
        for dirpath, _, files in os.walk(folder):
            here = Path(dirpath)
            prefix = here.relative_to(folder).as_posix()
            for f in files:
                key = f if prefix == "." else f"{prefix}/{f}"
                with contextlib.suppress(OSError):
                    sizes[key] = (here / f).stat().st_size
        expected = math.prod(chunk_shape) * np.dtype(str(array.dtype)).itemsize if raw else -1
        shape = tuple(int(n) for n in array.shape)
        grid = [math.ceil(s / c) for s, c in zip(shape, chunk_shape, strict=True)]
        t_axis = self._axes.find("t")
        absent: dict[int, int] = {}  # t-chunk index -> chunks absent
        wrong: dict[int, str] = {}  # t-chunk index -> first wrong size seen
        per_t = math.prod(g for i, g in enumerate(grid) if i != t_axis)
        for coords in np.ndindex(*grid):
            key = meta.encode_chunk_key(coords)
            tc = coords[t_axis] if t_axis >= 0 else 0
            size = sizes.get(key)
            if size is None:
                absent[tc] = absent.get(tc, 0) + 1
            elif raw and size != expected and tc not in wrong:
                wrong[tc] = f"chunk file {key} of {size} bytes, expected {expected}"
        t_chunk = chunk_shape[t_axis] if t_axis >= 0 else 1
        n_t = self.shape[0]

        def timepoints(chunks: Iterable[int]) -> tuple[int, ...]:
            return tuple(t for tc in sorted(chunks)
                         for t in range(tc * t_chunk, min((tc + 1) * t_chunk, n_t)))

        gone = [tc for tc in absent if self.rt_eda]
        if gone:
            self.gaps.append(Gap(GapKind.MISSING, timepoints(gone),
                                 f"no chunk file in {where}"))
        kept = [tc for tc in absent if tc not in gone]
        if kept:
            self.chunks_absent = sum(absent[tc] for tc in kept)
            whole = sum(1 for tc in kept if absent[tc] == per_t)
            self.notes.append(
                f"{self.chunks_absent} chunk file(s) of {where} are absent (timepoints "
                f"{format_indices(timepoints(kept))}, {whole} of them with no chunk at all): "
                f"they replay as the fill value {array.fill_value} (zarr writers omit chunks "
                "that hold only the fill value; if that is not why, those planes were lost)"
            )
        bad = [tc for tc in wrong if tc not in gone]
        if bad:
            self.gaps.append(Gap(GapKind.DAMAGED, timepoints(bad),
                                 f"{wrong[bad[0]]} (first of {len(bad)})"))

    def read_stack(self, t: int, out: np.ndarray) -> None:
        if self._array is None:
            raise SourceError(f"replay: {self.description} is closed")
        index = tuple(t if a == "t" else slice(None) for a in self._axes)
        try:
            block = np.asarray(self._array[index])
        except _READ_ERRORS as exc:
            raise SourceError(
                f"reading timepoint {t} of {self.description} failed: {exc}"
            ) from exc
        np.copyto(out, _as_czyx(block, self._axes.replace("t", "")))

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
                try:
                    scale *= float(tr["scale"][i])
                except (TypeError, ValueError, IndexError):
                    continue
                found = True
    if not found or not math.isfinite(scale):
        return None
    axis = raw_axes[i]
    unit = str(axis.get("unit", "")) if isinstance(axis, dict) else ""
    if unit not in _TIME_UNITS:
        log.warning("replay: unknown time unit %r of the t axis; taking seconds", unit)
    return scale * _TIME_UNITS.get(unit, 1.0)


# --------------------------------------------------------------------------- frames.csv


@dataclass(frozen=True, slots=True)
class CsvTiming:
    """What ``frames.csv`` gave.

    Attributes
    ----------
    frame_times
        ``(T, C, Z)`` exposure times (NaN: no usable row), or None if the file is unusable.
    bad_rows
        Rows that could not be used (unparsable, non-finite, outside the recording's shape).
    first_bad
        The first of them, as ``line N: what``.
    unusable
        Why the whole file gave nothing ("" when it gave something).
    """

    frame_times: np.ndarray | None
    bad_rows: int = 0
    first_bad: str = ""
    unusable: str = ""


def _scan_csv(path: Path) -> Iterator[tuple[int, dict[str, str | None]] | list[str]]:
    """The header (a list), then ``(line, row)`` pairs; decoding errors become U+FFFD."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        yield list(reader.fieldnames or [])
        yield from enumerate(reader, start=2)


def read_frames_csv(path: Path, shape: tuple[int, int, int, int, int]) -> CsvTiming:
    """``frames.csv`` -> per-frame exposure times; never raises for what the file holds."""
    n_t, n_c, n_z = shape[:3]
    frame_t = np.full((n_t, n_c, n_z), np.nan)
    bad, first = 0, ""
    try:
        rows = _scan_csv(path)
        columns = next(rows)
        assert isinstance(columns, list)
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            shown = [c[:20] for c in columns[:6]]
            return CsvTiming(None, unusable=f"no columns {missing} (header {shown}; "
                             f"expected {', '.join(CSV_COLUMNS)}, interval_s)")
        for item in rows:
            assert isinstance(item, tuple)
            line, row = item
            why = ""
            try:
                t, c, z = int(row["t_index"] or ""), int(row["c"] or ""), int(row["z"] or "")
                t_exp = float(row["t_exposure"] or "")
            except (TypeError, ValueError) as exc:
                why = f"{exc}"
            else:
                if not math.isfinite(t_exp):
                    why = f"t_exposure {t_exp}"
                elif not (0 <= t < n_t and 0 <= c < n_c and 0 <= z < n_z):
                    why = (f"frame (t_index={t}, c={c}, z={z}) outside the recording's {n_t} "
                           f"timepoints x {n_c} channels x {n_z} z-slices")
            if why:
                bad += 1
                first = first or f"line {line}: {why}"[:160]
                continue
            frame_t[t, c, z] = t_exp
    except (OSError, csv.Error) as exc:
        if np.isnan(frame_t).all():
            return CsvTiming(None, bad, first, f"{type(exc).__name__}: {exc}")
        bad += 1
        first = first or f"{type(exc).__name__}: {exc} (the rest of the file is ignored)"
    if np.isnan(frame_t).all():
        return CsvTiming(None, bad, first, "no usable row")
    return CsvTiming(frame_t, bad, first)


def _stack_layout_hint(folder: Path) -> tuple[int, int, int] | None:
    """(T, C, Z) of a run folder from ``frames.csv`` rows, else ``summary.json``."""
    n_t = n_c = n_z = 0
    with contextlib.suppress(OSError, csv.Error):
        rows = _scan_csv(folder / FRAMES_CSV)
        columns = next(rows)
        if isinstance(columns, list) and {"t_index", "c", "z"} <= set(columns):
            for item in rows:
                assert isinstance(item, tuple)
                try:
                    t, c, z = (int(item[1][k] or "") for k in ("t_index", "c", "z"))
                except (TypeError, ValueError):
                    continue
                if 0 <= t < 10**9 and 0 <= c < 4096 and 0 <= z < 4096:
                    n_t, n_c, n_z = max(n_t, t + 1), max(n_c, c + 1), max(n_z, z + 1)
    if n_c:
        return n_t, n_c, n_z
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, IndexError):
        shape = json.loads((folder / SUMMARY_JSON).read_text())["stack_shape"]
        c, z = int(shape[0]), int(shape[1])
        if c > 0 and z > 0:
            return 0, c, z
    return None


# --------------------------------------------------------------------------- opening


def is_zarr(path: Path) -> bool:
    """A zarr store (group or array), v2 or v3."""
    return any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def open_reader(path: Path) -> tuple[Reader, Path | None]:
    """The reader for ``path`` and the ``frames.csv`` that goes with it (if any).

    Raises
    ------
    ConfigError
        Nothing readable there (the message says what was found).
    """
    if not path.exists():
        raise ConfigError(f"replay: {path} does not exist")
    images = path
    run_folder = path.is_dir() and not is_zarr(path)
    if run_folder:
        found = [path / name for name in RUN_IMAGES if (path / name).exists()]
        if not found:
            raise ConfigError(
                f"replay: {path} is a folder but neither a zarr store nor a run folder "
                f"(none of {list(RUN_IMAGES)} in it)"
            )
        images = found[0]
    csv_path = images.parent / FRAMES_CSV
    reader: Reader
    if images.is_dir():
        if not is_zarr(images):
            raise ConfigError(f"replay: {images} is a folder without zarr metadata "
                              "(no zarr.json, .zgroup or .zarray)")
        reader = _ZarrReader(images)
    elif images.suffix.lower() in _TIFF_SUFFIXES:
        try:
            reader = _TiffReader(images)
        except ConfigError as exc:
            hint = _stack_layout_hint(path) if run_folder else None
            if hint is None:
                raise
            reader = _RunTiffReader(images, *hint, why=f"{str(exc).removeprefix('replay: ')}")
    else:
        raise ConfigError(
            f"replay: {images} is neither a TIFF (.tif, .tiff) nor a zarr store (a folder)"
        )
    return reader, csv_path if csv_path.is_file() else None
