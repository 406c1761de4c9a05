"""The zarr reader: an OME-Zarr group (NGFF 0.4/0.5, first dataset) or a bare zarr array.

Its chunk files are checked when it opens (``stat`` only, on a local folder): see
:mod:`rt_eda.core.imagefiles` for what a missing or wrong-sized chunk means.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.core.errors import ConfigError, SourceError

from ._common import (
    AXES,
    READ_ERRORS,
    TIME_UNITS,
    Gap,
    GapKind,
    as_czyx,
    axis_layout,
    check_dtype,
    format_indices,
)

__all__ = ["ZarrReader"]

log = logging.getLogger(__name__)


class ZarrReader:
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
        self.shape = axis_layout(axes, shape, where)
        self.dtype = check_dtype(np.dtype(str(array.dtype)), where)
        self._array: zarr.Array[Any] | None = array
        self._axes = axes.lower()
        self.description = f"{where} (zarr, axes {axes!r}, shape {shape})"
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        self.chunks_absent = 0
        self._check_chunks(array, where)

    def _check_chunks(self, array: Any, where: str) -> None:
        """Missing and wrong-sized chunk files (see :mod:`rt_eda.core.imagefiles`)."""
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
        except READ_ERRORS as exc:
            raise SourceError(
                f"reading timepoint {t} of {self.description} failed: {exc}"
            ) from exc
        np.copyto(out, as_czyx(block, self._axes.replace("t", "")))

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
    if unit not in TIME_UNITS:
        log.warning("replay: unknown time unit %r of the t axis; taking seconds", unit)
    return scale * TIME_UNITS.get(unit, 1.0)

