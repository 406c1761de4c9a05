"""Every record that crosses a process boundary: frozen, slotted dataclasses and str-enums.

Pixels never travel in a message; they stay in shared memory. Timestamps are
``time.monotonic()`` seconds (CLOCK_MONOTONIC is shared by every process on the machine), so
differences between timestamps taken in different processes are meaningful. Nothing here is
a JSON string or a bare dict: a renamed field is an error where it is used, not a silent 0.

Who sends what to whom::

    camera       -> engine       RoleEvent: READY(CameraReady) STATUS(CameraStatus)
                                            STATS(CameraStatistics) STOPPED(Stopped)
                                            FAILED(Failure)
    worker N     -> engine       RoleEvent: READY(WorkerReady) STATS(WorkerStatistics) ...
    bridge       -> engine       RoleEvent: READY(ClusterReady) STATUS(ClusterStatus)
                                            STATS(ClusterStatistics) FAILED(Failure)
    interpreter  -> engine       RoleEvent: READY STATUS(InterpreterStatus)
                                            STATS(InterpreterReport) ...
    writer       -> engine       RoleEvent: READY(WriterReady) STATS(WriterStatistics) ...
    viewer       -> engine       RoleEvent: READY STOPPED(Stopped) FAILED(Failure)
    engine       -> camera       CameraControl (ATTACH the ring, START acquiring)
    engine       -> worker N     WorkerStart (the network-image ring, "" for none); the bridge too
    worker N     -> interpreter  Result (the bridge: one per stack an actor analysed)
    viewer, CLI  -> interpreter  ControlMessage
    interpreter  -> camera       Command (the first one is the interval acquisition starts at)
    interpreter  -> writer       DecisionRecord, IntervalChange, ControlRecord
    interpreter  -> viewer       DecisionRecord / IntervalChange rows in the shared trace

A :class:`DecisionRecord` is built once per result by the interpreter; the trace, the writer,
the viewer (through the trace) and the summary (through :class:`InterpreterReport`) all read
that one record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple

from rt_eda.core.errors import ConfigError, ModelError, SourceError
from rt_eda.core.regions import EventRegion, FrameRegion
from rt_eda.core.stats import Percentiles
from rt_eda.shm import TRACE_FIELDS, StackSpec

__all__ = [
    "ACTION_KINDS",
    "ALL_POSITIONS",
    "Action",
    "BAD_INPUT_ERRORS",
    "ActorInfo",
    "ActionStatistics",
    "ActorStatistics",
    "CameraControl",
    "CameraControlKind",
    "CameraMessage",
    "CameraReady",
    "CameraStatistics",
    "CameraStatus",
    "CameraTimes",
    "ClusterReady",
    "ClusterStatistics",
    "ClusterStatus",
    "Command",
    "ControlKey",
    "ControlMessage",
    "ControlRecord",
    "DecisionRecord",
    "Failure",
    "IntervalChange",
    "InterpreterReport",
    "InterpreterState",
    "InterpreterStatistics",
    "InterpreterStatus",
    "LocationErrors",
    "LostTimepoint",
    "PositionAcquisition",
    "PositionDecisions",
    "PositionOutcome",
    "Result",
    "ResultsMessage",
    "RoleEvent",
    "RoleEventKind",
    "RoleName",
    "RolePayload",
    "SchedulerStatistics",
    "Stopped",
    "TrueEvents",
    "TraceKind",
    "WorkerReady",
    "WorkerStart",
    "WorkerStatistics",
    "WorkerTimes",
    "WriterReady",
    "WriterRow",
    "action_trace_row",
    "region_trace_rows",
    "WriterStatistics",
]


# -- roles and their events ------------------------------------------------------------------
class RoleName(StrEnum):
    """The process roles: one vocabulary for events, children, logs and process names."""

    CAMERA = "camera"
    WORKER = "worker"
    INTERPRETER = "interpreter"
    WRITER = "writer"
    VIEWER = "viewer"
    BRIDGE = "bridge"  # the Ray bridge: claims from the ring for the cluster's actors

    def process_name(self, index: int = 0) -> str:
        """The name ``ps``/``top`` show (at most 15 characters for the kernel):
        ``rt-eda-camera``, ``rt-eda-worker-1``, ``rt-eda-interp``, ``rt-eda-writer``,
        ``rt-eda-viewer``, ``rt-eda-bridge``."""
        short = "interp" if self is RoleName.INTERPRETER else self.value
        return f"rt-eda-{short}-{index}" if self is RoleName.WORKER else f"rt-eda-{short}"


class RoleEventKind(StrEnum):
    """What a role reports to the engine on the events queue (the payload it carries)."""

    READY = "ready"  # set up: CameraReady, WorkerReady, WriterReady, or None
    STOPPED = "stopped"  # left its loop cleanly: Stopped
    FAILED = "failed"  # its top loop caught an exception: Failure
    STATS = "stats"  # its final statistics: CameraStatistics, WorkerStatistics, ...
    STATUS = "status"  # a live snapshot, twice a second: InterpreterStatus, CameraStatus


BAD_INPUT_ERRORS: Final = (ConfigError, ModelError, SourceError)
"""Exceptions that say the input is wrong (configuration, model, source), not the run."""


ALL_POSITIONS: Final = -1
"""``Command.position`` of a command for every position (the start announcement, a
control that changes every position's interval)."""


@dataclass(frozen=True, slots=True)
class CameraReady:
    """The camera opened its source: every stack will have this shape; stacks come from
    ``positions`` stage positions (0 .. positions - 1; 1 without a plan)."""

    spec: StackSpec
    positions: int = 1


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A worker is set up and warmed up; ``network_image_shape`` is ``(H', W')`` of the
    network images it makes, None when it makes none."""

    network_image_shape: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class WriterReady:
    """The writer created the run folder's files (``format``: ``"zarr"`` or ``"tiff"``)."""

    path: str
    format: str


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a role failed.

    Attributes
    ----------
    error_type
        The exception's class name ("" when the failure is not an exception, e.g. no display).
    message
        What went wrong, one line.
    bad_input
        True when the exception is one of :data:`BAD_INPUT_ERRORS`: before acquisition starts
        the engine then exits 2 (bad input) instead of 1 (a fault).
    """

    error_type: str
    message: str
    bad_input: bool = False

    @classmethod
    def from_exception(cls, exc: BaseException, line: str | None = None) -> Failure:
        """The failure ``exc`` describes; ``line`` (``"Type: message"``) replaces the
        exception's own text when given (a worker shortens Keras' messages)."""
        if line is None:
            error_type, message = type(exc).__name__, str(exc)
        else:
            error_type, _, message = line.partition(": ")
        return cls(error_type, message, isinstance(exc, BAD_INPUT_ERRORS))

    @property
    def text(self) -> str:
        """``"Type: message"`` (or the part there is), as logs and the summary show it."""
        if self.error_type and self.message:
            return f"{self.error_type}: {self.message}"
        return self.error_type or self.message


@dataclass(frozen=True, slots=True)
class Stopped:
    """A role left its loop cleanly. ``reason``: why, in words ("" when the run stopped it);
    ``source_exhausted``: the camera's source ran out of images, a normal end of the run."""

    reason: str = ""
    source_exhausted: bool = False


