"""Inference backends for a Keras model: built at set-up, checked against the plain call, timed.

A :class:`~rt_eda.workers._keras.KerasWorker` runs its model through one backend, chosen by
``analysis.options.inference``:

``"call"``
    A ``tf.function`` of ``model(x, training=False)`` (the reference every other backend is
    checked against, and the default).
``"predict_on_batch"``
    Keras' ``model.predict_on_batch``.
``"xla"``
    The same call compiled by XLA (``jit_compile=True``).
``"onnx"``
    ONNX Runtime (``pip install rt-eda[onnx]``): the model is converted with tf2onnx at the
    worker's real input shape.
``"openvino"``
    OpenVINO's CPU plugin (``pip install rt-eda[openvino]``), on the same ONNX file.
``"auto"``
    Every available backend is built, checked and timed on the real input shape during set-up
    (interleaved rounds, medians); the fastest that matches is used. Another backend replaces
    the call only when it is at least :data:`AUTO_MARGIN` faster, so ``"auto"`` is never
    measurably slower than ``"call"``.

Reduced precision (``analysis.options.precision``): ``"float32"`` (default); ``"int8"``
(static post-training quantization of the ONNX file, QDQ format, weights per channel, ranges
calibrated on real stacks from ``analysis.options.calibration``: a saved run folder, an
OME-Zarr or a TIFF of the acquisition), run by ONNX Runtime or OpenVINO; ``"bfloat16"``
(OpenVINO, only where the CPU computes it natively: ``OPTIMIZATION_CAPABILITIES`` has
``BF16``).

Checks. Every backend is compared with the reference call on the same inputs when the worker
sets up: the largest absolute difference of the outputs must be at most
``analysis.options.tolerance`` (default :data:`TOLERANCE`, 1e-3, for float32; for a reduced
precision :data:`REDUCED_TOLERANCE`, 0.05, on calibration stacks it was not calibrated on);
a NaN where the call has none is a mismatch. A mismatch refuses the backend with both numbers
(:class:`BackendError`, a :class:`~rt_eda.core.errors.ModelError`: an explicit choice stops the
run before acquisition through the probe, exit 2; ``"auto"`` skips it).

Conversion cache. The ONNX file (and its int8 version) is written once, beside the model in
``.rt-eda-cache/`` (or under ``$XDG_CACHE_HOME/rt-eda/backends`` when that folder is not
writable or is inside the installed package), named by a digest of the model file's bytes,
the input shape, the precision, the calibration inputs and the converter versions; later runs
(and the workers after the probe) load it. ``"auto"``'s choice is remembered there too, keyed
by the same digest and the thread count.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_eda.core.errors import ConfigError, ModelError
from rt_eda.core.files import write_atomic, write_json_atomic

if TYPE_CHECKING:
    import keras

__all__ = [
    "AUTO_MARGIN",
    "BACKENDS",
    "INFERENCE_MODES",
    "PRECISIONS",
    "REDUCED_TOLERANCE",
    "TOLERANCE",
    "Backend",
    "BackendError",
    "InferencePlan",
    "backend_cache_dir",
    "backend_unavailable",
    "build_backend",
    "compare_outputs",
    "precision_unsupported",
    "select_backend",
    "time_interleaved",
]

log = logging.getLogger(__name__)

#: Backends ``"auto"`` chooses from (in this order; the call first, the reference).
BACKENDS = ("call", "xla", "onnx", "openvino")
#: Every value of ``analysis.options.inference``.
INFERENCE_MODES = ("call", "predict_on_batch", "xla", "onnx", "openvino", "auto")
#: Every value of ``analysis.options.precision``.
PRECISIONS = ("float32", "int8", "bfloat16")
#: Largest absolute difference from the reference call a float32 backend may show.
TOLERANCE = 1e-3
#: The same for a reduced precision (int8 steps are 1/256 of a tensor's calibrated range).
REDUCED_TOLERANCE = 0.05
#: ``"auto"`` keeps the call unless another backend's median is at least this much faster.
AUTO_MARGIN = 0.05
_PAUSE_S = 0.003
#: ONNX operator set of the converted files.
OPSET = 17
#: Timing budget of ``"auto"`` (seconds of calls; at least 5 rounds, at most 41).
AUTO_BUDGET_S = 4.0
_REDUCED_BACKENDS = {"int8": ("onnx", "openvino"), "bfloat16": ("openvino",)}
_PACKAGE_DIR = Path(__file__).resolve().parent


class BackendError(ModelError):
    """A backend cannot be built here, or its outputs do not match the reference call."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One way to run the model, built for one input shape.

    Attributes
    ----------
    name
        One of :data:`BACKENDS` or ``"predict_on_batch"``.
    precision
        One of :data:`PRECISIONS`.
    run
        ``run(x)``: the output of one batch ``x`` (float32, the built shape) as a NumPy array.
    detail
        One line for the log (versions, where a converted file came from).
    """

    name: str
    precision: str
    run: Callable[[np.ndarray], np.ndarray]
    detail: str = ""

    @property
    def label(self) -> str:
        """``name`` or ``name/precision`` for a reduced precision."""
        return self.name if self.precision == "float32" else f"{self.name}/{self.precision}"


@dataclass(slots=True)
class InferencePlan:
    """What :func:`select_backend` decided, for the log and ``rt-eda bench``.

    Attributes
    ----------
    chosen
        The backend the worker runs.
    max_abs_diff
        Per backend label checked: its largest absolute difference from the call.
    median_ms
        Per backend label timed (``"auto"`` only): the median ms per call.
    refused
        Per backend label left out: why, one line.
    """

    chosen: Backend
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    median_ms: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"inference {self.chosen.label}"]
        if self.median_ms:
            parts.append("timed " + ", ".join(f"{k} {v:.2f} ms" for k, v in
                                              self.median_ms.items()))
        if self.max_abs_diff:
            parts.append("max |diff| from call " + ", ".join(
                f"{k} {v:.2g}" for k, v in self.max_abs_diff.items()))
        if self.refused:
            parts.append("refused " + "; ".join(f"{k}: {v}" for k, v in self.refused.items()))
        return "; ".join(parts)


# -- what is there ------------------------------------------------------------------------------
def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def backend_unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run in this installation, or None when it can."""
    need = {"onnx": ("tf2onnx", "onnx", "onnxruntime"),
            "openvino": ("tf2onnx", "onnx", "openvino")}.get(name, ())
    missing = _missing(*need)
    if missing:
        extra = "onnx" if name == "onnx" else "openvino"
        return (f"needs the Python package(s) {', '.join(missing)} (pip install "
                f"'rt-eda[{extra}]')")
    return None


