"""Where the events are: regions from a network image, in acquisition pixel coordinates.

The default of :meth:`~rt_eda.workers.Worker.extract_event_locations`: threshold the network
image, find its connected components (8-connected, one numba pass, :func:`label_components`),
keep the strongest, and map each back to the pixels of the stack as it was acquired
(:class:`PixelMap`: a worker that resampled the image, such as the tiling worker at
56/81 nm, is undone by scaling; a crop at the top-left, the rescale worker's, by the
identity), so a region is where the event is on the camera.

Cost: on a 512 x 512 network image with no pixel above the threshold, one ``max`` (about
0.05 ms); with events, one labelling pass plus a small mask per region kept (about 0.5 ms
here, ``tests/test_locations.py`` prints it). Regions are made of primitives
(:class:`~rt_eda.core.regions.EventRegion`), so they travel with the decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import numba
import numpy as np

from rt_eda.core.regions import EventRegion

__all__ = [
    "DEFAULT_LOCATION_THRESHOLD",
    "MAX_COMPONENTS",
    "PixelMap",
    "label_components",
    "regions_from_image",
]

_F = TypeVar("_F", bound=Callable[..., Any])

DEFAULT_LOCATION_THRESHOLD: Final = 0.5
"""A pixel of the network image belongs to an event from this value on (the demo model's
output is a sigmoid event map: 0.5 is where it calls a pixel an event's core)."""

MAX_COMPONENTS: Final = 4096
"""At most this many components are measured per image; beyond them (a threshold below the
noise) the rest of the image is not labelled (:func:`label_components` says so)."""

# columns of the statistics each component gets in the labelling pass
_AREA, _W, _WY, _WX, _MAX, _Y0, _X0, _Y1, _X1 = range(9)


def _jit(fn: _F) -> _F:
    """``numba.njit(cache, nogil)`` keeping the static type."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


@_jit
def _label(image: np.ndarray, threshold: float, labels: np.ndarray, stats: np.ndarray,
           stack: np.ndarray) -> int:
    """Flood-fill every 8-connected set of pixels ``>= threshold``; labels 1..n, stats per
    label (area, weights, weighted y/x sums, max, box). Returns n, or -1 when more than
    ``stats.shape[0]`` components exist (the rest are left unlabelled)."""
    h, w = image.shape
    n = 0
    for sy in range(h):
        for sx in range(w):
            if labels[sy, sx] != 0 or not image[sy, sx] >= threshold:
                continue
            if n == stats.shape[0]:
                return -1
            n += 1
            s = stats[n - 1]
            s[_Y0] = sy
            s[_X0] = sx
            s[_Y1] = sy
            s[_X1] = sx
            s[_MAX] = -math.inf
            top = 0
            stack[top] = sy * w + sx
            top += 1
            labels[sy, sx] = n
            while top > 0:
                top -= 1
                p = stack[top]
                y = p // w
                x = p - y * w
                v = image[y, x]
                s[_AREA] += 1.0
                s[_W] += v
                s[_WY] += v * y
                s[_WX] += v * x
                s[_MAX] = max(s[_MAX], v)
                s[_Y0] = min(s[_Y0], y)
                s[_X0] = min(s[_X0], x)
                s[_Y1] = max(s[_Y1], y)
                s[_X1] = max(s[_X1], x)
                for dy in range(-1, 2):
                    yy = y + dy
                    if yy < 0 or yy >= h:
                        continue
                    for dx in range(-1, 2):
                        xx = x + dx
                        if xx < 0 or xx >= w or labels[yy, xx] != 0:
                            continue
                        if image[yy, xx] >= threshold:
                            labels[yy, xx] = n
                            stack[top] = yy * w + xx
                            top += 1
    return n


def label_components(image: np.ndarray, threshold: float, max_components: int = MAX_COMPONENTS
                     ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The 8-connected components of the pixels of ``image`` that are ``>= threshold``.

    Parameters
    ----------
    image
        2-D, any real dtype (NaN is never ``>= threshold``).
    threshold
        The value from which a pixel belongs to a component.
    max_components
        Components measured at most (:data:`MAX_COMPONENTS`).

    Returns
    -------
    labels, stats, complete
        ``labels``: int32 of ``image``'s shape, 0 outside every component, ``k`` (1-based)
        inside component ``k``; ``stats``: ``(n, 9)`` float64 per component (area, sum of
        values, value-weighted sums of y and x, max, box ``y0, x0, y1, x1`` inclusive);
        ``complete``: False when the image held more components than ``max_components``
        (the rest is unlabelled). Runs without the GIL.
    """
    img = np.ascontiguousarray(image)
    if img.ndim != 2:
        raise ValueError(f"label_components takes a 2-D image, got shape {image.shape}")
    if img.dtype.kind not in "biuf":
        raise ValueError(f"label_components takes a real-valued image, got {img.dtype}")
    if img.dtype.kind != "f":
        img = img.astype(np.float32)
    labels = np.zeros(img.shape, np.int32)
    if img.size == 0 or not np.nanmax(img) >= threshold:  # the common case: nothing there
        return labels, np.zeros((0, 9), np.float64), True
    stats = np.zeros((max(1, max_components), 9), np.float64)
    stack = np.empty(img.size, np.int64)
    n = _label(img, float(threshold), labels, stats, stack)
    complete = n >= 0
    n = stats.shape[0] if n < 0 else n
    return labels, stats[:n], complete


@dataclass(frozen=True, slots=True)
class PixelMap:
    """Network-image pixels -> acquisition pixels: ``Y = (y + 0.5) * scale_y - 0.5 +
    offset_y`` (pixel centres aligned, as the built-in resampling does), the same for x.

    ``shape`` is the acquisition image's ``(height, width)``: regions are clipped to it.
    """

    shape: tuple[int, int]
    scale_y: float = 1.0
    scale_x: float = 1.0
    offset_y: float = 0.0
    offset_x: float = 0.0

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> PixelMap:
        """The network image *is* the acquired image (or its top-left part)."""
        return cls((int(shape[0]), int(shape[1])))

    @classmethod
    def resampled(cls, image_shape: tuple[int, int], shape: tuple[int, int]) -> PixelMap:
        """The network image is the whole acquired image of ``shape`` resampled to
        ``image_shape``."""
        return cls((int(shape[0]), int(shape[1])), shape[0] / image_shape[0],
                   shape[1] / image_shape[1])

    @property
    def is_identity(self) -> bool:
        """No scaling and no offset."""
        return (self.scale_y, self.scale_x, self.offset_y, self.offset_x) == (1.0, 1.0, 0.0,
                                                                              0.0)

    def point(self, y: float, x: float) -> tuple[float, float]:
        """A network-image point in acquisition pixels."""
        return ((y + 0.5) * self.scale_y - 0.5 + self.offset_y,
                (x + 0.5) * self.scale_x - 0.5 + self.offset_x)

    def rows(self, y0: int, y1: int) -> tuple[int, int, np.ndarray]:
        """Acquisition rows ``[Y0, Y1)`` covering image rows ``[y0, y1)``, and for each the
        image row it shows (nearest)."""
        return _axis(y0, y1, self.scale_y, self.offset_y, self.shape[0])

    def cols(self, x0: int, x1: int) -> tuple[int, int, np.ndarray]:
        """As :meth:`rows`, for columns."""
        return _axis(x0, x1, self.scale_x, self.offset_x, self.shape[1])


def _axis(i0: int, i1: int, scale: float, offset: float, size: int
          ) -> tuple[int, int, np.ndarray]:
    lo = max(0, math.floor(i0 * scale + offset + 1e-9))
    hi = min(size, math.ceil(i1 * scale + offset - 1e-9))
    hi = max(hi, lo + 1) if lo < size else lo
    src = np.floor((np.arange(lo, hi) - offset + 0.5) / scale).astype(np.int64)
    return lo, hi, np.clip(src, i0, i1 - 1)


def regions_from_image(image: np.ndarray, threshold: float = DEFAULT_LOCATION_THRESHOLD,
                       pixel_map: PixelMap | None = None, *, min_area: int = 1,
                       max_regions: int = 16, relative: float = 0.0
                       ) -> tuple[EventRegion, ...]:
    """The events of a network image: its components above ``threshold``, strongest first.

    Parameters
    ----------
    image
        The network image (2-D, real-valued; NaN counts as below the threshold).
    threshold
        A pixel belongs to an event from this value on.
    pixel_map
        Image pixels -> acquisition pixels (default: the identity on ``image``'s shape).
    min_area
        Components of fewer image pixels are noise, dropped.
    max_regions
        At most this many regions, the highest scores first (ties: the larger first).
    relative
        0 (off) or a fraction of each region's own peak: a region found at ``threshold``
        keeps only its pixels at least this fraction of its peak (its box shrinks to them).
        A network whose event map widens with the event's strength then gives a region of
        about the same size for a faint and a strong event (a half-maximum cut at 0.5).

    Returns
    -------
    tuple of EventRegion
        In acquisition pixel coordinates (clipped to ``pixel_map.shape``): centre (the
        value-weighted centre of mass), box, score (the highest value), area and mask (the
        component's pixels, nearest-neighbour where the map scales).
    """
    img = np.asarray(image)
    pm = pixel_map if pixel_map is not None else PixelMap.identity(img.shape[:2])
    labels, stats, _complete = label_components(img, threshold)
    if stats.shape[0] == 0:
        return ()
    keep = np.flatnonzero(stats[:, _AREA] >= max(1, min_area))
    if keep.size == 0:
        return ()
    order = sorted(keep.tolist(), key=lambda k: (-stats[k, _MAX], -stats[k, _AREA]))
    out = []
    for k in order[: max(0, max_regions)]:
        s = stats[k]
        y0, x0 = int(s[_Y0]), int(s[_X0])
        y1, x1 = int(s[_Y1]) + 1, int(s[_X1]) + 1
        box = labels[y0:y1, x0:x1] == k + 1
        if relative > 0:
            box &= img[y0:y1, x0:x1] >= relative * s[_MAX]
            rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
            box = box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            y0, x0 = y0 + int(rows[0]), x0 + int(cols[0])
            y1, x1 = y0 + box.shape[0], x0 + box.shape[1]
        if s[_W] > 0:
            cy, cx = s[_WY] / s[_W], s[_WX] / s[_W]
        else:  # every value exactly 0 with threshold <= 0: the plain centre of mass
            ys, xs = np.nonzero(box)
            cy, cx = y0 + float(ys.mean()), x0 + float(xs.mean())
        if pm.is_identity:
            mask, (ay0, ay1, ax0, ax1) = box, (y0, y1, x0, x1)
        else:
            ay0, ay1, rows = pm.rows(y0, y1)
            ax0, ax1, cols = pm.cols(x0, x1)
            if ay1 <= ay0 or ax1 <= ax0:
                continue
            mask = box[np.ix_(rows - y0, cols - x0)]
            if not mask.any():  # a sliver that no acquisition pixel's centre falls in
                mask = np.zeros((ay1 - ay0, ax1 - ax0), bool)
                my, mx = pm.point(cy, cx)
                mask[min(max(round(my) - ay0, 0), ay1 - ay0 - 1),
                     min(max(round(mx) - ax0, 0), ax1 - ax0 - 1)] = True
        ay, ax = pm.point(cy, cx)
        out.append(EventRegion(
            y=float(ay), x=float(ax), y0=int(ay0), x0=int(ax0), y1=int(ay1), x1=int(ax1),
            score=float(s[_MAX]), area=int(mask.sum()), mask=EventRegion.pack_mask(mask),
        ))
    return tuple(out)
