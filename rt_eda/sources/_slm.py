"""A stimulation device for event-driven actuation: a spatial light modulator (a DMD) that
shows a mask of the sensor, driven through pymmcore-plus's device layer.

* :class:`VirtualDMD`: a pure-Python SLM (a pymmcore-plus
  ``experimental.unicore.SLMDevice``), 8-bit, the shape of the camera's sensor. The
  mm-test-adapters hold no SLM, so this stands in for one in tests, demos and benchmarks;
  it keeps the image last loaded (``setSLMImage``), the image last displayed
  (``displaySLMImage``), when that was (``time.monotonic()``) and how many displays there
  were. It is loaded into a ``UniMMCore`` (``loadPyDevice``), the same core as the camera
  when the Micro-Manager source was made with ``python_devices=True``
  (:meth:`~rt_eda.sources.micromanager.MicroManagerSource.slm_core`), so it is driven
  exactly as a real SLM of that core would be.
* :func:`open_slm`: an :class:`SLM` handle over an SLM of a core: a real one already loaded
  (``device=``), else a new :class:`VirtualDMD` (in the given core, or in a core of its own).
* :class:`SLM`: :meth:`~SLM.show` a boolean mask (``setSLMImage`` + ``displaySLMImage``:
  on pixels 255, off 0), :meth:`~SLM.shown` reads the device's image back through the core
  (``getSLMImage``; None for a C++ SLM, which cannot report it), :meth:`~SLM.close`.

Who calls it: the camera role's thread, between timepoints (the core is that thread's). Not
thread-safe. Mapping camera pixels to SLM pixels (a calibration) is not done here: the SLM
must have the sensor's shape.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

import numpy as np
from pymmcore_plus import DeviceType
from pymmcore_plus.experimental.unicore import SLMDevice, UniMMCore

from rt_eda.core.errors import SourceError

from ._mm_device import call

if TYPE_CHECKING:
    from types import TracebackType

    from numpy.typing import DTypeLike
    from pymmcore_plus import CMMCorePlus

__all__ = ["SLM", "VirtualDMD", "open_slm"]

log = logging.getLogger(__name__)

ON: Final = 255
"""The 8-bit value of an on pixel (a DMD mirror tilted towards the sample)."""


class VirtualDMD(SLMDevice):
    """A pure-Python 8-bit SLM of ``shape`` ``(height, width)`` pixels, all off at first.

    Python-side state (read it through the core where a real device would be read:
    ``core.getSLMImage(label)``): :attr:`displayed`, :attr:`displays`,
    :attr:`last_display_t`, :attr:`display_times`. Not thread-safe beyond what the core
    gives (it locks the device around each call).
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        height, width = (int(n) for n in shape)
        if height < 1 or width < 1:
            raise ValueError(f"a DMD needs at least 1 x 1 pixels, got {height} x {width}")
        self._shape = (height, width)
        self._loaded = np.zeros(self._shape, np.uint8)
        self._displayed = np.zeros(self._shape, np.uint8)
        self._exposure_ms = 0.0
        self.displays = 0
        """Calls of ``displaySLMImage`` so far."""
        self.last_display_t: float | None = None
        """``time.monotonic()`` of the last display (None before the first)."""
        self.display_times: list[float] = []
        """``time.monotonic()`` of every display, in order."""

    @property
    def displayed(self) -> np.ndarray:
        """A copy of the image on the mirrors now (the last one displayed)."""
        return self._displayed.copy()

    def shape(self) -> tuple[int, ...]:
        """``(height, width)``: numpy's order, which pymmcore-plus checks images against."""
        return self._shape

    def dtype(self) -> DTypeLike:
        """8-bit."""
        return np.uint8

    def set_image(self, pixels: np.ndarray) -> None:
        """Load ``pixels`` (the core checked shape and dtype); not displayed yet."""
        np.copyto(self._loaded, pixels)

    def get_image(self) -> np.ndarray:
        """A copy of the image loaded last (the one displayed, after a display)."""
        return self._loaded.copy()

    def display_image(self) -> None:
        """Show the loaded image: record it, the time and the count."""
        np.copyto(self._displayed, self._loaded)
        t = time.monotonic()
        self.last_display_t = t
        self.display_times.append(t)
        self.displays += 1

    def set_exposure(self, interval_ms: float) -> None:
        """Kept and reported; a virtual device never turns itself off."""
        self._exposure_ms = float(interval_ms)

    def get_exposure(self) -> float:
        """The exposure last set (ms; 0 at first)."""
        return self._exposure_ms


