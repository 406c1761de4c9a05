"""Supervision of the role processes: start, ready, watch, restart, join.

::

    start(role)        spawn, with its thread settings in the environment and SIGINT ignored
                       from its first instruction (the engine alone decides how a run ends)
    wait_ready(...)    events until every child named is READY (a failure, an exit, a stop or
                       READY_TIMEOUT_S first: StartupStopped)
    next_event()       one RoleEvent: READY marks the child, STATS/STATUS go to RoleReports,
                       FAILED/STOPPED change the RunState (fault, bad input, stop reason)
    watch(ring)        children that died while the run goes:
                         worker  -> its claims recovered, restarted (MAX_RESTARTS_PER_WORKER)
                         viewer  -> counted, restarted once if it had shown its window
                         bridge  -> the cluster is lost: its lanes' claims recovered, then
                                    local workers take over (cluster.fallback "local",
                                    counted) or the run stops (exit 1)
                         camera  -> its STOPPED may say the source ran out (a normal end)
                         others  -> a fault (the run stops, exit 1)
    check_watchdog()   a worker holding one claim past its bound is killed (then as above)
    join(children)     wait for each to leave (events read meanwhile); one still alive is a
                       fault and terminated, or, after a second Ctrl-C, killed (cut short)

One thread (the engine's) drives it. :class:`RunState` is what the engine and the supervisor
both know about how the run goes; its fields are declared here, never set on the fly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.messages import (
    Failure,
    RoleEvent,
    RoleEventKind,
    RoleName,
    RolePayload,
    Stopped,
    WorkerStart,
)
from rt_eda.core.process import DEBUG_ENV, RoleChannels
from rt_eda.core.queues import Channel, MessageQueue
from rt_eda.engine.summary import RoleReports
from rt_eda.engine.watchdog import Watchdog
from rt_eda.shm import StackRing

__all__ = ["MAX_RESTARTS_PER_WORKER", "MAX_VIEWER_RESTARTS", "READY_TIMEOUT_S", "Child",
           "RunState", "StartupStopped", "Supervisor"]

log = logging.getLogger(__name__)

MAX_RESTARTS_PER_WORKER = 3
MAX_VIEWER_RESTARTS = 1
"""A viewer that dies is started again this many times per run (a closed window is not a
death and is never reopened)."""
READY_TIMEOUT_S = 600.0
JOIN_S = 20.0


@dataclass
class RunState:
    """How the run goes, as the engine and its supervisor see it.

    Attributes
    ----------
    errors
        One line per problem, in order (the summary's ``errors``).
    stop_reason
        Why the run is ending ("" while it goes); the first reason given wins.
    fault
        A fault happened: exit 1.
    bad_input
        The configuration, model or source was refused before acquisition: exit 2.
    hurry
        A second Ctrl-C: roles still running are killed, what is known is written.
    cut_short
        A role was killed because of ``hurry`` (exit 1: the recording may be incomplete).
    t_start
        When acquisition started (monotonic s); 0.0 before.
    """

    errors: list[str] = field(default_factory=list)
    stop_reason: str = ""
    fault: bool = False
    bad_input: bool = False
    hurry: bool = False
    cut_short: bool = False
    t_start: float = 0.0

    def stop(self, reason: str) -> None:
        """Ask the run to end (a later reason does not replace the first)."""
        if not self.stop_reason:
            self.stop_reason = reason

    def error(self, message: str) -> None:
        """Add a line to ``errors`` (once)."""
        if message not in self.errors:
            self.errors.append(message)

    def fail(self, message: str) -> None:
        """A fault: logged, listed, and the run stops (exit 1)."""
        self.error(message)
        log.error("%s", message)
        self.fault = True
        self.stop(f"fault: {message}")

    def refuse(self, message: str) -> None:
        """Bad input: listed (the CLI prints it once) and the run stops (exit 2)."""
        self.bad_input = True
        self.error(message)
        self.stop(f"bad input: {message}")


@dataclass
class Child:
    """One role process (a restarted worker or viewer keeps its Child, with a new process)."""

    role: RoleName
    index: int
    process: SpawnProcess
    ready: bool = False
    restarts: int = 0
    failed: str = ""  # "<role> <index>: <why>" once it failed


class StartupStopped(Exception):
    """Start-up cannot go on (a stop was asked for, a role failed or exited, a timeout)."""


class Supervisor:
    """Starts, watches and joins the role processes of one run (see the module docstring).

    Parameters
    ----------
    config
        The run's configuration (thread counts, watchdog bound).
    ctx
        The spawn context every role is started with.
    state
        The run's state, shared with the engine.
    reports
        Where the roles' statistics go.
    events
        The events queue the roles report on (``channels.events``, read here).
    """

    def __init__(self, config: Config, ctx: SpawnContext, state: RunState,
                 reports: RoleReports, events: Channel[RoleEvent]) -> None:
        self.config = config
        self.events = events
        self.state = state
        self.reports = reports
        self.children: list[Child] = []
        self.restarts = 0  # worker restarts, all workers together
        self.watchdog_kills = 0
        self.viewer_exits = 0  # deaths, not closed windows
        self.viewer_last_error = ""
        self._ctx = ctx
        self._channels: RoleChannels | None = None
        self._controls: dict[int, MessageQueue[WorkerStart]] = {}
        self._output_ring: str | None = None  # known once every worker was READY
        self._viewer_failed = ""  # the FAILED text of the running viewer, if it sent one
        self._viewer_seen: set[int] = set()  # pids of viewer processes accounted for
        self._bridge_control: MessageQueue[WorkerStart] | None = None
        self._bridges_gone: set[int] = set()  # pids of bridge processes accounted for
        self.cluster_fallbacks = 0  # times local workers took over from a lost cluster
        self.cluster_lost = ""  # why the cluster was lost ("" while it was not)
        self._watchdog = Watchdog(config.analysis.watchdog_s)

    @property
    def channels(self) -> RoleChannels:
        """The channels the roles are started with (set by the engine)."""
        assert self._channels is not None, "Supervisor.channels used before it was set"
        return self._channels

    @channels.setter
    def channels(self, channels: RoleChannels) -> None:
        self._channels = channels

    # -- starting ----------------------------------------------------------------------------
    def of(self, role: RoleName) -> list[Child]:
        """The children of one role."""
        return [c for c in self.children if c.role is role]

    def start(self, role: RoleName, index: int, target: Callable[..., None],
              args: tuple[Any, ...]) -> Child:
        """Start (or restart) role ``index`` running ``target(*args)``."""
        threads = str(self.config.analysis.threads_per_worker) if role is RoleName.WORKER \
            else "1"
        debug = self.config.run.debug  # roles log at DEBUG and hold nothing back
        env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
               "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
               "TF_CPP_MIN_LOG_LEVEL": "0" if debug else "2", DEBUG_ENV: "1" if debug else "0"}
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
        self.reports.expect(role, index, process.pid)
        child = self._find(role, index)
        if child is None:
            child = Child(role, index, process)
            self.children.append(child)
        else:
            child.process, child.ready = process, False
        return child

    def start_worker(self, index: int) -> Child:
        """Start worker ``index`` with a fresh control queue (the output ring's name goes
        there once known; at once for a restarted worker)."""
        from rt_eda.roles import worker as worker_role

        control: MessageQueue[WorkerStart] = MessageQueue(self._ctx)
        self._controls[index] = control
        if self._output_ring is not None:
            control.put(WorkerStart(self._output_ring))
        return self.start(RoleName.WORKER, index, worker_role.run,
                          (self.config, self.channels, index, control))

    def release_workers(self, output_ring: str) -> None:
        """Let every worker (and the bridge) start claiming (``output_ring``: "" for no
        network images)."""
        self._output_ring = output_ring
        for control in self._controls.values():
            control.put(WorkerStart(output_ring))
        if self._bridge_control is not None:
            self._bridge_control.put(WorkerStart(output_ring))

    def start_bridge(self) -> Child:
        """Start the bridge process (``cluster.kind = "ray"``): it connects to the cluster,
        starts the actors and reports READY; it claims once :meth:`release_workers` names
        the output ring."""
        from rt_eda.roles import bridge as bridge_role

        control: MessageQueue[WorkerStart] = MessageQueue(self._ctx)
        self._bridge_control = control
        return self.start(RoleName.BRIDGE, 0, bridge_role.run,
                          (self.config, self.channels, control))

    def start_viewer(self) -> Child:
        """Start the viewer role."""
        from rt_eda.roles.viewer import run as viewer_run

        return self.start(RoleName.VIEWER, 0, viewer_run, (self.config, self.channels))

    def wait_ready(self, children: list[Child]) -> dict[RoleName, RolePayload]:
        """Wait until every child is READY; their READY payloads by role.

        Raises
        ------
        StartupStopped
            A stop was asked for, a child failed or exited, or READY_TIMEOUT_S passed.
        """
        payloads: dict[RoleName, RolePayload] = {}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(c.ready for c in children):
            if self.state.stop_reason:
                raise StartupStopped
            if time.monotonic() > deadline:
                self.state.fail(f"start-up timed out after {READY_TIMEOUT_S:.0f} s")
                raise StartupStopped
            event = self.next_event(0.1)
            if event is not None and event.kind is RoleEventKind.READY:
                payloads[event.role] = event.payload
            for c in children:
                if c.failed:
                    raise StartupStopped
                if not c.ready and not c.process.is_alive():
                    self.state.fail(f"{c.role} {c.index} exited during start-up "
                                    f"(exit code {c.process.exitcode})")
                    raise StartupStopped
        return payloads

    # -- events --------------------------------------------------------------------------------
    def next_event(self, timeout: float) -> RoleEvent | None:
        """Read and handle one event (None when none came within ``timeout`` s)."""
        try:
            event = (self.events.get(timeout=timeout) if timeout > 0
                     else self.events.get_nowait())
        except queue.Empty:
            return None
        self._handle(event)
        return event

    def drain_events(self) -> None:
        """Handle every event already waiting."""
        while self.next_event(0.0) is not None:
            pass

    def _find(self, role: RoleName, index: int) -> Child | None:
        return next((c for c in self.children if c.role is role and c.index == index), None)

    def _handle(self, event: RoleEvent) -> None:
        if self.reports.take(event):
            return
        child = self._find(event.role, event.index)
        p = event.payload
        if event.kind is RoleEventKind.READY and child is not None:
            child.ready = True
        elif event.kind is RoleEventKind.FAILED:
            failure = p if isinstance(p, Failure) else Failure("", repr(p))
            self._failed(event, child, failure)
        elif (event.kind is RoleEventKind.STOPPED and event.role is RoleName.CAMERA
              and isinstance(p, Stopped) and p.source_exhausted):
            self.state.stop(p.reason)  # "source exhausted: ...": a normal end

    def _failed(self, event: RoleEvent, child: Child | None, failure: Failure) -> None:
        state = self.state
        if event.role is RoleName.VIEWER:
            self._viewer_failed = failure.text
            log.warning("viewer: %s (the run goes on)", failure.text)
            return
        where = f"{event.role} {event.index}"
        if child is not None:
            child.failed = f"{where}: {failure.text}"
        if event.role is RoleName.WORKER and state.t_start and not state.stop_reason:
            log.warning("worker %d failed: %s", event.index, failure.text)
            state.errors.append(f"worker {event.index}: {failure.text}")
        elif event.role is RoleName.BRIDGE and state.t_start and not state.stop_reason:
            log.warning("bridge: %s", failure.text)  # its end is handled by watch()
        elif failure.bad_input and not state.t_start:  # before acquisition: exit 2
            log.debug("bad input from %s: %s", where, failure.message)
            state.refuse(failure.message)
        else:
            state.fail(f"{where}: {failure.text}")

    # -- while the run goes ------------------------------------------------------------------
    def alive_workers(self) -> int:
        """Worker processes alive now."""
        return sum(1 for c in self.of(RoleName.WORKER) if c.process.is_alive())

    def watch(self, ring: StackRing | None) -> None:
        """Handle every child that has died (see the module docstring)."""
        for child in list(self.children):
            if child.process.is_alive() or self.state.stop_reason:
                continue
            if child.role is RoleName.VIEWER:
                self.viewer_gone(child)  # never ends the run; a death restarts it once
                continue
            if child.role is RoleName.CAMERA:  # its STOPPED may say the source ran out
                self.drain_events()
                if self.state.stop_reason:
                    continue
            if child.role is RoleName.BRIDGE:
                self._bridge_gone(child, ring)
            elif child.role is RoleName.WORKER and ring is not None:
                self._restart_worker(child, ring)
            else:
                self.state.fail(child.failed or f"{child.role} process died "
                                f"(exit code {child.process.exitcode})")

    def check_watchdog(self, ring: StackRing) -> None:
        """Kill a worker that holds one claim longer than its bound (see
        :mod:`rt_eda.engine.watchdog`); its death is then handled like any worker's: the
        claim is recovered (counted) and the worker restarted (counted, bounded)."""
        for late in self._watchdog.observe(ring.claims(), time.monotonic()):
            child = next((c for c in self.of(RoleName.WORKER)
                          if c.index == late.worker and c.process.is_alive()), None)
            if child is None:
                continue
            message = late.message()
            log.warning("%s", message)
            self.state.errors.append(message)
            self.watchdog_kills += 1
            child.failed = (f"killed by the watchdog: held stack {late.seq} for "
                            f"{late.age_s:.1f} s")
            child.process.kill()

    def _restart_worker(self, child: Child, ring: StackRing) -> None:
        recovered = ring.recover(child.index)
        reason = child.failed or f"exit code {child.process.exitcode}"
        if child.restarts >= MAX_RESTARTS_PER_WORKER:
            self.state.fail(f"worker {child.index} failed {child.restarts + 1} times, "
                            f"last: {reason}; giving up")
            return
        child.restarts += 1
        self.restarts += 1
        log.warning("worker %d died (%s); %d claim(s) recovered; restarting (%d/%d)",
                    child.index, reason, recovered, child.restarts, MAX_RESTARTS_PER_WORKER)
        child.failed = ""
        self.start_worker(child.index)

    def bridge_readers(self) -> tuple[int, ...]:
        """The ring reader ids of the bridge's lanes (none without a cluster)."""
        if not self.config.cluster.enabled:
            return ()
        from rt_eda.cluster import cluster_layout

        return cluster_layout(self.config).readers

    def _bridge_gone(self, child: Child, ring: StackRing | None) -> None:
        """The bridge ended while the run goes: the cluster is lost (see the module
        docstring). Handled once per bridge process."""
        pid = child.process.pid
        if pid in self._bridges_gone:
            return
        if pid is not None:
            self._bridges_gone.add(pid)
        self.drain_events()  # its FAILED (why) and STATS
        recovered = sum(ring.recover(r) for r in self.bridge_readers()) if ring else 0
        reason = child.failed.removeprefix("bridge 0: ") or \
            f"the bridge process ended (exit code {child.process.exitcode})"
        self.cluster_lost = reason
        if self.config.cluster.fallback == "stop":
            self.state.fail(f"cluster lost: {reason} (cluster.fallback = 'stop')")
            return
        n = self.config.analysis.workers
        self.cluster_fallbacks += 1
        message = (f"cluster lost: {reason}; analysis falls back to {n} local worker(s) "
                   f"({recovered} claim(s) recovered; acquisition goes on)")
        log.warning("%s", message)
        self.state.error(message)
        for i in range(1, n + 1):
            self.start_worker(i)

    def viewer_gone(self, child: Child, *, restart: bool = True) -> None:
        """Account for a viewer process that has ended (once per process).

        Exit code 0 is a window a person closed, or a viewer that left because the run
        stopped: nothing to do. Anything else is a death: logged at WARNING, counted
        (``viewer_exits``) with its error (``viewer_last_error``: the exit code or signal and
        the viewer's own failure), and while the run goes on a viewer that had shown its
        window is started again, :data:`MAX_VIEWER_RESTARTS` times at most, so a person
        watching gets the window back. Nothing here touches acquisition, analysis or the
        recording.
        """
        process = child.process
        if process.is_alive() or process.pid in self._viewer_seen:
            return
        if process.pid is not None:
            self._viewer_seen.add(process.pid)
        self.drain_events()  # its FAILED event, if it sent one
        code = process.exitcode
        detail, self._viewer_failed = self._viewer_failed, ""
        if code == 0:
            return
        try:
            how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exit code {code}")
        except ValueError:
            how = f"killed by signal {-code if code is not None else '?'}"
        error = how + (f": {detail}" if detail else "")
        self.viewer_exits += 1
        self.viewer_last_error = error
        shown = child.ready  # it had shown its window (one that cannot start will not now)
        if (restart and shown and not self.state.stop_reason
                and child.restarts < MAX_VIEWER_RESTARTS):
            log.warning("viewer died (%s); starting it again (the run goes on)", error)
            child.restarts += 1
            self.start_viewer()
        else:
            log.warning("viewer died (%s)%s; not started again (died %d time(s); the run goes "
                        "on)", error, "" if shown else " before its window was shown",
                        self.viewer_exits)

    # -- the end ---------------------------------------------------------------------------
    def join(self, children: list[Child], timeout: float = JOIN_S) -> None:
        """Wait for ``children`` to leave, reading events meanwhile (see the module
        docstring for one that does not)."""
        deadline = time.monotonic() + timeout
        for c in children:
            while (c.process.is_alive() and time.monotonic() < deadline
                   and not self.state.hurry):
                self.next_event(0.05)
                self._drain_orphaned_results()
            if c.process.is_alive() and self.state.hurry:
                self.kill_cut_short(c)
            elif c.process.is_alive():
                self.state.fail(f"{c.role} {c.index} did not stop within {timeout:.0f} s; "
                                "terminated")
                c.process.terminate()
                c.process.join(5)
        self.drain_events()

    def kill_cut_short(self, c: Child) -> None:
        """A second Ctrl-C: kill a role that is still running (its report is lost)."""
        if not self.state.cut_short:
            msg = ("cut short by a second Ctrl-C: roles still running were killed; the "
                   "counts and the recording may be incomplete")
            self.state.errors.append(msg)
            log.warning("%s", msg)
        self.state.cut_short = True
        log.warning("killing %s %d (cut short)", c.role, c.index)
        c.process.kill()
        c.process.join(5)

    def _drain_orphaned_results(self) -> None:
        """With the interpreter gone, nobody reads the results pipe: empty it, so a worker
        blocked on a full pipe can notice that the run is ending."""
        if any(not c.process.is_alive() for c in self.of(RoleName.INTERPRETER)):
            with contextlib.suppress(queue.Empty, OSError, EOFError):
                for _ in range(10_000):
                    self.channels.results.get_nowait()

    def kill_remaining(self) -> None:
        """Kill every child still alive (the last step of every run) and reap them all."""
        for c in self.children:
            if c.process.is_alive() and self.state.hurry:
                self.kill_cut_short(c)
            elif c.process.is_alive():
                c.process.kill()
            c.process.join(5)
