"""The run folder: its layout, and the one reader of it.

Everything that knows a run folder's file names or CSV columns takes them from here: the
writer's store (:mod:`rt_eda.storage.recording`), ``rt-eda inspect``
(:mod:`rt_eda.storage.inspect`), the report, replay (:mod:`rt_eda.sources.replay`, through
:mod:`rt_eda.core.imagefiles` for the image store) and the engine (frames written by a writer
that died without its report).

Layout of ``DIR`` (``rt-eda run --save DIR``)::

    DIR/
      config.toml            the effective configuration (``Config.to_toml()``)
      images.ome.zarr/       format "zarr": OME-Zarr group (NGFF 0.5, zarr v3), axes t,c,z,y,x
        zarr.json            group metadata: "ome" multiscales + "rt_eda" {complete, timepoints}
        0/zarr.json          array "0", shape (T, C, Z, Y, X), native dtype, no compression
        0/c.<t>.0.0.0.0      one chunk per stack (per frame, c.<t>.<c>.<z>.0.0, for stacks
                             over 32 MiB); chunk key separator "."
      images.ome.tif         format "tiff" instead: one BigTIFF, pages t-major then c, z
      frames.csv             seq,t_index,c,z,t_exposure,interval_s,position,roi_y,roi_x,
                             roi_height,roi_width  (a row per frame; roi_*: the region of the
                             sensor the stack was read from, 0,0,Y,X for the full frame; the
                             image store holds zeros outside it)
      decisions.csv          one row per Result: seq,worker,decision,t_exposure,t_published,
                             t_claimed,t_done,n_timepoints,t_prepare_s,t_infer_s,t_post_s,
                             t_decided,command_interval,position
      locations.csv          one row per event region of every Result: seq,position,
                             t_exposure,region,y,x,y0,x0,y1,x1,score,area  (sensor pixels;
                             region: its index in the Result)
      intervals.csv          interval_s,reason,after_seq,t_decided,trigger_decision,
                             trigger_t_exposure,position  (after_seq = the stack that
                             triggered it; position -1: every position)
      controls.csv           key,value,t
      network_images.zarr/   zarr v3 array (N, Y', X') float32, one chunk per image, only the
                             analysed stacks (never padded with blanks)
      network_index.csv      seq,row,t_published   (row = index into network_images.zarr)
      summary.json           the engine's run summary
      report.png, report.json  the run report (:mod:`rt_eda.storage.report`)
      plan.json              the acquisition plan (useq-schema MDASequence), with --plan
      truth.csv              position,start,end: the source's ground truth (events while
                             visible, monotonic s; the synthetic source), for the outcome

With an acquisition plan of several positions, ``images.ome.zarr`` is a collection in the
bioformats2raw layout (OME-Zarr's layout for several images, as bioformats2raw and OMERO
write it)::

      images.ome.zarr/
        zarr.json            "ome": {"version": "0.5", "bioformats2raw.layout": 3},
                             "rt_eda": {complete, positions, timepoints: [T0, T1, ...]}
        OME/zarr.json        "ome": {"version": "0.5", "series": ["0", "1", ...]}
        0/zarr.json          position 0: an image group ("multiscales", "name" = its name)
        0/0/...              its array (T0, C, Z, Y, X), one chunk per stack
        1/ ...

``t_index`` then counts the stacks *of the row's position* (its index in that position's
array); ``position`` names it. A run without a plan has one position: the single image at
the store's root, position 0 in every table.
Every time is ``time.monotonic()`` seconds (the clock every process shares). ``t_index`` is
the position of a stack in the image store, ``seq`` its sequence number in the ring (equal
unless stacks were lost before the writer saw them). Frame times come from the ring in
channel-major acquisition order (every source acquires c0z0, c0z1, ..., c1z0, ...).

Reading what a crash left: every chunk file or byte range that a ``frames.csv`` row describes
is on disk (the writer writes a row after its stack's data). A zarr store whose writer died
may report more timepoints than were written (the trailing ones read as zeros) and a TIFF
whose writer died shows tifffile one page; :func:`open_run` takes the count of timepoints
from ``frames.csv`` and reads both kinds (the TIFF data are contiguous, so they are
memory-mapped from the offset of the first page). :func:`read_table` leaves out rows cut
short; :func:`read_frames_csv` never fails for what the file holds.

Older recordings: a ``frames.csv`` without the ``roi_*`` columns (recorded before frame
regions) is read as full frames (:meth:`SavedRun.frame_region`); a folder without
``locations.csv`` has no locations (:attr:`SavedRun.locations` is empty).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from rt_eda.core.errors import WriterError
from rt_eda.core.regions import FrameRegion

__all__ = [
    "ACTIONS_CSV",
    "ACTION_COLUMNS",
    "CONFIG_TOML",
    "CONTROLS_CSV",
    "CONTROL_COLUMNS",
    "DECISIONS_CSV",
    "DECISION_COLUMNS",
    "FRAMES_CSV",
    "FRAME_COLUMNS",
    "FRAME_COLUMNS_REQUIRED",
    "FRAME_REGION_COLUMNS",
    "IMAGES_TIFF",
    "IMAGES_ZARR",
    "INTERVALS_CSV",
    "INTERVAL_COLUMNS",
    "LOCATIONS_CSV",
    "LOCATION_COLUMNS",
    "NETWORK_INDEX_COLUMNS",
    "NETWORK_INDEX_CSV",
    "NETWORK_ZARR",
    "PLAN_JSON",
    "REPORT_JSON",
    "REPORT_PNG",
    "RUN_FILES",
    "RUN_IMAGES",
    "SUMMARY_JSON",
    "TRUTH_COLUMNS",
    "TRUTH_CSV",
    "BF2RAW_LAYOUT",
    "CsvTiming",
    "SavedRun",
    "count_frame_rows",
    "csv_rows",
    "frames_layout",
    "open_run",
    "read_frames_csv",
    "read_table",
    "read_truth",
    "store_positions",
    "store_complete",
]

IMAGES_ZARR: Final = "images.ome.zarr"
IMAGES_TIFF: Final = "images.ome.tif"
RUN_IMAGES: Final = (IMAGES_ZARR, IMAGES_TIFF, "images.ome.tiff")
"""The image stores a run folder may hold, in the order they are looked for (replay also
reads an ``images.ome.tiff``)."""
FRAMES_CSV: Final = "frames.csv"
DECISIONS_CSV: Final = "decisions.csv"
INTERVALS_CSV: Final = "intervals.csv"
CONTROLS_CSV: Final = "controls.csv"
LOCATIONS_CSV: Final = "locations.csv"
ACTIONS_CSV: Final = "actions.csv"
ACTION_COLUMNS: Final = (
    "kind", "position", "after_seq", "fast", "t_decided", "t_applied", "t_actuated",
    "decision_to_actuation_ms", "apply_ms", "frame_y", "frame_x", "frame_height",
    "frame_width", "regions", "box_y0", "box_x0", "box_y1", "box_x1", "presets", "note",
    "error",
)
"""``actions.csv``: one row per action the camera applied (or that its device refused:
``error``), and one per interval change decided on a result (kind ``interval``); times on the
monotonic clock, ``frame_*`` the sensor region an ``roi`` action reads (empty: the full
frame), ``box_*`` its event regions' bounding box."""
NETWORK_ZARR: Final = "network_images.zarr"
NETWORK_INDEX_CSV: Final = "network_index.csv"
CONFIG_TOML: Final = "config.toml"
SUMMARY_JSON: Final = "summary.json"
REPORT_PNG: Final = "report.png"
REPORT_JSON: Final = "report.json"