# -- statistics (STATS) ----------------------------------------------------------------------
class LostTimepoint(NamedTuple):
    """A timepoint the camera acquired but could not put in the ring (it was full)."""

    timepoint: int
    t_exposure: float


@dataclass(frozen=True, slots=True)
class CameraTimes:
    """Seconds the camera spent, over the run: waiting for timepoints, reading frames from
    the source, and in the ring (taking a slot, publishing)."""

    wait_s: float = 0.0
    read_s: float = 0.0
    publish_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CameraStatistics:
    """What the camera measured, sent once at its end.

    Attributes
    ----------
    timepoints
        Timepoints taken from the source (published, lost or cut short by the stop).
    frames_acquired
        Frames read whole for a timepoint (published or lost); ``frames_abandoned`` aside.
    stacks_published
        Stacks put in the ring.
    overruns, frames_lost, lost
        Timepoints (and their frames) that found the ring full; ``lost`` lists the first
        10,000 of them.
    frames_abandoned
        Frames read for a stack the stop cut short (never published, never lost).
    actuation_ms
        Decision -> actuation: from a command's ``t_decided`` to the exposure of the first
        timepoint taken after the camera applied it (the start announcement excluded).
    actuation_speed_up_ms, actuation_slow_down_ms
        The same, for commands that shortened the interval (speeding up: what event-driven
        acquisition is judged by) and for those that lengthened it.
    interval_error_ms
        ``|achieved - requested|`` between consecutive timepoints at an unchanged interval > 0.
    publish_interval_ms
        Gaps between consecutive publications at an unchanged interval.
    jitter_ms
        The camera's jitter: p99 - p50 of how far each of those gaps was from its interval
        (with one interval the same as ``publish_interval_ms.spread``; a run that switched
        between 1 s and 0.1 s no longer reads 900 ms).
    acquisition_s
        From the first to the last published stack's exposure.
    commands_applied
        Commands received from the interpreter once acquiring.
    times
        Where the camera's time went.
    source
        The source's own counters (:meth:`rt_eda.sources.Source.statistics`; keys depend on
        the source).
    positions
        One record per position: what was acquired there and, where the source knows its
        ground truth, the outcome (events caught, delay, light dose).
    scheduler
        The scheduler's figures of a multi-position run (None with one position: the
        source's own clock paces it).
    """

    timepoints: int
    frames_acquired: int
    stacks_published: int
    overruns: int
    frames_lost: int
    frames_abandoned: int
    lost: tuple[LostTimepoint, ...]
    actuation_ms: Percentiles
    actuation_speed_up_ms: Percentiles
    actuation_slow_down_ms: Percentiles
    interval_error_ms: Percentiles
    publish_interval_ms: Percentiles
    acquisition_s: float
    commands_applied: int
    times: CameraTimes
    source: Mapping[str, float] = field(default_factory=dict)
    positions: tuple[PositionAcquisition, ...] = ()
    scheduler: SchedulerStatistics | None = None
    jitter_ms: float = 0.0
    actions: tuple[ActionStatistics, ...] = ()
    roi_coverage: tuple[int, int, int] = (0, 0, 0)
    """``(event pixels inside the region read, all event pixels, stacks)`` over the stacks
    read from a region of the sensor (not the full frame) while an event was visible."""