class SLM:
    """A handle over one SLM of a pymmcore-plus core (made by :func:`open_slm`).

    Parameters
    ----------
    core
        The core holding the SLM.
    label
        The SLM's device label in ``core``.
    owns_device
        :meth:`close` unloads the device (it was loaded by :func:`open_slm`).
    owns_core
        :meth:`close` unloads every device of ``core`` (a core of its own).
    dmd
        The :class:`VirtualDMD` loaded under ``label``, if that is what it is.
    """

    def __init__(self, core: CMMCorePlus, label: str, *, owns_device: bool,
                 owns_core: bool, dmd: VirtualDMD | None = None) -> None:
        self._core: CMMCorePlus | None = core
        self._label = label
        self._dmd = dmd
        self._owns_device = owns_device
        self._owns_core = owns_core
        self._shape = (int(core.getSLMHeight(label)), int(core.getSLMWidth(label)))
        self._shows = 0
        self._show_s = 0.0

    @property
    def label(self) -> str:
        """The device label in the core."""
        return self._label

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the SLM (the sensor's)."""
        return self._shape

    @property
    def core(self) -> CMMCorePlus:
        """The core holding the SLM.

        Raises
        ------
        SourceError
            The handle was closed.
        """
        if self._core is None:
            raise SourceError(f"SLM {self._label!r}: closed")
        return self._core

    @property
    def device(self) -> VirtualDMD | None:
        """The :class:`VirtualDMD` when :func:`open_slm` loaded one (for inspection), else
        None."""
        return self._dmd

    def show(self, mask: np.ndarray) -> float:
        """Display ``mask`` (boolean ``(height, width)``; on pixels 255, off 0): load it
        (``setSLMImage``) and display it (``displaySLMImage``) through the core.

        Returns
        -------
        float
            ``time.monotonic()`` when the display call returned (the pattern is on the
            device from then on, as far as the device reports).

        Raises
        ------
        SourceError
            Closed; ``mask`` is not 2-D of the SLM's shape; the device failed (its
            message kept).
        """
        core = self.core
        m = np.asarray(mask)
        if m.shape != self._shape:
            raise SourceError(f"SLM {self._label!r}: mask of shape {m.shape}, the SLM is "
                              f"{self._shape[0]} x {self._shape[1]} (height x width)")
        pixels = np.where(m.astype(bool, copy=False), np.uint8(ON), np.uint8(0))
        t0 = time.perf_counter()
        call(f"loading an image into SLM {self._label!r}", core.setSLMImage, self._label,
             pixels)
        call(f"displaying the image of SLM {self._label!r}", core.displaySLMImage,
             self._label)
        t = time.monotonic()
        self._show_s += time.perf_counter() - t0
        self._shows += 1
        return t

    def shown(self) -> np.ndarray | None:
        """The mask the device holds now, read back through the core (``getSLMImage``):
        boolean ``(height, width)``, True where a pixel is on. None when the device cannot
        report its image (a C++ SLM).

        Raises
        ------
        SourceError
            Closed, or reading failed.
        """
        core = self.core
        if not (isinstance(core, UniMMCore) and core.isPyDevice(self._label)):
            return None
        image = call(f"reading the image of SLM {self._label!r}", core.getSLMImage,
                     self._label)
        return np.asarray(image) > 0

    def statistics(self) -> dict[str, float]:
        """``shows`` (calls of :meth:`show`) and ``show_ms_mean`` (their mean time)."""
        return {"shows": self._shows,
                "show_ms_mean": 1e3 * self._show_s / self._shows if self._shows else 0.0}

    def close(self) -> None:
        """Release what :func:`open_slm` loaded: the device (when it loaded it), the whole
        core (when it made it). A real SLM given by label stays loaded. Safe to call twice;
        a failure to unload is logged, not raised.
        """
        core, self._core = self._core, None
        if core is None:
            return
        try:
            if self._owns_core:
                core.unloadAllDevices()
            elif self._owns_device:
                core.unloadDevice(self._label)
        except RuntimeError as exc:
            log.warning("SLM %r: unloading failed: %s", self._label, exc)

    def __enter__(self) -> SLM:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_slm(shape: tuple[int, int], core: CMMCorePlus | None = None,
             label: str = "rt-eda DMD", device: str = "") -> SLM:
    """An :class:`SLM` of ``shape`` ``(height, width)`` (the camera sensor's).

    Parameters
    ----------
    shape
        The sensor's ``(height, width)``; the SLM must have it (no calibration here).
    core
        The core to use: the camera's (``MicroManagerSource.slm_core()``) so camera and
        SLM share it, or None for a new ``UniMMCore`` of the SLM's own.
    label
        The label to load a :class:`VirtualDMD` under.
    device
        The label of an SLM already loaded in ``core`` (a real one) to use instead of
        loading a :class:`VirtualDMD`; ``""``: load one.

    Raises
    ------
    SourceError
        ``device`` is given without a core, is not loaded in it or is not an SLM (the
        loaded SLMs named), or its shape is not ``shape``; a :class:`VirtualDMD` is asked of
        a core that is not a ``UniMMCore`` or whose ``label`` is taken; Micro-Manager
        failed (its message kept).
    """
    height, width = (int(n) for n in shape)
    if device:
        if core is None:
            raise SourceError(f"SLM {device!r}: a loaded SLM needs the core holding it")
        slms = [str(d) for d in core.getLoadedDevicesOfType(DeviceType.SLM)]
        if device not in slms:
            raise SourceError(f"SLM {device!r} is not an SLM loaded in the core "
                              f"(SLMs: {slms})")
        slm = SLM(core, device, owns_device=False, owns_core=False)
        if slm.shape != (height, width):
            raise SourceError(
                f"SLM {device!r} is {slm.shape[0]} x {slm.shape[1]} px, the sensor "
                f"{height} x {width} (height x width): mapping between them is not supported")
        return slm
    owns_core = core is None
    if core is None:
        core = UniMMCore()
    elif not isinstance(core, UniMMCore):
        raise SourceError(
            f"SLM {label!r}: a virtual DMD is a Python device, which needs a UniMMCore, not "
            f"a {type(core).__name__} (MicroManagerSettings(..., python_devices=True))")
    if label in core.getLoadedDevices():
        raise SourceError(f"SLM {label!r}: the label is taken in the core "
                          f"(devices: {list(core.getLoadedDevices())[:12]})")
    dmd = VirtualDMD((height, width))
    core.loadPyDevice(label, dmd)
    try:
        call(f"initializing SLM {label!r}", core.initializeDevice, label)
        if not core.getSLMDevice():  # the core's current SLM, for anyone else driving it
            core.setSLMDevice(label)
        slm = SLM(core, label, owns_device=True, owns_core=owns_core, dmd=dmd)
    except BaseException:
        if owns_core:
            core.unloadAllDevices()
        else:
            core.unloadDevice(label)
        raise
    log.debug("SLM %r: virtual DMD %d x %d loaded (%s core)", label, height, width,
              "own" if owns_core else "shared")
    return slm
