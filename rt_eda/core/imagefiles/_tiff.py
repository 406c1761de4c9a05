"""TIFF readers: any TIFF, OME-TIFF or ImageJ hyperstack, and rt-eda's own contiguous layout.

:class:`TiffReader` reads one page per plane (series 0). :class:`RunTiffReader` reads an
``images.ome.tif`` that lost its pages or OME-XML (cut short, or its writer died) with the
layout rt-eda writes (:func:`contiguous_stacks`: every stack contiguous from the first page's
data); :class:`~rt_eda.core.runfolder.SavedRun` maps a run's TIFF the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.core.runfolder import FRAMES_CSV, SUMMARY_JSON

from ._common import (
    AXES,
    READ_ERRORS,
    TIME_UNITS,
    Gap,
    GapKind,
    axis_layout,
    check_dtype,
)

__all__ = ["ContiguousTiff", "RunTiffReader", "TiffReader", "contiguous_stacks"]

log = logging.getLogger(__name__)


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


class TiffReader:
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
            self.shape = axis_layout(axes, shape, where)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{said.said()}") from None
        self.dtype = check_dtype(np.dtype(series.dtype), where)
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
                except READ_ERRORS as exc:
                    raise SourceError(
                        f"reading plane t={t} c={c} z={z} of {self.description} failed: {exc}"
                    ) from exc

    def close(self) -> None:
        self._tif.close()


@dataclass(frozen=True, slots=True)
class ContiguousTiff:
    """Where rt-eda's TIFF layout keeps its stacks: contiguous from the first page's data.

    rt-eda writes every stack's bytes after the previous one's (``TiffWriter`` in contiguous
    mode), so the stacks can be found without the IFDs of the later pages or the OME-XML.

    Attributes
    ----------
    path
        The TIFF.
    offset
        Where the first page's data start.
    plane
        ``(Y, X)`` of a page.
    dtype
        The pixel type (native byte order).
    size
        The file's size in bytes.
    series_shape
        The shape of series 0 as tifffile read it (one page, when the IFDs are lost).
    """

    path: Path
    offset: int
    plane: tuple[int, int]
    dtype: np.dtype[Any]
    size: int
    series_shape: tuple[int, ...]

    def whole_stacks(self, n_c: int, n_z: int) -> int:
        """How many stacks of ``n_c x n_z`` planes the file holds in full."""
        y, x = self.plane
        return max(0, (self.size - self.offset) // (n_c * n_z * y * x * self.dtype.itemsize))

    def map(self, n_t: int, n_c: int, n_z: int) -> np.ndarray:
        """The first ``n_t`` stacks, or as many as the file holds in full, read-only
        ``(T, C, Z, Y, X)`` (memory-mapped; an empty array when there is none)."""
        n = min(n_t, self.whole_stacks(n_c, n_z))
        shape = (n, n_c, n_z, *self.plane)
        if n <= 0:
            return np.zeros((0, *shape[1:]), dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=shape)


def contiguous_stacks(path: Path) -> ContiguousTiff:
    """The contiguous layout of an rt-eda TIFF (its first page only is read).

    Raises
    ------
    ConfigError
        Not a readable TIFF, or no readable first page (named).
    """
    said = _TiffLog()
    tif = _open_tiff(path, said)
    try:
        page = tif.pages.first
        offset = int(page.dataoffsets[0])
        y, x = int(page.shape[-2]), int(page.shape[-1])
        dtype = check_dtype(np.dtype(page.dtype), str(path))
        series_shape = tuple(int(n) for n in tif.series[0].shape) if tif.series else ()
    except (AttributeError, IndexError, ValueError, TypeError) as exc:
        raise ConfigError(f"replay: {path}: no readable first page ({exc})") from exc
    finally:
        tif.close()
    return ContiguousTiff(path, offset, (y, x), dtype, path.stat().st_size, series_shape)


class RunTiffReader:
    """rt-eda's TIFF layout read without its IFDs: stacks contiguous from the first page.

    For an ``images.ome.tif`` whose OME-XML or later pages are lost (cut short, or its
    writer died). Timepoints whose bytes lie past the end of the file are missing. ``n_t``,
    ``n_c``, ``n_z`` come from the run folder (:func:`rt_eda.core.runfolder.frames_layout`);
    ``n_t`` 0: as many as the file holds.
    """

    frame_times: np.ndarray | None = None
    step_s: float | None = None
    rt_eda = True
    chunks_absent = 0

    def __init__(self, path: Path, n_t: int, n_c: int, n_z: int, why: str) -> None:
        layout = contiguous_stacks(path)
        whole = layout.whole_stacks(n_c, n_z)
        n_t = max(n_t, 1) if n_t else int(whole)
        y, x = layout.plane
        self.shape = (n_t, n_c, n_z, y, x)
        self.dtype = layout.dtype
        self.description = (f"{path} (rt-eda contiguous TIFF layout, {n_t} timepoints of "
                            f"(C, Z, Y, X) {(n_c, n_z, y, x)} {layout.dtype})")
        self.gaps: list[Gap] = []
        self.notes = [f"{path}: {why}; read with rt-eda's contiguous stack layout "
                      f"(C, Z from {FRAMES_CSV} or {SUMMARY_JSON})"]
        if whole < n_t:
            self.gaps.append(Gap(
                GapKind.MISSING, tuple(range(int(whole), n_t)),
                f"past the end of {path.name} ({layout.size} bytes: the file was cut short)"))
        self._map: np.ndarray | None = layout.map(n_t, n_c, n_z) if whole else None

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
                unit = TIME_UNITS.get(plane.get("DeltaTUnit", "s"), 1.0)
                frame_t[t, c, z] = value * unit
        if not np.isnan(frame_t).all():
            return frame_t, None
        inc = pixels.get("TimeIncrement")
        if inc is not None:
            unit = TIME_UNITS.get(pixels.get("TimeIncrementUnit", "s"), 1.0)
            return None, float(inc) * unit
    if tif.is_imagej and tif.imagej_metadata:
        finterval = tif.imagej_metadata.get("finterval")
        if finterval:
            return None, float(finterval)
    return None, None