@dataclass(frozen=True, slots=True)
class ActionStatistics:
    """One actuator's actions over the run (the camera applies them and measures).

    ``count``: actions received; ``applied``: applied once (``reapplied``: again, when a
    plan's stage came back to the position); ``failed``: refused by the device (logged, the
    acquisition went on); ``decision_to_actuation_ms``: from the decision to the first
    exposure with it (to the device's own time for an SLM), for the actions that act on an
    event (decided while fast); ``release_ms``: the same for the actions back to rest
    (decided when the position went slow, so they wait for the next *slow* timepoint);
    ``apply_ms``: the device call; ``measures``: what the actuator measured (e.g. a mask's
    precision against the truth).
    """

    kind: str
    count: int
    applied: int
    reapplied: int
    failed: int
    decision_to_actuation_ms: Percentiles
    release_ms: Percentiles
    apply_ms: Percentiles
    measures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PositionOutcome:
    """What one position's ground truth says about its acquisition (the camera computes it
    at its end, :func:`rt_eda.core.outcome.position_outcome`).

    Attributes
    ----------
    events
        Ground-truth events that began and ended within the acquisition.
    events_detected
        Of those, the events during which the position was imaged at the fast interval.
    detection_delays_s
        For each detected event: its onset to the first fast exposure of it.
    event_time_s, event_time_fast_s
        The events' summed duration, and the part of it the position was imaged fast.
    frames, frames_always_fast
        Frames acquired at the position, and what an always-fast acquisition of the same
        span would have taken (the light dose, at one exposure per frame).
    """

    events: int
    events_detected: int
    detection_delays_s: tuple[float, ...]
    event_time_s: float
    event_time_fast_s: float
    frames: int
    frames_always_fast: int


