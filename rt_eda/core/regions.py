"""Where an event is, and which part of the sensor a frame holds: the two rectangles of
event-driven actuation, as they cross process boundaries.

- :class:`EventRegion`: one detected event (centre, bounding box, score, area, and its pixel
  mask inside the box) in **acquisition pixel coordinates**: the sensor's full frame, row
  ``y`` and column ``x`` of a pixel's centre, whatever the worker did to the image
  (rescaling, tiling) and whatever region of the sensor the stack was read from. Workers
  make them (:func:`rt_eda.workers.regions_from_image`); the interpreter, the actuators, the
  writer and the viewer read them.
- :class:`FrameRegion`: the rectangle of the sensor a stack was read from (a camera ROI, or
  the crop of a source without one); the full frame when no ROI is in force.
- :func:`paint_regions`: the union of regions' masks as a boolean image of any window of
  the sensor (what a stimulation mask is made from, and what the ground truth compares).

Conventions: integer rectangles are half-open (``y0 <= y < y1``); a pixel's centre has
integer coordinates, so a region's centre of mass lies inside ``[y0 - 0.5, y1 - 0.5]``.
Everything is frozen, slotted and made of primitives (a mask is ``bytes``), so it pickles
small: a 20 x 20 px mask is 50 bytes. numpy only (:class:`FrameRegion` is defined in
:mod:`rt_eda.shm`, which records it per stack in the ring, and re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rt_eda.shm import FrameRegion  # defined in the ring, which records it per stack

__all__ = [
    "EventRegion",
    "FrameRegion",
    "bounding_box",
    "paint_disc",
    "paint_discs",
    "paint_regions",
]


@dataclass(frozen=True, slots=True)
class EventRegion:
    """One detected event in acquisition pixel coordinates (see the module docstring).

    Attributes
    ----------
    y, x
        Its centre: the score-weighted centre of mass of its pixels.
    y0, x0, y1, x1
        Its bounding box, half-open.
    score
        The highest value of the network image inside it.
    area
        Its pixels (in acquisition pixels: a region found on a resampled image is counted
        after mapping back).
    mask
        Its pixels inside the box: ``numpy.packbits`` of a boolean ``(y1 - y0, x1 - x0)``
        array, row-major; ``b""`` means the whole box.
    """

    y: float
    x: float
    y0: int
    x0: int
    y1: int
    x1: int
    score: float
    area: int
    mask: bytes = b""

    def __post_init__(self) -> None:
        if self.y1 <= self.y0 or self.x1 <= self.x0:
            raise ValueError(f"an event region needs a box of at least 1 x 1 px, got "
                             f"[{self.y0}, {self.y1}) x [{self.x0}, {self.x1})")
        if self.mask and len(self.mask) != (self.box_height * self.box_width + 7) // 8:
            raise ValueError(
                f"an event region's mask of {len(self.mask)} bytes does not fit its "
                f"{self.box_height} x {self.box_width} px box "
                f"({(self.box_height * self.box_width + 7) // 8} bytes)")

    @property
    def box_height(self) -> int:
        """Rows of the bounding box."""
        return self.y1 - self.y0

    @property
    def box_width(self) -> int:
        """Columns of the bounding box."""
        return self.x1 - self.x0

    def mask_array(self) -> np.ndarray:
        """The region's pixels inside its box: a new boolean ``(box_height, box_width)``."""
        shape = (self.box_height, self.box_width)
        if not self.mask:
            return np.ones(shape, bool)
        bits = np.unpackbits(np.frombuffer(self.mask, np.uint8), count=shape[0] * shape[1])
        return bits.reshape(shape).astype(bool)

    def shifted(self, dy: int, dx: int) -> EventRegion:
        """The same region ``dy`` rows down and ``dx`` columns right (from a stack read at
        a sensor offset to full-frame coordinates)."""
        if dy == 0 and dx == 0:
            return self
        return EventRegion(self.y + dy, self.x + dx, self.y0 + dy, self.x0 + dx,
                           self.y1 + dy, self.x1 + dx, self.score, self.area, self.mask)

    @staticmethod
    def pack_mask(mask: np.ndarray) -> bytes:
        """``mask`` (2-D, boolean) as :attr:`mask` bytes; ``b""`` when every pixel is set."""
        m = np.asarray(mask, bool)
        if m.all():
            return b""
        return np.packbits(m, axis=None).tobytes()


