"""Process plumbing shared by every role: the channels a role gets, naming, signals, logging.

Every role process is started by the engine with the ``spawn`` start method and calls
:func:`enter_role` first thing. It then:

- names itself for ``ps``/``top`` (the kernel's 15-character process name and the title);
- ignores SIGINT (Ctrl-C reaches the whole process group; the engine alone decides how the
  run ends) and exits on SIGTERM through ``SystemExit``, so ``finally`` blocks run;
- asks the kernel for SIGTERM when the engine dies (``PR_SET_PDEATHSIG``), so no role
  outlives a SIGKILLed engine;
- logs through a queue to the engine (records are formatted and printed there), at DEBUG
  when the run was started with ``--debug`` (:data:`DEBUG_ENV` in its environment), else
  INFO.

Third-party libraries that write to file descriptor 2 from C or C++ while they start
(TensorFlow's absl logging: "All log messages before absl::InitializeLog() is called are
written to STDERR", ``port.cc`` oneDNN and ``cpu_feature_guard`` lines, which TensorFlow 2.21
prints whatever ``TF_CPP_MIN_LOG_LEVEL`` says) are held by :func:`native_output_to_log`
around their import and handed to the log: known start-up chatter at DEBUG, anything else at
WARNING. With ``--debug`` nothing is held: everything shows as the library wrote it.

Every channel is made of anonymous pipes (:mod:`rt_eda.core.queues`), never of named semaphores,
so a run whose whole process group is SIGKILLed leaves nothing behind but its shared-memory
blocks, which the next run sweeps by their creator's dead pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import logging.handlers
import os
import re
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

import setproctitle

from rt_eda.core.messages import (
    CameraMessage,
    ResultsMessage,
    RoleEvent,
    RoleEventKind,
    RoleName,
    RolePayload,
    WriterRow,
)
from rt_eda.core.queues import Channel, Sender, StopFlag

__all__ = ["DEBUG_ENV", "RoleChannels", "debug_logging", "enter_role", "native_output_to_log",
           "quiet_environment", "report", "request_realtime"]

_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1

DEBUG_ENV = "RT_EDA_DEBUG"
"""``"1"`` in a process's environment: the run logs at DEBUG and holds nothing back
(``--debug``). The engine sets it for every role; :func:`quiet_environment` for itself."""

#: Lines third-party libraries write to file descriptor 2 while they start, shown only with
#: --debug: absl's notice before its logging is set up, absl INFO lines ("I0000 00:00:... 123
#: port.cc:153] oneDNN custom operations are on ..."), and cpu_feature_guard's second line.
_STARTUP_CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^I\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\]"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
)


def debug_logging() -> bool:
    """Whether this process logs at DEBUG and holds nothing back (``--debug``)."""
    return os.environ.get(DEBUG_ENV) == "1"


def quiet_environment(debug: bool) -> dict[str, str]:
    """The environment settings that keep third-party libraries quiet (or, with ``debug``,
    let them speak), for this process and every process it starts afterwards.

    ``TF_CPP_MIN_LOG_LEVEL`` 2 drops TensorFlow's C++ INFO and WARNING lines once its
    logging is set up (the lines before that are :func:`native_output_to_log`'s);
    ``KMP_WARNINGS`` 0 OpenMP's; :data:`DEBUG_ENV` tells every role the log level. Returns the
    settings applied (``os.environ`` is updated; a value already set by the user for a
    library is kept)."""
    wanted = {DEBUG_ENV: "1" if debug else "0"}
    if not debug:
        wanted |= {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   "KMP_WARNINGS": os.environ.get("KMP_WARNINGS", "0")}
    os.environ.update(wanted)
    return wanted


@contextlib.contextmanager
def native_output_to_log(what: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Hold what this process writes to file descriptor 2 while the block runs (C and C++
    code included, which no Python setting reaches), then log it line by line.

    Known start-up chatter of third-party libraries (see the module docstring) is logged at
    DEBUG, anything else at WARNING, each line prefixed with ``what`` (e.g. "tensorflow
    import"), so nothing is lost and nothing reaches the terminal unasked. With ``--debug``
    (:func:`debug_logging`) nothing is held. Call it in a role process, whose log records go
    through a queue (a handler writing to stderr would be held too), while one thread writes
    to stderr (its start-up). The text is held in an unlinked temporary file, so a process
    that dies inside the block leaves nothing behind (and its held lines are lost; the probe,
    which runs every model once before the workers do, shows a dying process's last words).
    """
    out = logger or logging.getLogger(__name__)
    with contextlib.ExitStack() as stack:
        try:
            held = None if debug_logging() else stack.enter_context(
                tempfile.TemporaryFile(prefix="rt-eda-stderr-"))
        except OSError:  # nowhere to hold it: let it through
            held = None
        if held is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace")
        for line in text.splitlines():
            if line.strip():
                level = logging.DEBUG if _STARTUP_CHATTER.search(line) else logging.WARNING
                out.log(level, "%s: %s", what, line.rstrip())


@dataclass(frozen=True, slots=True)
class RoleChannels:
    """What connects a role to the others (picklable into a spawned process).

    Attributes
    ----------
    events
        Role -> engine: :class:`~rt_eda.core.messages.RoleEvent` (ready, stopped, failed,
        stats, status).
    camera
        Interpreter -> camera: :class:`~rt_eda.core.messages.Command`; engine -> camera:
        :class:`~rt_eda.core.messages.CameraControl`.
    results
        Workers -> interpreter: :class:`~rt_eda.core.messages.Result`; viewer -> interpreter:
        :class:`~rt_eda.core.messages.ControlMessage`; engine -> interpreter: ``None`` (stop).
    stop
        Set by the engine when the run ends (camera: stop acquiring; everyone: leave the loop),
        a :class:`~rt_eda.core.queues.StopEvent`: it also reads as set once the engine is dead.
        Roles only call ``is_set()``, so a ``threading.Event`` serves in tests.
    log
        Log records of every role, to the engine.
    writer
        Interpreter -> writer: :data:`~rt_eda.core.messages.WriterRow` records, then ``None``
        (None without --save).
    ring
        Name of the stack ring (set once the camera has told the engine the stack shape).
    output_ring
        Name of the network-image ring, or "" when the worker makes no network images.
    trace
        Name of the shared-memory decision trace (written by the interpreter).
    parent_pid
        The engine's pid: a role started after the engine died exits at once.

    Every queue is a :class:`~rt_eda.core.queues.MessageQueue` in a run; tests may hand
    anything with the same methods (:class:`~rt_eda.core.queues.Channel`).
    """

    events: Sender[RoleEvent]
    camera: Channel[CameraMessage]
    results: Channel[ResultsMessage]
    stop: StopFlag
    log: Channel[logging.LogRecord]
    writer: Channel[WriterRow | None] | None = None
    ring: str = ""
    output_ring: str = ""
    trace: str = ""
    parent_pid: int = 0

    def with_shared(self, *, ring: str | None = None, output_ring: str | None = None,
                    trace: str | None = None) -> RoleChannels:
        """A copy naming the shared-memory blocks once they exist (None: unchanged)."""
        return dataclasses.replace(
            self,
            ring=self.ring if ring is None else ring,
            output_ring=self.output_ring if output_ring is None else output_ring,
            trace=self.trace if trace is None else trace,
        )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def enter_role(role: RoleName, channels: RoleChannels, *, index: int = 0,
               level: int | None = None) -> None:
    """Set up a role process (see the module docstring). Call first in every role's ``run``.

    The process is named :meth:`RoleName.process_name` (``rt-eda-worker-<index>`` for a
    worker). ``level``: the log level (default: DEBUG with ``--debug``, else INFO)."""
    if level is None:
        level = logging.DEBUG if debug_logging() else logging.INFO
    process_name = role.process_name(index)
    setproctitle.setproctitle(process_name)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, process_name.encode()[:15], 0, 0, 0)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if channels.parent_pid and os.getppid() != channels.parent_pid:
            raise SystemExit(1)  # the engine died before we could ask to follow it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(channels.log))
    root.setLevel(level)
    logging.captureWarnings(True)


