"""What every image-file reader shares: the axes, the :class:`Reader` protocol, gaps.

A reader (:mod:`._tiff`, :mod:`._zarr`) turns one recording into ``(t, c, z, y, x)`` stacks;
what it cannot read is a :class:`Gap` (timepoints and why), never an exception at read time
that nobody expected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

import numpy as np

from rt_eda.core.errors import ConfigError

__all__ = [
    "AXES",
    "READ_ERRORS",
    "TIFF_SUFFIXES",
    "TIME_UNITS",
    "Gap",
    "GapKind",
    "Reader",
    "as_czyx",
    "axis_layout",
    "check_dtype",
    "format_indices",
]

AXES: Final = "tczyx"
TIFF_SUFFIXES: Final = (".tif", ".tiff", ".btf", ".tf8")
TIME_UNITS: Final = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3,
    "us": 1e-6, "µs": 1e-6, "microsecond": 1e-6, "ns": 1e-9, "nanosecond": 1e-9,
    "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
}
READ_ERRORS: Final = (OSError, ValueError, RuntimeError, KeyError, IndexError)
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
    """One opened recording (see :mod:`rt_eda.core.imagefiles`)."""

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


def axis_layout(
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


def check_dtype(dtype: np.dtype[Any], where: str) -> np.dtype[Any]:
    """``dtype`` in native byte order; ConfigError naming ``where`` unless integer or float."""
    if dtype.kind not in "iuf":
        raise ConfigError(
            f"replay: {where} has pixel type {dtype} ({dtype.str}); expected an integer or "
            "float type"
        )
    return dtype.newbyteorder("=")


def as_czyx(block: np.ndarray, axes: str) -> np.ndarray:
    """A timepoint's block with axes ``axes`` (some of c, z, y, x) as (c, z, y, x)."""
    for a in "zc":
        if a not in axes:
            block, axes = block[np.newaxis], a + axes
    return np.transpose(block, [axes.index(a) for a in "czyx"])

