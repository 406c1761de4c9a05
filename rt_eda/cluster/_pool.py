"""The run's actors: placed, started, warmed, watched, restarted and ended.

::

    start()    model bytes -> object store (once); a placement group of one bundle per actor
               (cluster.placement: SPREAD over nodes, or PACK), so every actor's CPUs and GPUs
               are reserved before any starts; the actors (named analysis-1..N in the run's
               namespace, max_restarts = cluster.max_restarts, max_task_retries 0: a stack is
               analysed at most once; their runtime environment is the job's, given to
               connect()); ready() of each: set up and warm, the same rt-eda, its clock
               compared with this one
    submit()   one stack to one actor -> an ObjectRef (the stack goes through the object
               store: copied once here, read zero-copy by an actor on this node)
    fetch()    the RemoteAnalysis of a ref, in short waits so a stop is seen
    recover()  after an actor fault: wait (at most cluster.timeout_s) for Ray to have it back,
               count a restart when its incarnation changed; an actor Ray cannot bring back
               (restarts used up, its node gone, no answer in time) is *lost*
    restart()  ray.kill(no_restart=False): the actor's process is ended and Ray restarts it
               (after a hook raised, or a stack took longer than cluster.timeout_s)
    close()    every actor told to tear its worker down, then killed (no restart); the
               placement group removed: nothing of the run stays on the cluster

Start-up failures map onto exit codes like a local worker's: a model or configuration the
actor refuses (:class:`~rt_eda.core.errors.ModelError`, ``ConfigError``), a placement the
cluster cannot give, a runtime environment that cannot be built, another rt-eda version on a
node: exit 2; anything else: exit 1.

:class:`RemoteActor` is what the bridge's lanes share about one actor; its ``up`` event is
clear while it is being recovered (its lanes wait, claiming nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ClusterError, ConfigError, ModelError
from rt_eda.core.messages import ActorInfo
from rt_eda.shm import StackSpec

from ._actor import ActorIdentity, ActorSpec, AnalysisActor, RemoteAnalysis, boot_id
from ._layout import ClusterLayout
from ._session import ClusterSession
from ._shipping import model_payload

__all__ = ["READY_TIMEOUT_S", "ActorPool", "RemoteActor", "StartCancelled"]

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0
"""The longest the actors' first set-up may take (a large model on a slow node), as local
workers' start-up."""

ACTOR_NICENESS = 15
"""How much an actor on this machine lowers its priority (the local workers' niceness)."""

_POLL_S = 0.25
_CLOCK_PINGS = 7


class StartCancelled(Exception):
    """The run was stopped while the actors were being started."""


