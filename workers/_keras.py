"""The Keras worker: a model file, its fit check, and fast inference on one batch.

Importing this module imports neither TensorFlow nor Keras: they are imported by
:func:`configure_threads` and :meth:`KerasWorker.setup`, in the worker process.

Thread configuration
--------------------
TensorFlow fixes its thread pools when its runtime initialises (the first op), so
:func:`configure_threads` must run in the worker process before anything touches TensorFlow;
the worker process loop (:mod:`rt_eda.roles.worker`) calls it first thing, with
``analysis.threads_per_worker``, before it constructs the worker.

Inference
---------
The model runs through one backend (:mod:`rt_eda.workers._backends`, option ``inference``):
a ``tf.function`` wrapping ``model(x, training=False)`` (``"call"``, the reference),
``model.predict_on_batch``, XLA, ONNX Runtime, OpenVINO, or ``"auto"`` (the fastest that
matches the call, timed at set-up); never ``model.predict``, whose per-call overhead (a data
adapter, callbacks, a progress bar) costs tens of milliseconds. The call is the default: it
was never slower than ``predict_on_batch`` here (demo_v1 at 512x512: 55.6 vs 56.1 ms), and the
other backends win or lose by model (BENCHMARKS.md, "Inference backends").

Stacks smaller than the acquisition's frame
-------------------------------------------
A stack read from a region of the sensor (a camera ROI) reaches the worker as only its valid
pixels, smaller than the spec's ``(H, W)`` the inference call was built and traced for.
:meth:`KerasWorker.prepare_images` preprocesses those pixels, then pads them (edge mode) to
:meth:`~KerasWorker.fed_image_shape`, so the model always runs on the shape it was checked
and warmed up with; :meth:`KerasWorker.run_model` crops the output back to the part made of
valid pixels (``data[VALID_SHAPE_KEY]``) before anything reads it, so the decision, the
network image and the event locations come from valid pixels only.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rt_eda.core.errors import ConfigError, ModelError
from rt_eda.shm import StackSpec

from ._backends import (
    BACKENDS,
    INFERENCE_MODES,
    PRECISIONS,
    InferencePlan,
    build_backend,
    select_backend,
)
from ._base import Analysis, Worker, WorkerSettings, exception_line
from ._device import DevicePlan, configure_device
from ._fit import check_fit
from ._models import (
    ModelInfo,
    _fmt,
    inspect_loaded,
    inspect_model,
    load_model,
)

if TYPE_CHECKING:
    import keras

__all__ = [
    "DEFAULT_INFERENCE",
    "INFERENCE_MODES",
    "VALID_SHAPE_KEY",
    "KerasWorker",
    "configure_threads",
    "to_model_layout",
]

log = logging.getLogger(__name__)

#: Measured faster here (see the module docstring); overridable per worker with the
#: ``inference`` option.
DEFAULT_INFERENCE = "call"

VALID_SHAPE_KEY = "valid_shape"
"""The key of ``(height, width)`` of the valid part of ``data['pixels']`` (top-left) when
:meth:`KerasWorker.prepare_images` padded a stack smaller than the acquisition's frame; absent
for a stack of the full size."""


def configure_threads(n: int, *, tensorflow: bool = True) -> None:
    """Give this process ``n`` compute threads: TF intra-op ``n``, inter-op 1, OpenMP and numba.

    Must be the first thing the worker process does (the worker process loop calls it before
    it constructs the worker): TensorFlow's thread pools are fixed once its runtime has
    initialised, and OpenMP reads ``OMP_NUM_THREADS`` when it starts.

    Parameters
    ----------
    n
        ``analysis.threads_per_worker`` (>= 1).
    tensorflow
        Also configure TensorFlow (imports it). ``False`` for a model-free worker, which then
        never pays for the TensorFlow import.

    Raises
    ------
    ConfigError
        ``n`` < 1.
    RuntimeError
        TensorFlow had already initialised with other thread counts in this process (the call
        came too late); the message names the counts in force.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"analysis.threads_per_worker must be an integer >= 1, got {n!r}")
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[key] = str(n)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    if "numba" in sys.modules:
        import numba

        most = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        numba.set_num_threads(min(n, most))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    if not tensorflow:
        return
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        intra = threading.get_intra_op_parallelism_threads()
        inter = threading.get_inter_op_parallelism_threads()
        if (intra, inter) != (n, 1):
            raise RuntimeError(
                f"configure_threads({n}) came after TensorFlow initialised in this process "
                f"(intra-op {intra}, inter-op {inter} threads; 0 = TensorFlow's default): call "
                "it first thing in the worker process"
            ) from None
    log.debug("threads: TF intra-op %d, inter-op 1, OpenMP/numba %d", n, n)


