"""``rt-eda inspect DIR``: what a saved run folder holds, described part by part.

:func:`describe` reads every part of a run folder on its own (the image store through
:mod:`rt_eda.core.imagefiles`, the same reader replay uses, so both find the same damage; the
tables through :mod:`rt_eda.core.runfolder`): a part that cannot be read is named as DAMAGED
with what is wrong, and the rest is still described. ``rt-eda inspect`` exits 0 when
something could be read, 2 when the folder is not a run folder or nothing in it is readable.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from rt_eda.core.errors import RtEdaError, WriterError
from rt_eda.core.imagefiles import ZarrReader, format_indices, open_reader
from rt_eda.core.runfolder import (
    ACTIONS_CSV,
    CONFIG_TOML,
    CONTROLS_CSV,
    DECISIONS_CSV,
    FRAME_COLUMNS,
    FRAME_COLUMNS_REQUIRED,
    FRAMES_CSV,
    IMAGES_TIFF,
    IMAGES_ZARR,
    INTERVALS_CSV,
    LOCATIONS_CSV,
    NETWORK_INDEX_CSV,
    NETWORK_ZARR,
    PLAN_JSON,
    RUN_FILES,
    SUMMARY_JSON,
    TRUTH_CSV,
    csv_rows,
    read_table,
    read_truth,
    store_complete,
    store_positions,
)

__all__ = ["describe"]


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
    stacks = frames["t_index"]
    if "position" in frames:  # several positions: t_index counts each position's stacks
        stacks = frames["position"] * 1e9 + frames["t_index"]
    t_listed = np.unique(stacks[np.isfinite(stacks)]).size
    lines = [f"frames       {len(keep)} row(s) in {FRAMES_CSV} ({t_listed} timepoints)"
             + (f", {bad} unreadable row(s) left out" if bad else "")]
    positions = np.unique(frames.get("position", np.zeros(0)))
    if positions.size > 1:
        per = [int(np.unique(frames["t_index"][frames["position"] == p]).size)
               for p in positions]
        lines.append(f"positions    {positions.size}: timepoints "
                     + ", ".join(f"{int(p)}: {n}" for p, n in zip(positions, per, strict=True)))
    if keep:
        te = frames["t_exposure"]
        lines.append(f"duration     {float(np.nanmax(te) - np.nanmin(te)):.3f} s from first to "
                     f"last exposure; interval in force {_span(frames.get('interval_s', []))} s")
        seq = frames["seq"]
        gaps = int(np.nanmax(seq) - np.nanmin(seq) + 1) - t_listed
        if gaps > 0:
            lines.append(f"             {gaps} sequence number(s) missing between stacks "
                         f"{int(np.nanmin(seq))} and {int(np.nanmax(seq))}")
    return lines, frames, bad


def _plan_names(folder: Path, n: int) -> list[str]:
    """The positions' names in the run's ``plan.json`` (useq-schema: ``stage_positions[i]
    .name``); ``""`` for each one it does not name (no plan file, unreadable, unnamed)."""
    try:
        plan = json.loads((folder / PLAN_JSON).read_text())
        given = [str(sp.get("name") or "") for sp in plan.get("stage_positions", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        given = []
    return (given + [""] * n)[:n] if len(given) <= n else [""] * n


def _positions_part(folder: Path, series: list[str],
                    frames: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """The images of a multi-position store: one line per position (its own damage)."""
    images = folder / IMAGES_ZARR
    complete = store_complete(images)
    state = "complete" if complete else "INCOMPLETE (the writer did not close it)"
    lines = [f"images       {IMAGES_ZARR} (OME-Zarr 0.5, bioformats2raw layout), {state}: "
             f"{len(series)} positions"]
    damage: list[str] = []
    position = frames.get("position", np.zeros(0))
    t_index = frames.get("t_index", np.zeros(0))
    names = _plan_names(folder, len(series))
    for p, key in enumerate(series):
        try:
            reader = ZarrReader(images / key)
        except _DAMAGE as exc:
            lines.append(f"             position {p}: DAMAGED: {_one_line(exc)}")
            damage.append(f"{IMAGES_ZARR}/{key}: {_one_line(exc)}")
            continue
        try:
            declared, c, z, y, x = reader.shape
            gone = {t for g in reader.gaps for t in g.timepoints}
            gaps = [f"{len(g.timepoints)} timepoint(s) {g.kind.value}: {g.why}"
                    for g in reader.gaps]
            dtype = np.dtype(reader.dtype)
        finally:
            reader.close()
        listed = {int(v) for v in t_index[(position == p) & np.isfinite(t_index)]}
        named = f"{p} {names[p]}" if names[p] and names[p] != key else f"{p}"
        lines.append(f"             position {named} ({key}): {declared - len(gone)} timepoints x "
                     f"(C, Z, Y, X) {(c, z, y, x)} {dtype}; {len(listed)} in {FRAMES_CSV}")
        for g in gaps:
            lines.append(f"               - {g}")
            damage.append(f"{IMAGES_ZARR}/{key}: {g}")
        no_row = sorted(set(range(declared)) - gone - listed)
        if frames and no_row:
            damage.append(f"{FRAMES_CSV}: no row for {len(no_row)} timepoint(s) of position "
                          f"{p} with image data")
    truth = read_truth(folder / TRUTH_CSV)
    if truth is not None:
        lines.append(f"truth        {sum(len(v) for v in truth.values())} ground-truth "
                     f"event(s) at {len(truth)} position(s) ({TRUTH_CSV})")
    return lines, damage


def _actuation_lines(folder: Path, frames: dict[str, np.ndarray]) -> list[str]:
    """What the actuators did (issue 16): the stacks read from a sensor region, the actions
    per kind (``actions.csv``), the event regions (``locations.csv``); nothing for a run
    without them."""
    lines = []
    h, w = frames.get("roi_height"), frames.get("roi_width")
    if h is not None and w is not None and h.size:
        area = h * w
        smaller = area < np.nanmax(area)
        if smaller.any():
            n = np.unique(frames["t_index"][smaller]).size
            lines.append(f"regions      {n} timepoint(s) read from a region of the sensor, "
                         f"{int(np.nanmin(w))}x{int(np.nanmin(h))} px at the smallest "
                         f"({FRAMES_CSV}: roi_*)")
    actions = read_table(folder / ACTIONS_CSV)  # damage: the part's, reported as such
    located = read_table(folder / LOCATIONS_CSV)
    kinds = actions.get("kind")
    if kinds is not None:
        errors = actions.get("error", np.zeros(0, str))
        refused = int(np.count_nonzero(errors != "")) if errors.dtype.kind == "U" else 0
        counts = ", ".join(f"{k} {int(np.count_nonzero(kinds == k))}"
                           for k in dict.fromkeys(kinds.tolist()))
        lines.append(f"actions      {kinds.size} in {ACTIONS_CSV}"
                     + (f": {counts}" if counts else "")
                     + (f"; {refused} refused by their device" if refused else ""))
    seqs = located.get("seq")
    if seqs is not None:
        lines.append(f"locations    {seqs.size} event region(s) of {np.unique(seqs).size} "
                     f"stack(s) in {LOCATIONS_CSV}")
    return lines


def _images_part(folder: Path, frames: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    zarr_dir, tiff = folder / IMAGES_ZARR, folder / IMAGES_TIFF
    if not zarr_dir.exists() and not tiff.exists():
        raise WriterError(f"no image store ({IMAGES_ZARR} or {IMAGES_TIFF} missing)")
    try:
        series = store_positions(zarr_dir) if zarr_dir.exists() else None
    except (OSError, ValueError):  # unreadable metadata: the reader below names it
        series = None
    if series:
        return _positions_part(folder, series, frames)
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
    positions = np.unique(d["position"]) if n_dec and "position" in d else np.zeros(0)
    if positions.size > 1:
        line += " (" + ", ".join(f"position {int(p)}: {int((d['position'] == p).sum())}"
                                 for p in positions) + ")"
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
    d.part("actions", [ACTIONS_CSV, LOCATIONS_CSV], lambda: _actuation_lines(folder, frames))
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