def precision_unsupported(name: str, precision: str) -> str | None:
    """Why backend ``name`` cannot run ``precision`` on this CPU, or None when it can."""
    if precision == "float32":
        return None
    allowed = _REDUCED_BACKENDS.get(precision, ())
    if name not in allowed:
        return (f"precision {precision} runs on {' or '.join(allowed)}, not {name}")
    if precision == "bfloat16":
        caps = _openvino_capabilities()
        if "BF16" not in caps:
            return (f"this CPU does not compute bfloat16 natively (OpenVINO's CPU "
                    f"capabilities: {', '.join(caps) or 'none'}): it would be emulated, "
                    "slower than float32")
    if precision == "int8" and name == "onnx" and _missing("onnxruntime"):
        return "int8 needs onnxruntime's quantization tools (pip install 'rt-eda[onnx]')"
    return None


def _openvino_capabilities() -> list[str]:
    if _missing("openvino"):
        return []
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


# -- the cache --------------------------------------------------------------------------------
def backend_cache_dir(model_path: Path) -> Path:
    """Where converted files of ``model_path`` are kept (see the module docstring)."""
    folder = model_path.resolve().parent
    inside_package = folder == _PACKAGE_DIR or _PACKAGE_DIR in folder.parents
    if not inside_package and os.access(folder, os.W_OK):
        return folder / ".rt-eda-cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rt-eda" / "backends"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _key(model_path: Path, shape: tuple[int, ...], *extra: object) -> str:
    material = json.dumps({
        "model": _file_digest(model_path), "shape": list(shape), "opset": OPSET,
        "versions": {d: _version(d) for d in ("tensorflow", "tensorflow-cpu", "keras",
                                              "tf2onnx", "onnx", "onnxruntime")},
        "extra": [str(e) for e in extra],
    }, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def _cached_file(model_path: Path, key: str, suffix: str, make: Callable[[], bytes]) -> Path:
    """The cached file ``<stem>-<key><suffix>``, made (and written atomically) when absent."""
    folder = backend_cache_dir(model_path)
    path = folder / f"{model_path.stem}-{key}{suffix}"
    if path.is_file():
        return path
    data = make()
    try:
        return write_atomic(path, data, make_parents=True)
    except OSError as exc:
        fallback = Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))
        path = fallback / "rt-eda" / "backends" / path.name
        log.info("cannot cache in %s (%s); using %s", folder, exc, path.parent)
        return write_atomic(path, data, make_parents=True)