def to_model_layout(window: np.ndarray, ndim: int) -> np.ndarray:
    """Lay a window ``(T, C, Z, H, W)`` out as one model input item, channels last.

    Parameters
    ----------
    window
        ``T`` timepoints (oldest first) of ``C`` channels x ``Z`` slices of ``H x W`` images.
    ndim
        The model input's rank with the batch axis: 4 or 5.

    Returns
    -------
    numpy.ndarray
        ``ndim == 4``: ``(H, W, T*C)``, index ``t*C + c`` (``Z`` must be 1).
        ``ndim == 5``: ``(H, W, C, T*Z)``, index ``t*Z + z``.
        A new C-contiguous array (never a view on ``window``), without the batch axis.
    """
    t, c, z, h, w = window.shape
    if ndim == 4:
        if z != 1:
            raise ModelError(f"a 4-D model takes one z-slice, the window has {z} (shape "
                             f"{window.shape})")
        return np.ascontiguousarray(window[:, :, 0].transpose(2, 3, 0, 1).reshape(h, w, t * c))
    if ndim == 5:
        return np.ascontiguousarray(window.transpose(3, 4, 1, 0, 2).reshape(h, w, c, t * z))
    raise ModelError(f"model inputs of rank {ndim} are not supported (4 or 5)")


def _as_window(stack: np.ndarray) -> np.ndarray:
    """A stack ``(C, Z, H, W)`` or window ``(T, C, Z, H, W)`` as a window."""
    if stack.ndim == 4:
        return stack[np.newaxis]
    if stack.ndim == 5:
        return stack
    raise ValueError(f"expected a stack (C, Z, H, W) or window (T, C, Z, H, W), got {stack.shape}")


def _inference_options(settings: WorkerSettings) -> tuple[str, str, float | None, str]:
    """``inference``, ``precision``, ``tolerance`` and ``calibration`` options, checked.

    Raises
    ------
    ConfigError
        A value out of range, or a reduced precision with a backend that cannot run it.
    """
    mode = str(settings.option("inference", DEFAULT_INFERENCE))
    if mode not in INFERENCE_MODES:
        raise ConfigError(
            f"analysis.options.inference = {mode!r} is not one of {list(INFERENCE_MODES)}"
        )
    precision = str(settings.option("precision", "float32"))
    if precision not in PRECISIONS:
        raise ConfigError(
            f"analysis.options.precision = {precision!r} is not one of {list(PRECISIONS)}"
        )
    if precision != "float32" and mode in ("call", "predict_on_batch", "xla"):
        raise ConfigError(
            f"analysis.options.precision = {precision!r} needs analysis.options.inference "
            f"'onnx', 'openvino' or 'auto', not {mode!r}"
        )
    tolerance = settings.option("tolerance", None)
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(
            tolerance, int | float) or not 0 <= tolerance < math.inf):
        raise ConfigError(
            f"analysis.options.tolerance must be a number >= 0 (the largest absolute "
            f"difference from the reference call), got {tolerance!r}"
        )
    if settings.device != "cpu" and mode in ("onnx", "openvino"):
        raise ConfigError(
            f"analysis.options.inference = {mode!r} runs on the CPU, but analysis.device = "
            f"{settings.device!r}: use 'call', 'xla' or 'auto' on a GPU"
        )
    calibration = settings.option("calibration", "")
    if not isinstance(calibration, str):
        raise ConfigError(
            "analysis.options.calibration must be the path of a recording (a run folder, an "
            f"OME-Zarr or a TIFF), got {calibration!r}"
        )
    if calibration and not Path(calibration).exists():
        raise ConfigError(
            f"analysis.options.calibration = {calibration!r} does not exist (a run folder, an "
            "OME-Zarr or a TIFF of this acquisition)"
        )
    return mode, precision, None if tolerance is None else float(tolerance), calibration


