"""Where a worker process runs its model: ``analysis.device = "cpu" | "gpu" | "gpu:N"``.

:func:`configure_device` runs in the worker process (and in the preflight probe) before the
model is loaded, while TensorFlow has not yet initialised its devices:

- ``"cpu"`` hides every GPU from TensorFlow, so a machine with a GPU still runs on the CPU
  as configured (and no process reserves GPU memory it does not use);
- ``"gpu"`` / ``"gpu:N"`` makes only GPU number N (0 for ``"gpu"``) visible and lets its
  memory grow on demand instead of TensorFlow's default of reserving nearly all of it, so
  several worker processes share one GPU; ``analysis.options.gpu_memory_mb`` caps each
  process instead (a fixed share: N workers x the cap must fit the GPU).

A GPU that is not there is bad configuration: :class:`~rt_eda.core.errors.ConfigError` naming
the device asked for, the GPUs TensorFlow sees and whether this TensorFlow was built with
CUDA at all (``tensorflow-cpu`` never sees a GPU: ``pip install "rt-eda[gpu]"``). Raised in
the probe, it stops the run before acquisition (exit 2).

:func:`plan_device` is the decision without TensorFlow (which GPU, growth or a cap), so it is
tested on any machine; :func:`configure_device` applies it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from rt_eda.core.errors import ConfigError

__all__ = ["DevicePlan", "configure_device", "parse_device", "plan_device"]

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(cpu|gpu)(?::([0-9]+))?$")


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """What :func:`configure_device` does.

    Attributes
    ----------
    kind
        ``"cpu"`` or ``"gpu"``.
    index
        The GPU's number among TensorFlow's physical GPUs (None for the CPU).
    memory_mb
        A per-process memory cap in MiB, or None: memory grows on demand.
    """

    kind: str
    index: int | None = None
    memory_mb: int | None = None

    def describe(self) -> str:
        """One line for the log."""
        if self.kind == "cpu":
            return "device cpu (GPUs hidden)"
        share = (f"capped at {self.memory_mb} MiB" if self.memory_mb is not None
                 else "memory growth on")
        return f"device gpu:{self.index} ({share})"


def parse_device(text: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ``("cpu", None)``, ``"gpu"`` -> ``("gpu", 0)``, ``"gpu:2"`` -> ``("gpu", 2)``.

    Raises
    ------
    ConfigError
        Anything else (``"cpu:1"`` too: there is one CPU device).
    """
    match = _DEVICE.match(text)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ConfigError(f"analysis.device = {text!r} is not 'cpu', 'gpu' or 'gpu:N' (N >= 0)")
    if match.group(1) == "cpu":
        return ("cpu", None)
    return ("gpu", int(match.group(2) or 0))


def plan_device(device: str, gpus: list[str], *, built_with_cuda: bool,
                memory_mb: object = None) -> DevicePlan:
    """Decide what ``device`` means with the physical GPUs ``gpus`` (their names).

    Parameters
    ----------
    device
        ``analysis.device``.
    gpus
        The names of the GPUs TensorFlow sees, in its order.
    built_with_cuda
        Whether this TensorFlow can use a GPU at all (for the message).
    memory_mb
        ``analysis.options.gpu_memory_mb`` (None: memory growth).

    Raises
    ------
    ConfigError
        The GPU asked for is not there, or ``memory_mb`` is not a positive integer.
    """
    kind, index = parse_device(device)
    if kind == "cpu":
        return DevicePlan("cpu")
    assert index is not None
    if memory_mb is not None and (isinstance(memory_mb, bool) or not isinstance(memory_mb, int)
                                  or memory_mb < 1):
        raise ConfigError(
            f"analysis.options.gpu_memory_mb must be an integer >= 1 (MiB per worker process), "
            f"got {memory_mb!r}")
    if not gpus:
        why = ("this TensorFlow is built without CUDA (tensorflow-cpu): pip uninstall "
               "tensorflow-cpu && pip install 'rt-eda[gpu]'" if not built_with_cuda else
               "TensorFlow is built with CUDA but finds no GPU (driver, CUDA_VISIBLE_DEVICES?)")
        raise ConfigError(f"analysis.device = {device!r}, but TensorFlow sees no GPU here: "
                          f"{why}; or set analysis.device = 'cpu'")
    if index >= len(gpus):
        raise ConfigError(
            f"analysis.device = {device!r}, but TensorFlow sees {len(gpus)} GPU(s) "
            f"({', '.join(gpus)}): use gpu:0 .. gpu:{len(gpus) - 1}")
    return DevicePlan("gpu", index, None if memory_mb is None else int(memory_mb))


def configure_device(device: str, memory_mb: object = None) -> DevicePlan:
    """Make TensorFlow in this process use ``device`` (see the module docstring).

    Call it before the model is loaded. Idempotent: a second call with the same device
    changes nothing.

    Raises
    ------
    ConfigError
        As :func:`plan_device`, or TensorFlow had already initialised its devices with other
        ones visible (the message names them).
    """
    import tensorflow as tf

    physical = tf.config.list_physical_devices("GPU")
    plan = plan_device(device, [d.name for d in physical],
                       built_with_cuda=bool(tf.test.is_built_with_cuda()), memory_mb=memory_mb)
    wanted: list[Any] = [] if plan.index is None else [physical[plan.index]]
    try:
        tf.config.set_visible_devices(wanted, "GPU")
        for gpu in wanted:
            if plan.memory_mb is None:
                tf.config.experimental.set_memory_growth(gpu, True)
            else:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=plan.memory_mb)])
    except RuntimeError:
        # Devices were initialised earlier in this process; fine if they are the ones wanted.
        visible = tf.config.get_visible_devices("GPU")
        if [d.name for d in visible] != [d.name for d in wanted]:
            raise ConfigError(
                f"analysis.device = {device!r} came after TensorFlow initialised its devices "
                f"in this process (visible GPUs: {[d.name for d in visible]})") from None
    log.debug("%s", plan.describe())
    return plan
