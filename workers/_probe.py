"""The preflight probe: the configured worker set up and warmed up once, before anything starts.

The engine's static check (:meth:`~rt_eda.workers._base.Worker.check`) reads a model file
without TensorFlow; it cannot see a model that fails on the real input (a layer that rejects
the size, a reshape that does not divide, several outputs hidden in a subclass) and must not
refuse what it cannot tell (a dimension left ``None``). The probe settles both by doing what a
worker process does before it claims anything::

    engine (no TensorFlow)          probe process (spawn, "rt-eda-probe")
    probe_worker(config, spec) ---> configure_threads -> Worker(settings) -> setup(spec)
                                    -> warm_up() on zeros of the real input shape
                                    -> the warm-up's network image checked against the
                                       declared shape
         ProbeResult or the error <--- one message on a pipe, then the process exits

- A failure is bad input: :class:`~rt_eda.core.errors.ModelError` (or the worker's own
  :class:`~rt_eda.core.errors.ConfigError`), one line naming the model, the input it was fed and
  the model's own error; the engine exits 2 with nothing started. A probe process that dies
  (a crash inside TensorFlow) or does not finish within :data:`PROBE_TIMEOUT_S` is reported
  the same way.
- Only a real failure refuses a model: the shapes reported are the ones a real forward pass
  produced, never a symbolic guess.
- Workers without a model are not probed (:func:`~rt_eda.workers._base.probes_before_start`):
  their check costs nothing to run in the worker itself.

Cost: the probe imports TensorFlow and loads the model once more, before the workers do (on
this 2-core machine about 5-8 s for the demo model, most of it the TensorFlow import). A
successful probe is remembered on disk (``$XDG_CACHE_HOME/rt-eda/probes``, default
``~/.cache``), keyed by everything its outcome depends on: the model file's bytes, the source
files of the worker class and its bases, the worker settings, the stack shape and the
versions of Python, rt-eda, Keras, TensorFlow, NumPy and numba. A run that changes none of
them skips the probe; a failure is never remembered.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import inspect
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, ModelError, RtEdaError
from rt_eda.core.process import debug_logging
from rt_eda.shm import StackSpec

from ._base import Worker, exception_line, probes_before_start

__all__ = ["PROBE_TIMEOUT_S", "ProbeResult", "probe_cache_dir", "probe_worker"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 600.0
"""Longest a probe may take (a large model on a slow machine), as the workers' start-up."""

_POLL_S = 0.1
_VERSIONED = ("keras", "tensorflow", "tf-keras", "numpy", "numba", "h5py", "tf2onnx", "onnx",
              "onnxruntime", "openvino")