@dataclass(frozen=True, slots=True)
class PositionAcquisition:
    """What the camera acquired at one position (see :class:`CameraStatistics`).

    ``timepoints``: stacks taken there (published or lost); ``fast_timepoints``: of them,
    taken at the fast interval; ``lateness_ms``: each visit's exposure after the time it
    was due (``interval`` after the previous one); ``delayed``: visits the overload policy
    put behind a fast position; ``max_gap_s``: the longest time between two visits;
    ``outcome``: None when the source has no ground truth.
    """

    position: int
    name: str
    timepoints: int
    stacks_published: int
    frames_acquired: int
    fast_timepoints: int
    lateness_ms: Percentiles
    delayed: int
    max_gap_s: float
    outcome: PositionOutcome | None = None


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    """How the camera visited the positions of a plan (:mod:`rt_eda.sources.scheduler`).

    Attributes
    ----------
    policy
        The overload policy, in words.
    visits, moves
        Stacks taken; stage moves between positions.
    move_ms, settle_ms
        Each move's time (the stage's own, measured), and the settling waited after it.
    timing_error_ms
        ``|exposure - planned|`` of every visit: how precisely the camera kept to the time
        the scheduler planned for it (the pacing and the move-time estimate).
    lateness_ms
        Exposure after the time the visit was *due* (its interval after the previous one):
        the planned time's own delay when visits collide or the stage is overloaded.
    demand_max
        The largest stage demand seen: the sum over positions of (stack + move) time per
        interval; above 1 the hardware cannot deliver what the intervals ask.
    overload_s
        Seconds during which the demand was above 1.
    fast_first
        Times the policy served a fast position before a slow one that was due earlier.
    slow_delayed
        Visits of slow positions that the policy delayed; ``slow_delay_ms`` by how much.
    aged
        Slow positions served first because they had waited a whole interval (no starvation).
    """

    policy: str
    visits: int
    moves: int
    move_ms: Percentiles
    settle_ms: Percentiles
    timing_error_ms: Percentiles
    lateness_ms: Percentiles
    demand_max: float
    overload_s: float
    fast_first: int
    slow_delayed: int
    slow_delay_ms: Percentiles
    aged: int


@dataclass(frozen=True, slots=True)
class WorkerTimes:
    """Seconds one worker process spent, over its life: waiting for a claim, in the three
    hooks, putting results on the queue, and publishing network images."""

    wait_s: float = 0.0
    prepare_s: float = 0.0
    infer_s: float = 0.0
    post_s: float = 0.0
    queue_s: float = 0.0
    publish_image_s: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """What one worker process counted, sent once at its end (a restarted worker sends its
    own: the engine adds them up).

    ``network_images_refused``: images that break the worker's declared shape, never stored;
    ``network_images_lost``: images that found the output ring full.
    """

    analysed: int
    torn: int
    recovered: int
    network_images: int
    network_images_lost: int
    network_images_refused: int
    network_images_nonfinite: int
    times: WorkerTimes


# -- the cluster (issue 14): the bridge's records --------------------------------------------
@dataclass(frozen=True, slots=True)
class ActorInfo:
    """One Ray actor as the bridge found it, set up and warm.

    ``index`` 1..N; ``name`` its Ray name (in the run's namespace); ``node`` the Ray node id
    it runs on and ``host`` that node's address; ``pid`` its process there; ``same_clock``:
    it shares this machine's monotonic clock (same host and boot), so its timestamps are
    compared directly instead of through an estimated offset.
    """

    index: int
    name: str
    node: str
    host: str
    pid: int
    same_clock: bool


