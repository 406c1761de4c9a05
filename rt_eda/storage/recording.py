"""The writer's store: :class:`Recording` writes one run into a run folder while the run goes.

The folder's layout (file names, CSV columns) is :mod:`rt_eda.core.runfolder`, which also
reads it back (:func:`~rt_eda.core.runfolder.open_run`); the image stores are
:mod:`.zarr_store` (OME-Zarr, chunk file by chunk file) and :mod:`.tiff_store` (OME-TIFF).
:func:`prepare_save_dir` checks the folder before anything starts, :func:`write_summary`
writes its ``summary.json`` at the end.

What survives a crash (the writer killed, a full disk): every chunk file or byte range that a
``frames.csv`` row describes (a row is written after its stack's data, and the CSV files are
flushed to the kernel after each batch: a process crash loses nothing already written; power
loss is the operating system's page cache policy, nothing is fsynced). A chunk that could not
be written whole is removed. A zarr store whose writer died may report more timepoints than
were written (the trailing ones read as zeros) and a TIFF whose writer died shows tifffile one
page; :func:`~rt_eda.core.runfolder.open_run` and ``rt-eda inspect``
(:func:`rt_eda.storage.inspect.describe`) take the count of timepoints from ``frames.csv``
and read both kinds.

Frame regions: a stack read from a region of the sensor (a camera ROI; the rest of its ring
slot is stale) is saved as the full frame with zeros outside the region, never the slot's
stale pixels, and its ``frames.csv`` rows name the region (``roi_*``). The event locations of
every Result go to ``locations.csv`` (a row per region), written and flushed as
``decisions.csv`` is.
"""

from __future__ import annotations

import contextlib
import csv
import errno as errno_mod
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, WriterError
from rt_eda.core.files import write_json_atomic
from rt_eda.core.messages import ControlRecord, DecisionRecord, IntervalChange, Result, WriterRow
from rt_eda.core.regions import FrameRegion
from rt_eda.core.runfolder import (
    CONFIG_TOML,
    CONTROL_COLUMNS,
    CONTROLS_CSV,
    DECISION_COLUMNS,
    DECISIONS_CSV,
    FRAME_COLUMNS,
    FRAMES_CSV,
    IMAGES_TIFF,
    IMAGES_ZARR,
    INTERVAL_COLUMNS,
    INTERVALS_CSV,
    LOCATION_COLUMNS,
    LOCATIONS_CSV,
    NETWORK_INDEX_COLUMNS,
    NETWORK_INDEX_CSV,
    NETWORK_ZARR,
    PLAN_JSON,
    SUMMARY_JSON,
)
from rt_eda.storage.tiff_store import TiffStack
from rt_eda.storage.zarr_store import (
    ChunkedArray,
    create_image_store,
    create_position_stores,
    mark_complete,
    mark_positions_complete,
)

