"""Messages that cross process boundaries: small frozen, slotted dataclasses of primitives.

Pixels never travel in a message; they stay in shared memory. Timestamps are
``time.monotonic()`` seconds (CLOCK_MONOTONIC is shared by every process on the machine), so
differences between timestamps taken in different processes are meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CameraControl",
    "Command",
    "ControlMessage",
    "Result",
    "Role",
    "RoleEvent",
    "RoleEventKind",
]


class Role(StrEnum):
    """The process roles; their value is the process name shown by ``ps``/``top``."""

    CAMERA = "rt-eda-camera"
    WORKER = "rt-eda-worker"  # the process name adds the worker index: rt-eda-worker-1
    INTERPRETER = "rt-eda-interp"
    WRITER = "rt-eda-writer"
    VIEWER = "rt-eda-viewer"


@dataclass(frozen=True, slots=True)
class Result:
    """One analysed stack (or time window), sent by a worker to the interpreter.

    ``seq`` is the sequence number of the newest stack analysed. All ``t_*`` fields are
    monotonic seconds: exposure of the stack's first frame, publication in the ring, claim by
    the worker, end of analysis.
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


@dataclass(frozen=True, slots=True)
class Command:
    """An acquisition change sent by the interpreter to the camera.

    ``interval_s`` is the new interval between timepoints (0 = free-run); ``after_seq`` the
    sequence number of the stack whose result triggered it; ``t_decided`` when it was decided.
    The camera applies it at the next timepoint.
    """

    interval_s: float
    reason: str
    after_seq: int
    t_decided: float


@dataclass(frozen=True, slots=True)
class CameraControl:
    """Engine -> camera: ``attach`` (``value`` = ring name) then ``start`` (``value`` = the
    starting interval in s). Stopping goes through the shared stop event."""

    kind: str
    value: str | float


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A run-time change asked for by a person (viewer or CLI) and sent to the interpreter.

    ``key`` is one of the interpreter's settings (``lower_threshold``, ``upper_threshold``,
    ``slow_interval``, ``fast_interval``, ``min_fast_frames``, ``manual_interval``) or
    ``"paused"``; ``value`` its new value.
    """

    key: str
    value: float


class RoleEventKind(StrEnum):
    """What a role reports to the engine on the events queue."""

    READY = "ready"  # set up (model loaded and warmed up, camera opened)
    STOPPED = "stopped"  # left its loop cleanly
    FAILED = "failed"  # its top loop caught an exception; detail holds the message
    STATS = "stats"  # a final statistics payload in ``detail`` (a JSON string)
    STATUS = "status"  # a live status payload in ``detail`` (JSON), a few times a second


@dataclass(frozen=True, slots=True)
class RoleEvent:
    """A lifecycle report from a role process to the engine."""

    role: str
    index: int
    kind: RoleEventKind
    detail: str = ""
    pid: int = 0
