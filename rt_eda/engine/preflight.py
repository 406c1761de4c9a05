"""The checks before anything starts: configuration, worker, model, memory, output paths.

::

    before any process     output paths writable, stale shared memory swept, the worker
    (preflight)            known, and when the source knows its stack before it opens (the
                           synthetic source): the model fits the stack, the run fits in
                           memory, the worker runs once on the real input shape (a probe
                           process), the run fits the disk and the cores (:mod:`.capacity`:
                           warned, or refused with run.strict); the run folder created last
    once a camera opened   the same fit, memory, probe and capacity checks on the camera's
    (check_stack)          own stack
    once workers are up    the network-image ring fits too (check_memory with its spec)

Every refusal is a :class:`~rt_eda.core.errors.ConfigError` or
:class:`~rt_eda.core.errors.ModelError` with one line per problem: the engine exits 2, having
started nothing (or, after the camera opened, having stopped it). Nothing here starts a role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.engine.budget import check_fits, plan
from rt_eda.engine.capacity import CapacitySummary, check_capacity
from rt_eda.shm import StackSpec, sweep_stale_blocks

if TYPE_CHECKING:
    from rt_eda.workers import Worker

__all__ = ["check_memory", "check_stack", "preflight"]


def preflight(config: Config, cancelled: Callable[[], bool]
              ) -> tuple[Worker, CapacitySummary | None]:
    """Everything that can be checked before a process starts (see the module docstring);
    returns the worker, made to check models against stacks, and the capacity check (None
    when the stack is known only once the camera opened). ``cancelled`` ends a probe early
    (a Ctrl-C)."""
    from rt_eda.engine.outputs import check_output_paths
    from rt_eda.sources import make_source
    from rt_eda.workers import worker_settings
    from rt_eda.workers._discovery import discover_workers

    check_output_paths(config)
    sweep_stale_blocks()
    workers = discover_workers(config.analysis.worker_modules)
    name = config.analysis.worker
    if name not in workers:
        raise ConfigError(
            f"analysis.worker: {name!r} is not a known worker; available: "
            + ", ".join(sorted(workers))
        )
    from rt_eda.actuators import make_actuators

    make_actuators(config)  # unknown actuators and options: exit 2 (the source's own
    # abilities are checked when the camera opens it, before READY)
    source = make_source(config)
    try:  # known before open() for the synthetic source; after it for a camera
        spec = getattr(source, "spec", None)
    except SourceError:
        spec = None
    if "roi" in config.actuation.actuators and not workers[name].reads_regions:
        raise ConfigError(f"actuator 'roi' hands the worker only a region of the sensor; "
                          f"{name} needs the full frame (its tiles are laid out for it)")
    worker = workers[name](worker_settings(config))
    capacity = None
    if isinstance(spec, StackSpec):
        check_stack(config, worker, spec, cancelled)
        capacity = check_capacity(config, spec)  # last but one: a run refused says only why
    if config.run.save:  # last: a folder is created only for a run that starts
        from rt_eda.storage.recording import prepare_save_dir

        prepare_save_dir(config.run.save)
    return worker, capacity


def check_stack(config: Config, worker: Worker, spec: StackSpec,
                cancelled: Callable[[], bool]) -> None:
    """The model fits ``spec`` (ModelError / ConfigError otherwise), the run fits in memory,
    and the worker runs once on that input shape (a probe process, remembered once it
    passed)."""
    from rt_eda.workers._probe import probe_worker

    worker.check(spec)
    check_memory(config, worker, spec)
    probe_worker(config, spec, cancelled=cancelled)


def check_memory(config: Config, worker: Worker | None, spec: StackSpec,
                 network_image: StackSpec | None = None) -> None:
    """Refuse (ConfigError) a run whose rings, workers' copies, renderer and processes
    cannot fit in the memory and /dev/shm available (see :mod:`rt_eda.engine.budget`).
    With ``network_image`` (the processes run already): the rings alone."""
    keras = any(c.__name__ == "KerasWorker" for c in type(worker).__mro__)
    allocs = plan(config, spec, keras=keras, network_image=network_image)
    if network_image is not None:
        # The processes and the renderer are running: what they hold is no longer
        # available already. The rings' pages are taken only as they are written.
        allocs = [a for a in allocs if a.shm]
    check_fits(allocs)
