"""Reading recorded image files: rt-eda run folders, OME-Zarr and (OME-)TIFF, damage included.

One reader for every recording, used by replay (:mod:`rt_eda.sources.replay`: a recording as a
source) and by ``rt-eda inspect`` (:mod:`rt_eda.storage.inspect`: what a run folder holds).
The rest of a run folder (its layout, its CSV tables, ``frames.csv`` timing) is
:mod:`rt_eda.core.runfolder`.

- :mod:`._common` -- :class:`Reader` (the protocol), :class:`Gap`, the axes;
- :mod:`._zarr` -- :class:`~._zarr.ZarrReader`;
- :mod:`._tiff` -- :class:`~._tiff.TiffReader`, :class:`~._tiff.RunTiffReader` (rt-eda's own
  contiguous layout, for a TIFF that lost its pages).

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

Errors name the file and start with ``replay:`` (the source that reports most of them).
"""

from __future__ import annotations

from pathlib import Path

from rt_eda.core.errors import ConfigError
from rt_eda.core.runfolder import FRAMES_CSV, RUN_IMAGES, frames_layout

from ._common import AXES, TIFF_SUFFIXES, Gap, GapKind, Reader, format_indices
from ._tiff import ContiguousTiff, RunTiffReader, TiffReader, contiguous_stacks
from ._zarr import ZarrReader

__all__ = [
    "AXES",
    "ContiguousTiff",
    "Gap",
    "GapKind",
    "Reader",
    "RunTiffReader",
    "TiffReader",
    "ZarrReader",
    "contiguous_stacks",
    "format_indices",
    "is_zarr",
    "open_reader",
]


def is_zarr(path: Path) -> bool:
    """A zarr store (group or array), v2 or v3."""
    return any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def open_reader(path: Path) -> tuple[Reader, Path | None]:
    """The reader for ``path`` (a run folder, a zarr store or a TIFF) and the
    ``frames.csv`` that goes with it (if any).

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
        reader = ZarrReader(images)
    elif images.suffix.lower() in TIFF_SUFFIXES:
        try:
            reader = TiffReader(images)
        except ConfigError as exc:
            hint = frames_layout(path) if run_folder else None
            if hint is None:
                raise
            reader = RunTiffReader(images, *hint, why=f"{str(exc).removeprefix('replay: ')}")
    else:
        raise ConfigError(
            f"replay: {images} is neither a TIFF (.tif, .tiff) nor a zarr store (a folder)"
        )
    return reader, csv_path if csv_path.is_file() else None