@dataclass(frozen=True, slots=True)
class ClusterReady:
    """The bridge is connected and every actor is set up and warm (its READY payload).

    ``address`` is where Ray runs (for ``cluster.address = "local"``: the instance the
    bridge started); ``namespace`` the run's Ray namespace; ``network_image_shape`` as a
    worker's :class:`WorkerReady` says it.
    """

    address: str
    namespace: str
    actors: tuple[ActorInfo, ...]
    network_image_shape: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """What the bridge measured of one actor over the run.

    ``analysed``: results that came back; ``failed``: stacks whose analysis raised in the
    actor; ``lost_in_flight``: stacks in flight when the actor died, timed out or the run
    ended before they came back (counted as skipped in the ring); ``restarts``: new
    incarnations seen (Ray's restarts, each re-warmed). The added latency of every analysed
    stack in ms: ``send`` (claim to the actor starting it, the queue behind a stack already
    in flight included), ``compute`` (the actor's hooks, on its own clock) and ``return``
    (the actor's end to the result here); ``round_trip`` is their sum.
    """

    index: int
    name: str
    node: str
    analysed: int
    failed: int
    lost_in_flight: int
    restarts: int
    lost: bool
    send_ms: Percentiles
    compute_ms: Percentiles
    return_ms: Percentiles
    round_trip_ms: Percentiles


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    """What the bridge counted, sent once at its end (STATS).

    ``worker``: its counts as a worker's (network images, times), which the summary adds to
    the workers'; ``actors``: one record per actor; ``lost``: why the cluster was lost (""
    when it was not); ``send_ms`` ... ``round_trip_ms``: the added latency's parts over every
    actor's stacks together (as :class:`ActorStatistics`' are per actor).
    """

    address: str
    namespace: str
    worker: WorkerStatistics
    actors: tuple[ActorStatistics, ...]
    lost: str = ""
    send_ms: Percentiles = field(default_factory=Percentiles)
    compute_ms: Percentiles = field(default_factory=Percentiles)
    return_ms: Percentiles = field(default_factory=Percentiles)
    round_trip_ms: Percentiles = field(default_factory=Percentiles)


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The bridge's live snapshot (STATUS, about twice a second): actors up now, restarts so
    far, and the added latency's parts over the results since the previous snapshot (ms,
    p50; NaN when none came back)."""

    actors_up: int
    actors: int
    restarts: int
    send_p50_ms: float
    compute_p50_ms: float
    return_p50_ms: float


class InterpreterState(StrEnum):
    """The state of an interpreter: SLOW/FAST for the binary one, MANUAL for the manual one."""

    SLOW = "slow"
    FAST = "fast"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class InterpreterStatistics:
    """A snapshot of an interpreter's counters (taken by ``Interpreter.statistics()``).

    Attributes
    ----------
    decisions
        Results acted on (received in order while not paused).
    results_dropped_out_of_order
        Results dropped because their ``seq`` was not newer than the newest received.
    interval_switches
        Commands sent after the initial announcement (each one changed the interval).
    current_interval
        The interval in force (seconds; 0 = free-run): the one place this fact is kept.
    state
        The current state.
    fast_frames
        Results of stacks acquired in the current fast period (0 outside fast mode).
    results_ignored_paused
        Results received in order while paused (not acted on).
    paused
        Whether the interpreter is paused (holds the interval, ignores results).
    newest_seq
        The newest ``seq`` received in order (-1 before any).
    nonfinite_decisions
        Results whose decision was NaN or infinite (never acted on, not in ``decisions``).
    nonfinite_in_a_row
        Non-finite decisions since the last finite one.
    """

    decisions: int
    results_dropped_out_of_order: int
    interval_switches: int
    current_interval: float
    state: InterpreterState
    fast_frames: int = 0
    results_ignored_paused: int = 0
    paused: bool = False
    newest_seq: int = -1
    nonfinite_decisions: int = 0
    nonfinite_in_a_row: int = 0


# -- the loop: results, commands, controls ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Result:
    """One analysed stack (or time window), sent by a worker to the interpreter.

    ``seq`` is the sequence number of the newest stack analysed, ``position`` the stage
    position it was acquired at. All ``t_*`` fields are monotonic seconds: exposure of the
    stack's first frame, publication in the ring, claim by the worker, end of analysis;
    ``t_*_s`` the seconds the worker's three hooks took.
    """

    seq: int
    worker: int
    decision: float
    t_exposure: float
    t_published: float
    t_claimed: float
    t_done: float
    n_timepoints: int = 1
    t_prepare_s: float = 0.0
    t_infer_s: float = 0.0
    t_post_s: float = 0.0
    position: int = 0
    regions: tuple[EventRegion, ...] = ()
    """Where the events are (:meth:`~rt_eda.workers.Worker.extract_event_locations`), in
    sensor pixels: the worker process has added the offset of the region the stack was
    read from (``frame``)."""
    frame: FrameRegion | None = None
    """The region of the sensor the stack was read from; None: the full frame."""


@dataclass(frozen=True, slots=True)
class TrueEvents:
    """The ground truth of one published stack, from a source that knows it (the synthetic
    source): the events visible at its first exposure, sent by the camera on the results
    channel so the interpreter can measure the workers' locations against them. Sent only
    for stacks with at least one visible event."""

    seq: int
    position: int
    events: tuple[tuple[float, float, float, float], ...]
    """``(y, x, sigma_px, intensity)`` per event (sensor pixels)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One actuation an actuator decided in the interpreter, sent to the camera, which has
    the devices (:mod:`rt_eda.actuators`).

    ``kind`` is the actuator's name; ``after_seq`` the stack whose result caused it;
    ``t_decided`` when (monotonic s); ``position`` the stage position it applies to
    (:data:`ALL_POSITIONS`: every one); ``fast`` the interpreter's state there. What to do:
    ``frame`` (a sensor region to read; None: the full frame), ``regions`` (the event
    regions it acts on), ``presets`` (channel presets), ``note`` (one line for the log and
    ``actions.csv``).
    """

    kind: str
    after_seq: int
    t_decided: float
    position: int = ALL_POSITIONS
    fast: bool = False
    frame: FrameRegion | None = None
    regions: tuple[EventRegion, ...] = ()
    presets: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """An acquisition change sent by the interpreter to the camera.

    ``interval_s`` is the new interval between timepoints (0 = free-run); ``after_seq`` the
    sequence number of the stack whose result triggered it (-1: the start announcement, the
    interval acquisition starts at); ``t_decided`` when it was decided. ``position`` is the
    stage position it applies to (:data:`ALL_POSITIONS`: every one); ``fast``: the
    interpreter's state it leaves at that position (the fast interval). The camera applies
    it at that position's next timepoint.
    """

    interval_s: float
    reason: str
    after_seq: int
    t_decided: float
    position: int = ALL_POSITIONS
    fast: bool = False


class CameraControlKind(StrEnum):
    """Engine -> camera: attach to the stack ring, then start acquiring."""

    ATTACH = "attach"
    START = "start"


@dataclass(frozen=True, slots=True)
class CameraControl:
    """Engine -> camera. ``ATTACH`` names the stack ``ring``; ``START`` starts acquisition at
    the interval of the interpreter's first :class:`Command` (already on the camera's queue:
    the engine sends START only after the interpreter is READY). Stopping goes through the
    shared stop event."""

    kind: CameraControlKind
    ring: str = ""


@dataclass(frozen=True, slots=True)
class WorkerStart:
    """Engine -> worker: start claiming; ``output_ring`` names the network-image ring
    ("" when no image is kept)."""

    output_ring: str


class ControlKey(StrEnum):
    """Every setting a person may change while the run goes (each interpreter accepts its
    own subset and refuses the others with a :class:`~rt_eda.core.errors.ConfigError`)."""

    LOWER_THRESHOLD = "lower_threshold"
    UPPER_THRESHOLD = "upper_threshold"
    SLOW_INTERVAL = "slow_interval"
    FAST_INTERVAL = "fast_interval"
    MIN_FAST_FRAMES = "min_fast_frames"
    MANUAL_INTERVAL = "manual_interval"
    MODE = "mode"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A run-time change asked for by a person (viewer or CLI), sent to the interpreter.

    ``key`` is a :class:`ControlKey` (a plain string naming one is converted; any other
    string raises ValueError naming the allowed keys); ``value`` its new value.
    """

    key: ControlKey
    value: float

    def __post_init__(self) -> None:
        if not isinstance(self.key, ControlKey):
            try:
                key = ControlKey(self.key)
            except ValueError:
                allowed = ", ".join(k.value for k in ControlKey)
                raise ValueError(f"control key {self.key!r} unknown; allowed: {allowed}"
                                 ) from None
            object.__setattr__(self, "key", key)