FRAME_COLUMNS: Final = ("seq", "t_index", "c", "z", "t_exposure", "interval_s", "position",
                        "roi_y", "roi_x", "roi_height", "roi_width")
FRAME_COLUMNS_REQUIRED: Final = FRAME_COLUMNS[:5]
"""Columns ``frames.csv`` must have to be read (``interval_s``, ``position`` and the
``roi_*`` columns are read when present: a folder without ``position`` is one position's,
one without ``roi_*`` was recorded in full frames)."""
FRAME_REGION_COLUMNS: Final = FRAME_COLUMNS[7:]
"""``roi_y, roi_x, roi_height, roi_width``: the region of the sensor a stack was read from."""
LOCATION_COLUMNS: Final = ("seq", "position", "t_exposure", "region", "y", "x", "y0", "x0",
                           "y1", "x1", "score", "area")
"""``locations.csv``: one row per event region (:class:`~rt_eda.core.regions.EventRegion`,
sensor pixels) of every analysed stack; ``region`` is its index among its stack's."""
DECISION_COLUMNS: Final = (
    "seq", "worker", "decision", "t_exposure", "t_published", "t_claimed", "t_done",
    "n_timepoints", "t_prepare_s", "t_infer_s", "t_post_s", "t_decided", "command_interval",
    "position",
)
INTERVAL_COLUMNS: Final = (
    "interval_s", "reason", "after_seq", "t_decided", "trigger_decision", "trigger_t_exposure",
    "position",
)
PLAN_JSON: Final = "plan.json"
TRUTH_CSV: Final = "truth.csv"
TRUTH_COLUMNS: Final = ("position", "start", "end")
BF2RAW_LAYOUT: Final = "bioformats2raw.layout"
CONTROL_COLUMNS: Final = ("key", "value", "t")
NETWORK_INDEX_COLUMNS: Final = ("seq", "row", "t_published")

