"""The engine: creates shared memory, starts every role, watches them, ends the run cleanly.

::

    preflight (config, worker, model fit)        -- a problem here: exit 2, nothing started
    camera: open source -> READY(shape)
    create ring -> camera attaches
    workers 1..N, interpreter: set up, warm up -> READY
    camera: start                                -- acquisition runs
    watch: restart a crashed worker (bounded), stop on a fault, --duration, SIGINT/SIGTERM
    stop: camera -> ring shutdown (workers leave) -> interpreter drains -> summary
    finally: every child joined or killed, every segment unlinked

Exit codes: 0 ran and shut down cleanly; 2 bad configuration or model (nothing started);
1 a fault during the run (the summary is still written). Every role is started with the
``spawn`` start method (TensorFlow is not fork-safe).
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, ModelError, RingClosedError, RtEdaError, SourceError
from rt_eda.core.messages import CameraControl, RoleEvent, RoleEventKind
from rt_eda.core.process import RoleChannels
from rt_eda.core.queues import MessageQueue, StopEvent
from rt_eda.core.stats import percentiles
from rt_eda.engine.budget import check_fits, output_ring_slots, plan, ring_slots
from rt_eda.engine.outputs import WrittenOutputs
from rt_eda.engine.watchdog import Watchdog
from rt_eda.interpreters import make_interpreter
from rt_eda.shm import DecisionTrace, StackRing, StackSpec, sweep_stale_blocks

__all__ = ["Engine", "EXIT_BAD_INPUT", "EXIT_FAULT", "EXIT_OK", "Status", "ring_slots"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2

MAX_RESTARTS_PER_WORKER = 3
MAX_VIEWER_RESTARTS = 1
"""A viewer that dies is started again this many times per run (a closed window is not a
death and is never reopened)."""
READY_TIMEOUT_S = 600.0
_WATCHDOG_POLL_S = 0.1  # how often the claims are looked at (a few microseconds each)
_JOIN_S = 20.0


@dataclass
class Status:
    """The live numbers shown on the terminal (and handed to a status callback)."""

    elapsed_s: float = 0.0
    acquired_per_s: float = 0.0
    analysed_per_s: float = 0.0
    published: int = 0
    analysed: int = 0
    skipped: int = 0
    interval_s: float = float("nan")
    state: str = ""
    p2d_p50_ms: float = 0.0
    workers: int = 0
    restarts: int = 0

    def line(self) -> str:
        """One terminal line."""
        return (
            f"{self.elapsed_s:7.1f} s  acquired {self.acquired_per_s:7.1f}/s  "
            f"analysed {self.analysed_per_s:7.1f}/s  skipped {self.skipped:>7d}  "
            f"interval {self.interval_s:.3g} s {self.state:<4}  "
            f"publish->decision p50 {self.p2d_p50_ms:6.2f} ms  workers {self.workers}"
            + (f" (restarts {self.restarts})" if self.restarts else "")
        )


WORKER_CPU_S = 1.2
"""CPU seconds one worker process costs to start (spawn, imports, warm-up of the ring
kernels) and stop (interpreter exit), model aside: measured with ImageWorker on this 2-core
machine, 5.5 CPU-s for a whole run with 1 worker, 13.6 with 8."""


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _warn_oversubscribed(config: Config) -> None:
    """One warning line before anything starts when workers x threads exceed the cores."""
    a = config.analysis
    cores = _cores()
    threads = a.workers * a.threads_per_worker
    if threads <= cores:
        return
    cost = ""
    if a.workers > cores:
        cost = (f"; starting and stopping {a.workers} worker processes costs about "
                f"{WORKER_CPU_S * a.workers:.0f} CPU-s ({WORKER_CPU_S:g} each), about "
                f"{WORKER_CPU_S * a.workers / cores:.0f} s here")
    log.warning(
        "analysis.workers x analysis.threads_per_worker = %d x %d = %d compute threads on %d "
        "core(s): analysis cannot go faster than the cores allow%s (`rt-eda bench` measures "
        "the best split)", a.workers, a.threads_per_worker, threads, cores, cost)


@dataclass
class _Child:
    role: str
    index: int
    process: Any
    ready: bool = False
    restarts: int = 0
    failed: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


class _Stop(Exception):
    """Raised inside the engine to leave the start-up phase (a signal or a failure)."""


class Engine:
    """Runs one acquisition described by ``config``.

    Parameters
    ----------
    config
        The effective configuration (file + command-line overrides).
    on_status
        Called about twice a second with a :class:`Status` while the run goes (the CLI prints
        it on a terminal).
    """

    def __init__(self, config: Config, on_status: Callable[[Status], None] | None = None):
        self.config = config
        self.on_status = on_status
        self.errors: list[str] = []
        self.summary: dict[str, Any] = {}
        self._ctx = mp.get_context("spawn")
        self._children: list[_Child] = []
        self._ring: StackRing | None = None
        self._stop_requested = ""
        self._signals = 0
        self._status = Status()
        self._camera_stats: dict[str, Any] = {}
        self._interp_stats: dict[str, Any] = {}
        self._worker_stats: dict[int, list[dict[str, Any]]] = {}
        self._restarts = 0
        self._fault = False
        self._t_start = 0.0
        self._spec: StackSpec | None = None
        self._controls: dict[int, MessageQueue] = {}
        self._out_ring: StackRing | None = None
        self._out_ring_known = False
        self._trace: DecisionTrace | None = None
        self._viewer_wanted = False
        self._viewer_exits = 0  # deaths, not closed windows
        self._viewer_last_error = ""
        self._viewer_failed = ""  # the FAILED detail of the running viewer, if it sent one
        self._viewer_seen: set[int] = set()  # pids of viewer processes already accounted for
        self._relay: Any = None
        self._session: Path | None = None
        self._writer_stats: dict[str, Any] = {}
        self._salvaged = 0
        self._watchdog = Watchdog(config.analysis.watchdog_s)
        self._watchdog_kills = 0
        self._bad_input = False
        self._hurry = False  # a second Ctrl-C: kill what still runs, write what is known
        self._cut_short = False  # a role was killed because of it
        self._may_interrupt = False  # a second Ctrl-C may raise KeyboardInterrupt now
        self.outputs: WrittenOutputs | None = None

    # -- public --------------------------------------------------------------------------
    def run(self) -> int:
        """Run to the end; returns the exit code.

        Always cleans up (every child joined or killed, every segment unlinked), and always
        leaves the outputs written: the run folder finished (``summary.json``, report), the
        ``run.summary`` file and the profile (see :mod:`rt_eda.engine.outputs`); a failure to write
        one of them is an error line and exit 1, never the loss of the others. Bad input
        (exit 2) starts and writes nothing.

        SIGINT/SIGTERM (and :meth:`request_stop`) end the run cleanly at any phase, exit 0
        unless a fault happened; a second SIGINT cuts the shutdown short (see
        :meth:`request_stop`).
        """
        with self._signal_handlers():
            try:
                with self._interruptible():
                    self._preflight()
            except (ConfigError, ModelError) as exc:
                self.errors.append(str(exc))
                log.debug("bad input: %s", exc)  # the CLI prints self.errors, once
                return EXIT_BAD_INPUT
            except KeyboardInterrupt:
                pass  # a second Ctrl-C during preflight: nothing had started
            if self._stop_requested:
                log.info("stopped before anything started: %s", self._stop_requested)
                self._build_summary(started=False)
            else:
                with self._log_listener() as log_queue:
                    try:
                        self._run(log_queue)
                    finally:
                        self._cleanup()
            self._write_outputs()
        return self._exit_code()

    def request_stop(self, reason: str = "SIGINT") -> None:
        """Ask the run to end, as SIGINT/SIGTERM do (safe from a signal handler).

        The first request stops the run cleanly (every role finishes, everything acquired is
        saved). A second ``"SIGINT"`` request cuts the shutdown short: roles still running are
        killed at once, the summary is the minimal one (every contract key, ``cut_short``
        true, counts possibly incomplete) and the exit code is 1 when a role had to be killed
        (what was recorded may be incomplete); shared memory is still unlinked.
        """
        self._signals += 1
        if not self._stop_requested:
            self._stop_requested = reason
        if self._signals >= 2 and reason == "SIGINT":
            self._hurry = True

    # -- phases ----------------------------------------------------------------------------
    def _preflight(self) -> None:
        """Everything that can be checked before a process starts."""
        from rt_eda.engine.outputs import check_output_paths
        from rt_eda.sources import make_source
        from rt_eda.workers import worker_settings
        from rt_eda.workers._discovery import discover_workers
        from rt_eda.workers._probe import probe_worker

        check_output_paths(self.config)
        sweep_stale_blocks()
        workers = discover_workers(self.config.analysis.worker_modules)
        name = self.config.analysis.worker
        if name not in workers:
            raise ConfigError(
                f"analysis.worker: {name!r} is not a known worker; available: "
                + ", ".join(sorted(workers))
            )
        cls = workers[name]
        source = make_source(self.config)
        try:  # known before open() for the synthetic source; after it for a camera
            spec = getattr(source, "spec", None)
        except SourceError:
            spec = None
        self._worker = cls(worker_settings(self.config))
        if isinstance(spec, StackSpec):
            self._worker.check(spec)  # ModelError / ConfigError: exit 2, nothing started
            self._check_memory(spec)  # known before open() for the synthetic source
            probe_worker(self.config, spec, cancelled=lambda: bool(self._stop_requested))
        if self.config.run.save:  # last: a folder is created only for a run that starts
            from rt_eda.storage.recording import prepare_save_dir

            prepare_save_dir(self.config.run.save)
        _warn_oversubscribed(self.config)  # last: a run refused says only why

    def _run(self, log_queue: Any) -> int:
        cfg = self.config
        ctx = self._ctx
        channels = RoleChannels(
            events=MessageQueue(ctx), camera=MessageQueue(ctx), results=MessageQueue(ctx),
            stop=StopEvent(ctx),
            log=log_queue, writer=MessageQueue(ctx) if cfg.run.save else None,
            parent_pid=os.getpid(),
        )
        from rt_eda.live.display import viewer_enabled

        self._viewer_wanted = viewer_enabled(cfg)
        self._channels = channels
        from rt_eda.roles import camera as camera_role
        from rt_eda.roles import interpreter as interpreter_role

        try:
            cam = self._start("camera", 0, camera_role.run, (cfg, channels))
            spec_event = self._wait_ready([cam])
            spec = StackSpec(**json.loads(spec_event["camera"]))
            self._spec = spec
            try:
                with self._interruptible():
                    self._worker.check(spec)
                    self._check_memory(spec)  # for a camera: known only now
                    from rt_eda.workers._probe import probe_worker  # known only now for a camera

                    probe_worker(cfg, spec, cancelled=lambda: bool(self._stop_requested))
            except (ConfigError, ModelError) as exc:
                self.errors.append(str(exc))
                log.debug("bad input: %s", exc)  # the CLI prints self.errors, once
                self._bad_input = True
                return EXIT_BAD_INPUT
            except KeyboardInterrupt:  # a second Ctrl-C while the model is checked
                self._finish(started=False)
                return self._exit_code()
            slots = ring_slots(cfg, spec)
            self._ring = StackRing.create(spec, slots)
            log.info("ring %s: %d slots of %s %s (%.1f MiB)", self._ring.name, slots,
                     spec.shape, spec.dtype, slots * spec.nbytes / 2**20)
            self._trace = DecisionTrace.create()
            channels = channels.replace(ring=self._ring.name, trace=self._trace.name)
            self._channels = channels
            channels.camera.put(CameraControl("attach", self._ring.name))
            workers = [self._start_worker(i) for i in range(1, cfg.analysis.workers + 1)]
            details = self._wait_ready(workers)
            try:
                self._make_output_ring(json.loads(details.get("worker", "{}") or "{}"), spec)
            except ConfigError as exc:  # its images cannot fit: nothing acquired yet
                self.errors.append(str(exc))
                self._bad_input = True
                raise _Stop from None
            channels = self._channels
            for control in self._controls.values():
                control.put(channels.output_ring)
            others = [self._start("interpreter", 0, interpreter_role.run, (cfg, channels))]
            if cfg.run.save:
                from rt_eda.roles import writer as writer_role

                others.append(self._start("writer", 0, writer_role.run, (cfg, channels)))
            self._wait_ready(others)
            self._open_session(channels)
        except _Stop:
            self._finish(started=False)
            return self._exit_code()
        start_interval = make_interpreter(cfg).start().interval_s
        self._t_start = time.monotonic()
        channels.camera.put(CameraControl("start", start_interval))
        log.info("acquisition started: %d worker(s) x %d thread(s), interval %.4g s",
                 cfg.analysis.workers, cfg.analysis.threads_per_worker, start_interval)
        self._watch()
        self._finish(started=True)
        return self._exit_code()

    def _open_session(self, channels: RoleChannels) -> None:
        """Session file and control relay for ``rt-eda view``; the viewer if wanted."""
        from rt_eda.live.controls import ControlRelay
        from rt_eda.live.session import session_dir, sweep_sessions, write_session

        assert self._ring is not None and self._trace is not None
        try:
            folder = session_dir(create=True)
            sweep_sessions(folder)  # what engines killed with SIGKILL left behind
            self._relay = ControlRelay(folder / f"{os.getpid()}.sock", channels.results)
            self._session = write_session(
                None, self._ring.name, channels.output_ring, self._trace.name, self.config,
                os.getpid(), control=str(self._relay.path),
            )
        except OSError as exc:  # attaching later is a convenience, not the run
            log.warning("no session file for `rt-eda view`: %s", exc)
        if self._viewer_wanted:
            from rt_eda.roles.viewer import run as viewer_run

            self._start("viewer", 0, viewer_run, (self.config, channels))

    def _check_memory(self, spec: StackSpec, network_image: StackSpec | None = None) -> None:
        """Refuse (ConfigError) a run whose rings, workers' copies, renderer and processes
        cannot fit in the memory and /dev/shm available (see :mod:`rt_eda.engine.budget`)."""
        keras = any(c.__name__ == "KerasWorker" for c in type(self._worker).__mro__)
        allocs = plan(self.config, spec, keras=keras, network_image=network_image)
        if network_image is not None:
            # The processes and the renderer are running: what they hold is no longer
            # available already. The rings' pages are taken only as they are written.
            allocs = [a for a in allocs if a.shm]
        check_fits(allocs)

    def _start_worker(self, index: int) -> _Child:
        """Start worker ``index`` with a fresh control queue (the output ring's name goes
        there once known; at once for a restarted worker)."""
        from rt_eda.roles import worker as worker_role

        control = MessageQueue(self._ctx)
        self._controls[index] = control
        if self._out_ring_known:
            control.put(self._channels.output_ring)
        return self._start("worker", index, worker_role.run,
                           (self.config, self._channels, index, control))

    def _make_output_ring(self, ready: dict[str, Any], spec: StackSpec) -> None:
        """Create the network-image ring when the worker makes images and someone (the
        writer or the viewer) will read them."""
        shape = ready.get("network_image_shape")
        wanted = bool(self.config.run.save and self.config.writer.save_network_images)
        wanted = wanted or self._viewer_wanted
        if shape and wanted:
            out_spec = StackSpec(1, 1, int(shape[0]), int(shape[1]), "float32")
            self._check_memory(spec, network_image=out_spec)
            slots = output_ring_slots(self.config, spec, out_spec)
            self._out_ring = StackRing.create(out_spec, slots)
            log.info("output ring %s: %d slots of %dx%d float32 network images",
                     self._out_ring.name, slots, out_spec.height, out_spec.width)
            self._channels = self._channels.replace(output_ring=self._out_ring.name)
        self._out_ring_known = True

    def _start(self, role: str, index: int, target: Callable[..., None],
               args: tuple[Any, ...]) -> _Child:
        threads = str(self.config.analysis.threads_per_worker) if role == "worker" else "1"
        env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
               "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        # The child ignores SIGINT from its first instruction: an ignored signal stays
        # ignored across fork and exec (and Python keeps it so), so a Ctrl-C that reaches the
        # whole process group while the child imports cannot kill it; it leaves on the
        # engine's word. (A Ctrl-C in these few milliseconds is not seen by the engine.)
        on_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process = self._ctx.Process(target=target, args=args, daemon=False,
                                        name=f"{role}-{index}")
            process.start()
        finally:
            signal.signal(signal.SIGINT, on_sigint)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child = next((c for c in self._children if c.role == role and c.index == index), None)
        if child is None:
            child = _Child(role, index, process)
            self._children.append(child)
        else:
            child.process, child.ready = process, False
        return child

    def _wait_ready(self, children: list[_Child]) -> dict[str, str]:
        """Wait until every child is READY; details by role. Raises _Stop on failure."""
        details: dict[str, str] = {}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(c.ready for c in children):
            if self._stop_requested:
                raise _Stop
            if time.monotonic() > deadline:
                self._fault_msg(f"start-up timed out after {READY_TIMEOUT_S:.0f} s")
                raise _Stop
            event = self._next_event(0.1)
            if event is not None and event.kind is RoleEventKind.READY:
                details[event.role] = event.detail
            for c in children:
                if c.failed:
                    raise _Stop
                if not c.ready and not c.process.is_alive():
                    self._fault_msg(f"{c.role} {c.index} exited during start-up "
                                    f"(exit code {c.process.exitcode})")
                    raise _Stop
        return details

    def _watch(self) -> None:
        duration = self.config.run.duration
        next_status = next_watchdog = time.monotonic()
        last = (time.monotonic(), 0, 0)
        while not self._stop_requested:
            if duration is not None and time.monotonic() - self._t_start >= duration:
                self._stop_requested = "duration reached"
                break
            self._next_event(0.05)
            for child in list(self._children):
                if child.process.is_alive() or self._stop_requested:
                    continue
                if child.role == "viewer":
                    self._viewer_gone(child)  # never ends the run; a death restarts it once
                    continue
                if child.role == "camera":  # its STOPPED may say the source ran out
                    while self._next_event(0.0) is not None:
                        pass
                    if self._stop_requested:
                        continue
                if child.role == "worker":
                    self._restart_worker(child)
                else:
                    self._fault_msg(child.failed or f"{child.role} process died "
                                    f"(exit code {child.process.exitcode})")
            now = time.monotonic()
            if now >= next_watchdog and self._ring is not None:
                next_watchdog = now + _WATCHDOG_POLL_S
                self._check_watchdog()
            if now >= next_status and self._ring is not None:
                next_status = now + 0.5
                rs = self._ring.statistics()
                t0, p0, a0 = last
                dt = max(1e-9, now - t0)
                st = self._status
                st.elapsed_s = now - self._t_start
                st.acquired_per_s = (rs.published - p0) / dt
                st.analysed_per_s = (rs.completed - a0) / dt
                st.published, st.analysed = rs.published, rs.completed
                st.skipped = rs.skipped + rs.recovered
                st.workers = sum(1 for c in self._children
                                 if c.role == "worker" and c.process.is_alive())
                st.restarts = self._restarts
                last = (now, rs.published, rs.completed)
                if self.on_status is not None:
                    self.on_status(st)
        log.info("stopping: %s", self._stop_requested)

    def _check_watchdog(self) -> None:
        """Kill a worker that holds one claim longer than its bound (see
        :mod:`rt_eda.engine.watchdog`); its death is then handled like any worker's: the claim is
        recovered (counted) and the worker restarted (counted, bounded)."""
        assert self._ring is not None
        for late in self._watchdog.observe(self._ring.claims(), time.monotonic()):
            child = next((c for c in self._children if c.role == "worker"
                          and c.index == late.worker and c.process.is_alive()), None)
            if child is None:
                continue
            message = late.message()
            log.warning("%s", message)
            self.errors.append(message)
            self._watchdog_kills += 1
            child.failed = (f"killed by the watchdog: held stack {late.seq} for "
                            f"{late.age_s:.1f} s")
            child.process.kill()

    def _restart_worker(self, child: _Child) -> None:
        assert self._ring is not None
        recovered = self._ring.recover(child.index)
        reason = child.failed or f"exit code {child.process.exitcode}"
        if child.restarts >= MAX_RESTARTS_PER_WORKER:
            self._fault_msg(f"worker {child.index} failed {child.restarts + 1} times, "
                            f"last: {reason}; giving up")
            return
        child.restarts += 1
        self._restarts += 1
        log.warning("worker %d died (%s); %d claim(s) recovered; restarting (%d/%d)",
                    child.index, reason, recovered, child.restarts, MAX_RESTARTS_PER_WORKER)
        child.failed = ""
        self._start_worker(child.index)

    def _viewer_gone(self, child: _Child, *, restart: bool = True) -> None:
        """Account for a viewer process that has ended (once per process).

        Exit code 0 is a window a person closed, or a viewer that left because the run
        stopped: nothing to do. Anything else is a death: logged at WARNING, counted
        (``viewer_exits``) with its error (``viewer_last_error``: the exit code or signal and
        the viewer's own FAILED detail), and while the run goes on a viewer that had shown its
        window is started again, :data:`MAX_VIEWER_RESTARTS` times at most, so a person
        watching gets the window back.
        Nothing here touches acquisition, analysis or the recording.
        """
        process = child.process
        if process.is_alive() or process.pid in self._viewer_seen:
            return
        self._viewer_seen.add(process.pid)
        while self._next_event(0.0) is not None:  # its FAILED event, if it sent one
            pass
        code = process.exitcode
        detail, self._viewer_failed = self._viewer_failed, ""
        if code == 0:
            return
        try:
            how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exit code {code}")
        except ValueError:
            how = f"killed by signal {-code}"
        error = how + (f": {detail}" if detail else "")
        self._viewer_exits += 1
        self._viewer_last_error = error
        shown = child.ready  # it had shown its window (one that cannot start will not now)
        again = (restart and shown and not self._stop_requested
                 and child.restarts < MAX_VIEWER_RESTARTS)
        if again:
            log.warning("viewer died (%s); starting it again (the run goes on)", error)
            from rt_eda.roles.viewer import run as viewer_run

            child.restarts += 1
            self._start("viewer", 0, viewer_run, (self.config, self._channels))
        else:
            log.warning("viewer died (%s)%s; not started again (died %d time(s); the run goes "
                        "on)", error, "" if shown else " before its window was shown",
                        self._viewer_exits)

    def _finish(self, *, started: bool) -> None:
        """Stop every role in order and build the summary."""
        ch = self._channels
        ch.stop.set()
        # A stop is seen between frames; a device may finish the exposure in progress first.
        self._join([c for c in self._children if c.role == "camera"],
                   timeout=_JOIN_S + 2 * self.config.camera.exposure_ms / 1000.0)
        for ring in (self._ring, self._out_ring):
            if ring is not None:
                ring.shutdown()
        # Workers leave together, but each interpreter's exit costs CPU (about 0.4 s): with
        # more worker processes than cores they take turns.
        workers = [c for c in self._children if c.role == "worker"]
        self._join(workers, timeout=_JOIN_S + WORKER_CPU_S * len(workers) / _cores())
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        ch.results.put(None)
        self._join([c for c in self._children if c.role == "interpreter"])
        if ch.writer is not None:
            ch.writer.put(None)
            backlog = self._ring.n_slots if self._ring is not None else 0
            self._join([c for c in self._children if c.role == "writer"],
                       timeout=_JOIN_S + 0.1 * backlog)
            if self._ring is not None and any(
                c.role == "writer" and c.process.exitcode != 0 for c in self._children
            ):
                self._salvage()
                for bit in range(8):  # a writer that died cannot release its pins
                    self._ring.recover_pin(bit)
        self._join([c for c in self._children if c.role == "viewer"])
        for c in self._children:
            if c.role == "viewer":
                self._viewer_gone(c, restart=False)
        if self._ring is not None:
            for c in self._children:
                if c.role == "worker":
                    self._ring.recover(c.index)
            self._ring.drain()
        while self._next_event(0.0) is not None:
            pass
        self._build_summary(started)

    def _join(self, children: list[_Child], timeout: float = _JOIN_S) -> None:
        deadline = time.monotonic() + timeout
        for c in children:
            while c.process.is_alive() and time.monotonic() < deadline and not self._hurry:
                self._next_event(0.05)
                self._drain_orphaned_results()
            if c.process.is_alive() and self._hurry:
                self._kill_cut_short(c)
            elif c.process.is_alive():
                self._fault_msg(f"{c.role} {c.index} did not stop within {timeout:.0f} s; "
                                "terminated")
                c.process.terminate()
                c.process.join(5)
        while self._next_event(0.0) is not None:
            pass

    def _kill_cut_short(self, c: _Child) -> None:
        """A second Ctrl-C: kill a role that is still running (its report is lost)."""
        if not self._cut_short:
            msg = ("cut short by a second Ctrl-C: roles still running were killed; the "
                   "counts and the recording may be incomplete")
            self.errors.append(msg)
            log.warning("%s", msg)
        self._cut_short = True
        log.warning("killing %s %d (cut short)", c.role, c.index)
        c.process.kill()
        c.process.join(5)

    def _salvage(self) -> None:
        """The writer died (not of a full disk: that one releases its pins): persist the
        stacks it had pinned but not written into ``<save>/salvage``, so nothing that was
        acquired is lost. Runs in the engine after the camera has stopped."""
        from rt_eda.storage.recording import Recording, prepare_save_dir

        assert self._ring is not None and self.config.run.save
        ring = self._ring
        recording = None
        try:
            for bit in ring.pin_bits():
                pin = ring.adopt_pin(bit)
                while True:
                    try:
                        stack = pin.next_any(timeout=0.0)
                    except RingClosedError:
                        break
                    if stack is None or self._hurry:
                        break
                    if recording is None:
                        folder = prepare_save_dir(Path(self.config.run.save) / "salvage")
                        recording = Recording(folder,
                                              ring.spec.shape, ring.spec.np_dtype,
                                              fmt=self.config.writer.format,
                                              config_toml=self.config.to_toml())
                    recording.write_stack(stack.seq, stack.pixels, stack.frame_times,
                                          stack.interval_s)
                    pin.release(stack)
            if recording is not None:
                recording.close()
                self._salvaged = recording.stats.frames_written
                log.warning("writer died: %d frame(s) it had not written were saved to %s",
                            self._salvaged, recording.run_dir)
        except (OSError, RtEdaError) as exc:
            self._fault_msg(f"salvaging the writer's unwritten stacks failed: {exc}")

    def _drain_orphaned_results(self) -> None:
        """With the interpreter gone, nobody reads the results pipe: empty it, so a worker
        blocked on a full pipe can notice that the run is ending."""
        if any(c.role == "interpreter" and not c.process.is_alive() for c in self._children):
            with contextlib.suppress(queue.Empty, OSError, EOFError):
                for _ in range(10_000):
                    self._channels.results.get_nowait()

    def _cleanup(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._session is not None:
            from rt_eda.live.session import remove_session

            remove_session(self._session)
            self._session = None
        for c in self._children:
            if c.process.is_alive() and self._hurry:
                self._kill_cut_short(c)
            elif c.process.is_alive():
                c.process.kill()
            c.process.join(5)
        for shared in (self._ring, self._out_ring, self._trace):
            if shared is not None:
                shared.close()
                shared.unlink()
        self._ring = self._out_ring = None
        self._trace = None

    # -- events ----------------------------------------------------------------------------
    def _next_event(self, timeout: float) -> RoleEvent | None:
        try:
            if timeout > 0:
                event = self._channels.events.get(timeout=timeout)
            else:
                event = self._channels.events.get_nowait()
        except queue.Empty:
            return None
        self._handle(event)
        return event  # type: ignore[no-any-return]

    def _child(self, event: RoleEvent) -> _Child | None:
        return next((c for c in self._children
                     if c.role == event.role and c.index == event.index), None)

    def _handle(self, event: RoleEvent) -> None:
        child = self._child(event)
        if event.kind is RoleEventKind.READY and child is not None:
            child.ready = True
        elif event.kind is RoleEventKind.FAILED and event.role == "viewer":
            self._viewer_failed = event.detail
            log.warning("viewer: %s (the run goes on)", event.detail)
        elif event.kind is RoleEventKind.FAILED:
            if child is not None:
                child.failed = f"{event.role} {event.index}: {event.detail}"
            if event.role == "worker" and self._t_start and not self._stop_requested:
                log.warning("worker %d failed: %s", event.index, event.detail)
                self.errors.append(f"worker {event.index}: {event.detail}")
            else:
                bad_input = event.detail.split(":", 1)[0] in (
                    "ConfigError", "ModelError", "SourceError")  # before start: at open
                if bad_input and not self._t_start:  # one line, printed once by the CLI
                    self._bad_input = True
                    message = event.detail.split(": ", 1)[-1]
                    if message not in self.errors:
                        self.errors.append(message)
                    log.debug("bad input from %s %d: %s", event.role, event.index, message)
                    self._stop_requested = self._stop_requested or f"bad input: {message}"
                else:
                    self._fault_msg(f"{event.role} {event.index}: {event.detail}")
        elif (event.kind is RoleEventKind.STOPPED and event.role == "camera" and event.detail
              and not self._stop_requested):
            self._stop_requested = event.detail  # "source exhausted: ...": a normal end
        elif event.kind is RoleEventKind.STATS:
            data = json.loads(event.detail) if event.detail else {}
            if event.role == "camera":
                self._camera_stats = data
            elif event.role == "interpreter":
                self._interp_stats = data
            elif event.role == "worker":
                self._worker_stats.setdefault(event.index, []).append(data)
            elif event.role == "writer":
                self._writer_stats = data
        elif event.kind is RoleEventKind.STATUS and event.role == "interpreter":
            data = json.loads(event.detail)
            self._status.interval_s = data["interval"]
            self._status.state = data["state"]
            self._status.p2d_p50_ms = data["p2d_p50_ms"]

    def _fault_msg(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)
        log.error("%s", message)
        self._fault = True
        if not self._stop_requested:
            self._stop_requested = f"fault: {message}"

    def _exit_code(self) -> int:
        if self._bad_input:
            return EXIT_BAD_INPUT
        return EXIT_FAULT if self._fault or self._cut_short else EXIT_OK

    def _write_outputs(self) -> None:
        """Every output of the run, each attempted whatever happens to the others (bad
        input writes none: nothing started)."""
        from rt_eda.engine.outputs import write_outputs

        if self._bad_input:
            return
        if not self.summary:
            self._build_summary(started=False)
        self.summary["cut_short"] = self._cut_short
        self.summary["errors"] = list(self.errors)
        self.outputs = write_outputs(self.config, self.summary, self.write_profile,
                                     full=not self._cut_short)
        for line in self.outputs.failures:
            log.error("%s", line)
            if line not in self.errors:
                self.errors.append(line)
            self._fault = True
        self.summary["errors"] = list(self.errors)

    # -- summary ---------------------------------------------------------------------------
    def _build_summary(self, started: bool) -> None:
        cfg = self.config
        cam = self._camera_stats
        it = self._interp_stats
        interp = it.get("interpreter", {})
        rs = self._ring.statistics() if self._ring is not None else None
        acq_s = float(cam.get("acquisition_s", 0.0))
        timepoints = int(cam.get("timepoints", 0))
        # The first timepoint is at t=0: n timepoints span (n-1) intervals.
        rate = (timepoints - 1) / acq_s if acq_s > 0 and timepoints > 1 else 0.0
        analysed = rs.completed if rs else 0
        worker_times: dict[str, float] = {}
        for runs in self._worker_stats.values():
            for data in runs:
                for k, v in data.items():
                    if k.endswith("_s"):
                        worker_times[k] = worker_times.get(k, 0.0) + float(v)
        frames_acquired = int(cam.get("frames_acquired", 0))
        if not cam and rs is not None and self._spec is not None:
            # The camera died without its report: count what reached the ring.
            frames_acquired = rs.published * self._spec.frames
        self.summary = {
            "frames_acquired": frames_acquired,
            "stacks_published": rs.published if rs else 0,
            "stacks_analysed": analysed,
            "stacks_skipped": (rs.skipped + rs.recovered) if rs else 0,
            "stacks_failed": rs.failed if rs else 0,
            "frames_written": self._frames_written(),
            "frames_lost": self._frames_lost(cam),
            "decisions": int(interp.get("decisions", 0)),
            "results_dropped_out_of_order": int(interp.get("results_dropped_out_of_order", 0)),
            "results_ignored_paused": int(interp.get("results_ignored_paused", 0)),
            "nonfinite_decisions": int(interp.get("nonfinite_decisions", 0)),
            "interval_switches": int(interp.get("interval_switches", 0)),
            "torn_reads": rs.torn_reads if rs else 0,
            "worker_restarts": self._restarts,
            "watchdog_kills": self._watchdog_kills,
            "workers": cfg.analysis.workers,
            "threads_per_worker": cfg.analysis.threads_per_worker,
            "acquired_fps": rate,
            "analysed_per_s": analysed / acq_s if acq_s > 0 else 0.0,
            "latency_ms": {
                "publish_to_claim": it.get("publish_to_claim", percentiles([]).as_dict()),
                "publish_to_decision": it.get("publish_to_decision", percentiles([]).as_dict()),
                "decision_to_actuation": cam.get("actuation_ms", percentiles([]).as_dict()),
            },
            "errors": list(self.errors),
            # Beyond the contract:
            "started": started,
            "stop_reason": self._stop_requested,
            "cut_short": self._cut_short,
            "worker": cfg.analysis.worker,
            "source": cfg.camera.source,
            "stack_shape": list(self._spec.shape) if self._spec else None,
            "dtype": self._spec.dtype if self._spec else None,
            "acquisition_s": acq_s,
            "timepoints": timepoints,
            "frames_per_s": int(cam.get("frames_acquired", 0)) / acq_s if acq_s > 0 else 0.0,
            "claims_recovered": rs.recovered if rs else 0,
            "overruns": int(cam.get("overruns", 0)),
            "frames_abandoned": int(cam.get("frames_abandoned", 0)),  # a stack the stop cut
            "lost_timepoints": cam.get("lost", []),
            "interval_error_ms": cam.get("interval_error_ms", percentiles([]).as_dict()),
            "publish_interval_ms": cam.get("publish_interval_ms", percentiles([]).as_dict()),
            "interval_changes": it.get("interval_changes", []),
            "ring_slots": self._ring.n_slots if self._ring else 0,
            "worker_time_s": worker_times,
            "source_statistics": cam.get("source", {}),
            "writer": self._writer_stats,
            "frames_salvaged": self._salvaged,
            **{key: sum(int(d.get(key, 0)) for runs in self._worker_stats.values()
                        for d in runs)
               for key in ("network_images", "network_images_refused",
                           "network_images_nonfinite", "network_images_lost")},
            "viewer_exits": self._viewer_exits,
            "viewer_last_error": self._viewer_last_error,
            "save": cfg.run.save,
        }
        if self.summary["frames_lost"] and not self._fault:
            self._fault_msg(f"{self.summary['frames_lost']} frame(s) lost: not put in the ring "
                            "(it was full) or never written")
            self.summary["errors"] = list(self.errors)

    def _frames_lost(self, cam: dict[str, Any]) -> int:
        """Frames the camera could not put in the ring, plus, with a recording, frames that
        were acquired but never written (a writer that failed)."""
        lost = int(cam.get("frames_lost", 0))
        if self.config.run.save and cam:
            acquired = int(cam.get("frames_acquired", 0))
            lost += max(0, acquired - lost - self._frames_written())
        return lost

    def _frames_written(self) -> int:
        """Frames the writer saved, plus those salvaged after it died (``<save>/salvage``).
        A writer killed without its report: counted from the run folder's frames table."""
        written = self._writer_stats.get("frames_written")
        if written is None and self.config.run.save:
            from rt_eda.core.runfolder import count_frame_rows

            written = count_frame_rows(self.config.run.save)
        return int(written or 0) + self._salvaged

    def profile(self) -> dict[str, Any]:
        """Where a stack's time goes, per role (means per stack, in ms), from the run's
        own timers: camera (waiting for the timepoint, reading frames, publishing), workers
        (waiting for a claim, prepare, inference, post-process, result queue, network image),
        interpreter (handling one result), and the latency percentiles."""
        s = self.summary
        cam = self._camera_stats
        stacks = max(1, int(cam.get("stacks_published", 0)))
        analysed = max(1, int(s.get("stacks_analysed", 0)))
        results = max(1, int(self._interp_stats.get("results", 0)))

        def per(times: dict[str, float], n: int) -> dict[str, float]:
            return {k.removesuffix("_s") + "_ms": 1e3 * float(v) / n for k, v in times.items()}

        return {
            "stacks_published": s.get("stacks_published", 0),
            "stacks_analysed": s.get("stacks_analysed", 0),
            "camera_per_stack": per(cam.get("time_s", {}), stacks),
            "worker_per_analysed_stack": per(s.get("worker_time_s", {}), analysed),
            "interpreter_per_result": per(self._interp_stats.get("time_s", {}), results),
            "latency_ms": s.get("latency_ms", {}),
            "workers": s.get("workers"), "threads_per_worker": s.get("threads_per_worker"),
        }

    def write_profile(self, folder: str | Path) -> Path:
        """Write :meth:`profile` as ``profile.json`` and a readable ``profile.txt``."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        prof = self.profile()
        (d / "profile.json").write_text(json.dumps(prof, indent=2) + "\n")
        lines = [f"rt-eda profile: {prof['stacks_published']} stacks published, "
                 f"{prof['stacks_analysed']} analysed, {prof['workers']} worker(s) x "
                 f"{prof['threads_per_worker']} thread(s)"]
        for section in ("camera_per_stack", "worker_per_analysed_stack",
                        "interpreter_per_result"):
            lines.append(f"{section.replace('_', ' ')}:")
            lines += [f"  {k:<22} {v:9.3f}" for k, v in prof[section].items()]
        lines.append("latency (ms): p50 / p99 / max")
        for k, v in prof["latency_ms"].items():
            lines.append(f"  {k:<22} {v['p50']:9.3f} {v['p99']:9.3f} {v['max']:9.3f}")
        path = d / "profile.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    def write_summary(self, path: str | Path) -> None:
        """Write the summary as JSON, atomically (creating parent folders); :meth:`run`
        already writes it to ``run.summary``. Raises OSError if it cannot be written."""
        from rt_eda.engine.outputs import write_json_atomic

        write_json_atomic(path, self.summary)

    # -- plumbing --------------------------------------------------------------------------
    @contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)
            if self._hurry and self._may_interrupt:
                # A second Ctrl-C inside a long call that does not poll (a model loaded in
                # this process): leave it; the caller knows nothing has started.
                self._may_interrupt = False
                raise KeyboardInterrupt

        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in saved:
            signal.signal(s, on_signal)
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """A region where a second Ctrl-C may raise KeyboardInterrupt (the caller catches
        it): a long call that polls nothing and starts nothing."""
        if self._hurry:
            raise KeyboardInterrupt
        self._may_interrupt = True
        try:
            yield
        finally:
            self._may_interrupt = False

    @contextmanager
    def _log_listener(self) -> Iterator[Any]:
        log_queue = MessageQueue(self._ctx)  # pipes only: nothing named to leak
        handlers = logging.getLogger().handlers or [logging.StreamHandler(sys.stderr)]
        listener = logging.handlers.QueueListener(log_queue, *handlers,
                                                  respect_handler_level=True)
        listener.start()
        try:
            yield log_queue
        finally:
            listener.stop()
