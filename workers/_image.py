"""Model-free workers: a statistic of the stack, so the whole loop runs without TensorFlow."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from rt_eda.shm import StackSpec

from ._base import Worker

__all__ = ["ImageWorker"]

_BLOCK = 8
_HALF_SNR = 22.0  # the signal-to-noise ratio that scores 0.5


@njit(cache=True, nogil=True)
def _block_means(frame: np.ndarray, block: int, skip_rows: int, out: np.ndarray) -> None:
    """``out[i, j]`` = mean of the ``block`` x ``block`` block (i, j), rows from skip_rows."""
    nby, nbx = out.shape
    acc = np.zeros(nbx * block, dtype=np.float32)
    scale = np.float32(1.0 / (block * block))
    for by in range(nby):
        acc[:] = 0.0
        y0 = skip_rows + by * block
        for y in range(y0, y0 + block):
            row = frame[y]
            for x in range(nbx * block):
                acc[x] += np.float32(row[x])
        for bx in range(nbx):
            s = np.float32(0.0)
            for x in range(bx * block, bx * block + block):
                s += acc[x]
            out[by, bx] = s * scale


class ImageWorker(Worker):
    """Brightest spot of the marker channel above its background, in units of its noise (0..1).

    No model. The marker channel (the last channel, or the first of
    ``analysis.channels_to_use``) is smoothed into 8x8 block means; when the stack has another
    channel (the structure channel; the second of ``channels_to_use`` if given), its
    bleed-through into the marker channel is estimated per frame by least squares and
    subtracted. The signal-to-noise ratio of the brightest block,
    ``snr = (peak - median) / (1.4826 * MAD)``, is mapped to ``snr / (snr + 22)``: about 0.15
    for noise alone, 0.5 at ``snr`` 22, towards 1 for a bright focus; so the default
    thresholds (0.3 / 0.48) fit it. Maximum over z-slices; with a time window, the newest
    stack. The top 8 rows are left out (they carry the ``--verify`` stamps).
    """

    def setup(self, spec: StackSpec) -> None:
        super().setup(spec)
        chosen = self.settings.channels_to_use
        self._marker = chosen[0] if chosen else spec.channels - 1
        if len(chosen) > 1:
            self._structure: int | None = chosen[1]
        elif spec.channels > 1:
            self._structure = 0 if self._marker != 0 else 1
        else:
            self._structure = None
        self._skip = _BLOCK if spec.height >= 3 * _BLOCK else 0
        nby = (spec.height - self._skip) // _BLOCK
        nbx = spec.width // _BLOCK
        if nby < 2 or nbx < 2:
            from rt_eda.core.errors import ConfigError

            raise ConfigError(
                f"ImageWorker needs frames of at least {3 * _BLOCK}x{2 * _BLOCK} pixels, "
                f"got {spec.height}x{spec.width}"
            )
        self._m = np.empty((nby, nbx), dtype=np.float32)
        self._s = np.empty((nby, nbx), dtype=np.float32)

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        if stack.ndim == 5:
            stack = stack[-1]
        return {"pixels": stack}

    def run_model(self, data: dict[str, Any]) -> np.ndarray:
        stack: np.ndarray = data["pixels"]
        values = np.empty(stack.shape[1], dtype=np.float64)
        for z in range(stack.shape[1]):
            values[z] = self._snr(stack, z)
        return values

    def _snr(self, stack: np.ndarray, z: int) -> float:
        m = self._m
        _block_means(stack[self._marker, z], _BLOCK, self._skip, m)
        if self._structure is not None:
            s = self._s
            _block_means(stack[self._structure, z], _BLOCK, self._skip, s)
            ds = s - s.mean()
            var = float(np.dot(ds.ravel(), ds.ravel()))
            if var > 0:
                k = float(np.dot(ds.ravel(), (m - m.mean()).ravel())) / var
                m = m - np.float32(k) * s
        med = float(np.median(m))
        mad = float(np.median(np.abs(m - med))) * 1.4826
        peak = float(m.max())
        if mad <= 0:
            return 0.0 if peak <= med else float("inf")
        return (peak - med) / mad

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        snr = max(0.0, float(output.max()))
        if snr == float("inf"):
            return 1.0
        return snr / (snr + _HALF_SNR)
