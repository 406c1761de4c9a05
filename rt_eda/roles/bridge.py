"""The bridge process: claims from the ring for Ray actors, as local workers claim for
themselves (``--cluster ray``; :mod:`rt_eda.cluster`).

Entry point :func:`run`, started by the engine (spawn) instead of the local workers::

    connect (start or join Ray) -> actors placed, set up, warm     -- READY(ClusterReady)
    wait for WorkerStart (the output ring)
    lanes: actors x in_flight threads, each a ring reader (its own reader id):
        wait until its actor is up -> claim newest stack (sleeps on the doorbell; older
        stacks skipped and counted, never queued) -> [--verify] stamps checked
        -> actor.analyse(stack: the valid pixels of a stack read from a sensor region, as
        a local worker gets them) -> result back -> release the claim (analysed)
        -> Result (the stack's seq) on the results queue -> network image into the output
        ring
    main thread: ClusterStatus twice a second; every actor lost -> ClusterLostError
    stop: the ring shut down -> lanes leave; a stack in flight gets DRAIN_S to come back
          -> the actors' workers torn down, the actors killed, Ray left (a local instance
          stops) -> STATS(ClusterStatistics)

Each lane keeps at most one request in flight, so an actor has at most ``in_flight`` (1 or
2): with 2, the next stack travels while the actor computes. A claim is held until its
result is back, so the ring's rules are the local workers': the slot is not overwritten, the
watchdog sees its age, a dead bridge's claims are recovered by the engine (counted as
skipped).

Faults, per stack (``published = analysed + skipped + failed`` stays exact):

- a hook raised in the actor: the stack is *failed*; the actor is restarted;
- the actor died or became unreachable: its stacks in flight are *skipped*; Ray restarts it
  (``cluster.max_restarts``), the lane waits until it is back, set up and warm (a new
  incarnation: counted in ``restarts``, and in the summary's ``worker_restarts``);
- no result within ``cluster.timeout_s``: *skipped*, the actor restarted;
- an actor that does not come back within ``cluster.timeout_s`` (restarts used up, its node
  gone) is lost; when every actor is lost, so is the cluster: FAILED with
  :class:`~rt_eda.core.errors.ClusterLostError`, and the engine falls back to local workers
  or ends the run (``cluster.fallback``). Acquisition never waits for any of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import (
    ClaimRecoveredError,
    ClusterLostError,
    ClusterUnreachableError,
    RingClosedError,
)
from rt_eda.core.messages import (
    ActorStatistics,
    ClusterReady,
    ClusterStatistics,
    ClusterStatus,
    Failure,
    Result,
    RoleEventKind,
    RoleName,
    WorkerStart,
    WorkerStatistics,
    WorkerTimes,
)
from rt_eda.core.process import RoleChannels, enter_role, report
from rt_eda.core.queues import Channel
from rt_eda.core.stats import Percentiles, Reservoir, percentiles
from rt_eda.roles.worker import (
    _Counts,
    _intact,
    _publish_image,
    checked_network_image,
    sensor_regions,
    valid_pixels,
)
from rt_eda.shm import Claim, StackRing

__all__ = ["CLOSE_S", "DRAIN_S", "run"]

log = logging.getLogger(__name__)

DRAIN_S = 5.0
"""Once the run stops, how long a stack in flight may take to come back (then it is counted
as skipped and the actor ended)."""

CLOSE_S = 10.0
"""The longest ending the actors and leaving Ray may take (a local instance stops), which
the engine allows the bridge beside :data:`DRAIN_S` before it calls the bridge stuck."""

_STATUS_PERIOD_S = 0.5
_SAMPLES = 20_000


@dataclass
class _LaneCounts:
    """What one lane counted (one thread writes it; read once the lane has ended, or as a
    snapshot for the live status)."""

    worker: _Counts = field(default_factory=_Counts)
    failed: int = 0
    lost_in_flight: int = 0
    send: Reservoir = field(default_factory=lambda: Reservoir(_SAMPLES))
    compute: Reservoir = field(default_factory=lambda: Reservoir(_SAMPLES))
    back: Reservoir = field(default_factory=lambda: Reservoir(_SAMPLES))
    round_trip: Reservoir = field(default_factory=lambda: Reservoir(_SAMPLES))
    recent: list[tuple[float, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_recent(self) -> list[tuple[float, float, float]]:
        with self.lock:
            out, self.recent = self.recent, []
        return out


class _Bridge:
    """The lanes and what they share (see the module docstring)."""

    def __init__(self, config: Config, channels: RoleChannels, ring: StackRing,
                 out_ring: StackRing | None, pool: Any) -> None:
        self.config = config
        self.channels = channels
        self.ring = ring
        self.out_ring = out_ring
        self.pool = pool
        self.layout = pool.layout
        self.verify = config.run.verify or config.camera.synthetic.verify
        self.n_t = config.analysis.n_timepoints
        self.timeout_s = config.cluster.timeout_s
        self.declared = pool.network_image_shape
        self._stop_seen: float | None = None
        self._refused: set[tuple[object, ...]] = set()
        self._refused_lock = threading.Lock()
        self.lanes: list[tuple[Any, int, _LaneCounts, threading.Thread]] = []

    def stopping(self) -> float | None:
        """The time by which in-flight work must end (None while the run goes)."""
        if self._stop_seen is None and self.channels.stop.is_set():
            self._stop_seen = time.monotonic()
        return None if self._stop_seen is None else self._stop_seen + DRAIN_S

    # -- the lanes ---------------------------------------------------------------------------
    def start(self) -> None:
        for actor in self.pool.actors:
            for k in range(1, self.layout.in_flight + 1):
                reader = self.layout.reader(actor.index, k)
                counts = _LaneCounts()
                t = threading.Thread(target=self._lane, args=(actor, reader, counts),
                                     name=f"lane-{actor.index}.{k}", daemon=True)
                self.lanes.append((actor, reader, counts, t))
        for _, _, _, t in self.lanes:
            t.start()

    def _lane(self, actor: Any, reader: int, counts: _LaneCounts) -> None:
        try:
            while not actor.lost:
                if not actor.up.wait(0.2):
                    if self.ring.closed:
                        return
                    continue
                if actor.lost:
                    return
                t0 = time.perf_counter()
                try:
                    claim = self.ring.claim(reader, timeout=0.5, n_timepoints=self.n_t)
                except RingClosedError:
                    return
                if claim is None:
                    continue
                counts.worker.wait_s += time.perf_counter() - t0
                try:
                    self._one(actor, reader, claim, counts)
                finally:
                    with contextlib.suppress(ClaimRecoveredError):
                        claim.fail()  # does nothing once handed back; else counted failed
        except Exception as exc:  # a lane's top loop: logged; the other lanes go on
            from rt_eda.workers import exception_line

            log.debug("bridge lane %d failed", reader, exc_info=True)
            log.error("bridge lane %d (actor %s) ended: %s", reader, actor.name,
                      exception_line(exc))

    def _one(self, actor: Any, reader: int, claim: Claim, counts: _LaneCounts) -> None:
        """One claimed stack: to the actor and back (see the module docstring)."""
        import ray

        c = counts.worker
        if self.verify and not _intact(valid_pixels(claim), claim.seqs):
            c.torn += 1
            claim.count_torn()
            log.error("bridge lane %d: stack %d is torn (stamps do not match)", reader,
                      claim.seq)
            self._hand_back(claim, counts, analysed=False)
            return
        seen = actor.incarnation
        t_submit = time.monotonic()
        try:
            ref = self.pool.submit(actor, valid_pixels(claim), claim.seq)
            res = self.pool.fetch(ref, t_submit + self.timeout_s, self.stopping)
        except ray.exceptions.GetTimeoutError:
            counts.lost_in_flight += 1
            self._hand_back(claim, counts, analysed=False)
            if self.stopping() is None:
                self.pool.restart(actor, f"stack {claim.seq} took longer than "
                                  f"cluster.timeout_s ({self.timeout_s:g} s)")
                self._recover(actor, seen)
            return
        except ray.exceptions.RayTaskError as exc:  # a hook raised in the actor
            from rt_eda.workers import exception_line

            counts.failed += 1
            try:
                claim.fail()
            except ClaimRecoveredError:
                c.recovered += 1
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            self.pool.restart(actor, f"analysis of stack {claim.seq} raised "
                              f"{exception_line(cause)}")
            self._recover(actor, seen)
            return
        except (OSError, ray.exceptions.RayError) as exc:  # the actor died or is unreachable
            counts.lost_in_flight += 1
            self._hand_back(claim, counts, analysed=False)
            log.warning("actor %s: stack %d lost in flight: %s", actor.name, claim.seq,
                        " ".join(str(exc).split())[:200])
            self._recover(actor, seen)
            return
        t_back = time.monotonic()
        try:
            claim.release()
        except ClaimRecoveredError:
            c.recovered += 1  # the engine took the claim back: drop the result
            return
        if actor.saw_incarnation(res.incarnation):
            log.warning("actor %s was restarted between calls (%d so far)", actor.name,
                        actor.restarts)
        c.analysed += 1
        c.prepare_s += res.t_prepare_s
        c.infer_s += res.t_infer_s
        c.post_s += res.t_post_s
        start = max(claim.t_claimed, min(t_back, actor.local_time(res.t_start)))
        end = max(start, min(t_back, actor.local_time(res.t_end)))
        send_ms, compute_ms = 1e3 * (start - claim.t_claimed), 1e3 * (end - start)
        back_ms = 1e3 * (t_back - end)
        counts.send.add(send_ms)
        counts.compute.add(compute_ms)
        counts.back.add(back_ms)
        counts.round_trip.add(1e3 * (t_back - claim.t_claimed))
        with counts.lock:
            counts.recent.append((send_ms, compute_ms, back_ms))
        tq = time.perf_counter()
        self.channels.results.put(Result(
            seq=claim.seq, worker=reader, decision=res.decision,
            t_exposure=claim.t_exposure, t_published=claim.t_published,
            t_claimed=claim.t_claimed, t_done=t_back, n_timepoints=self.n_t,
            t_prepare_s=res.t_prepare_s, t_infer_s=res.t_infer_s, t_post_s=res.t_post_s,
            position=claim.position, regions=sensor_regions(res.regions, claim.frame),
            frame=claim.frame,
        ))
        c.queue_s += time.perf_counter() - tq
        if res.network_image is not None:
            self._image(claim, res.network_image, reader, c)

    def _hand_back(self, claim: Claim, counts: _LaneCounts, *, analysed: bool) -> None:
        try:
            claim.release(analysed=analysed)
        except ClaimRecoveredError:
            counts.worker.recovered += 1

    def _recover(self, actor: Any, seen: str) -> None:
        if actor.begin_recovery(seen):
            self.pool.recover(actor, self.stopping)

    def _image(self, claim: Claim, image: np.ndarray, reader: int, c: _Counts) -> None:
        placed, problem = checked_network_image(image, claim.frame, self.declared)
        if placed is None:
            c.network_images_refused += 1
            key = (type(image).__name__, getattr(image, "shape", None),
                   str(getattr(image, "dtype", "")))
            with self._refused_lock:
                new = key not in self._refused
                self._refused.add(key)
            if new:
                log.warning("bridge lane %d: network image of stack %d refused, not stored: "
                            "%s (logged once per shape; counted in network_images_refused)",
                            reader, claim.seq, problem)
            return
        if placed.dtype.kind == "f" and not np.isfinite(placed).all():
            c.network_images_nonfinite += 1
        if self.out_ring is not None:
            tp = time.perf_counter()
            _publish_image(self.out_ring, claim.seq, placed, claim.t_exposure,
                           claim.interval_s, c, claim.position)
            c.publish_image_s += time.perf_counter() - tp

    # -- the main thread ---------------------------------------------------------------------
    def watch(self) -> None:
        """Until every lane has ended: the live status; every actor lost -> ClusterLostError
        (raised here, once no lane holds a claim)."""
        next_status = time.monotonic()
        while any(t.is_alive() for _, _, _, t in self.lanes):
            self.stopping()
            actors = self.pool.actors
            if actors and all(a.lost for a in actors):
                for _, _, _, t in self.lanes:
                    t.join(self.timeout_s)
                reasons = "; ".join(f"{a.name}: {a.lost}" for a in actors)
                raise ClusterLostError(f"every actor is lost ({reasons})")
            now = time.monotonic()
            if now >= next_status:
                next_status = now + _STATUS_PERIOD_S
                self._status()
            time.sleep(0.05)

    def _status(self) -> None:
        recent = [r for _, _, counts, _ in self.lanes for r in counts.take_recent()]

        def p50(i: int) -> float:
            return float(np.median([r[i] for r in recent])) if recent else float("nan")

        actors = self.pool.actors
        report(self.channels, RoleName.BRIDGE, 0, RoleEventKind.STATUS, ClusterStatus(
            actors_up=sum(1 for a in actors if a.up.is_set() and not a.lost),
            actors=len(actors), restarts=sum(a.restarts for a in actors),
            send_p50_ms=p50(0), compute_p50_ms=p50(1), return_p50_ms=p50(2)))


def _statistics(config: Config, session: Any, pool: Any, bridge: _Bridge | None,
                lost: str) -> ClusterStatistics:
    """What the bridge counted (empty figures for what never started)."""
    lanes = bridge.lanes if bridge is not None else []
    actors = pool.actors if pool is not None else []
    every = [c for _, _, c, _ in lanes]
    return ClusterStatistics(
        address=session.where if session is not None else config.cluster.address,
        namespace=session.namespace if session is not None else "",
        worker=_worker_statistics([c.worker for c in every]),
        actors=tuple(_actor_statistics(a, [c for act, _, c, _ in lanes if act is a])
                     for a in actors),
        lost=lost, send_ms=_merge([c.send for c in every]),
        compute_ms=_merge([c.compute for c in every]),
        return_ms=_merge([c.back for c in every]),
        round_trip_ms=_merge([c.round_trip for c in every]))


def _merge(reservoirs: list[Reservoir]) -> Percentiles:
    values = [r.sample() for r in reservoirs if r.count]
    if not values:
        return Percentiles()
    return percentiles(np.concatenate(values), count=sum(r.count for r in reservoirs),
                       maximum=max(r.maximum for r in reservoirs if r.count))


def _actor_statistics(actor: Any, lanes: list[_LaneCounts]) -> ActorStatistics:
    return ActorStatistics(
        index=actor.index, name=actor.name, node=actor.info().node,
        analysed=sum(c.worker.analysed for c in lanes), failed=sum(c.failed for c in lanes),
        lost_in_flight=sum(c.lost_in_flight for c in lanes), restarts=actor.restarts,
        lost=bool(actor.lost),
        send_ms=_merge([c.send for c in lanes]), compute_ms=_merge([c.compute for c in lanes]),
        return_ms=_merge([c.back for c in lanes]),
        round_trip_ms=_merge([c.round_trip for c in lanes]))


def _worker_statistics(counts: list[_Counts]) -> WorkerStatistics:
    def total(name: str) -> Any:
        return sum(getattr(c, name) for c in counts)

    return WorkerStatistics(
        analysed=total("analysed"), torn=total("torn"), recovered=total("recovered"),
        network_images=total("network_images"),
        network_images_lost=total("network_images_lost"),
        network_images_refused=total("network_images_refused"),
        network_images_nonfinite=total("network_images_nonfinite"),
        times=WorkerTimes(total("wait_s"), total("prepare_s"), total("infer_s"),
                          total("post_s"), total("queue_s"), total("publish_image_s")))


def _wait_output_ring(channels: RoleChannels, control: Channel[WorkerStart]) -> str | None:
    """The output ring's name from the engine ("" for none); None if the run stopped."""
    while not channels.stop.is_set():
        try:
            msg = control.get(timeout=0.2)
        except queue.Empty:
            continue
        return msg.output_ring
    return None


