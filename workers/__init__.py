"""Analysis workers: the worker API users subclass, the built-in workers, model loading.

The worker process loop that drives them is :mod:`rt_eda.roles.worker`.

What a worker of your own needs is importable from here (``docs/workers.md``): the bases
:class:`Worker` and :class:`KerasWorker`, :class:`WorkerSettings`, the shapes
(:class:`StackSpec`, :class:`ModelInfo`), the layout and image helpers
(:func:`to_model_layout`, :func:`network_image`), the event locations
(:func:`regions_from_image`, :class:`PixelMap`, :func:`label_components`) and the errors
that refuse a run before it starts (:class:`ConfigError`, :class:`ModelError`).

The only package of rt-eda that imports TensorFlow/Keras, and only when a Keras worker is
set up: importing :mod:`rt_eda.workers` itself stays light.
"""

from rt_eda.core.errors import ConfigError, ModelError
from rt_eda.shm import StackSpec

from ._base import (
    NETWORK_IMAGE_KEY,
    STACK_SHAPE_KEY,
    Analysis,
    Worker,
    WorkerSettings,
    check_warm_up,
    exception_line,
    network_image_problem,
    worker_settings,
)
from ._discovery import describe_workers, discover_workers
from ._fit import check_fit
from ._flops import count_flops
from ._image import ImageWorker
from ._keras import INFERENCE_MODES, KerasWorker, configure_threads, network_image, to_model_layout
from ._keras_builtin import DemoModelWorker, KerasRescaleWorker, KerasTilingWorker
from ._locations import PixelMap, label_components, regions_from_image
from ._models import (
    ModelInfo,
    demo_model_path,
    inspect_loaded,
    inspect_model,
    load_model,
)

__all__ = [
    "INFERENCE_MODES",
    "NETWORK_IMAGE_KEY",
    "STACK_SHAPE_KEY",
    "Analysis",
    "ConfigError",
    "DemoModelWorker",
    "ImageWorker",
    "KerasRescaleWorker",
    "KerasTilingWorker",
    "KerasWorker",
    "ModelError",
    "ModelInfo",
    "PixelMap",
    "StackSpec",
    "Worker",
    "WorkerSettings",
    "check_fit",
    "check_warm_up",
    "configure_threads",
    "count_flops",
    "demo_model_path",
    "describe_workers",
    "discover_workers",
    "exception_line",
    "inspect_loaded",
    "inspect_model",
    "label_components",
    "load_model",
    "network_image",
    "network_image_problem",
    "regions_from_image",
    "to_model_layout",
    "worker_settings",
]