_memo: dict[str, ProbeResult] = {}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe found (all shapes from a real forward pass).

    Attributes
    ----------
    worker
        The worker's name.
    network_image_shape
        ``(height, width)`` the worker declares for its network images, or None.
    warm_up_image_shape
        The shape of the image its warm-up made, or None (none made).
    output_shape
        The model output's shape for one stack (Keras workers), or None.
    decision
        The warm-up's decision (zeros in: any value, NaN included, is allowed here).
    seconds
        How long the probe took (0 when it came from the cache).
    cached
        Whether the result came from the on-disk cache instead of a probe process.
    """

    worker: str
    network_image_shape: tuple[int, int] | None
    warm_up_image_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    decision: float
    seconds: float
    cached: bool = False

    def describe(self) -> str:
        """One line for the log."""
        how = "from the probe cache" if self.cached else f"in {self.seconds:.1f} s"
        return (f"probe: {self.worker} set up and warmed up on the real input shape {how}: "
                f"output {self.output_shape}, network image {self.network_image_shape}")


def probe_cache_dir() -> Path:
    """Where successful probes are remembered (``$XDG_CACHE_HOME/rt-eda/probes``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rt-eda" / "probes"


def probe_worker(
    config: Config,
    spec: StackSpec,
    *,
    cancelled: Callable[[], bool] = lambda: False,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> ProbeResult | None:
    """Probe the configured worker on stacks of ``spec`` in a short-lived process.

    Parameters
    ----------
    config
        The run's configuration (``analysis`` says which worker, model and settings).
    spec
        The acquisition's stack shape.
    cancelled
        Polled about ten times a second while the probe runs; when it returns True (a
        Ctrl-C) the probe process is killed and None is returned.
    timeout_s
        How long the probe may take.

    Returns
    -------
    ProbeResult or None
        None when the worker is not probed (no model) or the probe was cancelled. The same
        configuration and spec are probed once per process (later calls return the first
        result), and a success is remembered on disk (see the module docstring).

    Raises
    ------
    ModelError
        The worker failed on the real input shape, its warm-up made a network image that
        breaks its declared shape, or the probe process died or timed out; one line.
    ConfigError
        The worker refused its settings (e.g. an option out of range).

    Notes
    -----
    Call it from the engine process, before any role starts. The calling process never
    imports TensorFlow: everything runs in a ``spawn`` child that ignores SIGINT and dies with
    its parent (``PR_SET_PDEATHSIG``).
    """
    from ._base import worker_settings
    from ._discovery import discover_workers

    cls = discover_workers(config.analysis.worker_modules)[config.analysis.worker]
    if not probes_before_start(cls):
        return None
    settings = worker_settings(config)
    key = _cache_key(cls, cls(settings), spec, repr(settings))
    if key in _memo:
        return _memo[key]
    cached = _read_cache(key)
    if cached is not None:
        log.info("%s", cached.describe())
        _memo[key] = cached
        return cached
    result = _run_probe(config, spec, cancelled, timeout_s)
    if result is None:
        return None
    log.info("%s", result.describe())
    _memo[key] = result
    _write_cache(key, result)
    return result


# -- the probe process -------------------------------------------------------------------------
def _run_probe(config: Config, spec: StackSpec, cancelled: Callable[[], bool],
               timeout_s: float) -> ProbeResult | None:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    # The probe's stderr (TensorFlow's start-up chatter, Keras warnings) goes to a file: the
    # run's own workers say all that again; only a probe that dies has its last words shown.
    fd, stderr_path = tempfile.mkstemp(prefix="rt-eda-probe-", suffix=".log")
    os.close(fd)
    process = ctx.Process(target=_probe_main, args=(config, spec, send, stderr_path),
                          name="probe", daemon=True)
    # Ignored in the parent while the child starts, so the child inherits SIG_IGN from its
    # first instruction: a Ctrl-C to the process group cannot interrupt its imports.
    on_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, on_sigint)
    send.close()
    t0 = time.monotonic()
    name = config.analysis.worker
    try:
        while not receive.poll(_POLL_S):
            if cancelled():
                log.info("probe of worker %s cancelled", name)
                process.kill()
                return None
            if time.monotonic() - t0 > timeout_s:
                raise ModelError(
                    f"the probe of worker {name} (set-up and one warm-up analysis) did not "
                    f"finish within {timeout_s:.0f} s"
                )
            if not process.is_alive() and not receive.poll(0):
                break
        try:
            message: dict[str, Any] = receive.recv()
        except EOFError:
            process.join(5)
            raise ModelError(
                f"the probe of worker {name} died (exit code {process.exitcode}) before it "
                f"reported: it was to set up the model and run it once on the acquisition "
                f"stack {spec.shape} {spec.dtype}{_last_words(stderr_path)}"
            ) from None
    finally:
        receive.close()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        with contextlib.suppress(OSError):
            Path(stderr_path).unlink()
    if message["ok"]:
        return ProbeResult(**message["result"])
    kind = ConfigError if message["kind"] == "ConfigError" else ModelError
    raise kind(message["error"])


def _last_words(path: str) -> str:
    """``"; last output: ..."`` from a dead probe's stderr file, or ``""``."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()
                 if line.strip() and "absl::InitializeLog" not in line]
    except OSError:
        return ""
    return f"; its last output: {lines[-1][:300]}" if lines else ""


def _name_process() -> None:
    """``rt-eda-probe`` for ps/top; follow the engine if it dies; ignore Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle("rt-eda-probe")
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, b"rt-eda-probe", 0, 0, 0)  # PR_SET_NAME
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _probe_main(config: Config, spec: StackSpec, send: Any, stderr_path: str) -> None:
    """Entry point of the probe process: one message on ``send``, then exit. Its stderr
    (file descriptor 2, so TensorFlow's C++ logging too) goes to ``stderr_path``."""
    _name_process()
    if not debug_logging():  # with --debug everything shows, as the libraries wrote it
        with contextlib.suppress(OSError):
            fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
            os.dup2(fd, 2)
            os.close(fd)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if debug_logging() else logging.WARNING,
                        format="%(levelname)s: probe: %(message)s")
    from ._base import check_warm_up, worker_settings
    from ._discovery import discover_workers
    from ._keras import KerasWorker, configure_threads

    t0 = time.monotonic()
    worker: Worker | None = None
    stage = "set-up"
    try:
        cls = discover_workers(config.analysis.worker_modules)[config.analysis.worker]
        configure_threads(config.analysis.threads_per_worker,
                          tensorflow=issubclass(cls, KerasWorker))
        worker = cls(worker_settings(config))
        worker.setup(spec)
        stage = "warm-up (one analysis of zeros)"
        analysis = worker.warm_up()
        check_warm_up(worker, analysis)
        image = None if analysis is None else analysis.network_image
        output = getattr(worker, "output_shape", None)
        result = ProbeResult(
            worker=worker.name,
            network_image_shape=worker.network_image_shape(),
            warm_up_image_shape=None if image is None else tuple(image.shape),
            output_shape=None if output is None else tuple(output),
            decision=float("nan") if analysis is None else analysis.decision,
            seconds=time.monotonic() - t0,
        )
        send.send({"ok": True, "result": asdict(result)})
    except RtEdaError as exc:
        kind = "ConfigError" if isinstance(exc, ConfigError) else "ModelError"
        send.send({"ok": False, "kind": kind, "error": str(exc)})
    # The probe process's top loop (the one broad catch a process has): the user's worker
    # and model run here for the first time on the real input, and whatever they raise
    # means they do not fit this acquisition, which is bad input (exit 2).
    except Exception as exc:  # noqa: BLE001
        what = ""
        info = getattr(worker, "info", None)
        if info is not None:
            what = f" with {info.describe()}"
        send.send({"ok": False, "kind": "ModelError", "error": (
            f"worker {config.analysis.worker}{what} fails in its {stage} on the acquisition "
            f"stack {spec.shape} {spec.dtype}: {exception_line(exc)}")})
    finally:
        if worker is not None:
            with contextlib.suppress(Exception):
                worker.teardown()
        send.close()