# -- building -----------------------------------------------------------------------------------
def _forward(model: keras.Model) -> Callable[[Any], Any]:
    """``model(x, training=False)``, with ``x`` in a list when the model's input structure is
    one (a Keras 2 file's functional model: Keras 3 warns on every trace otherwise)."""
    if _list_input(model):
        return lambda x: model([x], training=False)
    return lambda x: model(x, training=False)


def _list_input(model: keras.Model) -> bool:
    """Whether the model's input structure is a list (a Sequential never called has none)."""
    try:
        structure = model.input
    except (AttributeError, ValueError):
        return False
    return isinstance(structure, list | tuple)


def reference_call(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """The ``"call"`` backend: a ``tf.function`` of ``model(x, training=False)``."""
    import tensorflow as tf

    forward = tf.function(_forward(model), reduce_retracing=True)

    def call(x: np.ndarray) -> np.ndarray:
        return np.asarray(forward(tf.convert_to_tensor(x)))

    return call


def _xla(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    forward = tf.function(_forward(model), jit_compile=True)

    def call(x: np.ndarray) -> np.ndarray:
        return np.asarray(forward(tf.convert_to_tensor(x)))

    return call


def _onnx_bytes(model: keras.Model, shape: tuple[int, ...]) -> bytes:
    """The model converted to ONNX by tf2onnx at the static input ``shape``."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec(shape, tf.float32, name="x")]
    forward = tf.function(_forward(model))
    # tf2onnx logs every rewrite at INFO; the worker's log keeps only what matters.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    data: bytes = proto.SerializeToString()
    return data


def _onnx_file(model: keras.Model, model_path: Path, shape: tuple[int, ...]) -> Path:
    key = _key(model_path, shape, "float32")
    return _cached_file(model_path, key, ".onnx", lambda: _onnx_bytes(model, shape))


def _int8_bytes(onnx_path: Path, inputs: Sequence[np.ndarray]) -> bytes:
    """Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations, min-max
    ranges over ``inputs``) of the float32 ONNX file."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import (
        quant_pre_process,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"x": x}

    with tempfile.TemporaryDirectory(prefix="rt-eda-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        out = Path(tmp) / "int8.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=_output_head(pre))
        return out.read_bytes()


