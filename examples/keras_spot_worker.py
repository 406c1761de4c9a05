"""A Keras worker on a model of your own: a one-layer spot detector, built here, no training.

Build the model file, then run it (from the checkout; any folder on ``PYTHONPATH`` works the
same)::

    python examples/keras_spot_worker.py spot.keras
    PYTHONPATH=examples rt-eda run --set "analysis.worker_modules=['keras_spot_worker']" \\
        --worker KerasSpotWorker --model spot.keras --set "analysis.channels_to_use=[1]" \\
        --duration 30

The model (:func:`build_model`) takes one channel, ``(None, None, 1)``, so
``analysis.channels_to_use = [1]`` feeds it the synthetic source's marker channel; without
it rt-eda refuses the run before anything starts, naming the model's 1 channel and the
acquisition's 2. Its single 15 x 15 convolution holds a difference of box filters, set by
hand (the mean of the central 5 x 5 pixels minus the mean of all 15 x 15) and a sigmoid:
``sigmoid(dob - 7)``, so a spot standing 7 noise units above its surroundings scores 0.5.
Built from constants, its weights are the same on every machine and every build.

:class:`KerasSpotWorker` shows the hooks of a Keras worker: ``prepare_images`` normalises
each frame by its own noise and lays the stack out as the model expects
(``to_model_layout``: channels last, one batch item); ``run_model`` is inherited (the
compiled call of the model by default, or the backend ``analysis.options.inference`` names,
``"predict_on_batch"`` among them); the decision is the output's maximum
and the network image the output map. On the synthetic source, frames without an event
score about 0.05, events above the binary interpreter's upper threshold 0.48 from an
intensity of about 0.2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.workers import KerasWorker, network_image, to_model_layout

__all__ = ["KerasSpotWorker", "build_model"]

log = logging.getLogger(__name__)

CENTRE = 5
SURROUND = 15
OFFSET = 7.0


def build_model(path: str | Path) -> Path:
    """Write the spot detector to ``path`` (``.keras``) and return the path.

    Imports Keras (and TensorFlow): call it from a script, never at a worker module's top
    level, which the engine imports to find the workers.
    """
    import keras

    kernel = np.full((SURROUND, SURROUND), -1.0 / SURROUND**2, np.float32)
    lo = (SURROUND - CENTRE) // 2
    kernel[lo : lo + CENTRE, lo : lo + CENTRE] += 1.0 / CENTRE**2
    conv = keras.layers.Conv2D(1, SURROUND, padding="same", activation="sigmoid",
                               name="difference_of_boxes")
    model = keras.Sequential([keras.Input((None, None, 1)), conv], name="spot_detector")
    conv.set_weights([kernel[:, :, np.newaxis, np.newaxis], np.array([-OFFSET], np.float32)])
    out = Path(path)
    model.save(out)
    return out


class KerasSpotWorker(KerasWorker):
    """Each frame in units of its own noise, then the model; decision = its maximum."""

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        """Selected channels, each frame as robust z-scores, laid out for the model.

        ``stack`` is ``(C, Z, H, W)`` (or ``(T, C, Z, H, W)``), a view on shared memory valid
        only during this analysis: every array built here is new. Returns ``{'pixels':
        (1, H, W, channels)}`` for a 4-D model; ``post_process_output`` gets the same dict.
        """
        window = self.select_channels(stack).astype(np.float32)  # a copy: ours to change
        if window.ndim == 4:
            window = window[np.newaxis]  # (T, C, Z, H, W) with T = 1
        for index in np.ndindex(window.shape[:3]):
            frame = window[index]  # (H, W), a view into our copy: changed in place
            sample = frame[::4, ::4]  # the statistics of every 16th pixel are plenty
            median = float(np.median(sample))
            noise = 1.4826 * float(np.median(np.abs(sample - median)))
            frame -= median
            frame /= max(noise, 1e-6)  # a flat frame (the warm-up's zeros) stays zero
        ndim = self.info.ndim if self.info is not None else 4
        return {"pixels": to_model_layout(window, ndim)[np.newaxis]}

    # run_model is KerasWorker's: the model on data["pixels"], one batch.

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        """The highest spot score anywhere in the frame."""
        return float(np.max(output))

    def post_process_output(self, output: np.ndarray, data: dict[str, Any]) -> np.ndarray | None:
        """The output map of the batch's one item, ``(H, W)`` float32."""
        return network_image(output[0])


def main(argv: list[str]) -> int:
    """``python keras_spot_worker.py OUT.keras``: build the model file."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) != 1 or not argv[0].endswith(".keras"):
        log.error("usage: python keras_spot_worker.py OUT.keras")
        return 2
    log.info("wrote %s", build_model(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
