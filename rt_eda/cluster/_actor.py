"""The Ray actor: one :class:`~rt_eda.workers.Worker` of the run's class, on a cluster node.

Everything here runs in the actor's process on the cluster (Ray starts it; the bridge only
holds its handle)::

    __init__(spec, model)   model bytes -> a file in the node's temp folder (by its hash)
                            discover the worker class (worker_modules arrive through Ray's
                            runtime environment) -> Worker(settings) -> setup -> warm_up
                            (a failure is kept, not raised: ready() reports it in one line)
    ready()                 who and where it is (incarnation, node, pid, clock), or the error
    analyse(stack, seq)     the worker's hooks on one stack, timed on the actor's clock
    clock()                 its monotonic clock, for the bridge's offset estimate
    close()                 the worker's teardown (before the bridge kills the actor)

The worker class runs unchanged: the same hooks, lifecycle and settings as in a local worker
process, with ``settings.model`` pointing at the shipped copy. Ray reruns ``__init__`` when
it restarts the actor, so a restarted actor is set up and warmed up again before its first
call; every incarnation has its own id, by which the bridge counts restarts. The stack
arrives from Ray's object store: read-only, zero-copy on the node that holds it (a worker
must not write into its input, locally or here).

This module is imported by the actor's process and by the bridge; it imports Ray only inside
the actor's methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rt_eda.core.messages import BAD_INPUT_ERRORS
from rt_eda.core.regions import EventRegion
from rt_eda.shm import StackSpec
from rt_eda.workers import Worker, WorkerSettings

__all__ = ["ActorIdentity", "ActorSpec", "AnalysisActor", "RemoteAnalysis", "boot_id",
           "materialize_model"]

log = logging.getLogger(__name__)

MODEL_DIR = "rt-eda-models"
"""Folder in the node's temporary folder where shipped models are kept, one sub-folder per
model hash: a restarted actor (or the next run) finds its model there already."""


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """What every actor of a run is built from (pickled to the cluster once per actor).

    ``settings`` are the local worker's (:func:`~rt_eda.workers.worker_settings`);
    ``model_name`` and ``model_sha256`` name the model file whose bytes come beside it
    ("" without a model). An actor on the host and boot ``nice_on`` (the microscope PC's,
    :func:`boot_id`) lowers its priority by ``nice``, as local workers do, so acquisition
    keeps its rate; on other nodes it runs at the priority Ray gave it.
    """

    worker: str
    worker_modules: tuple[str, ...]
    settings: WorkerSettings
    spec: StackSpec
    model_name: str = ""
    model_sha256: str = ""
    nice_on: str = ""
    nice: int = 0


@dataclass(frozen=True, slots=True)
class ActorIdentity:
    """Who and where an actor is (``ready()``), or why it could not be set up.

    ``incarnation`` changes with every (re)start; ``error`` is "" when the worker is set up
    and warm, else ``"Type: message"`` in one line, ``bad_input`` telling whether it is the
    configuration's or the model's fault (the engine exits 2 then, as for a local worker).
    ``t_clock`` is the actor's monotonic clock when it answered; ``version`` the rt-eda
    installed on its node.
    """

    incarnation: str
    pid: int
    node: str
    host: str
    hostname: str
    boot: str
    network_image_shape: tuple[int, int] | None
    error: str
    bad_input: bool
    t_clock: float
    version: str = ""


@dataclass(frozen=True, slots=True)
class RemoteAnalysis:
    """One stack's analysis by an actor.

    The worker's :class:`~rt_eda.workers.Analysis` (decision, network image, the hooks'
    seconds), with ``t_start``/``t_end`` on the actor's monotonic clock around the hooks and
    the ``incarnation`` that did it; ``regions``: the event locations, in the pixels of the
    stack it was sent (the bridge shifts them to sensor pixels).
    """

    seq: int
    decision: float
    network_image: np.ndarray | None
    t_prepare_s: float
    t_infer_s: float
    t_post_s: float
    t_start: float
    t_end: float
    incarnation: str
    regions: tuple[EventRegion, ...] = ()


def boot_id() -> str:
    """This host's name and boot: two processes with the same one share the monotonic clock.

    Linux gives the kernel's boot id; elsewhere the host name stands for it (the monotonic
    clock is system-wide on every platform Ray runs on)."""
    host = socket.gethostname()
    try:
        return host + "/" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return host


def materialize_model(name: str, sha256: str, data: bytes, root: Path | None = None) -> Path:
    """The shipped model as a file on this node: ``<tmp>/rt-eda-models/<sha256>/<name>``.

    Written once (to a temporary name, then renamed, so a concurrent actor never reads half a
    file) and checked against its hash; a later actor (a restart, the next run) reuses it.

    Raises
    ------
    ModelError
        The bytes do not have the hash the bridge computed (a corrupted transfer).
    OSError
        The node's temporary folder cannot be written.
    """
    from rt_eda.core.errors import ModelError

    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ModelError(f"model {name}: the bytes received have SHA-256 {got[:16]}..., not "
                         f"{sha256[:16]}... as sent")
    folder = (root or Path(tempfile.gettempdir())) / MODEL_DIR / sha256
    path = folder / name
    if path.is_file() and path.stat().st_size == len(data):
        return path
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{name}.{os.getpid()}.part"
    part.write_bytes(data)
    part.replace(path)
    return path


class AnalysisActor:
    """The actor class (Ray wraps it with ``ray.remote``; see the module docstring).

    Parameters
    ----------
    spec
        The run's worker, settings and stack shape.
    model
        The model file's bytes (resolved by Ray from the object store), ``b""`` for none.
    """

    def __init__(self, spec: ActorSpec, model: bytes) -> None:
        self.incarnation = uuid.uuid4().hex
        self._spec = spec
        self._worker: Worker | None = None
        self._error = ""
        self._bad_input = False
        self._shape: tuple[int, int] | None = None
        try:
            self._worker = self._set_up(spec, model)
        except Exception as exc:  # kept for ready(): the bridge reports it in one line
            from rt_eda.workers import exception_line

            log.exception("actor set-up failed")
            self._error = exception_line(exc)
            self._bad_input = isinstance(exc, BAD_INPUT_ERRORS)

    def _set_up(self, spec: ActorSpec, model: bytes) -> Worker:
        from rt_eda.workers import KerasWorker, check_warm_up, configure_threads
        from rt_eda.workers._discovery import discover_workers

        settings = spec.settings
        if spec.nice and spec.nice_on == boot_id():
            os.nice(spec.nice)
        if spec.model_name:
            path = materialize_model(spec.model_name, spec.model_sha256, model)
            settings = dataclasses.replace(settings, model=str(path))
        cls = discover_workers(spec.worker_modules)[spec.worker]
        configure_threads(settings.threads, tensorflow=issubclass(cls, KerasWorker))
        worker = cls(settings)
        worker.setup(spec.spec)
        check_warm_up(worker, worker.warm_up())
        shape = worker.network_image_shape()
        self._shape = (int(shape[0]), int(shape[1])) if shape else None
        return worker

    def ready(self) -> ActorIdentity:
        """Who and where this actor is (its set-up error, if any)."""
        import ray

        from rt_eda import __version__

        return ActorIdentity(
            incarnation=self.incarnation, pid=os.getpid(),
            node=ray.get_runtime_context().get_node_id(),
            host=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            hostname=socket.gethostname(),
            boot=boot_id(), network_image_shape=self._shape, error=self._error,
            bad_input=self._bad_input, t_clock=time.monotonic(), version=__version__,
        )

    def clock(self) -> float:
        """The actor's monotonic clock now."""
        return time.monotonic()

    def analyse(self, stack: np.ndarray, seq: int) -> RemoteAnalysis:
        """The worker's hooks on one stack (``seq``: its sequence number, sent back).

        Raises whatever a hook raises (Ray hands it to the bridge, which counts the stack as
        failed and has the actor restarted), or RuntimeError when set-up had failed.
        """
        if self._worker is None:
            raise RuntimeError(f"the actor is not set up: {self._error}")
        t0 = time.monotonic()
        a = self._worker.analyse(stack)
        t1 = time.monotonic()
        return RemoteAnalysis(seq, a.decision, a.network_image, a.t_prepare_s, a.t_infer_s,
                              a.t_post_s, t0, t1, self.incarnation, a.regions)

    def close(self) -> bool:
        """Tear the worker down (the bridge calls it before it ends the actor); True when
        there was one."""
        worker, self._worker = self._worker, None
        if worker is None:
            return False
        worker.teardown()
        return True
