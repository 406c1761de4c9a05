"""The run summary and the profile, built from the roles' typed reports.

Every role sends its statistics once, at its end, as a frozen record
(:mod:`rt_eda.core.messages`); the engine keeps them in :class:`RoleReports` and
:func:`build_summary` turns them, with the ring's counters and the engine's own, into the
:class:`RunSummary` that ``--summary``, the run folder's ``summary.json`` and the CLI show.
Fields are read by attribute, so a renamed statistic is an error (mypy, the tests), never a
silent 0.

A role that died without reporting
----------------------------------
Its record is None, and the summary says so in ``missing_reports`` (one entry per process
that never sent its statistics, e.g. ``"rt-eda-worker-2 (pid 4242)"``). What it would have
counted comes from elsewhere where it can, and is 0 where it cannot:

- camera: ``frames_acquired`` = stacks that reached the ring x frames per stack (the ring's
  own count); its timing figures (rates, jitter, actuation, interval error) are 0;
- writer: ``frames_written`` = the rows of the run folder's ``frames.csv`` (a row is written
  after its frame); ``writer`` is ``{}``;
- interpreter: its counts (decisions, switches, ...) and latencies are 0;
- a worker: its network-image counts and times are missing from the sums (analysis counts
  come from the ring, which every worker updates as it goes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from rt_eda.core.config import Config
from rt_eda.core.messages import (
    CameraStatistics,
    CameraStatus,
    ClusterReady,
    ClusterStatistics,
    ClusterStatus,
    InterpreterReport,
    InterpreterStatus,
    PositionAcquisition,
    PositionDecisions,
    RoleEvent,
    RoleEventKind,
    RoleName,
    SchedulerStatistics,
    WorkerStatistics,
    WorkerTimes,
    WriterStatistics,
)
from rt_eda.core.outcome import EdaSummary, summarize
from rt_eda.core.runfolder import count_frame_rows
from rt_eda.core.stats import Percentiles
from rt_eda.engine.capacity import CapacitySummary, not_checked
from rt_eda.shm import PositionStatistics, RingStatistics, StackSpec

__all__ = [
    "LatencySummary",
    "PercentileSummary",
    "PositionSummary",
    "RoleReports",
    "RunFacts",
    "RunSummary",
    "SchedulerSummary",
    "acquired_per_s",
    "build_summary",
    "profile",
    "write_profile",
]

log = logging.getLogger(__name__)


class PercentileSummary(TypedDict):
    """A latency in the summary (ms): :meth:`Percentiles.as_dict`."""

    p50: float
    p99: float
    max: float


class LatencySummary(TypedDict):
    """``latency_ms``: where a decision's time goes, each measured on the shared clock.

    ``decision_to_actuation`` covers every command; ``_speed_up`` the commands that shortened
    the interval (an event seen: what event-driven acquisition is judged by), ``_slow_down``
    those that lengthened it. Their counts are in ``actuations``.
    """

    publish_to_claim: PercentileSummary
    publish_to_decision: PercentileSummary
    decision_to_actuation: PercentileSummary
    decision_to_actuation_speed_up: PercentileSummary
    decision_to_actuation_slow_down: PercentileSummary


class ActuationCounts(TypedDict):
    """How many commands the camera applied that sped acquisition up or slowed it down."""

    speed_up: int
    slow_down: int


class IntervalChangeSummary(TypedDict):
    """One command the interpreter sent (the start announcement first: ``after_seq`` -1)."""

    interval_s: float
    reason: str
    after_seq: int
    t_decided: float


class PositionSummary(TypedDict):
    """One stage position of the run (``positions``; a run without a plan has one).

    The ring's counts of its stacks (``stacks_published == stacks_analysed +
    stacks_skipped + stacks_failed`` holds per position as for the run), its interpreter's
    decisions and switches, what the camera took there (``fast_timepoints``: at the fast
    interval; ``lateness_ms``: exposure after due; ``delayed``: visits the overload policy
    put behind a fast position; ``max_gap_s``: the longest wait between two of its stacks),
    and its outcome against ground truth (``eda``; None without ground truth).
    """

    index: int
    name: str
    stacks_published: int
    stacks_analysed: int
    stacks_skipped: int
    stacks_failed: int
    decisions: int
    interval_switches: int
    results_dropped_out_of_order: int
    timepoints: int
    fast_timepoints: int
    frames_acquired: int
    lateness_ms: PercentileSummary
    delayed: int
    max_gap_s: float
    eda: EdaSummary | None


class SchedulerSummary(TypedDict):
    """How the camera visited a plan's positions (:mod:`rt_eda.sources.scheduler`).

    ``timing_error_ms``: each stack's exposure against the time the scheduler planned it for;
    ``lateness_ms``: against the time it was due. ``demand_max`` above 1 (the intervals ask
    for more stage time than there is) makes the run ``overloaded`` for ``overload_s``
    seconds. The policy's work, overloaded or not (two positions due at once collide too):
    ``slow_delayed`` visits of slow positions delayed (by ``slow_delay_ms``) for fast ones,
    ``fast_first`` choices of a fast position over an earlier-due slow one, ``aged`` slow
    positions served first after waiting a whole interval. ``starved``: positions not imaged
    for more than three slow intervals at a time (or never).
    """

    policy: str
    visits: int
    moves: int
    move_ms: PercentileSummary
    settle_ms: PercentileSummary
    timing_error_ms: PercentileSummary
    lateness_ms: PercentileSummary
    demand_max: float
    overloaded: bool
    overload_s: float
    fast_first: int
    slow_delayed: int
    slow_delay_ms: PercentileSummary
    aged: int
    starved: list[int]


class RunSummary(TypedDict):
    """The run summary (JSON). The first block is the contract (DESIGN.md, README)."""

    frames_acquired: int
    stacks_published: int
    stacks_analysed: int
    stacks_skipped: int
    stacks_failed: int
    frames_written: int
    frames_lost: int
    decisions: int
    results_dropped_out_of_order: int
    results_ignored_paused: int
    nonfinite_decisions: int
    interval_switches: int
    torn_reads: int
    worker_restarts: int
    watchdog_kills: int
    workers: int
    threads_per_worker: int
    acquired_fps: float
    analysed_per_s: float
    latency_ms: LatencySummary
    errors: list[str]
    # Beyond the contract:
    started: bool
    stop_reason: str
    cut_short: bool
    missing_reports: list[str]
    worker: str
    source: str
    stack_shape: list[int] | None
    dtype: str | None
    acquisition_s: float
    timepoints: int
    frames_per_s: float
    claims_recovered: int
    overruns: int
    frames_abandoned: int
    lost_timepoints: list[tuple[int, float]]
    interval_error_ms: PercentileSummary
    publish_interval_ms: PercentileSummary
    camera_jitter_ms: float
    actuations: ActuationCounts
    interval_changes: list[IntervalChangeSummary]
    ring_slots: int
    worker_time_s: dict[str, float]
    source_statistics: dict[str, float]
    writer: dict[str, Any]
    frames_salvaged: int
    network_images: int
    network_images_refused: int
    network_images_nonfinite: int
    network_images_lost: int
    viewer_exits: int
    viewer_last_error: str
    save: str | None
    capacity: CapacitySummary
    # Positions and outcome (issue 15): one entry per position; the outcome against ground
    # truth (None without one); the scheduler of a plan (None without one).
    positions: list[PositionSummary]
    eda: EdaSummary | None
    scheduler: SchedulerSummary | None
    # Analysis on a cluster (issue 14): None when it ran on local workers only.
    cluster: ClusterSummary | None
    # Actuators and event locations (issue 16): one entry per actuator of the run
    # (``interval`` always); ``locations`` None without ground truth.
    actions: dict[str, ActionSummary]
    locations: LocationsSummary | None


class ActionLatency(TypedDict):
    """Decision -> actuation of one kind of action (ms)."""

    p50: float
    p99: float
    max: float
    count: int


class ActionSummary(TypedDict):
    """One actuator over the run: actions decided (``count`` = ``applied + failed +
    unapplied``: applied, refused by the device, not applied when the acquisition stopped),
    applied again on a return to their position (``reapplied``), decisions whose ``decide``
    raised (``decide_failed``: no action); decision -> actuation (ms) of the
    actions on an event (decided while fast) and of those back to rest (``release_ms``: they
    wait for the next slow timepoint); the device call (ms); what it measured."""

    count: int
    applied: int
    failed: int
    unapplied: int
    reapplied: int
    decide_failed: int
    decision_to_actuation_ms: ActionLatency
    release_ms: ActionLatency
    apply_ms: ActionLatency
    measures: dict[str, float]


class LocationsSummary(TypedDict):
    """Event locations and actions against the source's ground truth: ``error_px``, the
    distance of every region matched to a visible event (p50/p99); ``roi_coverage``, the
    fraction of event pixels inside the sensor region of stacks read from one (None: no
    such stack); ``mask_precision`` / ``mask_recall`` of the stimulation masks shown while
    an event was visible (None: none shown)."""

    error_px: PercentileSummary
    located: int
    false_regions: int
    missed_events: int
    stacks_scored: int
    roi_coverage: float | None
    roi_stacks: int
    mask_precision: float | None
    mask_recall: float | None
    masks_scored: int


class ActorSummary(TypedDict):
    """One actor of the cluster: what it analysed, and the latency it added (ms)."""

    name: str
    node: str
    analysed: int
    analysed_per_s: float
    failed: int
    lost_in_flight: int
    restarts: int
    lost: bool
    send_ms: PercentileSummary
    compute_ms: PercentileSummary
    return_ms: PercentileSummary
    round_trip_ms: PercentileSummary


# The latency going through the cluster adds, every actor together (ms): ``send`` (claim to
# the actor starting the stack), ``compute`` (the actor's hooks), ``return`` (the actor's end
# to the result on this machine), ``round_trip`` (their sum). ("return" is a keyword: the
# functional form.)
AddedLatencySummary = TypedDict("AddedLatencySummary", {
    "send": PercentileSummary, "compute": PercentileSummary, "return": PercentileSummary,
    "round_trip": PercentileSummary,
})


class ClusterSummary(TypedDict):
    """``cluster``: where analysis ran (``cluster.kind = "ray"``).

    ``address`` as configured, ``connected`` what Ray ran at; ``restarts`` the actors'
    (also in ``worker_restarts``); ``fallbacks`` how often local workers took over from a
    lost cluster, and ``lost`` why ("" when it was not).
    """

    kind: str
    address: str
    connected: str
    namespace: str
    in_flight: int
    fallback: str
    actors: list[ActorSummary]
    restarts: int
    fallbacks: int
    lost: str
    added_latency_ms: AddedLatencySummary


@dataclass
class RoleReports:
    """The typed reports of every role process, as they arrive (one thread: the engine's).

    ``workers`` holds one record per worker process (a restarted worker sends its own);
    ``status`` and ``camera_status`` are the interpreter's and the camera's newest live
    snapshots.
    """

    camera: CameraStatistics | None = None
    interpreter: InterpreterReport | None = None
    workers: list[WorkerStatistics] = field(default_factory=list)
    writer: WriterStatistics | None = None
    status: InterpreterStatus | None = None
    camera_status: CameraStatus | None = None
    cluster: list[ClusterStatistics] = field(default_factory=list)
    cluster_status: ClusterStatus | None = None
    _expected: dict[int, str] = field(default_factory=dict)
    _reported: set[int] = field(default_factory=set)

    def expect(self, role: RoleName, index: int, pid: int | None) -> None:
        """A process that should send its statistics at its end (the viewer sends none)."""
        if role is not RoleName.VIEWER and pid is not None:
            self._expected[pid] = f"{role.process_name(index)} (pid {pid})"

    def take(self, event: RoleEvent) -> bool:
        """Keep a STATS or STATUS payload; False for any other event."""
        p = event.payload
        if event.kind is RoleEventKind.STATUS and isinstance(p, InterpreterStatus):
            self.status = p
            return True
        if event.kind is RoleEventKind.STATUS and isinstance(p, CameraStatus):
            self.camera_status = p
            return True
        if event.kind is RoleEventKind.STATUS and isinstance(p, ClusterStatus):
            self.cluster_status = p
            return True
        if event.kind is not RoleEventKind.STATS:
            return False
        self._reported.add(event.pid)
        if isinstance(p, CameraStatistics):
            self.camera = p
        elif isinstance(p, InterpreterReport):
            self.interpreter = p
        elif isinstance(p, WorkerStatistics):
            self.workers.append(p)
        elif isinstance(p, WriterStatistics):
            self.writer = p
        elif isinstance(p, ClusterStatistics):  # the bridge: its lanes count as a worker's
            self.cluster.append(p)
            self.workers.append(p.worker)
        else:
            log.warning("%s %d sent statistics of an unknown kind: %r", event.role,
                        event.index, p)
            return False
        return True

    def missing(self) -> list[str]:
        """The processes that never sent their statistics (killed, or died too hard)."""
        return [name for pid, name in self._expected.items() if pid not in self._reported]


@dataclass(frozen=True)
class RunFacts:
    """What the engine itself knows at the end of a run."""

    started: bool
    stop_reason: str
    cut_short: bool
    errors: list[str]
    ring: RingStatistics | None
    ring_slots: int
    spec: StackSpec | None
    worker_restarts: int
    watchdog_kills: int
    viewer_exits: int
    viewer_last_error: str
    frames_salvaged: int
    capacity: CapacitySummary | None = None
    ring_positions: tuple[PositionStatistics, ...] = ()
    cluster_ready: ClusterReady | None = None
    cluster_fallbacks: int = 0
    cluster_lost: str = ""


def _pct(p: Percentiles) -> PercentileSummary:
    return PercentileSummary(p50=p.p50, p99=p.p99, max=p.max)


def _positions(config: Config, cam: CameraStatistics | None,
               interp: InterpreterReport | None,
               ring: tuple[PositionStatistics, ...]) -> list[PositionSummary]:
    """One entry per position, from the ring's, the interpreter's and the camera's records
    (whichever know it: a role that never reported leaves its figures at 0)."""
    acquired: dict[int, PositionAcquisition] = {a.position: a for a in
                                                (cam.positions if cam is not None else ())}
    decided: dict[int, PositionDecisions] = {d.position: d for d in
                                             (interp.positions if interp is not None else ())}
    counted = {r.position: r for r in ring}
    n = max([1, *(k + 1 for k in (*acquired, *decided, *counted))])
    empty = Percentiles()
    out = []
    for p in range(n):
        a, d, r = acquired.get(p), decided.get(p), counted.get(p)
        outcome = a.outcome if a is not None else None
        out.append(PositionSummary(
            index=p, name=a.name if a is not None else f"p{p}",
            stacks_published=r.published if r else 0,
            stacks_analysed=r.completed if r else 0,
            stacks_skipped=(r.skipped + r.recovered) if r else 0,
            stacks_failed=r.failed if r else 0,
            decisions=d.decisions if d else 0,
            interval_switches=d.interval_switches if d else 0,
            results_dropped_out_of_order=d.results_dropped_out_of_order if d else 0,
            timepoints=a.timepoints if a else 0,
            fast_timepoints=a.fast_timepoints if a else 0,
            frames_acquired=a.frames_acquired if a else 0,
            lateness_ms=_pct(a.lateness_ms if a else empty),
            delayed=a.delayed if a else 0,
            max_gap_s=a.max_gap_s if a else 0.0,
            eda=summarize([outcome]) if outcome is not None else None,
        ))
    return out


def _scheduler(config: Config, sched: SchedulerStatistics | None,
               positions: list[PositionSummary]) -> SchedulerSummary | None:
    if sched is None:
        return None
    limit = 3 * config.interpreter.slow_interval
    starved = [p["index"] for p in positions
               if p["timepoints"] == 0 or (limit > 0 and p["max_gap_s"] > limit)]
    return SchedulerSummary(
        policy=sched.policy, visits=sched.visits, moves=sched.moves,
        move_ms=_pct(sched.move_ms), settle_ms=_pct(sched.settle_ms),
        timing_error_ms=_pct(sched.timing_error_ms), lateness_ms=_pct(sched.lateness_ms),
        demand_max=sched.demand_max,
        overloaded=sched.overload_s > 0,
        overload_s=sched.overload_s, fast_first=sched.fast_first,
        slow_delayed=sched.slow_delayed, slow_delay_ms=_pct(sched.slow_delay_ms),
        aged=sched.aged, starved=starved,
    )


def _sum_times(workers: list[WorkerStatistics]) -> dict[str, float]:
    names = [f.name for f in dataclasses.fields(WorkerTimes)]
    return {n: float(sum(getattr(w.times, n) for w in workers)) for n in names}


def _frames_written(config: Config, writer: WriterStatistics | None, salvaged: int) -> int:
    """Frames the writer saved, plus those salvaged after it died (``<save>/salvage``);
    a writer that never reported: the rows of ``frames.csv``."""
    if writer is not None:
        written = writer.frames_written
    elif config.run.save:
        written = count_frame_rows(config.run.save) or 0
    else:
        written = 0
    return written + salvaged


def _writer_dict(w: WriterStatistics | None) -> dict[str, Any]:
    if w is None:
        return {}
    out: dict[str, Any] = {f.name: getattr(w, f.name) for f in dataclasses.fields(w)}
    out["write_ms"] = w.write_ms.as_dict()
    return out


def _cluster(config: Config, reports: RoleReports, facts: RunFacts,
             acq_s: float) -> ClusterSummary | None:
    """The ``cluster`` section (None without a cluster); a bridge restarted after a loss
    sends no second report, so there is one at most."""
    c = config.cluster
    if not c.enabled:
        return None
    stats = reports.cluster[-1] if reports.cluster else None
    ready = facts.cluster_ready
    actors = list(stats.actors) if stats is not None else []
    return ClusterSummary(
        kind=c.kind, address=c.address,
        connected=stats.address if stats is not None else (ready.address if ready else ""),
        namespace=stats.namespace if stats is not None else (ready.namespace if ready else ""),
        in_flight=c.in_flight, fallback=c.fallback,
        actors=[ActorSummary(
            name=a.name, node=a.node, analysed=a.analysed,
            analysed_per_s=a.analysed / acq_s if acq_s > 0 else 0.0, failed=a.failed,
            lost_in_flight=a.lost_in_flight, restarts=a.restarts, lost=a.lost,
            send_ms=_pct(a.send_ms), compute_ms=_pct(a.compute_ms),
            return_ms=_pct(a.return_ms), round_trip_ms=_pct(a.round_trip_ms))
            for a in actors],
        restarts=sum(a.restarts for a in actors), fallbacks=facts.cluster_fallbacks,
        lost=facts.cluster_lost or (stats.lost if stats is not None else ""),
        added_latency_ms=AddedLatencySummary({
            "send": _pct(stats.send_ms if stats else Percentiles()),
            "compute": _pct(stats.compute_ms if stats else Percentiles()),
            "return": _pct(stats.return_ms if stats else Percentiles()),
            "round_trip": _pct(stats.round_trip_ms if stats else Percentiles())}),
    )


def acquired_per_s(timepoints: int, acquisition_s: float) -> float:
    """Timepoints per second over an acquisition (``acquired_fps``): the first is at t=0, so
    n timepoints span n-1 intervals (0.0 before two)."""
    return (timepoints - 1) / acquisition_s if acquisition_s > 0 and timepoints > 1 else 0.0


def _actions(cam: CameraStatistics | None, interp: InterpreterReport | None,
             config: Config) -> dict[str, ActionSummary]:
    """The ``actions`` section: every actuator of the run. ``count`` is what the interpreter
    decided (for ``interval``: the changes decided on a result), the rest is what the camera
    did with them; ``unapplied`` = ``count - applied - failed`` (still on their way, or
    waiting for their position's next timepoint, when the acquisition stopped)."""
    def lat(p: Percentiles) -> ActionLatency:
        return ActionLatency(p50=p.p50, p99=p.p99, max=p.max, count=p.count)

    out: dict[str, ActionSummary] = {}
    names = ["interval", *(n for n in config.actuation.actuators if n != "interval")]
    stats = {a.kind: a for a in (cam.actions if cam is not None else ())}
    sent = dict(interp.actions_sent) if interp is not None else {}
    if interp is not None:
        sent["interval"] = sum(1 for c in interp.interval_changes if c.command.after_seq >= 0)
    undecided = interp.decide_failed if interp is not None else {}
    for name in names:
        a = stats.get(name)
        applied, failed = (a.applied, a.failed) if a is not None else (0, 0)
        count = sent.get(name, a.count if a is not None else 0)
        out[name] = ActionSummary(
            count=count, applied=applied, failed=failed,
            unapplied=max(0, count - applied - failed),
            reapplied=a.reapplied if a is not None else 0,
            decide_failed=undecided.get(name, 0),
            decision_to_actuation_ms=lat(a.decision_to_actuation_ms if a is not None
                                         else Percentiles()),
            release_ms=lat(a.release_ms if a is not None else Percentiles()),
            apply_ms=lat(a.apply_ms if a is not None else Percentiles()),
            measures=dict(a.measures) if a is not None else {})
    return out


def _locations(cam: CameraStatistics | None, interp: InterpreterReport | None
               ) -> LocationsSummary | None:
    """The ``locations`` section (None when the source sent no ground truth)."""
    loc = interp.locations if interp is not None else None
    if loc is None:
        return None
    inside, total, roi_stacks = cam.roi_coverage if cam is not None else (0, 0, 0)
    masks = {a.kind: a.measures for a in (cam.actions if cam is not None else ())}
    stim = masks.get("stimulate", {})
    e = loc.error_px
    return LocationsSummary(
        error_px=PercentileSummary(p50=e.p50, p99=e.p99, max=e.max),
        located=e.count, false_regions=loc.false_regions, missed_events=loc.missed_events,
        stacks_scored=loc.stacks,
        roi_coverage=inside / total if total else None, roi_stacks=roi_stacks,
        mask_precision=stim.get("mask_precision"), mask_recall=stim.get("mask_recall"),
        masks_scored=int(stim.get("masks_scored", 0)),
    )


def build_summary(config: Config, reports: RoleReports, facts: RunFacts) -> RunSummary:
    """The run summary (see the module docstring for roles that never reported)."""
    cam = reports.camera
    interp = reports.interpreter
    counters = interp.statistics if interp is not None else None
    rs = facts.ring
    spec = facts.spec
    acq_s = cam.acquisition_s if cam is not None else 0.0
    timepoints = cam.timepoints if cam is not None else 0
    rate = acquired_per_s(timepoints, acq_s)
    analysed = rs.completed if rs is not None else 0
    if cam is not None:
        frames_acquired = cam.frames_acquired
    elif rs is not None and spec is not None:  # the camera died without its report
        frames_acquired = rs.published * spec.frames
    else:
        frames_acquired = 0
    written = _frames_written(config, reports.writer, facts.frames_salvaged)
    lost = cam.frames_lost if cam is not None else 0
    if config.run.save and cam is not None:  # acquired but never written: a writer failed
        lost += max(0, cam.frames_acquired - cam.frames_lost - written)
    empty = Percentiles()

    def pct(p: Percentiles) -> PercentileSummary:
        return PercentileSummary(p50=p.p50, p99=p.p99, max=p.max)

    workers = reports.workers
    positions = _positions(config, cam, interp, facts.ring_positions)
    outcomes = [a.outcome for a in (cam.positions if cam is not None else ())
                if a.outcome is not None]
    return RunSummary(
        frames_acquired=frames_acquired,
        stacks_published=rs.published if rs is not None else 0,
        stacks_analysed=analysed,
        stacks_skipped=(rs.skipped + rs.recovered) if rs is not None else 0,
        stacks_failed=rs.failed if rs is not None else 0,
        frames_written=written,
        frames_lost=lost,
        decisions=counters.decisions if counters else 0,
        results_dropped_out_of_order=counters.results_dropped_out_of_order if counters else 0,
        results_ignored_paused=counters.results_ignored_paused if counters else 0,
        nonfinite_decisions=counters.nonfinite_decisions if counters else 0,
        interval_switches=counters.interval_switches if counters else 0,
        torn_reads=rs.torn_reads if rs is not None else 0,
        worker_restarts=facts.worker_restarts + sum(
            a.restarts for c in reports.cluster for a in c.actors),
        watchdog_kills=facts.watchdog_kills,
        workers=config.analysis.workers,
        threads_per_worker=config.analysis.threads_per_worker,
        acquired_fps=rate,
        analysed_per_s=analysed / acq_s if acq_s > 0 else 0.0,
        latency_ms=LatencySummary(
            publish_to_claim=pct(interp.publish_to_claim if interp else empty),
            publish_to_decision=pct(interp.publish_to_decision if interp else empty),
            decision_to_actuation=pct(cam.actuation_ms if cam else empty),
            decision_to_actuation_speed_up=pct(cam.actuation_speed_up_ms if cam else empty),
            decision_to_actuation_slow_down=pct(cam.actuation_slow_down_ms if cam else empty),
        ),
        errors=list(facts.errors),
        started=facts.started,
        stop_reason=facts.stop_reason,
        cut_short=facts.cut_short,
        missing_reports=reports.missing(),
        worker=config.analysis.worker,
        source=config.camera.source,
        stack_shape=list(spec.shape) if spec is not None else None,
        dtype=spec.dtype if spec is not None else None,
        acquisition_s=acq_s,
        timepoints=timepoints,
        frames_per_s=cam.frames_acquired / acq_s if cam is not None and acq_s > 0 else 0.0,
        claims_recovered=rs.recovered if rs is not None else 0,
        overruns=cam.overruns if cam is not None else 0,
        frames_abandoned=cam.frames_abandoned if cam is not None else 0,
        lost_timepoints=list(cam.lost) if cam is not None else [],
        interval_error_ms=pct(cam.interval_error_ms if cam else empty),
        publish_interval_ms=pct(cam.publish_interval_ms if cam else empty),
        camera_jitter_ms=cam.jitter_ms if cam is not None else 0.0,
        actuations=ActuationCounts(
            speed_up=cam.actuation_speed_up_ms.count if cam is not None else 0,
            slow_down=cam.actuation_slow_down_ms.count if cam is not None else 0,
        ),
        interval_changes=[
            IntervalChangeSummary(interval_s=c.command.interval_s, reason=c.command.reason,
                                  after_seq=c.command.after_seq,
                                  t_decided=c.command.t_decided)
            for c in (interp.interval_changes if interp is not None else ())
        ],
        ring_slots=facts.ring_slots,
        worker_time_s=_sum_times(workers),
        source_statistics=dict(cam.source) if cam is not None else {},
        writer=_writer_dict(reports.writer),
        frames_salvaged=facts.frames_salvaged,
        network_images=sum(w.network_images for w in workers),
        network_images_refused=sum(w.network_images_refused for w in workers),
        network_images_nonfinite=sum(w.network_images_nonfinite for w in workers),
        network_images_lost=sum(w.network_images_lost for w in workers),
        viewer_exits=facts.viewer_exits,
        viewer_last_error=facts.viewer_last_error,
        save=config.run.save,
        capacity=facts.capacity if facts.capacity is not None else not_checked(),
        positions=positions,
        eda=summarize(outcomes) if outcomes else None,
        scheduler=_scheduler(config, cam.scheduler if cam is not None else None, positions),
        cluster=_cluster(config, reports, facts, acq_s),
        actions=_actions(cam, interp, config),
        locations=_locations(cam, interp),
    )


def _per(times: dict[str, float], n: int) -> dict[str, float]:
    return {k.removesuffix("_s") + "_ms": 1e3 * v / n for k, v in times.items()}


def profile(summary: RunSummary, reports: RoleReports) -> dict[str, Any]:
    """Where a stack's time goes, per role (means per stack, in ms), from the run's own
    timers: camera (waiting for the timepoint, reading frames, publishing), workers
    (waiting for a claim, prepare, inference, post-process, result queue, network image),
    interpreter (handling one result), and the latency percentiles. A role that did not
    report has an empty section."""
    cam = reports.camera
    interp = reports.interpreter
    analysed = max(1, summary["stacks_analysed"])
    return {
        "stacks_published": summary["stacks_published"],
        "stacks_analysed": summary["stacks_analysed"],
        "camera_per_stack": (_per(dataclasses.asdict(cam.times), max(1, cam.stacks_published))
                             if cam is not None else {}),
        "worker_per_analysed_stack": _per(summary["worker_time_s"], analysed),
        "interpreter_per_result": (_per({"handle_s": interp.handle_s}, max(1, interp.results))
                                   if interp is not None else {}),
        "latency_ms": summary["latency_ms"],
        "workers": summary["workers"], "threads_per_worker": summary["threads_per_worker"],
    }


def write_profile(folder: str | Path, prof: dict[str, Any]) -> Path:
    """Write a :func:`profile` as ``profile.json`` and a readable ``profile.txt``; returns
    the text file's path. Raises OSError when the folder cannot be written."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / "profile.json").write_text(json.dumps(prof, indent=2) + "\n")
    lines = [f"rt-eda profile: {prof['stacks_published']} stacks published, "
             f"{prof['stacks_analysed']} analysed, {prof['workers']} worker(s) x "
             f"{prof['threads_per_worker']} thread(s)"]
    for section in ("camera_per_stack", "worker_per_analysed_stack", "interpreter_per_result"):
        lines.append(f"{section.replace('_', ' ')}:")
        lines += [f"  {k:<22} {v:9.3f}" for k, v in prof[section].items()]
    lines.append("latency (ms): p50 / p99 / max")
    for k, v in prof["latency_ms"].items():
        lines.append(f"  {k:<22} {v['p50']:9.3f} {v['p99']:9.3f} {v['max']:9.3f}")
    path = d / "profile.txt"
    path.write_text("\n".join(lines) + "\n")
    return path