def _object_store_bytes(config: Config, layout: Any, ring: StackRing) -> int:
    """A local instance's object store: ``cluster.object_store_mb``, or room for 8 times
    every lane's stack and network image (the store also keeps a few freed objects), at
    least 128 MiB and at most 2 GiB."""
    if config.cluster.object_store_mb:
        return config.cluster.object_store_mb * 2**20
    per = ring.spec.nbytes * config.analysis.n_timepoints + ring.spec.height * \
        ring.spec.width * 4
    return int(min(2 * 2**30, max(128 * 2**20, 8 * layout.lanes * per)))


def run(config: Config, channels: RoleChannels, control: Channel[WorkerStart]) -> None:
    """Entry point of the bridge process (see the module docstring).

    Reports READY (:class:`~rt_eda.core.messages.ClusterReady`) once every actor is warm,
    then waits on ``control`` for :class:`~rt_eda.core.messages.WorkerStart` before any lane
    claims. A cluster that cannot be reached or actors that refuse the model are FAILED
    with a bad-input failure (the engine exits 2, acquisition never started).
    """
    from rt_eda.cluster import (
        ActorPool,
        StartCancelled,
        cluster_layout,
        connect,
        disconnect,
        forward_native_output,
        runtime_env,
    )
    from rt_eda.workers import exception_line

    me = RoleName.BRIDGE
    # At normal priority, as the interpreter: it is on the way to every decision and only
    # waits. Actors on this machine lower their own (AnalysisActor), as local workers do.
    enter_role(me, channels, level=logging.DEBUG if config.run.debug else logging.INFO)
    ring: StackRing | None = None
    out_ring: StackRing | None = None
    session: Any = None
    pool: Any = None
    bridge: _Bridge | None = None
    lost = ""
    with forward_native_output(log):
        try:
            layout = cluster_layout(config)
            ring = StackRing.attach(channels.ring)
            session = connect(config.cluster, namespace=f"rt-eda-{os.getppid()}-{os.getpid()}",
                              num_cpus=max(1.0, layout.actors * config.cluster.num_cpus_per_actor),
                              object_store_bytes=_object_store_bytes(config, layout, ring),
                              runtime_env=runtime_env(config))
            pool = ActorPool(session, config, layout, ring.spec)
            pool.start(channels.stop.is_set)
            report(channels, me, 0, RoleEventKind.READY, ClusterReady(
                address=session.where, namespace=session.namespace,
                actors=tuple(a.info() for a in pool.actors),
                network_image_shape=pool.network_image_shape))
            name = _wait_output_ring(channels, control)
            if name is None:
                return
            if name:
                out_ring = StackRing.attach(name)
            bridge = _Bridge(config, channels, ring, out_ring, pool)
            bridge.start()
            bridge.watch()
        except StartCancelled:
            pass
        except Exception as exc:  # the role's top loop: report, then exit non-zero
            log.debug("bridge failed", exc_info=True)
            lost = str(exc) if isinstance(exc, ClusterLostError) else ""
            report(channels, me, 0, RoleEventKind.FAILED,
                   Failure.from_exception(exc, exception_line(exc)))
            if isinstance(exc, ClusterUnreachableError) and any(
                    t.name == "ray-connect" for t in threading.enumerate()):
                # Ray's connection attempt is still stuck in C++: it cannot be joined.
                report(channels, me, 0, RoleEventKind.STATS,
                       _statistics(config, session, pool, bridge, lost))
                os._exit(1)
            raise SystemExit(1) from None
        finally:
            if pool is not None:
                pool.close()
            if session is not None:
                disconnect(session)
            if ring is not None:
                ring.close()
            if out_ring is not None:
                out_ring.close()
            report(channels, me, 0, RoleEventKind.STATS,
                   _statistics(config, session, pool, bridge, lost))
    report(channels, me, 0, RoleEventKind.STOPPED)
