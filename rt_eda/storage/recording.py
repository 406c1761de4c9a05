"""A run folder on disk: its layout, how it is written while a run goes, how it is read back.

Layout of ``DIR`` (``rt-eda run --save DIR``)::

    DIR/
      config.toml            the effective configuration (``Config.to_toml()``)
      images.ome.zarr/       format "zarr": OME-Zarr group (NGFF 0.5, zarr v3), axes t,c,z,y,x
        zarr.json            group metadata: "ome" multiscales + "rt_eda" {complete, timepoints}
        0/zarr.json          array "0", shape (T, C, Z, Y, X), native dtype, no compression
        0/c.<t>.0.0.0.0      one chunk per stack (per frame, c.<t>.<c>.<z>.0.0, for stacks
                             over 32 MiB); chunk key separator "."
      images.ome.tif         format "tiff" instead: one BigTIFF, pages t-major then c, z
      frames.csv             seq,t_index,c,z,t_exposure,interval_s   (one row per frame)
      decisions.csv          one row per Result: seq,worker,decision,t_exposure,t_published,
                             t_claimed,t_done,n_timepoints,t_prepare_s,t_infer_s,t_post_s,
                             t_decided,command_interval
      intervals.csv          interval_s,reason,after_seq,t_decided,trigger_decision,
                             trigger_t_exposure  (after_seq = the stack that triggered it)
      controls.csv           key,value,t
      network_images.zarr/   zarr v3 array (N, Y', X') float32, one chunk per image, only the
                             analysed stacks (never padded with blanks)
      network_index.csv      seq,row,t_published   (row = index into network_images.zarr)
      summary.json           the engine's run summary (:func:`write_summary`)

Every time is ``time.monotonic()`` seconds (the clock every process shares). ``t_index`` is
the position of a stack in the image store, ``seq`` its sequence number in the ring (equal
unless stacks were lost before the writer saw them). Frame times come from the ring in
channel-major acquisition order (every source acquires c0z0, c0z1, ..., c1z0, ...).

How the image stores grow (the length of a run is unknown):

- **zarr**: the array's chunk files are written directly, one ``os.write`` of the stack's
  shared-memory bytes per chunk (the zarr v3 ``bytes`` codec: the chunk file *is* the raw
  little-endian C-order array). zarr-python writes the metadata documents (at creation) and
  reads the store back. The shape in ``0/zarr.json`` grows ahead of the data in steps
  (doubling, at least 64 timepoints; each rewrite is atomic: temporary file + rename) and is
  set to the exact number of stacks written at :meth:`Recording.close`. Measured on the
  development machine (1 MiB stacks, same run, page cache): zarr-python ``a[t] = stack``
  0.3-0.45x the bandwidth of ``numpy.tofile``, tensorstore 0.2x, ome-writers 0.15x, direct
  chunk files 0.7-0.85x: only the direct chunk files keep up with a 200 stacks/s camera on
  two cores.
- **tiff**: ``tifffile.TiffWriter`` in contiguous mode: every stack's bytes are appended to
  one uncompressed BigTIFF series, the IFDs of the pages after the first and the OME-XML
  (with every plane's ``DeltaT``) are written at :meth:`Recording.close`.

What survives a crash (the writer killed, a full disk): every chunk file or byte range that a
``frames.csv`` row describes (a row is written after its stack's data, and the CSV files are
flushed to the kernel after each batch: a process crash loses nothing already written; power
loss is the operating system's page cache policy, nothing is fsynced). A chunk that could not
be written whole is removed. A zarr store whose writer died may report more timepoints than
were written (the trailing ones read as zeros) and a TIFF whose writer died shows tifffile one
page; :func:`open_run` and :func:`describe` take the count of timepoints from ``frames.csv``
and read both kinds (the TIFF data are contiguous, so they are memory-mapped from the offset
of the first page).
"""

from __future__ import annotations

