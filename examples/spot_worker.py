"""A model-free worker: the brightest spot of the marker channel, scored against its noise.

Run it (from the checkout; any folder on ``PYTHONPATH`` works the same)::

    PYTHONPATH=examples rt-eda run --set "analysis.worker_modules=['spot_worker']" \\
        --worker SpotWorker --duration 30

    PYTHONPATH=examples rt-eda workers --module spot_worker     # lists it

Every hook a worker has is here, in the order the worker process calls them (see
``docs/workers.md``). The analysis: the marker channel (the last acquisition channel, or the
last of ``analysis.channels_to_use``), maximum-projected over z, is averaged in ``block`` x
``block`` pixel blocks; each block's robust z-score against the frame's own background,
``(block - median) / (1.4826 * MAD)``, is mapped to ``score / (score + half_score)`` in 0..1.
The decision is the largest of them; the network image is the whole score map, one pixel per
block. On the synthetic source, frames without an event score below the binary
interpreter's lower threshold 0.3 to about 0.4, events above its upper threshold 0.48 from an
intensity of about 0.2.

Options (``[analysis.options]``, or ``--set analysis.options.block=16``):

block
    Block size in pixels (default 8): larger blocks see fainter, larger spots.
half_score
    The z-score that maps to 0.5 (default 30).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rt_eda.workers import ConfigError, StackSpec, Worker, WorkerSettings

__all__ = ["SpotWorker"]


def _positive(settings: WorkerSettings, key: str, default: float) -> float:
    """Option ``key`` as a number > 0; refused naming the key (exit 2, nothing started)."""
    value = settings.option(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"analysis.options.{key} must be a number > 0, got {value!r}")
    return float(value)


class SpotWorker(Worker):
    """Brightest marker spot above the frame's background, in noise units, mapped to 0..1."""

    # Constructed once per worker process, and once in the engine process for check().
    # Read and check the options here: a bad value is refused before anything starts.
    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.block = int(_positive(settings, "block", 8))
        self.half_score = _positive(settings, "half_score", 30.0)
        self._image_shape: tuple[int, int] | None = None

    def check(self, spec: StackSpec) -> None:
        """Engine process, before anything starts: refuse frames too small for two blocks."""
        super().check(spec)  # analysis.channels_to_use against the acquisition's channels
        if spec.height < 2 * self.block or spec.width < 2 * self.block:
            raise ConfigError(
                f"SpotWorker needs frames of at least {2 * self.block} x {2 * self.block} "
                f"pixels (2 blocks of analysis.options.block = {self.block}), got "
                f"{spec.height} x {spec.width}"
            )

    def setup(self, spec: StackSpec) -> None:
        """Worker process, once: what every stack of ``spec`` needs (nothing to load here)."""
        super().setup(spec)  # runs check(spec) and keeps self.spec
        self._image_shape = (spec.height // self.block, spec.width // self.block)

    def network_image_shape(self) -> tuple[int, int] | None:
        """One pixel per block: the engine sizes the network-image ring from this."""
        return self._image_shape

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        """The newest stack's marker channel, maximum over z, as a new float32 image.

        ``stack`` is ``(C, Z, H, W)``, or ``(T, C, Z, H, W)`` with ``analysis.n_timepoints``
        > 1, and is a view on shared memory valid only during this analysis: ``np.max``
        makes a new array, so nothing here refers to the ring afterwards.
        """
        if stack.ndim == 5:
            stack = stack[-1]  # the newest stack of the window
        marker = self.select_channels(stack)[-1]  # (Z, H, W)
        return {"pixels": np.max(marker, axis=0).astype(np.float32)}

    def run_model(self, data: dict[str, Any]) -> np.ndarray:
        """The score map: block means as robust z-scores, mapped to 0..1."""
        image: np.ndarray = data["pixels"]
        b = self.block
        rows, cols = image.shape[0] // b, image.shape[1] // b
        blocks = image[: rows * b, : cols * b].reshape(rows, b, cols, b).mean(axis=(1, 3))
        median = float(np.median(blocks))
        noise = 1.4826 * float(np.median(np.abs(blocks - median)))
        score = np.maximum(blocks - median, 0.0) / max(noise, 1e-6)  # a flat frame: zeros
        result: np.ndarray = (score / (score + self.half_score)).astype(np.float32)
        return result

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        """The interpreter's number: the best-scoring block."""
        return float(output.max())

    def post_process_output(self, output: np.ndarray, data: dict[str, Any]) -> np.ndarray | None:
        """The score map itself: ``(H // block, W // block)`` float32, as declared."""
        return output