class RemoteActor:
    """One actor and the state its lanes share (see the module docstring)."""

    def __init__(self, index: int, name: str, handle: Any) -> None:
        self.index = index
        self.name = name
        self.handle = handle
        self.identity: ActorIdentity | None = None
        self.offset_s = 0.0  # actor clock - this clock
        self.same_clock = False
        self.restarts = 0
        self.lost = ""  # why the actor is gone for good ("" while it is not)
        self.up = threading.Event()
        self._lock = threading.Lock()
        self._recovering = False

    @property
    def incarnation(self) -> str:
        """The incarnation last seen ("" before the first)."""
        return self.identity.incarnation if self.identity is not None else ""

    def info(self) -> ActorInfo:
        """The actor as :class:`~rt_eda.core.messages.ActorInfo`."""
        ident = self.identity
        return ActorInfo(index=self.index, name=self.name,
                         node=ident.node if ident else "", host=ident.host if ident else "",
                         pid=ident.pid if ident else 0, same_clock=self.same_clock)

    def local_time(self, t_actor: float) -> float:
        """A time on the actor's monotonic clock, on this process's."""
        return t_actor - self.offset_s

    def begin_recovery(self, seen: str) -> bool:
        """Take the recovery of the fault seen on incarnation ``seen``: True for the one lane
        that does it; False when another lane does, or a newer incarnation is up already."""
        with self._lock:
            if self._recovering or self.lost or seen != self.incarnation:
                return False
            self._recovering = True
            self.up.clear()
            return True

    def end_recovery(self, identity: ActorIdentity | None, offset_s: float,
                     same_clock: bool, lost: str = "") -> bool:
        """The recovery's outcome: the identity the actor came back with, or ``lost``.
        Returns True when it came back as a new incarnation (a restart, counted here)."""
        with self._lock:
            restarted = False
            if lost:
                self.lost = lost
            elif identity is not None:
                restarted = identity.incarnation != self.incarnation
                self.identity = identity
                self.offset_s, self.same_clock = offset_s, same_clock
                self.restarts += restarted
            self._recovering = False
            self.up.set()  # lanes wake: to work again, or to see it is lost
            return restarted

    def saw_incarnation(self, incarnation: str) -> bool:
        """A result came from ``incarnation``: True (a restart, counted) when it is new,
        i.e. Ray restarted the actor while no call of ours was in flight."""
        with self._lock:
            if self.identity is None or incarnation == self.identity.incarnation:
                return False
            import dataclasses

            self.identity = dataclasses.replace(self.identity, incarnation=incarnation)
            self.restarts += 1
            return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = next((t.strip() for t in text if t.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class ActorPool:
    """The actors of one run (see the module docstring). One bridge process owns it; its
    methods may be called from the bridge's lane threads (Ray's API is thread-safe)."""

    def __init__(self, session: ClusterSession, config: Config, layout: ClusterLayout,
                 spec: StackSpec) -> None:
        self.session = session
        self.config = config
        self.layout = layout
        self.spec = spec
        self.actors: list[RemoteActor] = []
        self.network_image_shape: tuple[int, int] | None = None
        self._pg: Any = None
        self._model_ref: Any = None
        self._boot = boot_id()

    # -- start -------------------------------------------------------------------------------
    def start(self, cancelled: Callable[[], bool]) -> None:
        """Place, start and warm up every actor (see the module docstring).

        Raises
        ------
        ConfigError, ModelError
            Bad input (exit 2): the actors refused the model or configuration, the cluster
            cannot place them, their environment cannot be built, another rt-eda.
        ClusterError
            Anything else that kept an actor from starting (exit 1).
        StartCancelled
            ``cancelled()`` turned true meanwhile.
        """
        import ray
        from ray.util.placement_group import placement_group

        cfg, c = self.config, self.config.cluster
        payload = model_payload(cfg.analysis.model)
        self._model_ref = ray.put(payload.data)
        from rt_eda.workers import worker_settings

        actor_spec = ActorSpec(
            worker=cfg.analysis.worker, worker_modules=tuple(cfg.analysis.worker_modules),
            settings=worker_settings(cfg), spec=self.spec, model_name=payload.name,
            model_sha256=payload.sha256, nice_on=self._boot, nice=ACTOR_NICENESS)
        n = self.layout.actors
        bundle = {k: v for k, v in (("CPU", c.num_cpus_per_actor),
                                    ("GPU", c.num_gpus_per_actor)) if v > 0}
        strategies: list[Any]
        if bundle:
            self._pg = placement_group([dict(bundle)] * n,
                                       strategy="SPREAD" if c.placement == "spread" else "PACK",
                                       name=f"{self.session.namespace}-actors")
            self._wait([self._pg.ready()], cancelled, c.timeout_s, self._placement_failed)
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            strategies = [PlacementGroupSchedulingStrategy(
                self._pg, placement_group_bundle_index=i) for i in range(n)]
        else:
            strategies = ["SPREAD" if c.placement == "spread" else "DEFAULT"] * n
        remote_class: Any = ray.remote(AnalysisActor)
        for i in range(1, n + 1):
            name = f"analysis-{i}"
            handle = remote_class.options(
                name=name, num_cpus=c.num_cpus_per_actor, num_gpus=c.num_gpus_per_actor,
                max_restarts=c.max_restarts, max_task_retries=0, max_concurrency=1,
                scheduling_strategy=strategies[i - 1],
            ).remote(actor_spec, self._model_ref)
            self.actors.append(RemoteActor(i, name, handle))
        refs = [a.handle.ready.remote() for a in self.actors]
        self._wait(refs, cancelled, READY_TIMEOUT_S, None)
        for actor, ref in zip(self.actors, refs, strict=True):
            actor.identity = self._identity(actor, ref)
            actor.offset_s, actor.same_clock = self.clock_offset(actor.handle, actor.identity)
            actor.up.set()
        shapes = {a.identity.network_image_shape for a in self.actors if a.identity}
        self.network_image_shape = shapes.pop() if len(shapes) == 1 else None
        for a in self.actors:
            log.info("actor %s: %s pid %d on node %s%s", a.name,
                     a.identity.hostname if a.identity else "?", a.info().pid,
                     a.info().node[:12], "" if a.same_clock else
                     f" (clock offset {1e3 * a.offset_s:+.3f} ms)")

    def _wait(self, refs: list[Any], cancelled: Callable[[], bool], timeout_s: float,
              on_timeout: Callable[[float], Exception] | None) -> None:
        import ray

        deadline = time.monotonic() + timeout_s
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
            if not pending:
                return
            if cancelled():
                raise StartCancelled
            if time.monotonic() > deadline:
                raise (on_timeout(timeout_s) if on_timeout is not None else ClusterError(
                    f"the actors were not set up within {timeout_s:.0f} s"))

    def _placement_failed(self, timeout_s: float) -> Exception:
        import ray

        c = self.config.cluster
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        have = {k: v for k, v in resources.items() if k in ("CPU", "GPU")}
        return ConfigError(
            f"cluster.actors: the cluster cannot place {self.layout.actors} actor(s) of "
            f"{c.num_cpus_per_actor:g} CPU and {c.num_gpus_per_actor:g} GPU each "
            f"({c.placement}) within cluster.timeout_s ({timeout_s:g} s); it has "
            f"{', '.join(f'{v:g} {k}' for k, v in sorted(have.items())) or 'none'}: lower "
            "cluster.actors, cluster.num_cpus_per_actor or cluster.num_gpus_per_actor")

    def _identity(self, actor: RemoteActor, ref: Any) -> ActorIdentity:
        import ray

        from rt_eda import __version__

        where = f"actor {actor.name}"
        try:
            ident: ActorIdentity = ray.get(ref)
        except ray.exceptions.RuntimeEnvSetupError as exc:
            raise ConfigError(f"{where}: its runtime environment (analysis.worker_modules "
                              f"shipped as py_modules) could not be set up: "
                              f"{_first_line(exc)}") from None
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"{where} did not start: {_first_line(exc)}") from None
        where += f" on {ident.hostname} ({ident.host})"
        if ident.version != __version__:
            raise ConfigError(f"{where} runs rt-eda {ident.version or '(unknown)'}, this "
                              f"machine {__version__}: install the same rt-eda on every node")
        if ident.error:
            if ident.bad_input:
                raise ModelError(f"{where}: {ident.error}")
            raise ClusterError(f"{where}: {ident.error}")
        return ident

    def clock_offset(self, handle: Any, identity: ActorIdentity) -> tuple[float, bool]:
        """(actor clock - this clock, same clock) of the actor ``handle`` names: 0 and True
        on this machine's boot; otherwise the offset of the fastest of a few pings (its error
        is at most half that ping's round trip)."""
        import ray

        if identity.boot == self._boot:
            return 0.0, True
        best = (float("inf"), 0.0)
        for _ in range(_CLOCK_PINGS):
            t0 = time.monotonic()
            t_actor = float(ray.get(handle.clock.remote(),
                                    timeout=self.config.cluster.timeout_s))
            t1 = time.monotonic()
            best = min(best, (t1 - t0, t_actor - (t0 + t1) / 2))
        return best[1], False

    # -- the run -----------------------------------------------------------------------------
    def submit(self, actor: RemoteActor, stack: Any, seq: int) -> Any:
        """Send one stack to ``actor``; its ObjectRef."""
        return actor.handle.analyse.remote(stack, seq)

    def fetch(self, ref: Any, deadline: float, stopping: Callable[[], float | None]
              ) -> RemoteAnalysis:
        """The analysis of ``ref``, waited for in short slices.

        ``stopping()`` returns the time by which in-flight work must end once the run stops
        (None while it goes). Raises ``ray.exceptions.GetTimeoutError`` after ``deadline``
        (or that stop bound), or whatever Ray raises for the call.
        """
        import ray

        while True:
            try:
                result: RemoteAnalysis = ray.get(ref, timeout=_POLL_S)
                return result
            except ray.exceptions.GetTimeoutError:
                now = time.monotonic()
                bound = stopping()
                if now > deadline or (bound is not None and now > bound):
                    raise

    def restart(self, actor: RemoteActor, why: str) -> None:
        """End ``actor``'s process; Ray restarts it (if it has restarts left)."""
        import ray

        log.warning("actor %s: %s; restarting it", actor.name, why)
        try:
            ray.kill(actor.handle, no_restart=False)
        except (ValueError, ray.exceptions.RayError) as exc:  # gone already
            log.debug("actor %s: kill: %s", actor.name, _first_line(exc))

    def recover(self, actor: RemoteActor, stopping: Callable[[], float | None]) -> None:
        """Wait for ``actor`` to be back after a fault (see the module docstring); the
        outcome is recorded on ``actor`` (:meth:`RemoteActor.end_recovery`)."""
        import ray

        timeout = self.config.cluster.timeout_s
        deadline = time.monotonic() + timeout
        lost = ""
        while not lost:
            now = time.monotonic()
            bound = stopping()
            if bound is not None and now > bound:
                lost = "the run ended while it was being restarted"
                break
            if now > deadline:
                lost = f"not back within cluster.timeout_s ({timeout:g} s)"
                break
            if not ray.is_initialized():
                lost = "the connection to Ray is closed"
                break
            try:
                ident: ActorIdentity = ray.get(actor.handle.ready.remote(),
                                               timeout=min(2.0, max(0.05, deadline - now)))
            except ray.exceptions.ActorDiedError as exc:
                lost = _first_line(exc)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
                time.sleep(0.1)  # being restarted (and re-warmed)
            except (OSError, ray.exceptions.RayError) as exc:  # the cluster may be going
                log.debug("actor %s: not back yet: %s", actor.name, _first_line(exc))
                time.sleep(0.5)
            else:
                if ident.error:
                    lost = f"its restart failed: {ident.error}"
                    self._end(actor)
                    break
                try:
                    offset, same = self.clock_offset(actor.handle, ident)
                except (OSError, ray.exceptions.RayError) as exc:  # gone again: next round
                    log.debug("actor %s: clock: %s", actor.name, _first_line(exc))
                    continue
                if actor.end_recovery(ident, offset, same):
                    log.warning("actor %s restarted (%d so far), set up and warm again on %s",
                                actor.name, actor.restarts, ident.hostname)
                return
        log.warning("actor %s lost: %s", actor.name, lost)
        actor.end_recovery(None, 0.0, False, lost=lost)

    # -- the end -----------------------------------------------------------------------------
    def _end(self, actor: RemoteActor) -> None:
        import ray

        try:
            ray.kill(actor.handle, no_restart=True)
        except (ValueError, ray.exceptions.RayError) as exc:  # gone already
            log.debug("actor %s: kill: %s", actor.name, _first_line(exc))

    def close(self, teardown_s: float = 2.0) -> None:
        """Tear every live actor's worker down (waiting at most ``teardown_s``), kill every
        actor without restart and remove the placement group. Never raises."""
        import ray
        from ray.util.placement_group import remove_placement_group

        live = [a for a in self.actors if not a.lost]
        refs = []
        for a in live:
            try:
                refs.append(a.handle.close.remote())
            except (ValueError, ray.exceptions.RayError) as exc:
                log.debug("actor %s: close: %s", a.name, _first_line(exc))
        if refs:
            try:
                ray.wait(refs, num_returns=len(refs), timeout=teardown_s)
            except (OSError, ray.exceptions.RayError) as exc:
                log.debug("actors' teardown: %s", _first_line(exc))
        for a in self.actors:
            self._end(a)
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except (OSError, ray.exceptions.RayError) as exc:
                log.debug("placement group: %s", _first_line(exc))
            self._pg = None
        self._model_ref = None