import contextlib
import csv
import errno as errno_mod
import json
import logging
import math
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from rt_eda.core.errors import ConfigError, RtEdaError, WriterError
from rt_eda.core.files import write_json_atomic
from rt_eda.core.runfolder import (
    CONFIG_TOML,
    CONTROL_COLUMNS,
    CONTROLS_CSV,
    DECISION_COLUMNS,
    DECISIONS_CSV,
    FRAME_COLUMNS,
    FRAME_COLUMNS_REQUIRED,
    FRAMES_CSV,
    IMAGES_TIFF,
    IMAGES_ZARR,
    INTERVAL_COLUMNS,
    INTERVALS_CSV,
    NETWORK_INDEX_COLUMNS,
    NETWORK_INDEX_CSV,
    NETWORK_ZARR,
    RUN_FILES,
    SUMMARY_JSON,
    SavedRun,
    csv_rows,
    open_run,
    read_table,
    store_complete,
)

__all__ = [
    "CONFIG_TOML",
    "CONTROLS_CSV",
    "CONTROL_COLUMNS",
    "DECISIONS_CSV",
    "DECISION_COLUMNS",
    "FRAMES_CSV",
    "FRAME_COLUMNS",
    "IMAGES_TIFF",
    "IMAGES_ZARR",
    "INTERVALS_CSV",
    "INTERVAL_COLUMNS",
    "NETWORK_INDEX_COLUMNS",
    "NETWORK_INDEX_CSV",
    "NETWORK_ZARR",
    "SUMMARY_JSON",
    "Recording",
    "RecordingStatistics",
    "SavedRun",
    "describe",
    "open_run",
    "prepare_save_dir",
    "read_table",
    "write_summary",
]

log = logging.getLogger(__name__)

STACK_CHUNK_MAX_BYTES: Final = 32 * 2**20
"""Stacks up to this size are one chunk; bigger stacks get one chunk per frame."""

_GROW_MIN: Final = 64
_AXES: Final = (
    {"name": "t", "type": "time"},
    {"name": "c", "type": "channel"},
    {"name": "z", "type": "space"},
    {"name": "y", "type": "space"},
    {"name": "x", "type": "space"},
)
_TIFF_PLACEHOLDER: Final = "rt-eda recording in progress (OME-XML is written at close)"


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
                 "network_images_written", "stacks_written")

    def __init__(self) -> None:
        self.frames_written = 0
        self.stacks_written = 0
        self.network_images_written = 0
        self.bytes_written = 0
        self.decisions = 0
        self.intervals = 0
        self.controls = 0

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