ResultsMessage = Result | TrueEvents | ControlMessage | None
"""What the interpreter reads: results, controls, and None (the engine: no more results)."""

CameraMessage = Command | Action | CameraControl
"""What the camera reads: the interpreter's commands and the engine's controls."""


# -- what the interpreter made of each message -----------------------------------------------
class TraceKind:
    """The ``kind`` column of a decision-trace row (:data:`rt_eda.shm.TRACE_FIELDS`)."""

    RESULT: Final = 0
    INTERVAL_CHANGE: Final = 1
    REGION: Final = 2
    ACTION: Final = 3


#: The ``worker`` column of an ACTION row: the actuator (ACTION_KINDS.index; others: last).
ACTION_KINDS: Final = ("interval", "roi", "channel", "stimulate", "other")

_NO_BOX: Final = (math.nan, math.nan, math.nan, math.nan)

if TRACE_FIELDS != ("seq", "t_exposure", "t_decided", "decision", "interval_s", "fast",
                    "worker", "kind", "position", "y0", "x0", "y1",
                    "x1"):  # the order trace_row() below writes them in
    raise ImportError(f"rt_eda.shm.TRACE_FIELDS changed ({TRACE_FIELDS}): update trace_row()")


def _box(regions: tuple[EventRegion, ...]) -> tuple[float, float, float, float]:
    if not regions:
        return _NO_BOX
    return (float(min(r.y0 for r in regions)), float(min(r.x0 for r in regions)),
            float(max(r.y1 for r in regions)), float(max(r.x1 for r in regions)))


