"""The synthetic source's numba kernels: every per-pixel loop, compiled once and cached.

Each kernel writes into an array it is given and allocates nothing; ``nogil`` so the camera
thread never holds the GIL while it renders. :func:`render_int` and :func:`render_float` make
one frame from a base image and a noise frame (the per-frame cost of the source);
:func:`add_focus` draws an event's focus into a frame and :func:`max_focus` into a target
mask; :func:`splat_filaments` draws the filament network once, at ``open``. Numba caches
the compiled code beside this file, so only a machine's first run pays the compilation.

The frame kernels take a *window* ``[y0, y1) x [x0, x1)`` of the full-frame arrays (a camera
ROI) and touch nothing outside it: a pixel's value depends only on its own coordinates, so a
pixel rendered through a window equals the one a full-frame render makes, and a small window
costs only its own pixels. The arrays stay full-frame (C-contiguous, one compiled
specialisation) and the loops carry the offsets. Each returns the pixels it wrote.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

__all__ = ["add_focus", "max_focus", "render_float", "render_int", "splat_filaments"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)`` keeping the function's static type for mypy."""
    return cast(_F, njit(cache=True, nogil=True)(fn))


def _jit_fast(fn: _F) -> _F:
    """Like :func:`_jit` with ``fastmath`` (lets LLVM vectorise the per-pixel loops)."""
    return cast(_F, njit(cache=True, nogil=True, fastmath=True)(fn))


@_jit_fast
def render_int(
    base: np.ndarray,
    noise: np.ndarray,
    dy: int,
    dx: int,
    scale: np.float32,
    hi: np.float32,
    out: np.ndarray,
    y0: int,
    x0: int,
    y1: int,
    x1: int,
) -> int:
    """``out = clip(round(base + noise[dy:, dx:] * scale), 0, hi)`` for integer ``out``, over
    the window ``[y0, y1) x [x0, x1)`` of the (H, W) arrays only; returns its pixels."""
    w = x1 - x0
    zero = np.float32(0.0)
    half = np.float32(0.5)
    for y in range(y0, y1):
        b = base[y, x0:x1]
        n = noise[y + dy, x0 + dx : x1 + dx]
        o = out[y, x0:x1]
        for x in range(w):
            v = np.float32(b[x]) + np.float32(n[x]) * scale
            v = max(v, zero)
            v = min(v, hi)
            o[x] = np.int32(v + half)
    return (y1 - y0) * w


@_jit_fast
def render_float(
    base: np.ndarray,
    noise: np.ndarray,
    dy: int,
    dx: int,
    scale: np.float32,
    out: np.ndarray,
    y0: int,
    x0: int,
    y1: int,
    x1: int,
) -> int:
    """``out = base + noise[dy:, dx:] * scale`` for float ``out`` (no clipping), over the
    window ``[y0, y1) x [x0, x1)`` only; returns its pixels."""
    w = x1 - x0
    for y in range(y0, y1):
        b = base[y, x0:x1]
        n = noise[y + dy, x0 + dx : x1 + dx]
        o = out[y, x0:x1]
        for x in range(w):
            o[x] = b[x] + np.float32(n[x]) * scale
    return (y1 - y0) * w


@_jit
def add_focus(
    out: np.ndarray,
    cy: float,
    cx: float,
    sigma: float,
    amp: float,
    hi: float,
    integer: bool,
    wy0: int,
    wx0: int,
    wy1: int,
    wx1: int,
) -> int:
    """Add ``amp * exp(-r**2 / 2 sigma**2)`` around (cy, cx), within 3.5 sigma only and within
    the window ``[wy0, wy1) x [wx0, wx1)``; returns the pixels it wrote.

    (cy, cx) is in the frame's pixel coordinates: pixel ``(y, x)``'s centre is at ``(y, x)``.
    Integer images are rounded and clipped to ``0..hi``.
    """
    r = math.ceil(3.5 * sigma)
    y0 = max(wy0, math.floor(cy) - r)
    y1 = min(wy1, math.floor(cy) + r + 2)
    x0 = max(wx0, math.floor(cx) - r)
    x1 = min(wx1, math.floor(cx) + r + 2)
    k = 1.0 / (2.0 * sigma * sigma)
    for y in range(y0, y1):
        ey = (y - cy) * (y - cy)
        for x in range(x0, x1):
            v = out[y, x] + amp * math.exp(-(ey + (x - cx) * (x - cx)) * k)
            if integer:
                v = math.floor(v + 0.5)
                v = min(max(v, 0.0), hi)
            out[y, x] = v
    return max(0, y1 - y0) * max(0, x1 - x0)


@_jit
def max_focus(mask: np.ndarray, cy: float, cx: float, sigma: float, amp: float) -> None:
    """``mask = max(mask, amp * exp(-r**2 / 2 sigma**2))`` within 3.5 sigma of (cy, cx)."""
    h, w = mask.shape
    r = math.ceil(3.5 * sigma)
    y0 = max(0, math.floor(cy) - r)
    y1 = min(h, math.floor(cy) + r + 2)
    x0 = max(0, math.floor(cx) - r)
    x1 = min(w, math.floor(cx) + r + 2)
    k = 1.0 / (2.0 * sigma * sigma)
    for y in range(y0, y1):
        ey = (y - cy) * (y - cy)
        for x in range(x0, x1):
            v = amp * math.exp(-(ey + (x - cx) * (x - cx)) * k)
            if v > mask[y, x]:
                mask[y, x] = v


@_jit
def splat_filaments(
    img: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    zs: np.ndarray,
    sigmas: np.ndarray,
    weights: np.ndarray,
    axial_sigma: float,
) -> None:
    """Draw tubes: a Gaussian (radius ``sigmas[i]``) per path point, into ``img`` (Z, H, W).

    Points 1 px apart with weight ``w / (sqrt(2 pi) sigma)`` add up to a tube whose crest is
    ``w``: a tube convolved with the optical blur. Slices are weighted by the axial blur.
    """
    nz, h, w = img.shape
    kz = 1.0 / (2.0 * axial_sigma * axial_sigma)
    for i in range(ys.shape[0]):
        s = sigmas[i]
        r = math.ceil(3.0 * s)
        cy = ys[i]
        cx = xs[i]
        k = 1.0 / (2.0 * s * s)
        norm = weights[i] / (math.sqrt(2.0 * math.pi) * s)
        y0 = max(0, math.floor(cy) - r)
        y1 = min(h, math.floor(cy) + r + 2)
        x0 = max(0, math.floor(cx) - r)
        x1 = min(w, math.floor(cx) + r + 2)
        for z in range(nz):
            wz = math.exp(-(z - zs[i]) * (z - zs[i]) * kz) * norm
            if wz < 1e-4 * norm:
                continue
            for y in range(y0, y1):
                ey = (y - cy) * (y - cy)
                for x in range(x0, x1):
                    img[z, y, x] += wz * math.exp(-(ey + (x - cx) * (x - cx)) * k)

