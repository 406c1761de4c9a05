"""What part of an image to draw, and at what step: the viewer draws screen pixels, not
camera pixels.

Drawing a 2048 x 2048 frame at full resolution costs ~60 ms in Qt; the window shows at most
about a million screen pixels. :class:`Raster` copies only the visible part of a frame,
taking every ``step``-th pixel where one screen pixel covers ``step`` camera pixels or more,
into a buffer allocated once, and says where that block goes in frame coordinates.

Imports no Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Block", "Raster", "visible_block"]


@dataclass(frozen=True, slots=True)
class Block:
    """The part of a source image to draw: rows ``y0:y1:step``, columns ``x0:x1:step``."""

    y0: int
    y1: int
    x0: int
    x1: int
    step: int

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the decimated block."""
        return (len(range(self.y0, self.y1, self.step)), len(range(self.x0, self.x1, self.step)))

    def within(self, y0: int, x0: int, y1: int, x1: int) -> tuple[slice, slice] | None:
        """The rows and columns of the decimated block that lie inside the source rectangle
        ``y0 .. y1``, ``x0 .. x1`` (half-open; e.g. the sensor region a stack was read
        from), or None when none does."""
        rows = self._axis(self.y0, self.y1, y0, y1)
        cols = self._axis(self.x0, self.x1, x0, x1)
        return None if rows is None or cols is None else (rows, cols)

    def _axis(self, start: int, stop: int, lo: int, hi: int) -> slice | None:
        n = len(range(start, stop, self.step))
        first = max(0, -(-(lo - start) // self.step))  # the first index i: start + i*step >= lo
        end = min(n, max(0, -(-(hi - start) // self.step)))  # ... and < hi
        return slice(first, end) if first < end else None


def visible_block(height: int, width: int, x_range: tuple[float, float],
                  y_range: tuple[float, float], source_px_per_screen_px: float) -> Block:
    """The block of a ``height`` x ``width`` image to draw for a view.

    Parameters
    ----------
    height, width
        The source image's shape.
    x_range, y_range
        The visible range in source pixel coordinates (may extend past the image).
    source_px_per_screen_px
        How many source pixels one screen pixel covers (the smaller of x and y).

    Returns
    -------
    Block
        Clipped to the image; the origin is aligned to ``step`` so that panning does not make
        the decimated image shimmer. The whole image (at its step) when nothing is visible.
    """
    step = max(1, int(source_px_per_screen_px)) if math.isfinite(source_px_per_screen_px) else 1
    x0 = max(0, math.floor(x_range[0]))
    x1 = min(width, math.ceil(x_range[1]) + 1)
    y0 = max(0, math.floor(y_range[0]))
    y1 = min(height, math.ceil(y_range[1]) + 1)
    if x0 >= x1 or y0 >= y1:
        x0, x1, y0, y1 = 0, width, 0, height
    x0 -= x0 % step
    y0 -= y0 % step
    return Block(y0, y1, x0, x1, step)


class Raster:
    """A reusable buffer that holds decimated crops of ``height`` x ``width`` images.

    Parameters
    ----------
    height, width, dtype
        The largest source image (any crop of it fits the buffer).

    Notes
    -----
    :meth:`fill` returns a view on the one buffer: the previous view's content is replaced.
    The caller must be done with it (Qt has painted it) before the next call.
    """

    def __init__(self, height: int, width: int, dtype: np.dtype | type) -> None:
        self.height = height
        self.width = width
        self._buf = np.empty(height * width, dtype=dtype)

    def fill(self, source: np.ndarray, block: Block) -> np.ndarray:
        """Copy ``source[block]`` into the buffer; returns the (rows, cols) view."""
        rows, cols = block.shape
        view = self._buf[: rows * cols].reshape(rows, cols)
        np.copyto(view, source[block.y0:block.y1:block.step, block.x0:block.x1:block.step],
                  casting="unsafe")
        return view
