"""The engine: creates shared memory, starts every role, watches them, ends the run cleanly.

::

    preflight (config, worker, model fit)        -- a problem here: exit 2, nothing started
    camera: open source -> READY(CameraReady)
    create ring, trace -> camera attaches
    workers 1..N: set up, warm up -> READY(WorkerReady) -> output ring (if images are kept)
    interpreter (announces the start interval to the camera), writer -> READY
    session file, viewer; camera: START                 -- acquisition runs
    watch: restart a crashed worker (bounded), stop on a fault, --duration, SIGINT/SIGTERM
    stop: camera -> ring shutdown (workers leave) -> interpreter drains -> writer finishes
          (a dead writer's pinned stacks salvaged) -> summary
    finally: every child joined or killed, every segment unlinked, every output written

The checks before anything starts are :mod:`.preflight`'s; the child processes themselves
(starting, READY, events, restarts, joins) :mod:`.supervisor`'s; the summary and the profile
:mod:`.summary`'s; the outputs :mod:`.outputs`'; the ring sizing :mod:`.budget`'s.
:meth:`Engine.run` leaves the same run folder (``summary.json``, report) whether the CLI or a
Python program drives it.

Exit codes: 0 ran and shut down cleanly; 2 bad configuration or model (nothing started);
1 a fault during the run (the summary is still written). Every role is started with the
``spawn`` start method (TensorFlow is not fork-safe).
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, ModelError, RtEdaError
from rt_eda.core.messages import (
    CameraControl,
    CameraControlKind,
    CameraReady,
    ClusterReady,
    RoleEvent,
    RoleName,
    WorkerReady,
)
from rt_eda.core.process import RoleChannels
from rt_eda.core.queues import MessageQueue, StopEvent
from rt_eda.engine.budget import WORKER_CPU_S, cores, output_ring_slots, ring_slots
from rt_eda.engine.capacity import CapacitySummary, check_capacity
from rt_eda.engine.outputs import WrittenOutputs
from rt_eda.engine.preflight import check_memory, check_stack, preflight
from rt_eda.engine.status import Rates, Status, status_now
from rt_eda.engine.summary import RoleReports, RunFacts, RunSummary, build_summary, profile
from rt_eda.engine.supervisor import JOIN_S, RunState, StartupStopped, Supervisor
from rt_eda.roles.bridge import CLOSE_S, DRAIN_S
from rt_eda.shm import DecisionTrace, StackRing, StackSpec

if TYPE_CHECKING:
    from rt_eda.workers import Worker

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAULT", "EXIT_OK", "Engine", "Status", "ring_slots"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2

_WATCHDOG_POLL_S = 0.1  # how often the claims are looked at (a few microseconds each)
_STATUS_PERIOD_S = 0.5


class Engine:
    """Runs one acquisition described by ``config``.

    Parameters
    ----------
    config
        The effective configuration (file + command-line overrides).
    on_status
        Called about twice a second with a :class:`Status` while the run goes (the CLI shows
        it), and once more after every role has stopped (``Status.final``: the summary's
        counts, latency and jitter), from the engine's thread.

    Attributes
    ----------
    errors
        One line per problem (bad input: why it was refused).
    summary
        The run summary once :meth:`run` returned (None after bad input: nothing ran).
    outputs
        What :meth:`run` wrote (None after bad input).
    """

    def __init__(self, config: Config, on_status: Callable[[Status], None] | None = None):
        self.config = config
        self.on_status = on_status
        self.summary: RunSummary | None = None
        self.outputs: WrittenOutputs | None = None
        self._ctx = mp.get_context("spawn")
        self._state = RunState()
        self.errors = self._state.errors
        self._reports = RoleReports()
        self._events: MessageQueue[RoleEvent] = MessageQueue(self._ctx)
        self._stop = StopEvent(self._ctx)
        self._supervisor = Supervisor(config, self._ctx, self._state, self._reports,
                                      self._events)
        self._signals = 0
        self._may_interrupt = False  # a second Ctrl-C may raise KeyboardInterrupt now
        self._worker: Worker | None = None  # made in preflight, to check the model
        self._capacity: CapacitySummary | None = None  # once the stack is known
        self._spec: StackSpec | None = None
        self._ring: StackRing | None = None
        self._out_ring: StackRing | None = None
        self._trace: DecisionTrace | None = None
        self._viewer_wanted = False
        self._relay: Any = None  # rt_eda.live.controls.ControlRelay
        self._session: Path | None = None
        self._salvaged = 0
        self._cluster_ready: object = None  # the bridge's READY payload (ClusterReady)

    # -- public --------------------------------------------------------------------------
    def run(self) -> int:
        """Run to the end; returns the exit code.

        Always cleans up (every child joined or killed, every segment unlinked), and always
        leaves the outputs written: the run folder finished (``summary.json``, report), the
        ``run.summary`` file and the profile (see :mod:`rt_eda.engine.outputs`); a failure to
        write one of them is an error line and exit 1, never the loss of the others. Bad
        input (exit 2) starts and writes nothing.

        SIGINT/SIGTERM (and :meth:`request_stop`) end the run cleanly at any phase, exit 0
        unless a fault happened; a second SIGINT cuts the shutdown short (see
        :meth:`request_stop`).
        """
        with self._signal_handlers():
            try:
                with self._interruptible():
                    self._worker, self._capacity = preflight(self.config, self._cancelled)
            except (ConfigError, ModelError) as exc:
                self._state.error(str(exc))
                log.debug("bad input: %s", exc)  # the CLI prints self.errors, once
                return EXIT_BAD_INPUT
            except KeyboardInterrupt:
                pass  # a second Ctrl-C during preflight: nothing had started
            if self._state.stop_reason:
                log.info("stopped before anything started: %s", self._state.stop_reason)
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
        self._state.stop(reason)
        if self._signals >= 2 and reason == "SIGINT":
            self._state.hurry = True

    def profile(self) -> dict[str, Any]:
        """Where a stack's time goes, per role (see :func:`rt_eda.engine.summary.profile`)."""
        return profile(self._summary(), self._reports)

    def write_profile(self, folder: str | Path) -> Path:
        """Write :meth:`profile` as ``profile.json`` and a readable ``profile.txt``."""
        from rt_eda.engine.summary import write_profile

        return write_profile(folder, self.profile())

    def write_summary(self, path: str | Path) -> None:
        """Write the summary as JSON, atomically (creating parent folders); :meth:`run`
        already writes it to ``run.summary``. Raises OSError if it cannot be written."""
        from rt_eda.core.files import write_json_atomic

        write_json_atomic(path, self._summary())

    # -- phases ----------------------------------------------------------------------------
    def _run(self, log_queue: MessageQueue[logging.LogRecord]) -> None:
        """Start every role in order, run, stop (see the module docstring)."""
        cfg = self.config
        ctx = self._ctx
        sup = self._supervisor
        channels = RoleChannels(
            events=self._events, camera=MessageQueue(ctx), results=MessageQueue(ctx),
            stop=self._stop, log=log_queue,
            writer=MessageQueue(ctx) if cfg.run.save else None, parent_pid=os.getpid(),
        )
        from rt_eda.live.display import viewer_enabled
        from rt_eda.roles import camera as camera_role
        from rt_eda.roles import interpreter as interpreter_role

        self._viewer_wanted = viewer_enabled(cfg)
        sup.channels = channels
        try:
            cam = sup.start(RoleName.CAMERA, 0, camera_role.run, (cfg, channels))
            ready = sup.wait_ready([cam]).get(RoleName.CAMERA)
            if not isinstance(ready, CameraReady):
                raise RtEdaError(f"camera: READY without its stack spec ({ready!r})")
            spec = self._spec = ready.spec
            if not self._check_model(spec):
                return
            slots = ring_slots(cfg, spec)
            self._ring = StackRing.create(spec, slots, positions=ready.positions)
            log.info("ring %s: %d slots of %s %s (%.1f MiB)", self._ring.name, slots,
                     spec.shape, spec.dtype, slots * spec.nbytes / 2**20)
            self._trace = DecisionTrace.create()
            channels = sup.channels = channels.with_shared(ring=self._ring.name,
                                                           trace=self._trace.name)
            channels.camera.put(CameraControl(CameraControlKind.ATTACH, self._ring.name))
            if cfg.cluster.enabled:  # a bridge to the cluster's actors instead of workers
                ready_by = sup.wait_ready([sup.start_bridge()])
                worker_ready = self._cluster_ready = ready_by.get(RoleName.BRIDGE)
            else:
                workers = [sup.start_worker(i) for i in range(1, cfg.analysis.workers + 1)]
                worker_ready = sup.wait_ready(workers).get(RoleName.WORKER)
            try:
                self._make_output_ring(worker_ready, spec)
            except ConfigError as exc:  # its images cannot fit: nothing acquired yet
                self._state.bad_input = True
                self._state.error(str(exc))
                raise StartupStopped from None
            channels = sup.channels
            sup.release_workers(channels.output_ring)
            others = [sup.start(RoleName.INTERPRETER, 0, interpreter_role.run, (cfg, channels))]
            if cfg.run.save:
                from rt_eda.roles import writer as writer_role

                others.append(sup.start(RoleName.WRITER, 0, writer_role.run, (cfg, channels)))
            sup.wait_ready(others)
            self._open_session(channels)
        except StartupStopped:
            self._finish(started=False)
            return
        self._state.t_start = time.monotonic()
        # The camera starts at the interval the interpreter announced (already on its queue).
        channels.camera.put(CameraControl(CameraControlKind.START))
        log.info("acquisition started: %d worker(s) x %d thread(s)", cfg.analysis.workers,
                 cfg.analysis.threads_per_worker)
        t_stopped = self._watch()
        self._finish(started=True)
        self._show_status(t_stopped, None)  # every role has stopped: the summary's figures

    def _check_model(self, spec: StackSpec) -> bool:
        """The checks that wait for a camera's spec; False when the run cannot go on (bad
        input, or a second Ctrl-C: the run is then finished already)."""
        try:
            with self._interruptible():
                assert self._worker is not None
                check_stack(self.config, self._worker, spec, self._cancelled)
                if self._capacity is None:  # a camera: its stack is known only now
                    self._capacity = check_capacity(self.config, spec)
        except (ConfigError, ModelError) as exc:
            self._state.error(str(exc))
            log.debug("bad input: %s", exc)  # the CLI prints self.errors, once
            self._state.bad_input = True
            return False
        except KeyboardInterrupt:  # a second Ctrl-C while the model is checked
            self._finish(started=False)
            return False
        return True

    def _cancelled(self) -> bool:
        return bool(self._state.stop_reason)

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
            self._supervisor.start_viewer()

    def _make_output_ring(self, ready: object, spec: StackSpec) -> None:
        """Create the network-image ring when the worker makes images and someone (the
        writer or the viewer) will read them."""
        shape = ready.network_image_shape if isinstance(ready, WorkerReady | ClusterReady) \
            else None
        wanted = bool(self.config.run.save and self.config.writer.save_network_images)
        wanted = wanted or self._viewer_wanted
        if shape and wanted:
            out_spec = StackSpec(1, 1, int(shape[0]), int(shape[1]), "float32")
            check_memory(self.config, self._worker, spec, network_image=out_spec)
            slots = output_ring_slots(self.config, spec, out_spec)
            positions = self._ring.positions if self._ring is not None else 1
            self._out_ring = StackRing.create(out_spec, slots, positions=positions)
            log.info("output ring %s: %d slots of %dx%d float32 network images",
                     self._out_ring.name, slots, out_spec.height, out_spec.width)
            sup = self._supervisor
            sup.channels = sup.channels.with_shared(output_ring=self._out_ring.name)

    def _watch(self) -> float:
        """Until the run is to stop: events, children, the watchdog, the live status; returns
        when the stop began (monotonic s)."""
        state, sup = self._state, self._supervisor
        duration = self.config.run.duration
        next_status = next_watchdog = time.monotonic()
        rates = Rates(state.t_start)
        while not state.stop_reason:
            if duration is not None and time.monotonic() - state.t_start >= duration:
                state.stop("duration reached")
                break
            sup.next_event(0.05)
            sup.watch(self._ring)
            now = time.monotonic()
            if now >= next_watchdog and self._ring is not None:
                next_watchdog = now + _WATCHDOG_POLL_S
                sup.check_watchdog(self._ring)
            if now >= next_status and self._ring is not None:
                next_status = now + _STATUS_PERIOD_S
                self._show_status(now, rates)
        log.info("stopping: %s", state.stop_reason)
        return time.monotonic()

    def _show_status(self, now: float, rates: Rates | None) -> None:
        """Hand the status at ``now`` to ``on_status``; ``rates`` None: the final one (every
        role has stopped; ``now`` is when the stop began)."""
        if self.on_status is None or self._ring is None:
            return
        st = status_now(now, rates or Rates(now), self._ring.statistics(), self._reports,
                        t_start=self._state.t_start, duration_s=self.config.run.duration,
                        workers=self._supervisor.alive_workers() if rates is not None
                        else self.config.analysis.workers,
                        restarts=self._supervisor.restarts, final=rates is None)
        self.on_status(st)

    def _finish(self, *, started: bool) -> None:
        """Stop every role in order and build the summary."""
        sup = self._supervisor
        ch = sup.channels
        self._stop.set()
        # A stop is seen between frames; a device may finish the exposure in progress first.
        sup.join(sup.of(RoleName.CAMERA),
                 timeout=JOIN_S + 2 * self.config.camera.exposure_ms / 1000.0)
        for ring in (self._ring, self._out_ring):
            if ring is not None:
                ring.shutdown()
        # Workers leave together, but each interpreter's exit costs CPU (about 0.4 s): with
        # more worker processes than cores they take turns.
        workers = sup.of(RoleName.WORKER)
        bridges = sup.of(RoleName.BRIDGE)  # its in-flight stacks come back, then Ray stops
        sup.join(workers + bridges, timeout=JOIN_S + WORKER_CPU_S * len(workers) / cores()
                 + (DRAIN_S + CLOSE_S if bridges else 0.0))
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        ch.results.put(None)
        sup.join(sup.of(RoleName.INTERPRETER))
        if ch.writer is not None:
            ch.writer.put(None)
            backlog = self._ring.n_slots if self._ring is not None else 0
            sup.join(sup.of(RoleName.WRITER), timeout=JOIN_S + 0.1 * backlog)
            if self._ring is not None and any(
                    c.process.exitcode != 0 for c in sup.of(RoleName.WRITER)):
                self._salvage(self._ring)
        sup.join(sup.of(RoleName.VIEWER))
        for c in sup.of(RoleName.VIEWER):
            sup.viewer_gone(c, restart=False)
        if self._ring is not None:
            for c in workers:
                self._ring.recover(c.index)
            for reader in sup.bridge_readers():
                self._ring.recover(reader)
            self._ring.drain()
        sup.drain_events()
        self.summary = self._build_summary(started)

    def _salvage(self, ring: StackRing) -> None:
        """The writer died (not of a full disk: that one releases its pins): persist the
        stacks it had pinned but not written (:mod:`rt_eda.roles.salvage`), then drop its
        pins so nothing waits for it."""
        from rt_eda.roles.salvage import release_pins, salvage

        try:
            self._salvaged = salvage(ring, self.config, hurry=lambda: self._state.hurry)
        except (OSError, RtEdaError) as exc:
            self._state.fail(f"salvaging the writer's unwritten stacks failed: {exc}")
        release_pins(ring)  # a writer that died cannot release its pins

    def _cleanup(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._session is not None:
            from rt_eda.live.session import remove_session

            remove_session(self._session)
            self._session = None
        self._supervisor.kill_remaining()
        for shared in (self._ring, self._out_ring, self._trace):
            if shared is not None:
                shared.close()
                shared.unlink()
        self._ring = self._out_ring = None
        self._trace = None

    # -- the end ---------------------------------------------------------------------------
    def _exit_code(self) -> int:
        if self._state.bad_input:
            return EXIT_BAD_INPUT
        return EXIT_FAULT if self._state.fault or self._state.cut_short else EXIT_OK

    def _summary(self) -> RunSummary:
        if self.summary is None:
            self.summary = self._build_summary(started=False)
        return self.summary

    def _build_summary(self, started: bool) -> RunSummary:
        state, sup = self._state, self._supervisor
        summary = build_summary(self.config, self._reports, RunFacts(
            started=started, stop_reason=state.stop_reason, cut_short=state.cut_short,
            errors=state.errors, ring=self._ring.statistics() if self._ring else None,
            ring_slots=self._ring.n_slots if self._ring else 0, spec=self._spec,
            worker_restarts=sup.restarts, watchdog_kills=sup.watchdog_kills,
            viewer_exits=sup.viewer_exits, viewer_last_error=sup.viewer_last_error,
            frames_salvaged=self._salvaged, capacity=self._capacity,
            ring_positions=self._ring.position_statistics() if self._ring else (),
            cluster_ready=self._cluster_ready if isinstance(self._cluster_ready, ClusterReady)
            else None, cluster_fallbacks=sup.cluster_fallbacks, cluster_lost=sup.cluster_lost,
        ))
        if summary["frames_lost"] and not state.fault:
            state.fail(f"{summary['frames_lost']} frame(s) lost: not put in the ring (it was "
                       "full) or never written")
            summary["errors"] = list(state.errors)
        return summary

    def _write_outputs(self) -> None:
        """Every output of the run, each attempted whatever happens to the others (bad
        input writes none: nothing started)."""
        from rt_eda.engine.outputs import write_outputs

        if self._state.bad_input:
            return
        summary = self._summary()
        summary["cut_short"] = self._state.cut_short
        summary["errors"] = list(self.errors)
        self.outputs = write_outputs(self.config, summary, self.write_profile,
                                     full=not self._state.cut_short)
        for line in self.outputs.failures:
            log.error("%s", line)
            self._state.error(line)
            self._state.fault = True
        summary["errors"] = list(self.errors)

    # -- plumbing --------------------------------------------------------------------------
    @contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)
            if self._state.hurry and self._may_interrupt:
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
        if self._state.hurry:
            raise KeyboardInterrupt
        self._may_interrupt = True
        try:
            yield
        finally:
            self._may_interrupt = False

    @contextmanager
    def _log_listener(self) -> Iterator[MessageQueue[logging.LogRecord]]:
        log_queue: MessageQueue[logging.LogRecord] = MessageQueue(self._ctx)  # nothing named
        handlers = logging.getLogger().handlers or [logging.StreamHandler(sys.stderr)]
        listener = logging.handlers.QueueListener(log_queue, *handlers,
                                                  respect_handler_level=True)
        listener.start()
        try:
            yield log_queue
        finally:
            listener.stop()