# -- the cache ---------------------------------------------------------------------------------
def _file_id(path: Path, *, content: bool) -> list[object]:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    ident: list[object] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if content and path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        ident.append(digest.hexdigest())
    return ident


def _cache_key(cls: type[Worker], worker: Worker, spec: StackSpec, settings: str) -> str:
    """A digest of everything a probe's outcome depends on (see the module docstring)."""
    from rt_eda import __version__

    sources = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        with contextlib.suppress(TypeError, OSError):
            file = inspect.getsourcefile(klass)
            if file:
                sources.append(_file_id(Path(file), content=False))
    sources.append(_file_id(Path(__file__).with_name("_models.py"), content=False))
    models: list[object] = []
    model_path = getattr(worker, "model_path", None)
    if callable(model_path):
        with contextlib.suppress(RtEdaError):
            models.append(_file_id(Path(model_path()), content=True))
    versions = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = ""
    material = json.dumps({
        "python": sys.version, "rt_eda": __version__, "versions": versions,
        "class": f"{cls.__module__}.{cls.__qualname__}", "sources": sources,
        "models": models, "spec": [list(spec.shape), spec.dtype], "settings": settings,
    }, sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _read_cache(key: str) -> ProbeResult | None:
    path = probe_cache_dir() / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        data["cached"], data["seconds"] = True, 0.0
        data["decision"] = float("nan") if data.get("decision") is None else data["decision"]
        for field in ("network_image_shape", "warm_up_image_shape", "output_shape"):
            if data.get(field) is not None:
                data[field] = tuple(data[field])
        return ProbeResult(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.debug("probe cache entry %s unreadable (%s); probing", path, exc)
        return None


def _write_cache(key: str, result: ProbeResult) -> None:
    folder = probe_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        data = asdict(result)
        data["decision"] = None if data["decision"] != data["decision"] else data["decision"]
        tmp.write_text(json.dumps(data))
        tmp.replace(folder / f"{key}.json")
    except OSError as exc:
        log.debug("probe not cached in %s: %s", folder, exc)
