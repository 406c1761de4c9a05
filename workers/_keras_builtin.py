"""Built-in Keras workers: rescale, tiling, and the bundled demo model.

The preprocessing is that of the original plugin's example workers (see
``reference/original_semantics.md``), written as separable filters in numba (no SciPy):

- **Gaussian blur**: separable convolution with a kernel of radius ``int(4 sigma + 0.5)``,
  mirrored boundaries (``d c b a | a b c d``, SciPy's ``reflect``).
- **structure channels** (every model channel but the marker ones): blur sigma 1.5, then
  mean-max stretch ``(x - mean) / (max - mean)`` with values below the mean clipped to 0.
- **marker channels** (model channel 1 by default, option ``marker_channels``): blur sigma
  1.5 minus a sigma 7.5 blur of the raw image (background removal, a difference of
  Gaussians), then min-max stretch ``(x - min) / (max - min)``.
- A constant frame (a dark frame) stretches to zeros, never to NaN.

Every frame ``(t, c, z)`` of a window is processed on its own. Time windows reach the model as
:func:`rt_eda.workers._keras.to_model_layout` lays them out: a 4-D model gets ``T x C``
channels (index ``t * C + c``, oldest first), a 5-D model ``(C, T x Z)`` (index ``t * Z + z``).

Importing this module imports numba but not TensorFlow; the kernels compile (or load from
numba's cache) on first use, which :meth:`~rt_eda.workers._keras.KerasWorker.warm_up` covers.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import numba
import numpy as np

from rt_eda.core.errors import ConfigError, ModelError
from rt_eda.shm import StackSpec

from ._base import STACK_SHAPE_KEY, WorkerSettings
from ._fit import _size_advice
from ._keras import VALID_SHAPE_KEY, KerasWorker, network_image, to_model_layout
from ._locations import PixelMap
from ._models import ModelInfo, demo_model_path

__all__ = [
    "DemoModelWorker",
    "KerasRescaleWorker",
    "KerasTilingWorker",
    "gaussian_blur",
    "normalise_frame",
    "resample",
    "stitch_tiles",
    "tile_positions",
]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    """``numba.njit(parallel, cache, nogil, fastmath)`` keeping the static type."""
    return cast(_F, numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)(fn))


# -- filters -----------------------------------------------------------------------------------
@_jit
def _convolve_x(img: np.ndarray, kernel: np.ndarray, out: np.ndarray) -> None:
    """Convolve every row of ``img`` (H, W) with ``kernel`` (odd length), mirrored edges."""
    h, w = img.shape
    r = (kernel.shape[0] - 1) // 2
    for y in numba.prange(h):
        row = img[y]
        pad = np.empty(w + 2 * r, np.float32)
        for i in range(w + 2 * r):
            xx = i - r
            while xx < 0 or xx >= w:
                xx = -xx - 1 if xx < 0 else 2 * w - xx - 1
            pad[i] = row[xx]
        o = out[y]
        o[:] = 0.0
        for j in range(2 * r + 1):
            k = kernel[j]
            for x in range(w):
                o[x] += k * pad[x + j]


@_jit
def _convolve_y(img: np.ndarray, kernel: np.ndarray, out: np.ndarray) -> None:
    """Convolve every column of ``img`` (H, W) with ``kernel`` (odd length), mirrored edges."""
    h, w = img.shape
    r = (kernel.shape[0] - 1) // 2
    for y in numba.prange(h):
        o = out[y]
        o[:] = 0.0
        for j in range(-r, r + 1):
            yy = y + j
            while yy < 0 or yy >= h:
                yy = -yy - 1 if yy < 0 else 2 * h - yy - 1
            k = kernel[j + r]
            src = img[yy]
            for x in range(w):
                o[x] += k * src[x]


@lru_cache(maxsize=16)
def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    kernel: np.ndarray = (k / k.sum()).astype(np.float32)
    kernel.flags.writeable = False
    return kernel


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D image; a new float32 array of the same shape.

    Separable, kernel radius ``int(4 sigma + 0.5)``, mirrored boundaries (SciPy's
    ``reflect``); agrees with ``scipy.ndimage.gaussian_filter`` to float32 rounding.
    ``sigma <= 0`` returns a float32 copy. Runs on numba's threads (see
    :func:`~rt_eda.workers._keras.configure_threads`); releases the GIL.
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"gaussian_blur takes a 2-D image, got shape {image.shape}")
    if sigma <= 0:
        return img.copy()
    kernel = _gaussian_kernel(float(sigma))
    tmp = np.empty_like(img)
    out = np.empty_like(img)
    _convolve_x(img, kernel, tmp)
    _convolve_y(tmp, kernel, out)
    return out


def _stretch(x: np.ndarray, low: float) -> np.ndarray:
    hi = float(x.max())
    if not hi > low:
        return np.zeros_like(x)
    out = (x - np.float32(low)) * np.float32(1.0 / (hi - low))
    np.maximum(out, 0.0, out=out)
    return out


def normalise_frame(
    frame: np.ndarray, marker: bool, sigma: float = 1.5, background_sigma: float = 7.5
) -> np.ndarray:
    """The original rescale preprocessing of one 2-D frame; float32 in 0..1.

    ``marker``: blur ``sigma`` minus blur ``background_sigma`` of the raw frame, min-max
    stretched. Otherwise (structure): blur ``sigma``, mean-max stretched, below the mean
    clipped to 0. A constant frame gives zeros.
    """
    blurred = gaussian_blur(frame, sigma)
    if marker:
        if background_sigma > 0:
            blurred -= gaussian_blur(frame, background_sigma)
        return _stretch(blurred, float(blurred.min()))
    return _stretch(blurred, float(blurred.mean()))


def _preprocess_window(
    window: np.ndarray, markers: frozenset[int], sigma: float, background_sigma: float
) -> np.ndarray:
    out = np.empty(window.shape, np.float32)
    n_t, n_c, n_z = window.shape[:3]
    for t in range(n_t):
        for c in range(n_c):
            for z in range(n_z):
                out[t, c, z] = normalise_frame(window[t, c, z], c in markers, sigma,
                                               background_sigma)
    return out


@lru_cache(maxsize=8)
def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation with pixel centres aligned (edges clamped)."""
    scale = n_in / n_out
    src = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0.0, n_in - 1.0)
    i0 = np.floor(src).astype(np.int64)
    frac = (src - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    m.flags.writeable = False
    return m


def resampled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """``(round(height * factor), round(width * factor))``, each at least 1."""
    return (max(1, round(height * factor)), max(1, round(width * factor)))


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a 2-D image to ``shape``; float32, pixel centres aligned.

    The same size returns a float32 copy.
    """
    h, w = image.shape
    if (h, w) == shape:
        return np.array(image, dtype=np.float32)
    my = _linear_matrix(h, shape[0])
    mx = _linear_matrix(w, shape[1])
    result: np.ndarray = my @ np.asarray(image, np.float32) @ mx.T
    return result


# -- tiles -------------------------------------------------------------------------------------
def tile_positions(length: int, size: int, min_overlap: int = 35) -> list[int]:
    """Start offsets of tiles of ``size`` covering ``length`` px with overlap >= ``min_overlap``.

    The original's algorithm: start with ``length // size + 1`` tiles, add tiles until the
    overlap ``ceil((n * size - length) / (n - 1))`` reaches ``min_overlap``; step
    ``size - overlap``; the last tile is shifted back inside (it starts at
    ``length - size``). A length equal to the tile size is one tile (no seam to hide).

    Guarantees: sorted, unique, first 0, last ``length - size``, consecutive tiles overlap by at
    least ``min_overlap`` px.

    Raises
    ------
    ValueError
        ``length < size``, or ``min_overlap`` not in ``0 .. size - 1``.
    """
    if length < size:
        raise ValueError(f"an image of {length} px cannot hold a tile of {size} px")
    if not 0 <= min_overlap < size:
        raise ValueError(f"tile overlap must be 0..{size - 1} px for {size} px tiles, "
                         f"got {min_overlap}")
    if length == size:
        return [0]
    n = length // size + 1
    while True:
        overlap = math.ceil((n * size - length) / (n - 1))
        if overlap >= min_overlap:
            break
        n += 1
    step = size - overlap
    positions = [i * step for i in range(n - 1)] + [length - size]
    return sorted(set(positions))


def _seams(positions: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """Per tile, the image range ``[lo, hi)`` it pastes: seams at the middle of each overlap."""
    bounds = [0]
    for a, b in itertools.pairwise(positions):
        bounds.append((b + a + size) // 2)
    bounds.append(length)
    return list(itertools.pairwise(bounds))


def stitch_tiles(
    tiles: np.ndarray, ys: list[int], xs: list[int], shape: tuple[int, int]
) -> np.ndarray:
    """Paste tiles ``(len(ys) * len(xs), S, S)`` (row-major) back into an image of ``shape``.

    Each tile contributes its centre, trimmed by half the overlap with each neighbour (the
    seam lies in the middle of every overlap); the image edges keep the outer tiles' borders.
    Every pixel is written exactly once. Returns a new float32 array.
    """
    size_y, size_x = tiles.shape[1], tiles.shape[2]
    out = np.empty(shape, np.float32)
    seams_y = _seams(ys, size_y, shape[0])
    seams_x = _seams(xs, size_x, shape[1])
    i = 0
    for py, (y0, y1) in zip(ys, seams_y, strict=True):
        for px, (x0, x1) in zip(xs, seams_x, strict=True):
            out[y0:y1, x0:x1] = tiles[i, y0 - py : y1 - py, x0 - px : x1 - px]
            i += 1
    return out


# -- workers -----------------------------------------------------------------------------------
def _float_option(settings: WorkerSettings, key: str, default: float, low: float = 0.0) -> float:
    value = settings.option(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise ConfigError(f"analysis.options.{key} must be a number >= {low}, got {value!r}")
    return float(value)


def _markers(settings: WorkerSettings) -> frozenset[int]:
    """``marker_channels``: an index, a list of indices, or a string like ``"1,2"``."""
    value = settings.option("marker_channels", (1,))
    items: list[object]
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        items = [int(v) if isinstance(v, str) and v.isdigit() else v for v in items]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
        raise ConfigError(
            "analysis.options.marker_channels must be model channel indices >= 0 (a number, a "
            f"list or a string like \"1,2\"), got {value!r}"
        )
    return frozenset(cast(list[int], items))


class KerasRescaleWorker(KerasWorker):
    """Blur, background removal and 0-1 stretch per frame, cropped to multiples of 4.

    The original rescale worker: per z-slice and channel a Gaussian blur (sigma 1.5 px); on
    the marker channel (model channel 1) minus a sigma 7.5 px blur of the raw image, then
    min-max; on the others mean-max (below the mean clipped to 0); height and width cropped
    (top-left kept) to multiples of 4 so a two-level U-Net fits. Decision = maximum of the
    output; network image = the output without its batch and channel axes.

    Options: ``sigma`` (1.5), ``background_sigma`` (7.5), ``marker_channels`` ([1]),
    ``crop_multiple`` (4), ``inference``.

    A stack smaller than the acquisition's frame (read from a sensor region) is normalised on
    its own pixels (the stretch's mean, min and max are the region's), not cropped to
    multiples of 4 (the crop keeps the frame's cropped size at most), then padded (edge mode)
    to the frame's cropped size for the model, whose output is cropped back to the region
    (:meth:`~rt_eda.workers.KerasWorker.prepare_images`): the network image has the
    region's size and the decision is the maximum over the region only.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.sigma = _float_option(settings, "sigma", 1.5)
        self.background_sigma = _float_option(settings, "background_sigma", 7.5)
        self.markers = _markers(settings)
        multiple = settings.option("crop_multiple", 4)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ConfigError(
                f"analysis.options.crop_multiple must be an integer >= 1, got {multiple!r}"
            )
        self.crop_multiple = multiple

    def fed_image_shape(self, spec: StackSpec, info: ModelInfo) -> tuple[int, int]:
        """The acquired size cropped down to multiples of ``crop_multiple``."""
        m = self.crop_multiple
        return (spec.height - spec.height % m, spec.width - spec.width % m)

    def image_to_acquisition(self, image_shape: tuple[int, ...], data: dict[str, Any]
                             ) -> PixelMap:
        """The network image shows the stack cropped at its top-left to multiples of
        ``crop_multiple``: the identity (or, for a model whose output is smaller than its
        input, a resampling of the cropped part), clipped to the stack."""
        h, w = (int(v) for v in data.get(STACK_SHAPE_KEY, image_shape[:2]))
        m = self.crop_multiple
        valid = data.get(VALID_SHAPE_KEY)  # a padded smaller stack: its part that was fed
        cropped = ((int(valid[0]), int(valid[1])) if valid is not None
                   else (h - h % m, w - w % m))
        image = (int(image_shape[0]), int(image_shape[1]))
        if image == cropped or cropped[0] == 0 or cropped[1] == 0:
            return PixelMap.identity((h, w))
        scaled = PixelMap.resampled(image, cropped)
        return PixelMap((h, w), scaled.scale_y, scaled.scale_x)

    def preprocess_window(self, window: np.ndarray) -> np.ndarray:
        """Crop, then normalise every frame (see the class docstring).

        The crop is to multiples of ``crop_multiple``, or (after :meth:`setup`) to at most
        the frame's cropped size: a full frame is cropped as before, a smaller stack (a
        sensor region, padded afterwards) keeps all its pixels.
        """
        h, w = window.shape[-2:]
        fed = self._fed_shape()
        if fed is None:
            m = self.crop_multiple
            fed = (h - h % m, w - w % m)
        cropped = window[..., : min(h, fed[0]), : min(w, fed[1])]
        return _preprocess_window(cropped, self.markers, self.sigma, self.background_sigma)


class DemoModelWorker(KerasRescaleWorker):
    """The bundled demo U-Net on the synthetic source's two channels (rescale preprocessing).

    Uses ``models/demo.keras`` unless ``analysis.model`` names another file; the model was
    trained on exactly :class:`KerasRescaleWorker`'s preprocessing of channel 0 (structure)
    and channel 1 (marker), so the default thresholds of the binary interpreter (0.3 / 0.48)
    apply.
    """

    needs_model: ClassVar[bool] = False
    # The demo model's event map is wider than the events' cores, and widens with the
    # event's strength: at 0.5 it covers about 84 px around a strong focus whose true core
    # (half its peak, 3 px sigma) is 37 px; at 0.8, 45 px, but a faint event's map hardly
    # reaches 0.8 (tools/mask_study.py: masks cut at 0.65 have precision 0.62, recall 0.98;
    # at 0.8, 0.74 and 0.87). Regions are found at 0.5 and keep the pixels at 0.8 of their
    # own peak (location_relative); the decision is unchanged.
    default_location_relative: ClassVar[float] = 0.8

    def model_path(self) -> Path:
        """``analysis.model`` if set, else the bundled demo model."""
        return Path(self.settings.model) if self.settings.model else demo_model_path()


class KerasTilingWorker(KerasWorker):
    """Resample to the model's pixel size, normalise, and run all overlapping tiles as one batch.

    The original tiling worker: resample from ``pixel_size_nm`` (56) to
    ``model_pixel_size_nm`` (81) pixels (bilinear), blur channel 0 (sigma 1.5) and take a
    difference of Gaussians on the marker channel (sigma 1.5 - 7.5), stretch (mean-max /
    min-max), cut tiles of the model's input size (``tile_size``, default 128, for a
    dynamic-size model) overlapping by at least ``min_overlap`` (35) px
    (:func:`tile_positions`), and run them as one batch. Decision = maximum over all tiles;
    network image = the tiles stitched back (:func:`stitch_tiles`), at the resampled size.

    Options: ``pixel_size_nm``, ``model_pixel_size_nm``, ``tile_size``, ``min_overlap``,
    ``sigma``, ``background_sigma``, ``marker_channels``, ``inference``.
    """

    tiled: ClassVar[bool] = True
    reads_regions: ClassVar[bool] = False  # its tile grid is fixed from the spec's size

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.pixel_size_nm = _float_option(settings, "pixel_size_nm", 56.0, low=1e-9)
        self.model_pixel_size_nm = _float_option(settings, "model_pixel_size_nm", 81.0, 1e-9)
        self.sigma = _float_option(settings, "sigma", 1.5)
        self.background_sigma = _float_option(settings, "background_sigma", 7.5)
        self.markers = _markers(settings)
        tile = settings.option("tile_size", 128)
        overlap = settings.option("min_overlap", 35)
        for key, value in (("tile_size", tile), ("min_overlap", overlap)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"analysis.options.{key} must be an integer >= 0, got {value!r}")
        self.default_tile_size: int = tile
        self.min_overlap: int = overlap
        self._tiles: tuple[list[int], list[int]] | None = None
        self._image_shape: tuple[int, int] | None = None

    @property
    def factor(self) -> float:
        """Resampling factor ``pixel_size_nm / model_pixel_size_nm`` (56/81 by default)."""
        return self.pixel_size_nm / self.model_pixel_size_nm

    def tile_size(self, info: ModelInfo) -> tuple[int, int]:
        """The model's fixed input size, or ``(tile_size, tile_size)`` when it is dynamic."""
        return info.spatial_size or (self.default_tile_size, self.default_tile_size)

    def fed_image_shape(self, spec: StackSpec, info: ModelInfo) -> tuple[int, int]:
        """The resampled image the tiles are cut from."""
        return resampled_size(spec.height, spec.width, self.factor)

    def check_model(self, info: ModelInfo, spec: StackSpec) -> None:
        """Also refuse tiles larger than the resampled image, or an overlap as large as a tile."""
        super().check_model(info, spec)
        th, tw = self.tile_size(info)
        h, w = self.fed_image_shape(spec, info)
        if h < th or w < tw:
            if info.dynamic:
                fix = f"set analysis.options.tile_size to at most {min(h, w)}"
            else:
                need = (math.ceil(th / self.factor), math.ceil(tw / self.factor))
                fix = (f"the model's input is fixed: acquire a larger image "
                       f"({_size_advice(self.settings.source, spec, *need)})")
            raise ModelError(
                f"{self.name}: tiles of {th}x{tw} px do not fit the resampled {h}x{w} px image "
                f"(camera {spec.height}x{spec.width} at {self.pixel_size_nm:g} nm -> "
                f"{self.model_pixel_size_nm:g} nm, analysis.options.pixel_size_nm and "
                f"analysis.options.model_pixel_size_nm): {fix}"
            )
        for size in (th, tw):
            if self.min_overlap >= size:
                raise ConfigError(
                    f"analysis.options.min_overlap = {self.min_overlap} must be smaller than "
                    f"the tile size {size}"
                )

    def _grid(self, spec: StackSpec, info: ModelInfo) -> tuple[list[int], list[int]]:
        th, tw = self.tile_size(info)
        h, w = self.fed_image_shape(spec, info)
        return (tile_positions(h, th, self.min_overlap), tile_positions(w, tw, self.min_overlap))

    def model_input_shape(self, spec: StackSpec) -> tuple[int, ...]:
        """``(n_tiles, S, S, ...)``: every tile of one stack in one batch."""
        if self.info is None:
            raise RuntimeError("model_input_shape() called before setup()")
        ys, xs = self._grid(spec, self.info)
        th, tw = self.tile_size(self.info)
        return (len(ys) * len(xs), th, tw, *self.channel_axes(spec))

    def check_output(self, spec: StackSpec, info: ModelInfo) -> tuple[int, int] | None:
        """The resampled image's size; refuses a model whose output tile is not its input's."""
        tile_out = super().check_output(spec, info)
        if tile_out != self.tile_size(info):
            raise ModelError(
                f"{self.name} stitches output tiles, but the model maps a "
                f"{self.tile_size(info)} tile to an output of spatial size {tile_out} (a "
                f"forward pass of {self.model_input_shape(spec)} gave {self.output_shape}): "
                "it needs an output of the input's size"
            )
        self._tiles = self._grid(spec, info)
        self._image_shape = self.fed_image_shape(spec, info)
        log.info(
            "%s: %d x %d tiles of %s on a %s image", self.name, len(self._tiles[0]),
            len(self._tiles[1]), self.tile_size(info), self._image_shape,
        )
        return self._image_shape

    def preprocess_window(self, window: np.ndarray) -> np.ndarray:
        """Resample every frame, then normalise it (blur / difference of Gaussians, stretch)."""
        n_t, n_c, n_z, h, w = window.shape
        shape = resampled_size(h, w, self.factor)
        out = np.empty((n_t, n_c, n_z, *shape), np.float32)
        for t in range(n_t):
            for c in range(n_c):
                for z in range(n_z):
                    out[t, c, z] = normalise_frame(
                        resample(window[t, c, z], shape), c in self.markers, self.sigma,
                        self.background_sigma,
                    )
        return out

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        """All tiles of the preprocessed stack as one batch.

        Returns ``{'pixels': (n_tiles, S, S, ...), 'tiles': (ys, xs), 'image_shape': (H, W)}``
        with tiles in row-major order.
        """
        window = stack[np.newaxis] if stack.ndim == 4 else stack
        window = self.preprocess_window(self.select_channels(window).astype(np.float32))
        ndim = self.info.ndim if self.info is not None else 4
        item = to_model_layout(window, ndim)
        h, w = item.shape[:2]
        if self.info is not None and self._tiles is not None:
            ys, xs = self._tiles
            th, tw = self.tile_size(self.info)
        else:
            th = tw = self.default_tile_size
            ys = tile_positions(h, th, self.min_overlap)
            xs = tile_positions(w, tw, self.min_overlap)
        batch = np.empty((len(ys) * len(xs), th, tw, *item.shape[2:]), np.float32)
        i = 0
        for y in ys:
            for x in xs:
                batch[i] = item[y : y + th, x : x + tw]
                i += 1
        return {"pixels": batch, "tiles": (ys, xs), "image_shape": (h, w)}

    def post_process_output(self, output: np.ndarray, data: dict[str, Any]) -> np.ndarray | None:
        """The output tiles stitched back into one image at the resampled size."""
        ys, xs = data["tiles"]
        tiles = [network_image(item) for item in output]
        if any(t is None for t in tiles):
            return None
        return stitch_tiles(np.stack(cast(list[np.ndarray], tiles)), ys, xs, data["image_shape"])