def report(channels: RoleChannels, role: RoleName, index: int, kind: RoleEventKind,
           payload: RolePayload = None) -> None:
    """Send a lifecycle event to the engine (never raises: the engine may be gone)."""
    with contextlib.suppress(OSError, ValueError):
        channels.events.put(RoleEvent(role, index, kind, payload, os.getpid()))


def request_realtime(who: str, priority: int) -> bool:
    """Ask for real-time scheduling (SCHED_FIFO at ``priority``), best effort.

    Two roles keep time: the camera (``camera.realtime_priority``) and, one step below it,
    the interpreter, which is on the way to every decision and works ~0.1 ms per result.
    With them at SCHED_FIFO, the camera's frame-to-frame jitter beside two TensorFlow workers
    on 2 cores fell from ~5 ms to ~0.25 ms (p99 - p50), and a Result waited p99 0.1-0.4 ms
    instead of 1.5-4.9 ms for the interpreter to act on it at 1,000 stacks/s on a loaded
    machine. Both only ever block (on a source, a pipe or the ring's doorbell), never spin,
    so they cannot starve the workers. Without the privilege (CAP_SYS_NICE or ``ulimit -r``)
    the process runs at normal priority, above the workers, which run niced.

    Returns True when the priority was granted; ``priority <= 0`` asks for nothing.
    """
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        logging.getLogger(__name__).info(
            "%s: no real-time priority (needs CAP_SYS_NICE or ulimit -r); running at normal "
            "priority", who)
        return False
    logging.getLogger(__name__).debug("%s: SCHED_FIFO priority %d", who, priority)
    return True