class KerasWorker(Worker):
    """Keras model on the raw selected channels (float32); decision = maximum of the output.

    The base of every Keras worker. It feeds the selected channels (``channels_to_use``) of a
    stack or time window unchanged but for the cast to float32, laid out as the model expects
    (:func:`to_model_layout`), one item per batch. Subclasses override :meth:`prepare_images`
    (preprocessing, tiling) and :meth:`post_process_output`.

    Hooks a subclass may override, besides :class:`~rt_eda.workers.Worker`'s (the built-in
    Keras workers use only these; see ``docs/workers.md``):

    - :meth:`model_path` -- the model file (default ``analysis.model``);
    - :meth:`fed_image_shape` -- ``(height, width)`` fed to the network (after cropping,
      resampling);
    - :meth:`check_model` -- refuse a model that does not fit (engine process and setup);
    - :meth:`check_output` -- the network image shape from one real forward pass;
    - :meth:`model_input_shape` -- the shape of ``data['pixels']`` (a tiling worker's batch);
    - :meth:`preprocess_window` -- per-frame preprocessing of a float32 window.

    Options (``[analysis.options]``)
    --------------------------------
    inference
        ``"call"`` (the default: a compiled ``tf.function`` of ``model(x, training=False)``),
        ``"predict_on_batch"``, ``"xla"``, ``"onnx"``, ``"openvino"`` or ``"auto"`` (see
        :mod:`rt_eda.workers._backends`). Every backend but the call is checked against the
        call at set-up; a mismatch refuses it (exit 2 through the probe).
    precision
        ``"float32"`` (default), ``"int8"`` or ``"bfloat16"`` (with ``onnx``, ``openvino`` or
        ``auto``; bfloat16 only on a CPU that computes it natively).
    calibration
        A recording of this acquisition (run folder, OME-Zarr, TIFF): int8's calibration
        stacks (and more inputs every backend is checked on).
    tolerance
        Largest absolute difference from the call a backend may show (default 1e-3; 0.05 for
        a reduced precision).

    Lifecycle: :meth:`check` (engine process, no TensorFlow), :meth:`setup` (worker process:
    loads the model once, checks it again with its real output shape), :meth:`warm_up` (one
    forward pass of the real input shape, so TensorFlow traces and allocates before the first
    real stack). Not thread-safe: one instance per worker process.
    """

    needs_model: ClassVar[bool] = True
    #: Probed before anything starts, the bundled demo model's worker included.
    probe_before_start: ClassVar[bool | None] = True
    #: The worker cuts tiles of the model's fixed size (the image need only be large enough).
    tiled: ClassVar[bool] = False

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__(settings)
        self.model: keras.Model | None = None
        self.info: ModelInfo | None = None
        self._infer: Callable[[np.ndarray], np.ndarray] | None = None
        self._network_shape: tuple[int, int] | None = None
        #: The model output's shape for one stack, from a real forward pass (after setup).
        self.output_shape: tuple[int, ...] | None = None
        self.inference, self.precision, self.tolerance, self.calibration = _inference_options(
            settings)
        #: What the set-up chose, checked and timed (None before setup).
        self.inference_plan: InferencePlan | None = None
        #: Where the model runs (None before setup).
        self.device_plan: DevicePlan | None = None

    # -- what the model is fed -----------------------------------------------------------------
    def model_path(self) -> Path:
        """The model file: ``analysis.model``.

        Raises
        ------
        ModelError
            No model is set.
        """
        if not self.settings.model:
            raise ModelError(f"worker {self.name} needs a model file: set analysis.model")
        return Path(self.settings.model)

    def fed_image_shape(self, spec: StackSpec, info: ModelInfo) -> tuple[int, int]:
        """``(height, width)`` of what this worker feeds the network for stacks of ``spec``.

        The default feeds the image as acquired; preprocessing workers override it (cropping,
        resampling). With :attr:`tiled`, the size of the image the tiles are cut from.
        """
        return (spec.height, spec.width)

    # -- lifecycle -----------------------------------------------------------------------------
    def check(self, spec: StackSpec) -> None:
        """Check the model file against ``spec`` without TensorFlow (engine process).

        Raises
        ------
        ModelError
            The file is missing/corrupt/not a model, or does not fit (both shapes named).
        ConfigError
            ``channels_to_use`` names a channel the acquisition lacks.
        """
        super().check(spec)
        info = inspect_model(self.model_path())
        self.check_model(info, spec)

    def check_model(self, info: ModelInfo, spec: StackSpec) -> None:
        """Refuse a model that does not fit stacks of ``spec`` as this worker feeds it.

        A hook: called twice, by :meth:`check` in the engine process (``info`` read from the
        file, without TensorFlow) and by :meth:`setup` in the worker process (``info`` of the
        loaded model). The default compares the model's input with the selected channels,
        z-slices, time window and :meth:`fed_image_shape` (:func:`check_fit`). Override it to
        refuse more (call ``super().check_model(info, spec)`` first); never load the model
        here.

        Raises
        ------
        ModelError
            The model does not fit; the message names both shapes and the setting to change.
        ConfigError
            A worker option contradicts the model (e.g. a tile overlap larger than its tiles).
        """
        check_fit(
            info,
            spec,
            self.settings.n_timepoints,
            self.settings.channels_to_use,
            image_shape=self.fed_image_shape(spec, info),
            tiled=self.tiled,
            source=self.settings.source,
        )

    def setup(self, spec: StackSpec) -> None:
        """Load the model once (worker process), re-check it, build the inference call.

        Raises
        ------
        ModelError
            As :meth:`check`, or Keras cannot load the file, or the model's output cannot make
            a network image of this worker (checked by :meth:`check_output`).
        """
        Worker.check(self, spec)
        path = self.model_path()
        self.device_plan = configure_device(self.settings.device,
                                            self.settings.option("gpu_memory_mb"))
        self.model = load_model(path)
        self.info = inspect_loaded(self.model, path)
        self.check_model(self.info, spec)
        self.spec = spec
        self._infer = self._make_inference(self.model)
        self._network_shape = self.check_output(spec, self.info)
        self._select_inference(spec, path)
        log.info("%s: %s, inference %s", self.name, self.info.describe(), self.inference)

    def _make_inference(self, model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
        """The call (or ``predict_on_batch``) that :meth:`check_output` runs first; the
        configured backend replaces it once the real input shape is known."""
        name = "predict_on_batch" if self.inference == "predict_on_batch" else "call"
        return build_backend(name, model, self.model_path(), ()).run

    def _select_inference(self, spec: StackSpec, path: Path) -> None:
        """Build, check and (``auto``) time the configured backend on the real input shape."""
        if self.inference in ("call", "predict_on_batch") and self.precision == "float32":
            return
        assert self.model is not None
        shape = self.model_input_shape(spec)
        calibration: list[np.ndarray] = []
        if self.calibration:
            calibration = self.calibration_inputs(spec, Path(self.calibration))
        reduced = self.precision != "float32"
        plan = select_backend(
            self.inference, self.model, path, shape, threads=self.settings.threads,
            precision=self.precision, tolerance=self.tolerance,
            calibration=calibration[0::2] if reduced else calibration,
            check_inputs=calibration[1::2] if reduced else calibration[:2],
            candidates=BACKENDS if self.settings.device == "cpu" else ("call", "xla"),
            reference=None if self.inference == "predict_on_batch" else self._infer,
        )
        self.inference_plan = plan
        self._infer = plan.chosen.run
        log.info("%s: %s", self.name, plan.describe())

    def calibration_inputs(self, spec: StackSpec, path: Path, count: int = 16
                           ) -> list[np.ndarray]:
        """Model inputs prepared from ``count`` stacks of a recording (evenly spaced).

        ``path`` is ``analysis.options.calibration``: a saved run folder, an OME-Zarr or a
        TIFF whose stacks have this acquisition's shape. With a time window, each input is
        ``n_timepoints`` consecutive stacks.

        Raises
        ------
        ConfigError
            The recording cannot be read, or its stacks are not this acquisition's shape.
        """
        from rt_eda.core.imagefiles import open_reader

        try:
            reader, _ = open_reader(path)
        except ConfigError as exc:
            raise ConfigError(f"analysis.options.calibration: {exc}") from None
        try:
            t_total, *stack_shape = reader.shape
            if tuple(stack_shape) != tuple(spec.shape):
                raise ConfigError(
                    f"analysis.options.calibration = {str(path)!r} holds stacks of "
                    f"{tuple(stack_shape)}, the acquisition's are {tuple(spec.shape)}")
            window = self.settings.n_timepoints
            starts = sorted({int(i) for i in np.linspace(0, max(0, t_total - window),
                                                         min(count, max(1, t_total)))})
            inputs = []
            for t0 in starts:
                stacks = np.empty((window, *spec.shape), reader.dtype)
                for k in range(window):
                    reader.read_stack(min(t0 + k, t_total - 1), stacks[k])
                data = self.prepare_images(stacks[0] if window == 1 else stacks)
                inputs.append(np.ascontiguousarray(data["pixels"], np.float32))
        finally:
            reader.close()
        return inputs

    def model_input_shape(self, spec: StackSpec) -> tuple[int, ...]:
        """The shape of ``data['pixels']`` for stacks of ``spec`` (batch axis included)."""
        if self.info is None:
            raise RuntimeError("model_input_shape() called before setup()")
        h, w = self.fed_image_shape(spec, self.info)
        return (1, h, w, *self.channel_axes(spec))

    def channel_axes(self, spec: StackSpec) -> tuple[int, ...]:
        """The axes of one model input item after ``(height, width)``, for stacks of ``spec``.

        ``(T * C,)`` for a 4-D model, ``(C, T * Z)`` for a 5-D one (:func:`to_model_layout`),
        with ``C`` the selected channels and ``T`` the time window. Valid after :meth:`setup`.
        """
        if self.info is None:
            raise RuntimeError("channel_axes() called before setup()")
        t = self.settings.n_timepoints
        c = len(self.settings.channels_to_use) or spec.channels
        if self.info.ndim == 4:
            return (t * c,)
        return (c, t * spec.z_slices)

    def check_output(self, spec: StackSpec, info: ModelInfo) -> tuple[int, int] | None:
        """The network image shape for ``spec``, from one real forward pass (zeros) of the
        input this worker feeds the model (:meth:`model_input_shape`).

        A hook, called once by :meth:`setup` after the inference call is built; what it
        returns is :meth:`network_image_shape`. The default sets :attr:`output_shape` and
        returns the output's axes 1 and 2 (the first batch item's height and width), or None
        for an output without spatial axes (a classifier). Override it when
        :meth:`post_process_output` makes another image (the tiling worker stitches its tiles
        into the resampled image) or to refuse an output your post-processing cannot use
        (call ``super().check_output(spec, info)`` for the forward pass).

        Not from ``model.compute_output_shape``: on a loaded legacy model it can report None
        for dimensions that a real forward pass fixes, and a model that fits must never be
        refused for what a symbolic reading cannot tell. The pass also traces the inference
        call, so the warm-up that follows is the second call.

        Raises
        ------
        ModelError
            The model fails on that input; the message names the input fed, the model's
            declared input and the model's own error, in one line.
        """
        out = self._forward_shape(self.model_input_shape(spec), info)
        self.output_shape = out
        if len(out) < 3:
            return None  # a classifier: no image
        return (int(out[1]), int(out[2]))

    def _forward_shape(self, shape: tuple[int, ...], info: ModelInfo) -> tuple[int, ...]:
        """The output shape of one forward pass of zeros of ``shape``."""
        assert self._infer is not None
        try:
            out = self._infer(np.zeros(shape, np.float32))
        # The user's model runs here for the first time; whatever it raises on the input it
        # will get (a shape TensorFlow rejects, a layer that cannot take this size) means it
        # does not fit. The cause is chained and its text kept.
        except Exception as exc:
            raise ModelError(
                f"model {Path(info.path).name} fails on the input {self.name} feeds it, "
                f"{shape} (the model's declared input is {_fmt(info.input_shape)}): "
                f"{exception_line(exc)}"
            ) from exc
        return tuple(int(d) for d in out.shape)

    def teardown(self) -> None:
        """Drop the model and its compiled call."""
        self.model = None
        self._infer = None

    def warm_up(self) -> Analysis | None:
        """One analysis of the real input shape (zeros), timed and logged; returns it."""
        t0 = time.perf_counter()
        analysis = super().warm_up()
        log.info("%s: warm-up took %.0f ms", self.name, 1e3 * (time.perf_counter() - t0))
        return analysis

    def network_image_shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the network image (the model output's spatial axes).

        Valid after :meth:`setup`; ``None`` for a model whose output has no spatial axes.
        """
        return self._network_shape

    # -- hooks ---------------------------------------------------------------------------------
    def preprocess_window(self, window: np.ndarray) -> np.ndarray:
        """Per-frame preprocessing of a float32 window ``(T, C, Z, H, W)`` (the default: none).

        Returns a window of the same layout (the spatial size may change).
        """
        return window

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        """Selected channels as float32, preprocessed, laid out channels last with a batch axis.

        ``stack`` is ``(C, Z, H, W)`` or a window ``(T, C, Z, H, W)``; the result's
        ``'pixels'`` is a new array (the stack may be a view on shared memory).

        A stack smaller than the acquisition's frame (read from a sensor region) is
        preprocessed as it is, then padded (edge mode) to :meth:`fed_image_shape`: the shape
        the inference call was built for. ``data[VALID_SHAPE_KEY]`` then holds the valid
        part's ``(height, width)``, which :meth:`run_model` crops the output to.
        """
        window = _as_window(self.select_channels(stack)).astype(np.float32)
        window = self.preprocess_window(window)
        ndim = self.info.ndim if self.info is not None else 4
        data: dict[str, Any] = {}
        fed = self._fed_shape()
        h, w = window.shape[-2:]
        if fed is not None and (h, w) != fed and h <= fed[0] and w <= fed[1]:
            window = pad_window(window, fed)
            data[VALID_SHAPE_KEY] = (int(h), int(w))
        data["pixels"] = to_model_layout(window, ndim)[np.newaxis]
        return data

    def _fed_shape(self) -> tuple[int, int] | None:
        """:meth:`fed_image_shape` of the stacks set up for (None before :meth:`setup`)."""
        if self.spec is None or self.info is None:
            return None
        return self.fed_image_shape(self.spec, self.info)

    def run_model(self, data: dict[str, Any]) -> np.ndarray:
        """Run the model on ``data['pixels']`` (one batch) with the configured inference call.

        When the input was padded (``data[VALID_SHAPE_KEY]``, see :meth:`prepare_images`),
        the output's spatial axes (1 and 2) are cropped to the part made of valid pixels (in
        proportion, for an output smaller than the input), so every later hook sees only
        that part.
        """
        if self._infer is None:
            raise RuntimeError(f"{self.name}.run_model() called before setup()")
        output = self._infer(data["pixels"])
        valid = data.get(VALID_SHAPE_KEY)
        if valid is None or output.ndim < 3:
            return output
        return crop_output(output, data["pixels"].shape[1:3], valid)

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        """The maximum of the model output."""
        return float(np.max(output))

    def post_process_output(self, output: np.ndarray, data: dict[str, Any]) -> np.ndarray | None:
        """The first batch item without its channel axes: ``(H, W)`` float32.

        Trailing axes of size 1 are dropped; remaining non-spatial axes are reduced by their
        maximum. ``None`` when the output has no spatial axes.
        """
        return network_image(output[0])


def pad_window(window: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``window`` (..., h, w) padded at the bottom and right to (..., *shape), edge mode (the
    last valid row and column repeated: no new edge for the model to respond to)."""
    h, w = window.shape[-2:]
    widths = [(0, 0)] * (window.ndim - 2) + [(0, shape[0] - h), (0, shape[1] - w)]
    padded: np.ndarray = np.pad(window, widths, mode="edge")
    return padded


def crop_output(output: np.ndarray, fed: tuple[int, ...], valid: tuple[int, int]
                ) -> np.ndarray:
    """The part of a model output ``(batch, oh, ow, ...)`` made of the valid top-left
    ``valid`` of an input of spatial size ``fed``: ``valid`` itself when the output has the
    input's size, else scaled by ``oh / fed[0]`` and ``ow / fed[1]`` (at least 1 px). A
    view."""
    oh, ow = int(output.shape[1]), int(output.shape[2])
    vh = valid[0] if oh == fed[0] else max(1, min(oh, round(valid[0] * oh / fed[0])))
    vw = valid[1] if ow == fed[1] else max(1, min(ow, round(valid[1] * ow / fed[1])))
    return output[:, :vh, :vw]


def network_image(item: np.ndarray) -> np.ndarray | None:
    """One output item ``(H, W, ...)`` as an ``(H, W)`` float32 image (max over extra axes)."""
    if item.ndim < 2:
        return None
    image = item.reshape(item.shape[0], item.shape[1], -1)
    if image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0], dtype=np.float32)
    return np.ascontiguousarray(image.max(axis=2), dtype=np.float32)