RUN_FILES: Final = (IMAGES_ZARR, IMAGES_TIFF, FRAMES_CSV, DECISIONS_CSV, INTERVALS_CSV,
                    CONTROLS_CSV, NETWORK_ZARR, NETWORK_INDEX_CSV, CONFIG_TOML, SUMMARY_JSON,
                    PLAN_JSON, TRUTH_CSV, LOCATIONS_CSV, ACTIONS_CSV)
"""Every file of a run folder the run itself writes; a folder holding none of them is not a
run folder."""


# --------------------------------------------------------------------------------------------
# CSV tables


def _parse(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def csv_rows(p: Path) -> tuple[list[str], list[list[str]], int]:
    """The header, the rows with as many cells as it, and how many rows had not.

    Raises :class:`WriterError` naming the file when it is not text or not CSV (binary data,
    NUL bytes), OSError when it cannot be read.
    """
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            rows: list[list[str]] = []
            torn = 0
            for r in reader:
                if len(r) == len(header):
                    rows.append(r)
                else:
                    torn += 1
    except (UnicodeDecodeError, csv.Error) as exc:
        raise WriterError(f"{p} is not a CSV table ({_one_line(exc)})") from None
    return header, rows, torn


def read_table(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A CSV file of a run folder as ``{column: numpy array}``.

    Integer columns become int64, numeric ones float64 (empty cells NaN), the rest str. A
    missing file gives an empty dict; rows with a different number of cells than the header
    (a file cut short) are left out. Raises :class:`WriterError` naming the file when it is
    not a CSV table at all.
    """
    p = Path(path)
    if not p.exists():
        return {}
    header, rows, _ = csv_rows(p)
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        cells = [r[i] for r in rows]
        parsed = [_parse(v) if v != "" else math.nan for v in cells]
        if all(isinstance(v, int) for v in parsed):
            out[name] = np.asarray(parsed, dtype=np.int64)
        elif all(isinstance(v, int | float) for v in parsed):
            out[name] = np.asarray(parsed, dtype=np.float64)
        else:
            out[name] = np.asarray(cells, dtype=str)
    return out


def count_frame_rows(run_dir: str | os.PathLike[str]) -> int | None:
    """Lines of ``frames.csv`` after its header (one per frame written), None without the
    file: how many frames a writer saved when it died before reporting. Raises OSError."""
    table = Path(run_dir) / FRAMES_CSV
    if not table.exists():
        return None
    with table.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)


# --------------------------------------------------------------------------------------------
# frames.csv timing (replay) and layout


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
    """``frames.csv`` -> per-frame exposure times of a recording of ``shape`` (T, C, Z, Y, X).

    The reader of the frame times that replay uses: it never raises for what the file holds
    (unusable rows are counted, an unusable file gives ``frame_times`` None and why).
    """
    n_t, n_c, n_z = shape[:3]
    frame_t = np.full((n_t, n_c, n_z), np.nan)
    bad, first = 0, ""
    try:
        rows = _scan_csv(path)
        columns = next(rows)
        assert isinstance(columns, list)
        missing = [c for c in FRAME_COLUMNS_REQUIRED if c not in columns]
        if missing:
            shown = [c[:20] for c in columns[:6]]
            return CsvTiming(None, unusable=f"no columns {missing} (header {shown}; "
                             f"expected {', '.join(FRAME_COLUMNS_REQUIRED)}, interval_s)")
        for item in rows:
            assert isinstance(item, tuple)
            line, row = item
            why = ""
            if None in row or None in row.values():  # a row cut short (or run over): its
                # last cell may be a number cut in the middle ("100.25" -> "1")
                bad += 1
                first = first or (f"line {line}: not as many cells as the header's "
                                  f"{len(columns)} columns")
                continue
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


def frames_layout(folder: Path) -> tuple[int, int, int] | None:
    """``(T, C, Z)`` of a run folder from its ``frames.csv`` rows, else ``summary.json``
    (``T`` 0: unknown); None when neither tells. Never raises for what the files hold."""
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


# --------------------------------------------------------------------------------------------
# A saved run


def store_positions(images: Path) -> list[str] | None:
    """The image groups of a multi-position ``images.ome.zarr`` (the bioformats2raw layout's
    series, in position order), or None when it is one image. Raises OSError, ValueError
    (unreadable metadata)."""
    if not images.is_dir():
        return None
    meta = json.loads((images / "zarr.json").read_bytes())
    attrs = meta.get("attributes", {})
    ome = attrs.get("ome", {}) if isinstance(attrs.get("ome"), dict) else {}
    if BF2RAW_LAYOUT not in ome and BF2RAW_LAYOUT not in attrs:
        return None
    series_meta = images / "OME" / "zarr.json"
    if series_meta.is_file():
        o = json.loads(series_meta.read_bytes()).get("attributes", {})
        series = (o.get("ome", {}) or {}).get("series", o.get("series"))
        if isinstance(series, list) and all(isinstance(x, str) for x in series):
            return list(series)
    found = sorted((p.name for p in images.iterdir() if p.name.isdigit() and p.is_dir()),
                   key=int)
    return found


def read_truth(path: Path) -> dict[int, list[tuple[float, float]]] | None:
    """``truth.csv`` as each position's ground-truth events ``(start, end)`` (monotonic s of
    the recording), or None without the file. Rows that do not parse are left out."""
    if not path.is_file():
        return None
    out: dict[int, list[tuple[float, float]]] = {}
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            try:
                p, a, b = int(row["position"] or ""), float(row["start"] or ""), float(
                    row["end"] or "")
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(a) and math.isfinite(b) and b > a and p >= 0:
                out.setdefault(p, []).append((a, b))
    return out


def store_complete(images: Path) -> bool:
    """Whether the writer closed the image store ``images`` (zarr: its ``rt_eda.complete``
    attribute; TIFF: it has its OME-XML). Raises OSError, ValueError (unreadable metadata)."""
    if images.is_dir():
        meta = json.loads((images / "zarr.json").read_bytes())
        return bool(meta.get("attributes", {}).get("rt_eda", {}).get("complete", False))
    import tifffile

    with tifffile.TiffFile(images) as tif:
        return bool(tif.is_ome)


class SavedRun:
    """A run folder opened for reading (:func:`open_run`). Everything is read lazily.

    Attributes
    ----------
    path
        The run folder.
    format
        ``"zarr"`` or ``"tiff"`` (whichever image store the folder holds).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if (path / IMAGES_ZARR).is_dir():
            self.format = "zarr"
        elif (path / IMAGES_TIFF).is_file():
            self.format = "tiff"
        else:
            raise WriterError(f"{path} is not an rt-eda run folder: no {IMAGES_ZARR} or "
                              f"{IMAGES_TIFF}" + ("" if path.is_dir() else " (not a folder)"))
        self._tables: dict[str, dict[str, np.ndarray]] = {}
        self._images: Any = None

    def _table(self, name: str) -> dict[str, np.ndarray]:
        if name not in self._tables:
            self._tables[name] = read_table(self.path / name)
        return self._tables[name]

    @property
    def images_path(self) -> Path:
        """The image store (``images.ome.zarr`` or ``images.ome.tif``)."""
        return self.path / (IMAGES_ZARR if self.format == "zarr" else IMAGES_TIFF)

    @property
    def frames(self) -> dict[str, np.ndarray]:
        """``frames.csv`` columns (one entry per frame persisted)."""
        return self._table(FRAMES_CSV)

    @property
    def decisions(self) -> dict[str, np.ndarray]:
        """``decisions.csv`` columns (one entry per Result)."""
        return self._table(DECISIONS_CSV)

    @property
    def intervals(self) -> dict[str, np.ndarray]:
        """``intervals.csv`` columns (one entry per interval command)."""
        return self._table(INTERVALS_CSV)

    @property
    def controls(self) -> dict[str, np.ndarray]:
        """``controls.csv`` columns."""
        return self._table(CONTROLS_CSV)

    @property
    def locations(self) -> dict[str, np.ndarray]:
        """``locations.csv`` columns (:data:`LOCATION_COLUMNS`, one entry per event region);
        {} for a folder without the file (recorded before locations were)."""
        return self._table(LOCATIONS_CSV)

    @property
    def actions(self) -> dict[str, np.ndarray]:
        """``actions.csv`` columns (:data:`ACTION_COLUMNS`; ``{}`` for a run without one)."""
        return self._table(ACTIONS_CSV)

    def frame_region(self, t_index: int, position: int = 0) -> FrameRegion:
        """The region of the sensor stack ``t_index`` of ``position`` was read from (the
        image store holds zeros outside it): from ``frames.csv``'s ``roi_*`` columns, the
        full frame for a recording without them or a stack without a row.

        Raises IndexError for a stack outside the recording."""
        if not 0 <= t_index < self.timepoints:
            raise IndexError(f"timepoint {t_index} is not in 0..{self.timepoints - 1}")
        height, width = (int(n) for n in self.images.shape[-2:])
        frames = self.frames
        if any(c not in frames for c in FRAME_REGION_COLUMNS):
            return FrameRegion.full(height, width)
        rows = frames["t_index"] == t_index
        if "position" in frames:
            rows &= frames["position"] == position
        found = np.flatnonzero(rows)
        if found.size == 0:
            return FrameRegion.full(height, width)
        y, x, h, w = (frames[c][found[0]] for c in FRAME_REGION_COLUMNS)
        if not all(math.isfinite(float(v)) for v in (y, x, h, w)) or h < 1 or w < 1:
            return FrameRegion.full(height, width)  # an empty or damaged cell
        return FrameRegion(int(y), int(x), int(h), int(w))

    @property
    def network_index(self) -> dict[str, np.ndarray]:
        """``network_index.csv`` columns: ``seq``, ``row``, ``t_published``."""
        return self._table(NETWORK_INDEX_CSV)

    @property
    def config(self) -> dict[str, Any]:
        """``config.toml`` as a dict ({} when absent)."""
        p = self.path / CONFIG_TOML
        return tomllib.loads(p.read_text()) if p.exists() else {}

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` as a dict ({} when absent)."""
        p = self.path / SUMMARY_JSON
        data = json.loads(p.read_text()) if p.exists() else {}
        return data if isinstance(data, dict) else {}

    @property
    def timepoints(self) -> int:
        """Stacks persisted (from ``frames.csv``: the authority after a crash too)."""
        t = self.frames.get("t_index")
        return int(t.max()) + 1 if t is not None and t.size else 0

    @property
    def images(self) -> Any:
        """The image store, lazily: a ``zarr.Array`` (zarr) or a read-only ``numpy.memmap``
        (tiff), shape (T', C, Z, Y, X) (position 0's, for a run of several positions: see
        :meth:`position_images`). T' equals :attr:`timepoints` for a recording that was
        closed; a zarr store whose writer died may have more (trailing zeros), a TIFF cut
        short fewer (the stacks it holds in full)."""
        if self._images is None:
            if self.format == "zarr":
                import zarr

                series = store_positions(self.path / IMAGES_ZARR)
                where = self.path / IMAGES_ZARR / (series[0] if series else "")
                group = zarr.open_group(store=str(where), mode="r")
                self._images = group["0"]
            else:
                self._images = self._tiff_stacks()
        return self._images

    def _tiff_stacks(self) -> np.ndarray:
        from rt_eda.core.imagefiles import contiguous_stacks

        layout = contiguous_stacks(self.path / IMAGES_TIFF)
        frames = self.frames
        if frames.get("c") is not None and frames["c"].size:
            c, z = int(frames["c"].max()) + 1, int(frames["z"].max()) + 1
        else:
            series = layout.series_shape
            c, z = (series[-4], series[-3]) if len(series) >= 4 else (1, 1)
        return layout.map(self.timepoints, c, z)

    @property
    def positions(self) -> int:
        """Positions the run was recorded at (1 without a plan)."""
        series = store_positions(self.images_path) if self.format == "zarr" else None
        return len(series) if series else 1

    def position_images(self, position: int) -> Any:
        """Position ``position``'s images as a ``zarr.Array`` (T_p, C, Z, Y, X) (for a run
        of one position: :attr:`images`)."""
        series = store_positions(self.images_path) if self.format == "zarr" else None
        if not series:
            if position != 0:
                raise IndexError(f"position {position}: the run has one position")
            return self.images
        import zarr

        group = zarr.open_group(store=str(self.images_path / series[position]), mode="r")
        return group["0"]

    def stack(self, t_index: int) -> np.ndarray:
        """Stack ``t_index`` as an (C, Z, Y, X) array."""
        if not 0 <= t_index < self.timepoints:
            raise IndexError(f"timepoint {t_index} is not in 0..{self.timepoints - 1}")
        return np.asarray(self.images[t_index])

    @property
    def network_images(self) -> Any:
        """The network images as a ``zarr.Array`` (N', Y', X'), or None if none were saved;
        row i belongs to stack ``network_index["seq"][i]``."""
        p = self.path / NETWORK_ZARR
        if not p.is_dir():
            return None
        import zarr

        return zarr.open_array(store=str(p), mode="r")

    def network_image(self, seq: int) -> np.ndarray | None:
        """The network image of stack ``seq``, or None if it has none."""
        index = self.network_index
        rows = np.flatnonzero(index.get("seq", np.zeros(0, np.int64)) == seq)
        if rows.size == 0 or self.network_images is None:
            return None
        return np.asarray(self.network_images[int(index["row"][rows[0]])])

    @property
    def complete(self) -> bool:
        """True when the writer closed the recording (False: it was interrupted)."""
        return store_complete(self.images_path)


def open_run(path: str | os.PathLike[str]) -> SavedRun:
    """Open a saved run folder for reading (nothing is read until asked for).

    Raises :class:`WriterError` when the folder holds no image store.
    """
    return SavedRun(Path(path))