class _ChunkedArray:
    """A zarr v3 array written chunk file by chunk file, growing along axis 0.

    zarr-python creates the metadata document; this class then writes the chunk files with
    ``os.write`` straight from the caller's buffer (uncompressed ``bytes`` codec) and rewrites
    the shape atomically as the array grows. Only the first axis is chunked by 1; ``inner``
    gives the chunk shape of the remaining axes.
    """

    def __init__(self, path: Path, tail: tuple[int, ...], inner: tuple[int, ...],
                 dtype: np.dtype[Any], dimension_names: Sequence[str] | None,
                 attributes: dict[str, Any] | None = None) -> None:
        import zarr

        if sys.byteorder != "little" and dtype.itemsize > 1:
            raise WriterError(f"{path}: big-endian hosts are not supported by the chunk writer")
        self.path = path
        self.tail = tail
        self.inner = inner
        self.dtype = dtype
        self.length = 0
        self._capacity = _GROW_MIN
        zarr.create_array(
            store=str(path), shape=(self._capacity, *tail), chunks=(1, *inner), dtype=dtype,
            compressors=None, filters=None, fill_value=0,
            chunk_key_encoding={"name": "default", "separator": "."},
            dimension_names=list(dimension_names) if dimension_names else None,
            attributes=attributes or {}, zarr_format=3,
        )
        self._meta_path = path / "zarr.json"
        self._meta: dict[str, Any] = json.loads(self._meta_path.read_bytes())
        grid = [t // i for t, i in zip(tail, inner, strict=True)]
        if any(t % i for t, i in zip(tail, inner, strict=True)):
            raise ValueError(f"chunk {inner} does not divide {tail}")
        self._blocks = [tuple(ix) for ix in np.ndindex(*grid)]
        self._flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

    def append(self, data: np.ndarray) -> int:
        """Write ``data`` (shape ``tail``) as the next entry along axis 0; bytes written.

        Raises OSError (after removing a chunk written in part); entries written before stay.
        """
        index = self.length
        if index >= self._capacity:
            self._set_shape(max(self._capacity * 2, index + _GROW_MIN))
        written = 0
        whole = len(self._blocks) == 1
        for block in self._blocks:
            part = data if whole else data[tuple(
                slice(b * i, (b + 1) * i) for b, i in zip(block, self.inner, strict=True))]
            key = ".".join(("c", str(index), *(str(b) for b in block)))
            written += self._write_chunk(self.path / key, part)
        self.length += 1
        return written

    def _write_chunk(self, path: Path, part: np.ndarray) -> int:
        view = np.ascontiguousarray(part).data.cast("B")
        fd = os.open(path, self._flags, 0o644)
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        os.close(fd)
        return done

    def _set_shape(self, n: int) -> None:
        self._meta["shape"] = [n, *self.tail]
        write_json_atomic(self._meta_path, self._meta, make_parents=False)
        self._capacity = n

    def finish(self) -> None:
        """Set the shape to the entries written (atomic; raises OSError if it cannot)."""
        if self._capacity != self.length:
            self._set_shape(self.length)


class _TiffStack:
    """Stacks appended to one contiguous, uncompressed BigTIFF series (OME-XML at close)."""

    def __init__(self, path: Path, spec_shape: tuple[int, int, int, int],
                 dtype: np.dtype[Any]) -> None:
        import tifffile

        self.path = path
        self.shape = spec_shape
        self.dtype = dtype
        self.length = 0
        self.frame_times: list[np.ndarray] = []
        with path.open("xb"):
            pass  # exclusive create: never overwrite
        self._tw = tifffile.TiffWriter(path, bigtiff=True, ome=False)
        self._closed = False

    def append(self, data: np.ndarray, frame_times: np.ndarray) -> int:
        self._tw.write(data, contiguous=True, photometric="minisblack", metadata=None,
                       description=_TIFF_PLACEHOLDER)
        self._tw.filehandle.flush()  # no tail left in a Python buffer: the rows follow
        self.frame_times.append(np.array(frame_times, dtype=np.float64))
        self.length += 1
        return int(data.nbytes)

    def finish(self) -> None:
        """Write the remaining IFDs and the OME-XML (with every plane's DeltaT), close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.length:
                self._tw.overwrite_description(self._omexml())
        finally:
            self._tw.close()

    def abandon(self) -> None:
        """Close the file handle without writing anything more (after a failed write)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._tw.filehandle.close()

    def _omexml(self) -> str:
        import tifffile

        c, z, y, x = self.shape
        times = np.stack(self.frame_times) if self.frame_times else np.zeros((0, c * z))
        t0 = float(times.min()) if times.size else 0.0
        ome = tifffile.OmeXml()
        ome.addimage(
            dtype=self.dtype, shape=(self.length, c, z, y, x),
            storedshape=(self.length * c * z, 1, 1, y, x, 1), axes="TCZYX",
            Plane={"DeltaT": [float(v) for v in (times - t0).reshape(-1)],
                   "DeltaTUnit": ["s"] * times.size},
        )
        return str(ome.tostring(declaration=True))


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

    One thread uses a recording. Every ``write_*`` call either persists its data or raises
    :class:`WriterError` naming the file and how many frames are saved; what was written
    before stays readable. Call :meth:`flush` regularly (rows reach the kernel) and
    :meth:`close` at the end (stores finalized); both are safe to call after a failure.
    """

    def __init__(self, run_dir: str | os.PathLike[str], stack_shape: tuple[int, int, int, int],
                 dtype: np.dtype[Any] | str, *, fmt: str = "zarr",
                 config_toml: str | None = None,
                 network_shape: tuple[int, int] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.stack_shape = tuple(int(n) for n in stack_shape)
        self.dtype = np.dtype(dtype)
        self.format = fmt
        self.stats = RecordingStatistics()
        self.closed = False
        self._logs: list[_CsvLog] = []
        self._zarr: _ChunkedArray | None = None
        self._tiff: _TiffStack | None = None
        self._network: _ChunkedArray | None = None
        self._network_index: _CsvLog | None = None
        self._decisions_by_seq: dict[int, tuple[object, object]] = {}
        c, z, y, x = self.stack_shape
        self._frame_cz = [divmod(i, z) for i in range(c * z)]
        if fmt not in ("zarr", "tiff"):
            raise ConfigError(f"writer.format: {fmt!r} is not one of 'zarr', 'tiff'")
        where = self.run_dir
        try:
            if not self.run_dir.is_dir():
                raise FileNotFoundError(errno_mod.ENOENT, "no such folder", str(self.run_dir))
            if config_toml is not None:
                where = self.run_dir / CONFIG_TOML
                with where.open("x") as f:
                    f.write(config_toml)
            if fmt == "zarr":
                where = self.run_dir / IMAGES_ZARR
                self._zarr = self._create_zarr(where)
            else:
                where = self.run_dir / IMAGES_TIFF
                self._tiff = _TiffStack(where, (c, z, y, x), self.dtype)
            where = self.run_dir / FRAMES_CSV
            self._frames = self._open_log(FRAMES_CSV, FRAME_COLUMNS)
            self._decisions = self._open_log(DECISIONS_CSV, DECISION_COLUMNS)
            self._intervals = self._open_log(INTERVALS_CSV, INTERVAL_COLUMNS)
            self._controls = self._open_log(CONTROLS_CSV, CONTROL_COLUMNS)
            if network_shape is not None:
                where = self.run_dir / NETWORK_ZARR
                ny, nx = (int(n) for n in network_shape)
                self._network = _ChunkedArray(where, (ny, nx), (ny, nx), np.dtype(np.float32),
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

    def _create_zarr(self, path: Path) -> _ChunkedArray:
        import zarr

        c, z, y, x = self.stack_shape
        nbytes = c * z * y * x * self.dtype.itemsize
        inner = (c, z, y, x) if nbytes <= STACK_CHUNK_MAX_BYTES else (1, 1, y, x)
        multiscales = [{
            "name": "images",
            "axes": [dict(a) for a in _AXES],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 1.0, 1.0, 1.0, 1.0]}]}],
        }]
        zarr.create_group(store=str(path), zarr_format=3, attributes={
            "ome": {"version": "0.5", "multiscales": multiscales},
            "rt_eda": {"complete": False, "timepoints": None, "frames": FRAMES_CSV},
        })
        return _ChunkedArray(path / "0", (c, z, y, x), inner, self.dtype, "tczyx")

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
                    interval_s: float) -> None:
        """Append one stack (C, Z, Y, X) and its frame rows.

        The pixels are written straight from ``pixels`` (a shared-memory view is fine: no
        copy when it is C-contiguous); the rows follow the data, so a row always describes a
        persisted frame. Raises :class:`WriterError` (nothing of this stack is listed).
        """
        t_index = self.stats.stacks_written
        try:
            if self._zarr is not None:
                nbytes = self._zarr.append(pixels)
            else:
                assert self._tiff is not None
                nbytes = self._tiff.append(pixels, frame_times)
        except OSError as exc:
            raise self._failed(self.images_path, exc) from exc
        times = frame_times.tolist()
        interval = repr(float(interval_s))
        text = "".join(f"{seq},{t_index},{c},{z},{t!r},{interval}\n"
                       for (c, z), t in zip(self._frame_cz, times, strict=True))
        try:
            self._frames.write_text(text, len(times))
        except OSError as exc:
            raise self._failed(self._frames.path, exc) from exc
        self.stats.stacks_written += 1
        self.stats.frames_written += len(times)
        self.stats.bytes_written += nbytes

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

    def log(self, kind: str, row: Mapping[str, Any]) -> None:
        """Append a ``decision``, ``interval`` or ``control`` row (what the interpreter sends).

        Interval rows get the decision and exposure time of the stack that triggered them
        (``after_seq``) when that decision was logged. Unknown kinds raise WriterError.
        """
        try:
            if kind == "decision":
                self._decisions.append(row)
                self._decisions_by_seq[int(row.get("seq", -1))] = (
                    row.get("decision"), row.get("t_exposure"))
                if len(self._decisions_by_seq) > 4096:
                    self._decisions_by_seq.pop(next(iter(self._decisions_by_seq)))
                self.stats.decisions += 1
            elif kind == "interval":
                trigger = self._decisions_by_seq.get(int(row.get("after_seq", -1)), (None, None))
                self._intervals.append({**row, "trigger_decision": trigger[0],
                                        "trigger_t_exposure": trigger[1]})
                self.stats.intervals += 1
            elif kind == "control":
                self._controls.append(row)
                self.stats.controls += 1
            else:
                raise WriterError(f"unknown log kind {kind!r} (expected decision, interval, "
                                  "control)")
        except OSError as exc:
            raise self._failed(self.run_dir / f"{kind}s.csv", exc) from exc

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
            attempt(self.images_path, self._mark_complete)
        if self._tiff is not None:
            attempt(self._tiff.path, self._tiff.finish)
        if self._network is not None:
            attempt(self._network.path, self._network.finish)
        if first is not None:
            raise first

    def _mark_complete(self) -> None:
        meta_path = self.images_path / "zarr.json"
        meta = json.loads(meta_path.read_bytes())
        meta.setdefault("attributes", {})["rt_eda"] = {
            "complete": True, "timepoints": self.stats.stacks_written, "frames": FRAMES_CSV}
        write_json_atomic(meta_path, meta, make_parents=False)

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


def _span(values: Iterable[float]) -> str:
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return "-"
    lo, hi = float(arr.min()), float(arr.max())
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


_DAMAGE: Final = (OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError,
                  AttributeError, csv.Error, RtEdaError)
"""What reading a damaged part raises (JSON, TOML, zarr and tifffile errors are ValueErrors)."""


class _Description:
    """The text of :func:`describe`, built part by part; a part that cannot be read is
    named instead of described."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lines = [f"run folder   {folder}"]
        self.damaged: list[str] = []
        self.readable = False

    def part(self, title: str, files: Sequence[str], build: Any) -> None:
        """Describe one part with ``build() -> lines``; its damage if it raises."""
        try:
            built = build()
        except _DAMAGE as exc:
            self.failed(title, files, exc)
            return
        lines, damage = built if isinstance(built, tuple) else (built, [])
        if any((self.folder / f).exists() for f in files):
            self.readable = True
        self.lines += lines
        self.damaged += damage

    def failed(self, title: str, files: Sequence[str], exc: BaseException) -> None:
        what = _one_line(exc).removeprefix("replay: ")
        present = [f for f in files if (self.folder / f).exists()]
        self.lines.append(f"{title:<12} DAMAGED: {what}")
        self.damaged.append(f"{' and '.join(present or files[:1])}: {what}")

    def text(self) -> str:
        if self.damaged:
            self.lines.append(f"damaged      {len(self.damaged)} part(s) could not be read "
                              "in full:")
            self.lines += [f"             - {d}" for d in self.damaged]
        return "\n".join(self.lines)


def _numbers(table: dict[str, np.ndarray], name: str, where: str) -> np.ndarray:
    """Column ``name`` as float64; a column of text is damage (named)."""
    column = table.get(name)
    if column is None:
        raise WriterError(f"{where} has no column {name!r}")
    if column.dtype.kind not in "iuf":
        bad = next((v for v in column if not _is_number_text(str(v))), "?")
        raise WriterError(f"{where}: column {name!r} holds {str(bad)[:40]!r}, not a number")
    return column.astype(np.float64)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == ""
    return True


def _frames_part(folder: Path) -> tuple[list[str], dict[str, np.ndarray], int]:
    """The ``frames.csv`` lines, its columns, and the rows it had to leave out."""
    p = folder / FRAMES_CSV
    if not p.exists():
        return [f"frames       none ({FRAMES_CSV} missing)"], {}, 0
    header, rows, torn = csv_rows(p)
    missing = [c for c in FRAME_COLUMNS_REQUIRED if c not in header]
    if missing:
        raise WriterError(f"{FRAMES_CSV} has no columns {missing} (header {header[:6]})")
    keep: list[list[float]] = []
    bad = torn
    idx = [header.index(c) for c in FRAME_COLUMNS if c in header]
    for r in rows:
        try:
            keep.append([float(r[i]) if r[i] != "" else math.nan for i in idx])
        except ValueError:
            bad += 1
    names = [c for c in FRAME_COLUMNS if c in header]
    arr = np.asarray(keep, dtype=np.float64).reshape(-1, len(names))
    frames: dict[str, np.ndarray] = {n: arr[:, i] for i, n in enumerate(names)}
    t_listed = np.unique(frames["t_index"][np.isfinite(frames["t_index"])]).size
    lines = [f"frames       {len(keep)} row(s) in {FRAMES_CSV} ({t_listed} timepoints)"
             + (f", {bad} unreadable row(s) left out" if bad else "")]
    if keep:
        te = frames["t_exposure"]
        lines.append(f"duration     {float(np.nanmax(te) - np.nanmin(te)):.3f} s from first to "
                     f"last exposure; interval in force {_span(frames.get('interval_s', []))} s")
        seq, t_index = frames["seq"], frames["t_index"]
        gaps = int(np.nanmax(seq) - np.nanmin(seq) + 1) - np.unique(t_index).size
        if gaps > 0:
            lines.append(f"             {gaps} sequence number(s) missing between stacks "
                         f"{int(np.nanmin(seq))} and {int(np.nanmax(seq))}")
    return lines, frames, bad


def _images_part(folder: Path, frames: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    from rt_eda.core.imagefiles import format_indices, open_reader

    zarr_dir, tiff = folder / IMAGES_ZARR, folder / IMAGES_TIFF
    if not zarr_dir.exists() and not tiff.exists():
        raise WriterError(f"no image store ({IMAGES_ZARR} or {IMAGES_TIFF} missing)")
    reader, _ = open_reader(folder)
    try:
        declared, c, z, y, x = reader.shape
        dtype = np.dtype(reader.dtype)
        gone = {t for g in reader.gaps for t in g.timepoints}
        unreadable = len(gone)
        gaps = [f"{len(g.timepoints)} timepoint(s) {g.kind.value}: {g.why} (timepoints "
                f"{format_indices(g.timepoints)})" for g in reader.gaps]
        notes = list(reader.notes)
    finally:
        reader.close()
    store = f"{IMAGES_ZARR} (OME-Zarr 0.5)" if zarr_dir.exists() else f"{IMAGES_TIFF} (OME-TIFF)"
    complete = store_complete(zarr_dir if zarr_dir.exists() else tiff)
    t = declared - unreadable
    state = "complete" if complete else "INCOMPLETE (the writer did not close it)"
    size = t * c * z * y * x * dtype.itemsize
    lines = [f"images       {store}, {state}",
             f"             {t} timepoints x (C, Z, Y, X) {(c, z, y, x)} {dtype}, "
             f"{t * c * z} frames, {size / 2**20:.1f} MiB"]
    if unreadable:
        lines.append(f"             the store declares {declared} timepoints; {unreadable} "
                     "cannot be read:")
    lines += [f"             - {g}" for g in gaps] + [f"             note: {n}" for n in notes]
    where = IMAGES_ZARR if zarr_dir.exists() else IMAGES_TIFF
    damage = [f"{where}: {g}" for g in gaps]
    t_index = frames.get("t_index", np.zeros(0))
    listed = {int(v) for v in t_index[np.isfinite(t_index)]}
    no_row = sorted(set(range(declared)) - gone - listed)
    if frames and no_row:
        lines.append(f"             {len(no_row)} of them have no row in {FRAMES_CSV} "
                     f"(timepoints {format_indices(no_row)}): no recorded time")
        damage.append(f"{FRAMES_CSV}: no row for {len(no_row)} timepoint(s) with image data "
                      "(cut short, or rows unreadable)")
    return lines, damage


def _decisions_part(folder: Path) -> list[str]:
    d = read_table(folder / DECISIONS_CSV)
    n_dec = len(d.get("seq", ()))
    line = f"decisions    {n_dec}"
    if n_dec:
        where = DECISIONS_CSV
        workers = np.unique(d["worker"])
        lat = (_numbers(d, "t_decided", where) - _numbers(d, "t_published", where)) * 1e3
        line += (f" from {len(workers)} worker(s); parameter "
                 f"{_span(_numbers(d, 'decision', where))}; "
                 f"publish->decision p50 {float(np.nanmedian(lat)):.2f} ms, "
                 f"max {float(np.nanmax(lat)):.2f} ms")
    return [line]


def _intervals_part(folder: Path) -> list[str]:
    iv = read_table(folder / INTERVALS_CSV)
    n_iv = len(iv.get("interval_s", ()))
    values = _numbers(iv, "interval_s", INTERVALS_CSV) if n_iv else np.zeros(0)
    lines = [f"intervals    {n_iv} interval command(s)"
             + (f"; values {', '.join(f'{v:.4g}' for v in np.unique(values))} s"
                if n_iv else "")]
    for i in range(min(n_iv, 5)):
        lines.append(f"             {float(values[i]):.4g} s after stack "
                     f"{iv['after_seq'][i]} ({iv['reason'][i]})")
    if n_iv > 5:
        lines.append(f"             ... {n_iv - 5} more in {INTERVALS_CSV}")
    return lines


def _network_part(folder: Path) -> list[str]:
    if not (folder / NETWORK_ZARR).is_dir():
        return ["network      none saved"]
    import zarr

    net = zarr.open_array(store=str(folder / NETWORK_ZARR), mode="r")
    ni = read_table(folder / NETWORK_INDEX_CSV)
    n_net = len(ni.get("seq", ()))
    return [f"network      {n_net} image(s) {tuple(int(n) for n in net.shape[1:])} "
            f"{net.dtype}" + (f", stacks {_span(_numbers(ni, 'seq', NETWORK_INDEX_CSV))}"
                              if n_net else "")]


def _summary_part(folder: Path) -> list[str]:
    p = folder / SUMMARY_JSON
    if not p.exists():
        return [f"summary      none ({SUMMARY_JSON} missing: the run did not end cleanly)"]
    s = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(s, dict):
        raise WriterError(f"{SUMMARY_JSON} holds a JSON {type(s).__name__}, not an object")
    keys = ("frames_acquired", "frames_written", "frames_lost", "stacks_published",
            "stacks_analysed", "stacks_skipped", "interval_switches", "acquired_fps")
    shown = ", ".join(f"{k}={s[k]:.4g}" if isinstance(s[k], float) else f"{k}={s[k]}"
                      for k in keys if k in s)
    lines = [f"summary      {shown}"]
    p2d = s.get("latency_ms", {}).get("publish_to_decision")
    if isinstance(p2d, dict):
        lines.append(f"             publish->decision ms p50 {float(p2d.get('p50', 0)):.2f}, "
                     f"p99 {float(p2d.get('p99', 0)):.2f}, max {float(p2d.get('max', 0)):.2f}")
    if s.get("stop_reason"):
        lines.append(f"             stopped: {s['stop_reason']}")
    errors = s.get("errors") or []
    lines.append(f"             errors: {'; '.join(map(str, errors)) if errors else 'none'}")
    return lines


def _config_part(folder: Path) -> list[str]:
    p = folder / CONFIG_TOML
    if not p.exists():
        return [f"config       none ({CONFIG_TOML} missing)"]
    cfg = tomllib.loads(p.read_text(encoding="utf-8"))
    camera, analysis = cfg.get("camera", {}), cfg.get("analysis", {})
    return [f"config       source {camera.get('source', '?')}, worker "
            f"{analysis.get('worker', '?')}, interpreter "
            f"{cfg.get('interpreter', {}).get('kind', '?')}"]


def describe(path: str | os.PathLike[str]) -> str:
    """What a saved run holds, as text for ``rt-eda inspect DIR``.

    Every part (images, frames, decisions, intervals, controls, network images, summary,
    configuration) is described on its own: a part that cannot be read (a corrupt
    ``summary.json`` or ``zarr.json``, a binary ``frames.csv``, a missing image store, chunk
    files missing or of the wrong size) is named as DAMAGED with what is wrong, and the text
    ends with the list of damaged parts. ``rt-eda inspect`` exits 0 when this returns.

    Raises
    ------
    WriterError
        ``path`` is not a run folder (not a folder, or none of :data:`RUN_FILES` in it), or
        nothing in it could be read (every damaged part named, on one line): ``rt-eda
        inspect`` exits 2.
    """
    folder = Path(path)
    if not folder.is_dir():
        why = "not a folder" if folder.exists() else "it does not exist"
        raise WriterError(f"{folder} is not an rt-eda run folder: {why}")
    if not any((folder / name).exists() for name in RUN_FILES):
        raise WriterError(f"{folder} is not an rt-eda run folder: none of "
                          f"{', '.join(RUN_FILES)} in it")
    d = _Description(folder)
    frames: dict[str, np.ndarray] = {}
    try:  # first: the images part counts timepoints from it
        frame_lines, frames, bad = _frames_part(folder)
    except _DAMAGE as exc:
        frames_failed: BaseException | None = exc
    else:
        frames_failed = None
    d.part("images", [IMAGES_ZARR, IMAGES_TIFF], lambda: _images_part(folder, frames))
    if frames_failed is not None:
        d.failed("frames", [FRAMES_CSV], frames_failed)
    else:
        d.part("frames", [FRAMES_CSV], lambda: frame_lines)
        if bad:
            d.damaged.append(f"{FRAMES_CSV}: {bad} unreadable row(s) left out")
    d.part("decisions", [DECISIONS_CSV], lambda: _decisions_part(folder))
    d.part("intervals", [INTERVALS_CSV], lambda: _intervals_part(folder))
    d.part("controls", [CONTROLS_CSV],
           lambda: [f"controls     {len(read_table(folder / CONTROLS_CSV).get('key', ()))}"])
    d.part("network", [NETWORK_ZARR, NETWORK_INDEX_CSV], lambda: _network_part(folder))
    d.part("summary", [SUMMARY_JSON], lambda: _summary_part(folder))
    d.part("config", [CONFIG_TOML], lambda: _config_part(folder))
    if not d.readable:
        raise WriterError(f"{folder}: nothing in this run folder could be read: "
                          + "; ".join(d.damaged))
    return d.text()
