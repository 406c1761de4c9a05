"""The connection to Ray: start a local instance or join a cluster, within a time limit.

::

    cluster.address   what connect() does                          disconnect()
    "local"           ray.init(): a new instance on this machine,   ray.shutdown(): the
                      owned by this process (its processes die      instance stops
                      with it), object store sized for the run
    "auto"            ray.init("auto"): the cluster this machine    ray.shutdown(): this
                      is a node of (started by `ray start`)         driver leaves; the
    "HOST:PORT"       the head's GCS address                        cluster goes on
    "ray://HOST:PORT" Ray Client: every call goes to the head

A cluster that cannot be reached is a :class:`~rt_eda.core.errors.ClusterUnreachableError`
(exit 2 before acquisition): a TCP connection to HOST:PORT is tried first, for at most
:data:`REACH_S` seconds, so an address that refuses or does not answer fails at once with the
system's reason, instead of after Ray's own retries (minutes for a GCS address); then Ray's
own exception text, in one line; or, if Ray neither connects nor fails within
``cluster.timeout_s``, its last words on stderr.

Only the bridge process connects (never the engine): Ray ends a driver process whose cluster
has been gone for a minute, and the engine must outlive any cluster. What Ray's C++ core
writes to file descriptor 2 is forwarded to the log (:func:`forward_native_output`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rt_eda.core.config import ClusterConfig
from rt_eda.core.errors import ClusterUnreachableError

__all__ = ["REACH_S", "ClusterSession", "connect", "disconnect", "forward_native_output"]

log = logging.getLogger(__name__)

REACH_S = 5.0
"""The longest the TCP check of a ``HOST:PORT`` address waits for an answer."""

_NATIVE_LEVEL = re.compile(r"^\[[\d\-: ,.]+ ([IWEF]) \d+ \d+\]")
#: Ray's error lines that say nothing is wrong here: the bridge keeps the model's object (an
#: actor's constructor argument) alive for the whole run, so restarts find it.
_KNOWN = re.compile(r"has constructor arguments in the object store and max_restarts > 0")
_LAST_WORDS = 5


@dataclass(frozen=True, slots=True)
class ClusterSession:
    """A live connection to Ray.

    ``address``: as configured; ``where``: what Ray is reachable at (for a local instance
    its GCS address, which other processes can join); ``local``: rt-eda started this Ray
    instance (it stops at :func:`disconnect`); ``client``: Ray Client (``ray://``).
    """

    address: str
    where: str
    namespace: str
    local: bool
    client: bool


class _Tail:
    """The last lines written to file descriptor 2 (Ray's last words)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def add(self, line: str) -> None:
        with self.lock:
            self.lines = [*self.lines[-(_LAST_WORDS - 1):], line]

    def last(self) -> str:
        with self.lock:
            return self.lines[-1] if self.lines else ""


_TAIL = _Tail()


@contextlib.contextmanager
def forward_native_output(logger: logging.Logger | None = None) -> Iterator[None]:
    """Send what this process writes to file descriptor 2 (Ray's C++ core, gRPC) to the
    log while the block runs, line by line: Ray's error and fatal lines at WARNING, the rest
    at DEBUG (with ``--debug`` nothing is redirected). The last lines are kept for
    :func:`connect`'s message when Ray neither connects nor fails."""
    out = logger or log
    if os.environ.get("RT_EDA_DEBUG") == "1":
        yield
        return
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "r", errors="replace") as stream:
            for raw in stream:
                line = raw.rstrip()
                if not line.strip():
                    continue
                _TAIL.add(line)
                m = _NATIVE_LEVEL.match(line)
                level = logging.WARNING if m and m.group(1) in "EF" and \
                    not _KNOWN.search(line) else logging.DEBUG
                out.log(level, "ray: %s", line)

    thread = threading.Thread(target=pump, name="ray-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF
        os.close(saved)
        thread.join(1.0)


def _host_port(address: str) -> tuple[str, int] | None:
    if address in ("local", "auto"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host.strip("[]"), int(port)


def _reach(address: str) -> None:
    """A TCP connection to the address's HOST:PORT, or ClusterUnreachableError."""
    hp = _host_port(address)
    if hp is None:
        return
    host, port = hp
    try:
        with socket.create_connection((host, port), timeout=REACH_S):
            pass
    except TimeoutError:
        raise ClusterUnreachableError(
            f"cluster.address {address!r}: no Ray cluster answers at {host}:{port} (no TCP "
            f"answer within {REACH_S:g} s)") from None
    except OSError as exc:
        raise ClusterUnreachableError(
            f"cluster.address {address!r}: no Ray cluster answers at {host}:{port} "
            f"({exc.strerror or exc})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def connect(cluster: ClusterConfig, *, namespace: str, num_cpus: float,
            object_store_bytes: int, runtime_env: dict[str, Any] | None = None
            ) -> ClusterSession:
    """Start or join Ray (see the module docstring); returns the session.

    ``num_cpus`` and ``object_store_bytes`` size a local instance (``"local"`` only);
    ``runtime_env`` is the job's (every actor's): Ray uploads local ``py_modules`` only for
    a job's own environment.

    Raises
    ------
    ClusterUnreachableError
        One line: the address and why (the system's reason, or Ray's own message).
    """
    address = cluster.address
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    _reach(address)
    import ray

    logging.getLogger("ray").setLevel(
        logging.DEBUG if os.environ.get("RT_EDA_DEBUG") == "1" else logging.ERROR)
    kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": False}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address == "local":
        # "local" starts a new instance even where RAY_ADDRESS or /tmp/ray's record of the
        # latest cluster (a stale one left by a killed run, or a `ray start` on this PC)
        # names another: without it, ray.init joins that one, or refuses num_cpus
        kwargs |= {"address": "local", "num_cpus": num_cpus,
                   "object_store_memory": object_store_bytes,
                   "include_dashboard": False, "configure_logging": False}
    else:
        kwargs["address"] = address
        if not address.startswith("ray://"):
            kwargs["configure_logging"] = False
    outcome: list[object] = []

    def init() -> None:
        try:
            # Ray puts the driver's working folder first on every worker's sys.path: from a
            # checkout of rt-eda (or any folder holding an rt_eda/ of its own) the actors
            # imported that folder instead of the installed package and died at creation
            # ("TemporaryActor"). A neutral folder for the connection; shipped code travels
            # as py_modules with absolute paths.
            with contextlib.chdir(tempfile.gettempdir()):
                outcome.append(ray.init(**kwargs))
        except (OSError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            outcome.append(exc)  # OSError covers ConnectionError and TimeoutError

    what = "start Ray on this machine" if address == "local" else "connect to Ray"
    if address == "local":
        # In this (the main) thread: Ray's processes die with the thread that started them
        # (PR_SET_PDEATHSIG), and a local start has its own time limits. ray.init takes
        # SIGTERM for itself in the main thread: the role's own handler is put back.
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            init()
        finally:
            signal.signal(signal.SIGTERM, on_sigterm)
        thread = None
    else:  # joining starts no process: a thread, so a cluster that never answers is timed
        thread = threading.Thread(target=init, name="ray-connect", daemon=True)
        thread.start()
        thread.join(cluster.timeout_s)
    if thread is not None and thread.is_alive():
        last = _TAIL.last()
        raise ClusterUnreachableError(
            f"cluster.address {address!r}: could not {what} within cluster.timeout_s "
            f"({cluster.timeout_s:g} s)" + (f"; Ray's last words: {last}" if last else ""))
    if not outcome:  # ray.init raised something else: its traceback is in the log
        raise ClusterUnreachableError(
            f"cluster.address {address!r}: could not {what}: Ray failed (see the log)")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise ClusterUnreachableError(
            f"cluster.address {address!r}: could not {what}: {_one_line(result)}")
    client = address.startswith("ray://")
    where = address
    if not client:
        where = str(ray.get_runtime_context().gcs_address)
    session = ClusterSession(address=address, where=where, namespace=namespace,
                             local=address == "local", client=client)
    log.info("ray: %s %s (namespace %s)", "started" if session.local else "joined", where,
             namespace)
    return session


def disconnect(session: ClusterSession) -> None:
    """Leave Ray (a local instance stops). Never raises: the run's end must not fail on it."""
    import ray

    try:
        ray.shutdown()
    except (OSError, RuntimeError, ray.exceptions.RayError) as exc:  # the run is over
        log.warning("ray: leaving %s failed: %s", session.where, _one_line(exc))