__all__ = [
    "Recording",
    "RecordingStatistics",
    "position_names",
    "prepare_save_dir",
    "write_summary",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The run folder


def prepare_save_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder a run is saved to, or refuse it; call before anything starts.

    Parameters
    ----------
    path
        The folder (``run.save``). Missing parents are created.

    Returns
    -------
    Path
        The absolute folder, existing and empty.

    Raises
    ------
    ConfigError
        The path exists and is not a folder, already holds files (a recording is never
        overwritten, not even partly), or cannot be created or written to; the message names
        the path and the reason.
    """
    folder = Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"run.save: {str(folder)!r} exists and is not a folder")
    if folder.is_dir():
        entries = sorted(p.name for p in folder.iterdir())
        if entries:
            shown = ", ".join(repr(e) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ConfigError(
                f"run.save: {str(folder)!r} already holds {len(entries)} entr"
                f"{'y' if len(entries) == 1 else 'ies'} ({shown}); rt-eda never overwrites a "
                "recording: choose a new or empty folder"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".rt-eda-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"run.save: cannot write to {str(folder)!r}: {exc.strerror or exc}"
        ) from None
    return folder


def position_names(config: Config, positions: int) -> tuple[str, ...]:
    """The names the recording gives ``positions`` positions: the plan's (``camera.plan``),
    else ``p0``, ``p1``, ..."""
    names: tuple[str, ...] = ()
    if config.camera.plan:
        from rt_eda.core.plan import load_plan

        try:
            names = tuple(p.name for p in load_plan(config.camera.plan).positions)
        except ConfigError as exc:  # checked when the configuration loaded; gone since
            log.warning("the plan's position names are not known: %s", exc)
    if len(names) != positions:
        names = tuple(f"p{p}" for p in range(positions))
    return names


def write_summary(run_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` into ``run_dir`` atomically (:func:`rt_eda.core.files.write_atomic`).

    Returns the path written. Raises :class:`WriterError` naming the path if it cannot be
    written (the folder is gone, the disk is full).
    """
    path = Path(run_dir) / SUMMARY_JSON
    try:
        write_json_atomic(path, summary, make_parents=False)
    except OSError as exc:
        raise WriterError(f"writing {path}: {exc.strerror or exc}") from exc
    return path


# --------------------------------------------------------------------------------------------
# Writing


class RecordingStatistics:
    """What a :class:`Recording` has persisted so far (plain counters, one writer thread)."""

    __slots__ = ("bytes_written", "controls", "decisions", "frames_written", "intervals",
                 "locations", "network_images_written", "stacks_written")

    def __init__(self) -> None:
        self.frames_written = 0
        self.stacks_written = 0
        self.network_images_written = 0
        self.bytes_written = 0
        self.decisions = 0
        self.intervals = 0
        self.controls = 0
        self.locations = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: int(getattr(self, name)) for name in self.__slots__}


