"""The worker API: the hooks of the original plugin, run in a worker process.

A worker turns one stack (or a time window of stacks) into a decision parameter and,
optionally, a network image. The worker process loop (:mod:`rt_eda.workers._process`) calls,
per claimed stack::

    data = worker.prepare_images(stack)          # {'pixels': batch, ...extras}
    output = worker.run_model(data)              # KerasWorker: model.predict_on_batch
    decision = worker.extract_decision_parameter(output)
    image = worker.post_process_output(output, data)   # network image, or None

Lifecycle (one instance per worker process, never shared between processes)::

    __init__(settings) -> setup(spec) -> warm_up() -> analyse(...) * n -> teardown()

``setup`` loads what the worker needs (a model) and raises :class:`~rt_eda.errors.ModelError`
if it does not fit the acquisition, naming both shapes; the engine runs the same check in the
parent before anything starts (:meth:`Worker.check`), so a misfit exits 2 with nothing started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rt_eda.shm import StackSpec

__all__ = ["Analysis", "Worker", "WorkerSettings"]


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker is told about its job (from the ``[analysis]`` configuration section).

    ``model`` is a path or ``""`` (no model / the worker's default); ``channels_to_use`` maps
    model input channel i to acquisition channel ``channels_to_use[i]`` (empty: all, in order);
    ``options`` holds worker-specific settings (``[analysis.options]``).
    """

    model: str = ""
    threads: int = 1
    n_timepoints: int = 1
    channels_to_use: tuple[int, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        """A worker-specific option, or ``default``."""
        return dict(self.options).get(key, default)


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one analysis produced, with its per-phase timings in seconds."""

    decision: float
    network_image: np.ndarray | None
    t_prepare_s: float
    t_infer_s: float
    t_post_s: float
    extras: dict[str, Any] = field(default_factory=dict)


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
    """

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.spec: StackSpec | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def check(self, spec: StackSpec) -> None:
        """Check, without loading heavy state if possible, that the worker fits ``spec``.

        Called in the engine process before anything starts. Raise
        :class:`~rt_eda.errors.ModelError` (or :class:`~rt_eda.errors.ConfigError`) with a
        message naming both shapes and the setting to change.
        """
        channels = self.settings.channels_to_use
        if channels and max(channels) >= spec.channels:
            from rt_eda.errors import ConfigError

            raise ConfigError(
                f"analysis.channels_to_use = {list(channels)} names channel {max(channels)}, "
                f"but the acquisition has {spec.channels} channel(s) (0..{spec.channels - 1})"
            )

    def setup(self, spec: StackSpec) -> None:
        """Prepare for stacks of ``spec`` (load the model). Runs once in the worker process."""
        self.check(spec)
        self.spec = spec

    def warm_up(self) -> None:
        """Run one analysis of the real input shape so the first real stack is not slow."""
        if self.spec is None:
            raise RuntimeError("warm_up() called before setup()")
        shape: tuple[int, ...] = self.spec.shape
        if self.settings.n_timepoints > 1:
            shape = (self.settings.n_timepoints, *shape)
        self.analyse(np.zeros(shape, dtype=self.spec.np_dtype))

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
        t3 = time.perf_counter()
        return Analysis(decision, image, t1 - t0, t2 - t1, t3 - t2)
