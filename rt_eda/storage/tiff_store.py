"""The TIFF store: stacks appended to one contiguous, uncompressed BigTIFF (``images.ome.tif``).

``tifffile.TiffWriter`` in contiguous mode: every stack's bytes are appended to one series,
the IFDs of the pages after the first and the OME-XML (with every plane's ``DeltaT``) are
written at :meth:`TiffStack.finish`. A TIFF whose writer died shows tifffile one page; its
stacks are still found, contiguous from the first page's data
(:func:`rt_eda.core.imagefiles.contiguous_stacks`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = ["TiffStack"]

_TIFF_PLACEHOLDER: Final = "rt-eda recording in progress (OME-XML is written at close)"


class TiffStack:
    """Stacks appended to one contiguous, uncompressed BigTIFF series (OME-XML at close)."""

    def __init__(self, path: Path, spec_shape: tuple[int, int, int, int],
                 dtype: np.dtype[Any]) -> None:
        import tifffile

        self.path = path
        self.shape = spec_shape
        self.dtype = dtype
        self.length = 0
        self.frame_times: list[np.ndarray] = []
        with path.open("xb"):
            pass  # exclusive create: never overwrite
        self._tw = tifffile.TiffWriter(path, bigtiff=True, ome=False)
        self._closed = False

    def append(self, data: np.ndarray, frame_times: np.ndarray) -> int:
        """Append one stack (C, Z, Y, X) and keep its frame times for the OME-XML; bytes
        written. Raises OSError (a full disk: then call :meth:`abandon`)."""
        self._tw.write(data, contiguous=True, photometric="minisblack", metadata=None,
                       description=_TIFF_PLACEHOLDER)
        self._tw.filehandle.flush()  # no tail left in a Python buffer: the rows follow
        self.frame_times.append(np.array(frame_times, dtype=np.float64))
        self.length += 1
        return int(data.nbytes)

    def finish(self) -> None:
        """Write the remaining IFDs and the OME-XML (with every plane's DeltaT), close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.length:
                self._tw.overwrite_description(self._omexml())
        finally:
            self._tw.close()

    def abandon(self) -> None:
        """Close the file handle without writing anything more (after a failed write)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._tw.filehandle.close()

    def _omexml(self) -> str:
        import tifffile

        c, z, y, x = self.shape
        times = np.stack(self.frame_times) if self.frame_times else np.zeros((0, c * z))
        t0 = float(times.min()) if times.size else 0.0
        ome = tifffile.OmeXml()
        ome.addimage(
            dtype=self.dtype, shape=(self.length, c, z, y, x),
            storedshape=(self.length * c * z, 1, 1, y, x, 1), axes="TCZYX",
            Plane={"DeltaT": [float(v) for v in (times - t0).reshape(-1)],
                   "DeltaTUnit": ["s"] * times.size},
        )
        return str(ome.tostring(declaration=True))