def bounding_box(regions: Iterable[EventRegion]) -> tuple[int, int, int, int] | None:
    """``(y0, x0, y1, x1)`` enclosing every region's box, or None for no region."""
    boxes = [(r.y0, r.x0, r.y1, r.x1) for r in regions]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def paint_regions(regions: Sequence[EventRegion], window: FrameRegion, *,
                  dilate: int = 0) -> np.ndarray:
    """The union of the regions' masks over ``window`` of the sensor: a new boolean image of
    ``window.shape`` whose pixel ``(0, 0)`` is sensor pixel ``(window.y, window.x)``.

    Parts of a region outside the window are cut off. ``dilate`` grows every region by that
    many pixels (a square structuring element, each way) before it is painted: a margin
    around a stimulation target.
    """
    out = np.zeros(window.shape, bool)
    for r in regions:
        m = r.mask_array()
        y0, x0 = r.y0 - window.y, r.x0 - window.x
        if dilate > 0:
            m = _dilate(m, dilate)
            y0, x0 = y0 - dilate, x0 - dilate
        ys, xs = max(0, -y0), max(0, -x0)
        ye = min(m.shape[0], window.height - y0)
        xe = min(m.shape[1], window.width - x0)
        if ye <= ys or xe <= xs:
            continue
        out[y0 + ys : y0 + ye, x0 + xs : x0 + xe] |= m[ys:ye, xs:xe]
    return out


def paint_discs(regions: Sequence[EventRegion], window: FrameRegion, *,
                grow: float = 0.0) -> np.ndarray:
    """Each region as the disc of its own area around its centre (radius
    ``sqrt(area / pi) + grow``), over ``window`` of the sensor: a new boolean image of
    ``window.shape``.

    A segmentation's edge is its noisiest part (a network's event map is ragged and widens
    with the event's strength); its centre and area are its most precise measures. A disc
    drawn from them is what a DMD stimulating a spot shows.
    """
    out = np.zeros(window.shape, bool)
    for r in regions:
        paint_disc(out, window, r.y, r.x, math.sqrt(max(r.area, 1) / math.pi) + grow)
    return out


def paint_disc(out: np.ndarray, window: FrameRegion, y: float, x: float,
               radius: float) -> None:
    """Set the pixels of ``out`` (an image of ``window`` of the sensor) whose centres lie
    within ``radius`` of sensor point ``(y, x)``; parts outside the window are cut off."""
    if radius <= 0:
        return
    y0 = max(window.y, math.floor(y - radius))
    y1 = min(window.y1, math.ceil(y + radius) + 1)
    x0 = max(window.x, math.floor(x - radius))
    x1 = min(window.x1, math.ceil(x + radius) + 1)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    out[y0 - window.y : y1 - window.y, x0 - window.x : x1 - window.x] |= (
        (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius)


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """``mask`` padded by ``k`` on every side and grown by a (2k+1)^2 square (separable)."""
    h, w = mask.shape
    grown = np.zeros((h + 2 * k, w + 2 * k), bool)
    grown[k : k + h, k : k + w] = mask
    rows = grown.copy()
    for d in range(1, k + 1):
        rows[d:] |= grown[:-d]
        rows[:-d] |= grown[d:]
    cols = rows.copy()
    for d in range(1, k + 1):
        cols[:, d:] |= rows[:, :-d]
        cols[:, :-d] |= rows[:, d:]
    return cols