def region_trace_rows(result: Result, t_decided: float) -> list[tuple[float, ...]]:
    """One trace row per event region of ``result`` (``decision``: its score)."""
    return [(result.seq, result.t_exposure, t_decided, r.score, 0.0, 0.0, result.worker,
             TraceKind.REGION, result.position, float(r.y0), float(r.x0), float(r.y1),
             float(r.x1)) for r in result.regions]


def action_trace_row(action: Action) -> tuple[float, ...]:
    """The trace row of an action (``worker``: its index in :data:`ACTION_KINDS`; the box:
    the sensor region it reads, else its regions together)."""
    kind = (ACTION_KINDS.index(action.kind) if action.kind in ACTION_KINDS
            else len(ACTION_KINDS) - 1)
    f = action.frame
    box = (float(f.y), float(f.x), float(f.y1), float(f.x1)) if f is not None else _box(
        action.regions)
    return (action.after_seq, 0.0, action.t_decided, float(len(action.regions)), 0.0,
            float(action.fast), kind, TraceKind.ACTION, action.position, *box)


@dataclass(frozen=True, slots=True)
class IntervalChange:
    """A :class:`Command` the interpreter sent, with the state it left (``fast``)."""

    command: Command
    fast: bool

    def trace_row(self) -> tuple[float, ...]:
        """The row of the shared decision trace (fields in :data:`rt_eda.shm.TRACE_FIELDS`
        order)."""
        c = self.command
        return (c.after_seq, 0.0, c.t_decided, math.nan, c.interval_s, float(self.fast), 0,
                TraceKind.INTERVAL_CHANGE, c.position, *_NO_BOX)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One result as the interpreter handled it: built once, read by every consumer.

    Attributes
    ----------
    result
        The worker's result (its ``position`` is the record's).
    t_decided
        When the interpreter received it (monotonic s).
    interval_s, fast
        The interval in force at the result's position and whether the interpreter was in
        its fast state there, once the result was acted on.
    change
        The interval change the result caused, or None.
    """

    result: Result
    t_decided: float
    interval_s: float
    fast: bool
    change: IntervalChange | None = None

    def trace_row(self) -> tuple[float, ...]:
        """The row of the shared decision trace (fields in :data:`rt_eda.shm.TRACE_FIELDS`
        order); the change, if any, is a row of its own (:meth:`IntervalChange.trace_row`)."""
        r = self.result
        return (r.seq, r.t_exposure, self.t_decided, r.decision, self.interval_s,
                float(self.fast), r.worker, TraceKind.RESULT, r.position, *_box(r.regions))


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """A control the interpreter received, ``t`` when, and whether it was applied (the
    refusal's text in ``error``)."""

    key: ControlKey
    value: float
    t: float
    accepted: bool
    error: str = ""


WriterRow = DecisionRecord | IntervalChange | ControlRecord
"""What the writer records (decisions.csv, intervals.csv, controls.csv). An
:class:`IntervalChange` arrives on its own only when no result caused it (the start, a
control); one a result caused comes inside that result's :class:`DecisionRecord`."""


@dataclass(frozen=True, slots=True)
class InterpreterStatus:
    """The interpreter's live snapshot (STATUS, twice a second, and once more at its end,
    ``final``): what the live display shows.

    ``publish_to_decision`` covers every result so far, as the summary's does: while the run
    goes from a uniform sample of at most 4,096 of them (cheap enough for the interpreter's
    loop; exact while there are fewer), in the final snapshot from the summary's own sample,
    so the last figures shown are the summary's.
    """

    interval_s: float
    state: InterpreterState
    decisions: int
    interval_switches: int
    publish_to_decision: Percentiles
    final: bool = False


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """The camera's live snapshot (STATUS, about twice a second, and once more at its end,
    ``final``): its inter-frame jitter, p99 - p50 of the gaps between its publications since
    the previous snapshot (ms; in the final one: of the whole run, the summary's
    ``camera_jitter_ms``), over ``gaps`` gaps (0: none at an unchanged interval, the jitter
    reads 0.0), and its counts so far (:class:`CameraStatistics`' fields of the same names;
    ``timepoints`` and ``acquisition_s`` in the final one only, 0 before).
    """

    jitter_ms: float
    gaps: int
    stacks_published: int = 0
    frames_acquired: int = 0
    frames_lost: int = 0
    final: bool = False
    timepoints: int = 0
    acquisition_s: float = 0.0


@dataclass(frozen=True, slots=True)
class InterpreterReport:
    """What the interpreter role measured, sent once at its end.

    Attributes
    ----------
    statistics
        The interpreter's counters; None if it could not be made.
    results
        Results received (every outcome).
    publish_to_claim, publish_to_decision
        Latencies of every result received (ms).
    interval_changes
        Every command sent, the start announcement first.
    controls
        Every control received, applied or refused.
    handle_s
        Seconds spent handling messages.
    positions
        Each position's decisions (one entry per position that had a result; the summary
        fills in the others).
    """

    statistics: InterpreterStatistics | None
    results: int
    publish_to_claim: Percentiles
    publish_to_decision: Percentiles
    interval_changes: tuple[IntervalChange, ...]
    controls: tuple[ControlRecord, ...]
    handle_s: float
    positions: tuple[PositionDecisions, ...] = ()
    locations: LocationErrors | None = None
    actions_sent: Mapping[str, int] = field(default_factory=dict)
    decide_failed: Mapping[str, int] = field(default_factory=dict)
    """Per actuator: decisions whose ``decide`` raised (no action was sent for them)."""


@dataclass(frozen=True, slots=True)
class LocationErrors:
    """The workers' event locations against the source's ground truth (the interpreter
    matches each result's regions with the events visible at its stack's exposure,
    :func:`rt_eda.core.location_truth.match_locations`): the distance of every match (px),
    regions with no event near, visible events no region found, and the stacks scored."""

    error_px: Percentiles
    false_regions: int
    missed_events: int
    stacks: int


@dataclass(frozen=True, slots=True)
class PositionDecisions:
    """One position's share of the interpreter's counters (it keeps one state per
    position): results acted on, dropped as not newer than that position's newest, interval
    switches, non-finite decisions, and the state and interval it ended in."""

    position: int
    decisions: int
    results_dropped_out_of_order: int
    results_ignored_paused: int
    interval_switches: int
    nonfinite_decisions: int
    state: InterpreterState
    current_interval: float


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    """What the writer persisted and measured, sent once at its end.

    The counts are the recording's (frames, stacks, network images, bytes, and the rows of
    decisions.csv, intervals.csv and controls.csv); ``write_ms``: the time one stack took to
    write (percentiles of the newest 65,536, max of all); ``rows_received``: records from the
    interpreter, ``rows_rejected`` those that were not a :data:`WriterRow`; ``error``: why
    the writer failed ("" after a clean end); ``path``/``format``: "" when the recording was
    never created.
    """

    frames_written: int
    stacks_written: int
    network_images_written: int
    bytes_written: int
    decisions: int
    intervals: int
    controls: int
    path: str
    format: str
    write_ms: Percentiles
    max_backlog_stacks: int
    rows_received: int
    rows_rejected: int
    error: str


RolePayload = (CameraReady | WorkerReady | WriterReady | Failure | Stopped | CameraStatistics
               | WorkerStatistics | InterpreterReport | WriterStatistics | InterpreterStatus
               | CameraStatus | ClusterReady | ClusterStatistics | ClusterStatus | None)
"""Everything a :class:`RoleEvent` can carry (see :class:`RoleEventKind`)."""


@dataclass(frozen=True, slots=True)
class RoleEvent:
    """A lifecycle report from a role process to the engine."""

    role: RoleName
    index: int
    kind: RoleEventKind
    payload: RolePayload = None
    pid: int = 0
