"""The worker API: the hooks of the original plugin, run in a worker process.

A worker turns one stack (or a time window of stacks) into a decision parameter and,
optionally, a network image. The worker process loop (:mod:`rt_eda.roles.worker`) calls,
per claimed stack::

    data = worker.prepare_images(stack)          # {'pixels': batch, ...extras}
    output = worker.run_model(data)              # KerasWorker: model.predict_on_batch
    decision = worker.extract_decision_parameter(output)
    image = worker.post_process_output(output, data)   # network image, or None
    regions = worker.extract_event_locations(output, data)   # where: EventRegions

Lifecycle (one instance per worker process, never shared between processes)::

    __init__(settings) -> setup(spec) -> warm_up() -> analyse(...) * n -> teardown()

``setup`` loads what the worker needs (a model) and raises :class:`~rt_eda.core.errors.ModelError`
if it does not fit the acquisition, naming both shapes; the engine runs the same check in the
parent before anything starts (:meth:`Worker.check`), so a misfit exits 2 with nothing started.
For a worker with a model (:func:`probes_before_start`) the engine also runs ``setup`` and
``warm_up`` once in a short-lived probe process before anything starts
(:mod:`rt_eda.workers._probe`): a model that fails on the real input shape exits 2 too.

Network images: :meth:`Worker.network_image_shape` declares the ``(height, width)`` of every
image :meth:`Worker.post_process_output` returns. An image that breaks the declaration (another
rank or shape, a dtype that is not a real number) is refused, counted and never stored
(:func:`network_image_problem`); it is never broadcast or reshaped into the declared shape.
Non-finite values (NaN, inf) are allowed in a network image: it is stored as the model made it
(float32 keeps them), counted, and the viewer's overlay scales by the finite values.

Event locations: :meth:`Worker.extract_event_locations` says where the events are, as
:class:`~rt_eda.core.regions.EventRegion` records in acquisition pixel coordinates of the
stack it was given (the worker process adds the offset of the sensor region the stack was
read from). The default thresholds the network image (option ``location_threshold``, 0.5)
and maps its connected components back through :meth:`Worker.image_to_acquisition`
(:mod:`rt_eda.workers._locations`); ``locations = false`` turns it off.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rt_eda.core.errors import ConfigError, ModelError
from rt_eda.core.regions import EventRegion
from rt_eda.shm import StackSpec

from ._locations import DEFAULT_LOCATION_THRESHOLD, PixelMap, regions_from_image

if TYPE_CHECKING:
    from rt_eda.core.config import Config

__all__ = [
    "NETWORK_IMAGE_KEY",
    "STACK_SHAPE_KEY",
    "Analysis",
    "Worker",
    "WorkerSettings",
    "check_warm_up",
    "exception_line",
    "ORIGINAL_ONLY",
    "network_image_problem",
    "original_api_problem",
    "probes_before_start",
    "worker_settings",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_INNER_ERROR = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): ", re.M)
_KERAS_CALL = re.compile(r"Exception encountered when calling ([\w.]+?)(?:\.call)?\(\)\.")
_MAX_LINE = 400

NETWORK_IMAGE_KEY = "network_image"
"""The key :meth:`Worker.analyse` stores the network image under in the data dict, before
:meth:`Worker.extract_event_locations` runs (None when the worker makes none)."""

STACK_SHAPE_KEY = "stack_shape"
"""The key of the analysed stack's ``(height, width)`` in the data dict (set by
:meth:`Worker.analyse` unless :meth:`Worker.prepare_images` set it)."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker is told about its job (from the ``[analysis]`` configuration section).

    ``model`` is a path or ``""`` (no model / the worker's default); ``channels_to_use`` maps
    model input channel i to acquisition channel ``channels_to_use[i]`` (empty: all, in order);
    ``options`` holds worker-specific settings (``[analysis.options]``); ``source`` is the kind
    of ``camera.source`` (``synthetic``, ``mm-demo``, ``mmconfig``, ``replay``), so that advice
    on a misfit names the settings that change the acquisition of that source.
    """

    model: str = ""
    threads: int = 1
    n_timepoints: int = 1
    channels_to_use: tuple[int, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    source: str = "synthetic"
    #: ``analysis.device``: ``"cpu"``, ``"gpu"`` or ``"gpu:N"`` (where a Keras model runs).
    device: str = "cpu"

    def option(self, key: str, default: Any = None) -> Any:
        """A worker-specific option, or ``default``."""
        return dict(self.options).get(key, default)


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one analysis produced, with its per-phase timings in seconds (``t_post_s``:
    the decision, the network image and the event locations)."""

    decision: float
    network_image: np.ndarray | None
    t_prepare_s: float
    t_infer_s: float
    t_post_s: float
    extras: dict[str, Any] = field(default_factory=dict)
    regions: tuple[EventRegion, ...] = ()


class Worker:
    """Base class of every analysis worker.

    Subclasses override the hooks; the defaults make a worker whose "model" is the identity,
    so a subclass that only overrides :meth:`prepare_images` and
    :meth:`extract_decision_parameter` is a complete model-free worker.

    Class attributes
    ----------------
    name
        The name users select it by (``--worker NAME``); defaults to the class name.
    needs_model
        Whether the worker needs a model file (the engine refuses to start without one).
    probe_before_start
        Whether the engine runs ``setup`` and ``warm_up`` in a probe process before anything
        starts (:mod:`rt_eda.workers._probe`); ``None`` (the default) means "when it needs a
        model". Keras workers always do; a model-free worker is spared the probe's start-up
        cost.
    """

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False
    probe_before_start: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    reads_regions: ClassVar[bool] = True
    """Whether the worker takes stacks smaller than its spec (read from a sensor region by the
    ``roi`` actuator: it is handed only the region's pixels). False refuses ``roi``."""
    default_location_threshold: ClassVar[float] = DEFAULT_LOCATION_THRESHOLD
    """The ``location_threshold`` option's default: where this worker's network image calls
    a pixel part of an event."""
    default_location_relative: ClassVar[float] = 0.0
    """The ``location_relative`` option's default: 0, or the fraction of each region's peak
    its pixels must reach (:func:`~rt_eda.workers.regions_from_image`)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.spec: StackSpec | None = None
        self.locations: bool = _bool_option(settings, "locations", True)
        self.location_threshold: float = _number_option(
            settings, "location_threshold", self.default_location_threshold)
        self.location_relative: float = _number_option(
            settings, "location_relative", self.default_location_relative, low=0.0)
        self.location_min_area: int = int(_number_option(settings, "location_min_area", 4,
                                                         integer=True, low=1))
        self.max_regions: int = int(_number_option(settings, "max_regions", 16, integer=True,
                                                   low=0))

    # -- lifecycle -------------------------------------------------------------------------
    def check(self, spec: StackSpec) -> None:
        """Check, without loading heavy state if possible, that the worker fits ``spec``.

        Called in the engine process before anything starts. Raise
        :class:`~rt_eda.core.errors.ModelError` (or :class:`~rt_eda.core.errors.ConfigError`) with a
        message naming both shapes and the setting to change.
        """
        channels = self.settings.channels_to_use
        if channels and max(channels) >= spec.channels:
            from rt_eda.core.errors import ConfigError

            raise ConfigError(
                f"analysis.channels_to_use = {list(channels)} names channel {max(channels)}, "
                f"but the acquisition has {spec.channels} channel(s) (0..{spec.channels - 1})"
            )

    def setup(self, spec: StackSpec) -> None:
        """Prepare for stacks of ``spec`` (load the model). Runs once in the worker process."""
        self.check(spec)
        self.spec = spec

    def warm_up(self) -> Analysis | None:
        """Run one analysis of the real input shape (zeros) so the first real stack is not
        slow; returns it, so the caller can check what the worker makes (its network image
        against :meth:`network_image_shape`). An override may return None (nothing checked).
        """
        if self.spec is None:
            raise RuntimeError("warm_up() called before setup()")
        shape: tuple[int, ...] = self.spec.shape
        if self.settings.n_timepoints > 1:
            shape = (self.settings.n_timepoints, *shape)
        return self.analyse(np.zeros(shape, dtype=self.spec.np_dtype))

    def teardown(self) -> None:
        """Release what :meth:`setup` acquired. Called once, also after a failure."""

    def network_image_shape(self) -> tuple[int, int] | None:
        """Shape (height, width) of the network images this worker makes, or None for none.

        Valid after :meth:`setup`. The engine sizes the output ring from it.
        """
        return None

    # -- the hooks of the original -----------------------------------------------------------
    def select_channels(self, stack: np.ndarray) -> np.ndarray:
        """The acquisition channels the model uses, in model order (``channels_to_use``)."""
        channels = self.settings.channels_to_use
        if not channels:
            return stack
        axis = stack.ndim - 4  # (C, Z, H, W) or (T, C, Z, H, W)
        return np.take(stack, channels, axis=axis)

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        """Turn a stack ``(C, Z, H, W)`` (or a window ``(T, C, Z, H, W)``) into model input.

        Returns a dict with at least ``'pixels'``; any extra keys reach
        :meth:`post_process_output` (e.g. tile positions). The stack may be a view on shared
        memory that is only valid during the call: copy what must outlive it.
        """
        return {"pixels": self.select_channels(stack)}

    def run_model(self, data: dict[str, Any]) -> np.ndarray:
        """Run the model on ``data['pixels']``; the default is the identity."""
        pixels: np.ndarray = data["pixels"]
        return pixels

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        """One number per stack for the interpreter; default: the maximum of the output."""
        return float(np.max(output))

    def post_process_output(self, output: np.ndarray, data: dict[str, Any]) -> np.ndarray | None:
        """The network image for the viewer and the writer, or None (the default)."""
        return None

    def extract_event_locations(self, output: np.ndarray, data: dict[str, Any]
                                ) -> Sequence[EventRegion]:
        """Where the events are, in acquisition pixel coordinates of the analysed stack.

        Called after :meth:`post_process_output`, with the network image it made in
        ``data[NETWORK_IMAGE_KEY]`` and the stack's ``(height, width)`` in
        ``data[STACK_SHAPE_KEY]``. The default thresholds the network image at
        ``location_threshold`` (option, default 0.5), keeps its connected components of at
        least ``location_min_area`` pixels (4), the ``max_regions`` strongest (16), and maps
        them back with :meth:`image_to_acquisition`; no network image, no regions. Override
        it for a model that outputs coordinates or boxes; return regions of the stack's own
        pixels (rows ``0..height-1``), never of the sensor: the worker process adds the
        offset of the sensor region the stack was read from.
        """
        image = data.get(NETWORK_IMAGE_KEY)
        if (not isinstance(image, np.ndarray) or image.ndim != 2
                or image.dtype.kind not in "biuf"):
            return ()  # no image, or one the worker process refuses (and counts) anyway
        return regions_from_image(
            image, self.location_threshold, self.image_to_acquisition(image.shape, data),
            min_area=self.location_min_area, max_regions=self.max_regions,
            relative=self.location_relative)

    def image_to_acquisition(self, image_shape: tuple[int, ...], data: dict[str, Any]
                             ) -> PixelMap:
        """How network-image pixels map to the analysed stack's pixels.

        The default: the identity when the image has the stack's size, else a resampling of
        the whole stack (the tiling worker's). A worker that crops overrides it (the rescale
        worker keeps the top-left part: the identity).
        """
        stack_shape = tuple(data.get(STACK_SHAPE_KEY, image_shape[:2]))
        shape = (int(stack_shape[0]), int(stack_shape[1]))
        if tuple(image_shape[:2]) == shape:
            return PixelMap.identity(shape)
        return PixelMap.resampled((int(image_shape[0]), int(image_shape[1])), shape)

    # -- driver ----------------------------------------------------------------------------
    def analyse(self, stack: np.ndarray) -> Analysis:
        """Run the hooks on one stack and time each phase."""
        t0 = time.perf_counter()
        data = self.prepare_images(stack)
        t1 = time.perf_counter()
        output = self.run_model(data)
        t2 = time.perf_counter()
        decision = float(self.extract_decision_parameter(output))
        image = self.post_process_output(output, data)
        regions: tuple[EventRegion, ...] = ()
        if self.locations:
            data[NETWORK_IMAGE_KEY] = image
            data.setdefault(STACK_SHAPE_KEY, tuple(stack.shape[-2:]))
            regions = tuple(self.extract_event_locations(output, data))
        t3 = time.perf_counter()
        return Analysis(decision, image, t1 - t0, t2 - t1, t3 - t2, regions=regions)


_HOOKS = ("prepare_images -> run_model -> extract_decision_parameter / "
          "post_process_output")

#: Names the original plugin's workers defined that rt-eda never calls, with what to do
#: instead. A class that defines one is refused by discovery (:func:`original_api_problem`):
#: a ported subclass would otherwise run without its code ever being called.
ORIGINAL_ONLY: dict[str, str] = {
    "run": (
        "the original plugin's QRunnable body, which rt-eda never calls: the worker process "
        f"calls {_HOOKS} itself; move the model call (model.predict_on_batch) into "
        "run_model(data) and delete run()"
    ),
    "_Signals": (
        "the original plugin's Qt signals, which rt-eda never uses: return the decision from "
        "extract_decision_parameter and the network image from post_process_output (the "
        "worker process sends them on); delete _Signals and the emit() calls"
    ),
    "predict": (
        "which rt-eda never calls: the model runs in run_model(data); rename it run_model, "
        "or call it from your run_model"
    ),
    "predict_on_batch": (
        "which rt-eda never calls: the model runs in run_model(data); rename it run_model, "
        "or call it from your run_model"
    ),
}

#: Names refused only when the class does not also override run_model (then they are its
#: helpers, called from there).
_UNLESS_RUN_MODEL = frozenset({"predict", "predict_on_batch"})


def original_api_problem(cls: type[Worker]) -> str | None:
    """Why ``cls`` looks written for the original plugin's API, or None.

    Refused: a class (or a base of it outside rt-eda) that defines a method of the original
    that rt-eda never calls (:data:`ORIGINAL_ONLY`: ``run``, the ``_Signals`` class;
    ``predict`` / ``predict_on_batch`` unless it overrides ``run_model`` too), and an
    ``__init__`` that cannot take rt-eda's one argument (the original's took
    ``local_images, timepoint, start_time`` and ``model=``). The reason is one line naming the
    class, the method and the hook to use instead.
    """
    own = [k for k in cls.__mro__ if k is not object
           and not k.__module__.startswith("rt_eda.workers.")]
    defined = {name: k for k in reversed(own) for name in vars(k)}
    where = f"worker {cls.name} ({cls.__module__}.{cls.__qualname__})"
    for name, advice in ORIGINAL_ONLY.items():
        if name not in defined:
            continue
        if name in _UNLESS_RUN_MODEL and "run_model" in defined:
            continue
        kind = "class" if isinstance(vars(defined[name])[name], type) else "method"
        what = f"{name}()" if kind == "method" else name
        return f"{where} defines {what}, {advice} (docs/workers.md, Porting)"
    init = vars(defined["__init__"])["__init__"] if "__init__" in defined else None
    if init is not None:
        try:
            inspect.signature(init).bind(None, WorkerSettings())
        except TypeError:
            return (f"{where}: __init__{inspect.signature(init)} cannot be called as "
                    "__init__(self, settings): rt-eda constructs every worker with its "
                    "WorkerSettings only (the stack reaches prepare_images, the model is "
                    "loaded by setup); take (self, settings) and call "
                    "super().__init__(settings) (docs/workers.md, Porting)")
        except ValueError:  # no signature to read (a builtin): nothing to check
            pass
    return None


def probes_before_start(cls: type[Worker]) -> bool:
    """Whether the engine probes ``cls`` before anything starts (see
    :attr:`Worker.probe_before_start`)."""
    flag = cls.probe_before_start
    return bool(cls.needs_model) if flag is None else bool(flag)


def network_image_problem(image: object, declared: tuple[int, int] | None) -> str | None:
    """Why ``image`` may not be stored as a network image of ``declared`` shape, or None.

    Accepted: a 2-D :class:`numpy.ndarray` of exactly ``declared`` ``(height, width)`` whose
    dtype is a real number (bool, integer or floating point; stored as float32, NaN and inf
    included). Refused: anything else (another rank, another shape, complex, object or
    string dtypes, not an array), and any image when the worker declares none. The reason
    names both shapes. Never copies the image.
    """
    if not isinstance(image, np.ndarray):
        return (f"it is a {type(image).__name__}, not a numpy array (the worker declares "
                f"{_shape_text(declared)})")
    got = f"{tuple(image.shape)} {image.dtype}"
    if declared is None:
        return (f"the worker declares no network image (network_image_shape() is None) but "
                f"made one of {got}")
    if image.ndim != 2 or tuple(image.shape) != tuple(declared):
        return f"it is {got}, but the worker declares {tuple(declared)} (height, width)"
    if image.dtype.kind not in "biuf":
        return (f"its dtype {image.dtype} is not a real number (bool, integer or float); "
                f"shape {tuple(image.shape)}")
    return None


def _bool_option(settings: WorkerSettings, key: str, default: bool) -> bool:
    value = settings.option(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"analysis.options.{key} must be true or false, got {value!r}")
    return value


def _number_option(settings: WorkerSettings, key: str, default: float, *,
                   integer: bool = False, low: float = -math.inf) -> float:
    value = settings.option(key, default)
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds)
            or not isinstance(value, int | float) or not low <= value < math.inf):
        what = "an integer" if integer else "a number"
        bound = f" >= {low:g}" if low > -math.inf else ""
        raise ConfigError(f"analysis.options.{key} must be {what}{bound}, got {value!r}")
    return float(value)


def _shape_text(declared: tuple[int, int] | None) -> str:
    return "no network image" if declared is None else f"{tuple(declared)} (height, width)"


def exception_line(exc: BaseException) -> str:
    """``Type: message`` in one line for a user, at most about 400 characters.

    Keras' and TensorFlow's multi-line texts are cut down to what they say about the model:
    a ``tf.function``'s "in user code:" traceback is replaced by the error it ends with, the
    ANSI emphasis and the "Arguments received by" appendix are dropped, and "Exception
    encountered when calling Layer.call()." becomes "in Layer:".
    """
    name = type(exc).__name__
    text = _ANSI.sub("", str(exc))
    if "in user code:" in text:
        inner = list(_INNER_ERROR.finditer(text))
        if inner:
            name, text = inner[-1].group(1).rsplit(".", 1)[-1], text[inner[-1].end():]
    text = text.split("Arguments received by", 1)[0]
    text = _KERAS_CALL.sub(r"in \1:", text)
    text = " ".join(text.split())
    if len(text) > _MAX_LINE:
        text = text[: _MAX_LINE - 3].rstrip() + "..."
    return f"{name}: {text}" if text else name


def worker_settings(config: Config) -> WorkerSettings:
    """The :class:`WorkerSettings` of ``config.analysis``."""
    a = config.analysis
    return WorkerSettings(
        model=a.model,
        threads=a.threads_per_worker,
        n_timepoints=a.n_timepoints,
        channels_to_use=tuple(a.channels_to_use),
        options=tuple(sorted(a.options.items())),
        source=config.camera.source.partition(":")[0],
        device=a.device,
    )


def check_warm_up(worker: Worker, analysis: Analysis | None) -> None:
    """Refuse a worker whose warm-up network image breaks its own declared shape.

    Raises
    ------
    ModelError
        Naming the worker, the image made and the shape declared.
    """
    if analysis is None or analysis.network_image is None:
        return
    problem = network_image_problem(analysis.network_image, worker.network_image_shape())
    if problem is not None:
        raise ModelError(
            f"worker {worker.name}: the network image of its warm-up on the real input shape "
            f"is refused: {problem}"
        )