def _cell(value: object) -> str:
    """One CSV cell: floats at full precision (repr), None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value)


class _CsvLog:
    """An append-only CSV file with a fixed header (created exclusively: never overwrites)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        self.rows = 0
        self._file = path.open("x", newline="", buffering=1 << 16)
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(self.columns)
        self._unknown_warned = False

    def append(self, row: Mapping[str, object]) -> None:
        if not self._unknown_warned:
            extra = set(row) - set(self.columns)
            if extra:
                self._unknown_warned = True
                log.warning("%s: keys %s are not columns of this file; not recorded",
                            self.path.name, sorted(extra))
        self._csv.writerow([_cell(row.get(c)) for c in self.columns])
        self.rows += 1

    def write_text(self, text: str, rows: int) -> None:
        """Append pre-formatted lines (the per-frame rows, formatted in one go) and hand them
        to the kernel at once (a row counted is a row on disk)."""
        self._file.write(text)
        self._file.flush()
        self.rows += rows

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Recording:
    """Writes one run into a run folder (see the module docstring for the layout).

    Parameters
    ----------
    run_dir
        The run folder, existing (:func:`prepare_save_dir`); none of the run's files may exist
        in it yet (every file is created exclusively).
    stack_shape
        ``(C, Z, Y, X)`` of every stack.
    dtype
        Pixel type of the stacks.
    fmt
        ``"zarr"`` (OME-Zarr) or ``"tiff"`` (OME-TIFF).
    config_toml
        The effective configuration as TOML, saved as ``config.toml`` (None: not written).
    network_shape
        ``(Y', X')`` of the network images, or None if none are saved.
    positions
        The names of the plan's positions (None or one name: one position, the single image
        at the store's root); with several, ``images.ome.zarr`` holds one image per position
        in the bioformats2raw layout (``zarr`` format only).
    plan_json
        The acquisition plan (useq-schema JSON), saved as ``plan.json`` (None: not written).

    One thread uses a recording. Every ``write_*`` call either persists its data or raises
    :class:`WriterError` naming the file and how many frames are saved; what was written
    before stays readable. Call :meth:`flush` regularly (rows reach the kernel) and
    :meth:`close` at the end (stores finalized); both are safe to call after a failure.
    """

    def __init__(self, run_dir: str | os.PathLike[str], stack_shape: tuple[int, int, int, int],
                 dtype: np.dtype[Any] | str, *, fmt: str = "zarr",
                 config_toml: str | None = None,
                 network_shape: tuple[int, int] | None = None,
                 positions: Sequence[str] | None = None,
                 plan_json: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.positions = tuple(positions) if positions else ("p0",)
        self._per_position = [0] * len(self.positions)
        self._arrays: list[ChunkedArray] = []
        self.stack_shape = tuple(int(n) for n in stack_shape)
        self.dtype = np.dtype(dtype)
        self.format = fmt
        self.stats = RecordingStatistics()
        self.closed = False
        self._logs: list[_CsvLog] = []
        self._zarr: ChunkedArray | None = None
        self._tiff: TiffStack | None = None
        self._network: ChunkedArray | None = None
        self._network_index: _CsvLog | None = None
        self._outside: np.ndarray | None = None  # the zeroed full frame a region is saved in
        c, z, y, x = self.stack_shape
        self._frame_cz = [divmod(i, z) for i in range(c * z)]
        if fmt not in ("zarr", "tiff"):
            raise ConfigError(f"writer.format: {fmt!r} is not one of 'zarr', 'tiff'")
        if fmt == "tiff" and len(self.positions) > 1:
            raise ConfigError(f"writer.format 'tiff' records one position, not "
                              f"{len(self.positions)}: use 'zarr'")
        where = self.run_dir
        try:
            if not self.run_dir.is_dir():
                raise FileNotFoundError(errno_mod.ENOENT, "no such folder", str(self.run_dir))
            if config_toml is not None:
                where = self.run_dir / CONFIG_TOML
                with where.open("x") as f:
                    f.write(config_toml)
            if plan_json is not None:
                where = self.run_dir / PLAN_JSON
                with where.open("x") as f:
                    f.write(plan_json)
            if fmt == "zarr" and len(self.positions) > 1:
                where = self.run_dir / IMAGES_ZARR
                self._arrays = create_position_stores(where, self.stack_shape, self.dtype,
                                                      self.positions)
            elif fmt == "zarr":
                where = self.run_dir / IMAGES_ZARR
                self._zarr = create_image_store(where, self.stack_shape, self.dtype)
                self._arrays = [self._zarr]
            else:
                where = self.run_dir / IMAGES_TIFF
                self._tiff = TiffStack(where, (c, z, y, x), self.dtype)
            where = self.run_dir / FRAMES_CSV
            self._frames = self._open_log(FRAMES_CSV, FRAME_COLUMNS)
            self._decisions = self._open_log(DECISIONS_CSV, DECISION_COLUMNS)
            self._intervals = self._open_log(INTERVALS_CSV, INTERVAL_COLUMNS)
            self._controls = self._open_log(CONTROLS_CSV, CONTROL_COLUMNS)
            self._locations = self._open_log(LOCATIONS_CSV, LOCATION_COLUMNS)
            if network_shape is not None:
                where = self.run_dir / NETWORK_ZARR
                ny, nx = (int(n) for n in network_shape)
                self._network = ChunkedArray(where, (ny, nx), (ny, nx), np.dtype(np.float32),
                                              ("n", "y", "x"),
                                              {"rt_eda": {"index": NETWORK_INDEX_CSV}})
                self._network_index = self._open_log(NETWORK_INDEX_CSV, NETWORK_INDEX_COLUMNS)
        except FileExistsError as exc:
            self._close_quietly()
            raise WriterError(
                f"{exc.filename or where} already exists: a recording is never overwritten"
            ) from None
        except OSError as exc:
            self._close_quietly()
            raise WriterError(f"creating {exc.filename or where}: {exc.strerror or exc}") from exc

    # -- creation ------------------------------------------------------------------------------
    def _open_log(self, name: str, columns: Sequence[str]) -> _CsvLog:
        out = _CsvLog(self.run_dir / name, columns)
        self._logs.append(out)
        return out

    # -- writing ---------------------------------------------------------------------------------
    def _failed(self, what: Path, exc: OSError) -> WriterError:
        try:
            st = os.statvfs(self.run_dir)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = -1
        if exc.errno:
            code = errno_mod.errorcode.get(exc.errno, str(exc.errno))
        else:  # numpy's tofile (tifffile) reports a short write without errno
            full = 0 <= free < int(np.prod(self.stack_shape)) * self.dtype.itemsize
            code = "ENOSPC" if full else "short write"
        return WriterError(
            f"writing {what} failed ({code}: {exc.strerror or exc}; {free} bytes free); "
            f"{self.stats.frames_written} frame(s) of {self.stats.stacks_written} stack(s) "
            f"saved in {self.run_dir}"
        )

    @property
    def images_path(self) -> Path:
        """The image store (``images.ome.zarr`` or ``images.ome.tif``)."""
        return self.run_dir / (IMAGES_ZARR if self.format == "zarr" else IMAGES_TIFF)

    def write_stack(self, seq: int, pixels: np.ndarray, frame_times: np.ndarray,
                    interval_s: float, position: int = 0,
                    frame: FrameRegion | None = None) -> None:
        """Append one stack (C, Z, Y, X) of ``position`` and its frame rows.

        The pixels are written straight from ``pixels`` (a shared-memory view is fine: no
        copy when it is C-contiguous) to the position's image; the rows follow the data, so
        a row always describes a persisted frame (``t_index``: the stack's index in its
        position's image). ``frame``: the region of the sensor the stack was read from (None:
        the full frame); ``pixels`` still has the full (Y, X), and only the region's pixels
        are saved, zeros outside it (a copy into a zeroed buffer). Raises
        :class:`WriterError` (nothing of this stack is listed); ``ValueError`` for a position
        the recording was not made for or a region outside the frame.
        """
        if not 0 <= position < len(self.positions):
            raise ValueError(f"position {position} is not one of the recording's "
                             f"{len(self.positions)}")
        y_size, x_size = self.stack_shape[2:]
        roi = f"0,0,{y_size},{x_size}"
        if frame is not None and not frame.is_full(y_size, x_size):
            pixels = self._inside(pixels, frame)
            roi = f"{frame.y},{frame.x},{frame.height},{frame.width}"
        t_index = self._per_position[position]
        try:
            if self._arrays:
                nbytes = self._arrays[position].append(pixels)
            else:
                assert self._tiff is not None
                nbytes = self._tiff.append(pixels, frame_times)
        except OSError as exc:
            raise self._failed(self.images_path, exc) from exc
        self._per_position[position] += 1
        times = frame_times.tolist()
        interval = repr(float(interval_s))
        text = "".join(f"{seq},{t_index},{c},{z},{t!r},{interval},{position},{roi}\n"
                       for (c, z), t in zip(self._frame_cz, times, strict=True))
        try:
            self._frames.write_text(text, len(times))
        except OSError as exc:
            raise self._failed(self._frames.path, exc) from exc
        self.stats.stacks_written += 1
        self.stats.frames_written += len(times)
        self.stats.bytes_written += nbytes

    def _inside(self, pixels: np.ndarray, frame: FrameRegion) -> np.ndarray:
        """``pixels`` with zeros outside ``frame``, in a buffer reused stack after stack (the
        stores write synchronously, so it is free again when :meth:`write_stack` returns)."""
        y_size, x_size = self.stack_shape[2:]
        if not frame.inside(y_size, x_size):
            raise ValueError(f"frame region {frame.describe()} does not lie within the "
                             f"recording's {x_size}x{y_size} px frames")
        out = self._outside
        if out is None:
            out = self._outside = np.zeros(self.stack_shape, self.dtype)
        else:
            out.fill(0)
        rows, cols = frame.slices()
        out[..., rows, cols] = pixels[..., rows, cols]
        return out

    def write_network_image(self, seq: int, image: np.ndarray, t_published: float) -> None:
        """Append one network image (Y', X') of stack ``seq`` and its index row."""
        if self._network is None or self._network_index is None:
            raise WriterError(f"{self.run_dir}: this recording saves no network images")
        row = self._network.length
        try:
            nbytes = self._network.append(np.asarray(image, dtype=np.float32).reshape(
                self._network.tail))
            self._network_index.append({"seq": seq, "row": row, "t_published": t_published})
        except OSError as exc:
            raise self._failed(self._network.path, exc) from exc
        self.stats.network_images_written += 1
        self.stats.bytes_written += nbytes

    def log(self, row: WriterRow) -> None:
        """Append what the interpreter recorded: a :class:`~rt_eda.core.messages.DecisionRecord`
        (a decisions.csv row, a locations.csv row per event region of its Result, and an
        intervals.csv row when it changed the interval, its trigger columns from the record
        itself), an
        :class:`~rt_eda.core.messages.IntervalChange` no result caused (the start, a control:
        no trigger) or a :class:`~rt_eda.core.messages.ControlRecord` (controls.csv).
        Anything else raises WriterError."""
        name = DECISIONS_CSV
        try:
            if isinstance(row, DecisionRecord):
                r = row.result
                change = row.change
                self._decisions.append({
                    "seq": r.seq, "worker": r.worker, "decision": r.decision,
                    "t_exposure": r.t_exposure, "t_published": r.t_published,
                    "t_claimed": r.t_claimed, "t_done": r.t_done,
                    "n_timepoints": r.n_timepoints, "t_prepare_s": r.t_prepare_s,
                    "t_infer_s": r.t_infer_s, "t_post_s": r.t_post_s,
                    "t_decided": row.t_decided,
                    "command_interval": change.command.interval_s if change else None,
                    "position": r.position,
                })
                self.stats.decisions += 1
                if r.regions:
                    name = LOCATIONS_CSV
                    for k, g in enumerate(r.regions):
                        self._locations.append({
                            "seq": r.seq, "position": r.position, "t_exposure": r.t_exposure,
                            "region": k, "y": float(g.y), "x": float(g.x), "y0": g.y0,
                            "x0": g.x0, "y1": g.y1, "x1": g.x1, "score": float(g.score),
                            "area": g.area,
                        })
                    self.stats.locations += len(r.regions)
                if change is not None:
                    name = INTERVALS_CSV
                    self._log_interval(change, r)
            elif isinstance(row, IntervalChange):
                name = INTERVALS_CSV
                self._log_interval(row, None)
            elif isinstance(row, ControlRecord):
                name = CONTROLS_CSV
                self._controls.append({"key": row.key.value, "value": row.value, "t": row.t})
                self.stats.controls += 1
            else:
                raise WriterError(f"cannot record {row!r} (expected a DecisionRecord, "
                                  "IntervalChange or ControlRecord)")
        except OSError as exc:
            raise self._failed(self.run_dir / name, exc) from exc

    def _log_interval(self, change: IntervalChange, trigger: Result | None) -> None:
        c = change.command
        self._intervals.append({
            "interval_s": c.interval_s, "reason": c.reason, "after_seq": c.after_seq,
            "t_decided": c.t_decided,
            "trigger_decision": trigger.decision if trigger is not None else None,
            "trigger_t_exposure": trigger.t_exposure if trigger is not None else None,
            "position": c.position,
        })
        self.stats.intervals += 1

    def flush(self) -> None:
        """Hand every buffered row to the kernel (survives a crash of this process)."""
        for out in self._logs:
            try:
                out.flush()
            except OSError as exc:
                raise self._failed(out.path, exc) from exc

    def close(self) -> None:
        """Finalize the stores (exact shape, OME-XML, "complete") and close every file.

        Idempotent. Closes everything it can even when something fails, then raises the first
        failure as WriterError; the data already written stay readable either way.
        """
        if self.closed:
            return
        self.closed = True
        first: WriterError | None = None

        def attempt(what: Path, action: Any) -> None:
            nonlocal first
            try:
                action()
            except OSError as exc:
                log.error("closing %s: %s", what, exc)
                if first is None:
                    first = self._failed(what, exc)

        for out in self._logs:
            attempt(out.path, out.close)
        if self._zarr is not None:
            attempt(self._zarr.path, self._zarr.finish)
            attempt(self.images_path, lambda: mark_complete(
                self.images_path, self.stats.stacks_written))
        elif self._arrays:
            for array in self._arrays:
                attempt(array.path, array.finish)
            attempt(self.images_path, lambda: mark_positions_complete(
                self.images_path, self._per_position))
        if self._tiff is not None:
            attempt(self._tiff.path, self._tiff.finish)
        if self._network is not None:
            attempt(self._network.path, self._network.finish)
        if first is not None:
            raise first

    def abandon(self) -> None:
        """After a failed write: close every file, finalizing what can be (never raises)."""
        if self._tiff is not None and not self.closed:
            # The disk refused data: tifffile could not write the remaining IFDs either.
            self._tiff.abandon()
            self._tiff = None
        try:
            self.close()
        except WriterError as exc:
            log.warning("recording in %s not finalized: %s", self.run_dir, exc)

    def _close_quietly(self) -> None:
        for out in self._logs:
            with contextlib.suppress(OSError):
                out.close()
        if self._tiff is not None:
            self._tiff.abandon()
        self.closed = True