def _output_head(path: Path) -> list[str]:
    """The nodes from the last weighted layer (convolution, matrix product) to the output.

    They stay in float32: an int8 output can only take values inside the range calibration
    saw, so calibration stacks without an event would cap the decision below any threshold.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    head: list[str] = []
    frontier = [o.name for o in graph.output]
    seen: set[str] = set()
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        head.append(node.name)
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue  # the last weighted layer: stop on this branch
        frontier += list(node.input)
    return head


def _inputs_digest(inputs: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for x in inputs:
        digest.update(np.ascontiguousarray(x, np.float32).tobytes())
    return digest.hexdigest()[:20]


def _ort(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads sleep (rt-eda's rule): ORT's pool spins between calls by default.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0])

    return run


def _openvino(path: Path, threads: int, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        # Several worker processes share the cores: none may pin its threads to them.
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
    })
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: x})[output], copy=True)

    return run


def build_backend(
    name: str,
    model: keras.Model,
    model_path: Path,
    shape: tuple[int, ...],
    *,
    threads: int = 1,
    precision: str = "float32",
    calibration: Sequence[np.ndarray] = (),
) -> Backend:
    """Build backend ``name`` for batches of ``shape`` (converting and caching as needed).

    Parameters
    ----------
    name
        ``"call"``, ``"predict_on_batch"``, ``"xla"``, ``"onnx"`` or ``"openvino"``.
    model, model_path
        The loaded model and the file it came from (the cache key is the file's bytes).
    shape
        The batch shape the worker feeds (static: the conversion is made for it).
    threads
        Compute threads (``analysis.threads_per_worker``).
    precision
        One of :data:`PRECISIONS`; int8 needs ``calibration``.
    calibration
        Real inputs of ``shape`` for int8's ranges.

    Raises
    ------
    BackendError
        Not installed, the precision is not supported here, or the conversion failed (the
        converter's own reason in one line).
    """
    why = backend_unavailable(name) or precision_unsupported(name, precision)
    if why is not None:
        raise BackendError(f"inference backend {name!r}: {why}")
    if name == "call":
        return Backend(name, precision, reference_call(model), "tf.function")
    if name == "predict_on_batch":

        structured = _list_input(model)

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(model.predict_on_batch([x] if structured else x))

        return Backend(name, precision, predict, "keras predict_on_batch")
    if name == "xla":
        return Backend(name, precision, _xla(model), "tf.function(jit_compile=True)")
    t0 = time.perf_counter()
    try:
        path = _onnx_file(model, model_path, shape)
        if precision == "int8":
            if not calibration:
                raise BackendError(
                    "precision int8 needs calibration stacks: set analysis.options.calibration "
                    "to a saved run folder, OME-Zarr or TIFF of this acquisition (rt-eda run "
                    "--save DIR records one)")
            base = path
            key = _key(model_path, shape, "int8", _inputs_digest(calibration))
            path = _cached_file(model_path, key, ".int8.onnx",
                                lambda: _int8_bytes(base, calibration))
        run = (_ort(path, threads) if name == "onnx" else _openvino(path, threads, precision))
    except BackendError:
        raise
    # The converters and runtimes raise their own types for a graph they cannot take (an op
    # without a conversion, a shape they cannot infer); any of them means: not this backend.
    except Exception as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BackendError(
            f"inference backend {name!r} cannot run {model_path.name} at input {shape}: "
            f"{type(exc).__name__}: {line[:300]}"
        ) from exc
    runtime = "onnxruntime" if name == "onnx" else "openvino"
    detail = (f"{runtime} {_version(runtime)}, {path} ({1e3 * (time.perf_counter() - t0):.0f}"
              " ms to load)")
    return Backend(name, precision, run, detail)


# -- checking and timing ------------------------------------------------------------------------
def compare_outputs(reference: np.ndarray, output: np.ndarray) -> float:
    """Largest absolute difference; ``inf`` for a shape mismatch or a NaN the reference lacks."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(output, np.float64)
    if ref.shape != out.shape:
        return math.inf
    ref_nan = np.isnan(ref)
    if np.any(np.isnan(out) & ~ref_nan):
        return math.nan
    both = ~ref_nan
    if not np.any(both):
        return 0.0
    return float(np.max(np.abs(ref[both] - out[both])))


def check_backend(backend: Backend, inputs: Sequence[np.ndarray],
                  references: Sequence[np.ndarray], tolerance: float) -> float:
    """The backend's largest absolute difference from the reference outputs.

    Raises
    ------
    BackendError
        Above ``tolerance``, NaN where the reference has none, or another shape; names both
        numbers.
    """
    worst = 0.0
    for x, ref in zip(inputs, references, strict=True):
        try:
            out = backend.run(x)
        # The runtime's own error on a real input: this backend does not run this model.
        except Exception as exc:
            raise BackendError(f"inference backend {backend.label} fails on the input "
                               f"{x.shape}: {type(exc).__name__}: {exc}") from exc
        diff = compare_outputs(ref, out)
        if math.isnan(diff):
            raise BackendError(
                f"inference backend {backend.label} gives NaN where the reference call gives "
                f"none (allowed: a largest absolute difference of {tolerance:g})")
        if diff == math.inf:
            raise BackendError(
                f"inference backend {backend.label} gives an output of shape "
                f"{np.shape(out)}, the reference call {ref.shape}")
        worst = max(worst, diff)
    if worst > tolerance:
        raise BackendError(
            f"inference backend {backend.label} differs from the reference call by up to "
            f"{worst:.3g} (allowed: {tolerance:g}, analysis.options.tolerance)")
    return worst


def time_interleaved(fns: dict[str, Callable[[], object]], *, budget_s: float = AUTO_BUDGET_S,
                     min_rounds: int = 5, max_rounds: int = 41) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds.

    One untimed call each first; then rounds that call every function once, in a new random
    (seeded) order each round, as many as fit ``budget_s`` (within ``min_rounds`` ..
    ``max_rounds``), so a slow model is timed fewer times. Interleaving puts every backend
    under the same load on a shared machine. Each call comes after an untimed pause of
    ``_PAUSE_S``: the idle threads of a runtime spin for a while after its call (TensorFlow's,
    OpenVINO's) and would slow down whichever backend came next (a fixed order made the
    same ONNX session 1.9x slower after XLA than after OpenVINO).
    """
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    per_round = max(sum(first.values()), 1e-6)
    rounds = max(min_rounds, min(max_rounds, int(budget_s / per_round)))
    names = list(fns)
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            time.sleep(_PAUSE_S)
            t0 = time.perf_counter()
            fns[names[i]]()
            samples[names[i]].append(time.perf_counter() - t0)
    return {name: float(np.median(s)) for name, s in samples.items()}


def _cpu_model() -> str:
    """The CPU's model name (a remembered ``"auto"`` choice holds for that CPU only)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    import platform

    return platform.processor()


def _auto_cache(model_path: Path, shape: tuple[int, ...], threads: int, precision: str,
                candidates: Sequence[str]) -> Path:
    key = _key(model_path, shape, "auto", threads, precision, ",".join(candidates),
               _version("openvino"), _cpu_model(), os.cpu_count())
    return backend_cache_dir(model_path) / f"{model_path.stem}-{key}.auto.json"


def select_backend(
    mode: str,
    model: keras.Model,
    model_path: Path,
    shape: tuple[int, ...],
    *,
    threads: int = 1,
    precision: str = "float32",
    tolerance: float | None = None,
    calibration: Sequence[np.ndarray] = (),
    check_inputs: Sequence[np.ndarray] = (),
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    candidates: Sequence[str] = BACKENDS,
) -> InferencePlan:
    """Build, check and (for ``"auto"``) time the backends of ``mode``; return the plan.

    Parameters
    ----------
    mode
        One of :data:`INFERENCE_MODES`.
    model, model_path, shape, threads, precision, calibration
        As :func:`build_backend`.
    tolerance
        Largest absolute difference allowed from the call (default :data:`TOLERANCE` for
        float32, :data:`REDUCED_TOLERANCE` otherwise).
    check_inputs
        The inputs every backend is checked on (besides, for float32, two seeded uniform
        inputs in 0..1); for a reduced precision, real stacks it was not calibrated on.
    reference
        The worker's own ``"call"`` (:func:`reference_call`), reused rather than traced again.
    candidates
        The backends ``"auto"`` may choose (on a GPU: ``("call", "xla")``).

    Raises
    ------
    BackendError
        An explicitly chosen backend cannot run or does not match; with ``"auto"``, only when
        no candidate at ``precision`` can.
    ConfigError
        ``mode`` or ``precision`` is not known.
    """
    if mode not in INFERENCE_MODES:
        raise ConfigError(f"analysis.options.inference = {mode!r} is not one of "
                          f"{list(INFERENCE_MODES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"analysis.options.precision = {precision!r} is not one of "
                          f"{list(PRECISIONS)}")
    reduced = precision != "float32"
    tol = tolerance if tolerance is not None else (REDUCED_TOLERANCE if reduced else TOLERANCE)
    if reference is None:
        reference = reference_call(model)
    inputs = list(check_inputs)
    if not reduced or not inputs:
        rng = np.random.default_rng(20240917)
        inputs += [rng.random(shape, dtype=np.float32) for _ in range(2)]
    references = [reference(x) for x in inputs]
    plan_diff: dict[str, float] = {}
    refused: dict[str, str] = {}

    def build_checked(name: str) -> Backend:
        backend = build_backend(name, model, model_path, shape, threads=threads,
                                precision=precision, calibration=calibration)
        plan_diff[backend.label] = check_backend(backend, inputs, references, tol)
        return backend

    if mode != "auto":
        if mode == "call" and not reduced:
            return InferencePlan(Backend("call", "float32", reference, "tf.function"))
        backend = build_checked(mode)
        return InferencePlan(backend, max_abs_diff=plan_diff)
    names = [n for n in BACKENDS if n in candidates and (
        not reduced or n in _REDUCED_BACKENDS[precision])]
    cache = _auto_cache(model_path, shape, threads, precision, names)
    remembered: str | None = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        remembered = str(json.loads(cache.read_text())["chosen"])
    built: dict[str, Backend] = {}
    if not reduced and "call" in names:
        built["call"] = Backend("call", "float32", reference, "tf.function")
    for name in names:
        if name in built or (remembered is not None and name != remembered):
            continue
        try:
            built[name] = build_checked(name)
        except BackendError as exc:
            refused[name] = str(exc).removeprefix(f"inference backend {name!r}: ")
            log.info("auto: %s", exc)
    if not built:
        raise BackendError(
            f"analysis.options.inference = 'auto' with precision {precision}: no backend can "
            "run it: " + "; ".join(f"{k}: {v}" for k, v in refused.items()))
    if remembered is not None and remembered in built:
        return InferencePlan(built[remembered], max_abs_diff=plan_diff, refused=refused,
                             median_ms={})
    x = inputs[0]
    medians = time_interleaved({name: functools.partial(b.run, x) for name, b in built.items()})
    best = min(medians, key=lambda n: medians[n])
    if "call" in medians and medians[best] > (1.0 - AUTO_MARGIN) * medians["call"]:
        best = "call"
    with contextlib.suppress(OSError):
        write_json_atomic(cache, {"chosen": best, "median_ms": {
            k: 1e3 * v for k, v in medians.items()}})
    return InferencePlan(built[best], max_abs_diff=plan_diff, refused=refused,
                         median_ms={built[k].label: 1e3 * v for k, v in medians.items()})
