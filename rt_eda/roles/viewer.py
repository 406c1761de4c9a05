"""The viewer role (``rt-eda-viewer``), and ``rt-eda view`` (attach to a running engine).

Role lifecycle (the engine's side in brackets)::

    enter_role('rt-eda-viewer'), nice +10
    map ring, output ring, trace (read-only) -> window shown -> READY
    loop: Qt event loop, one redraw per tick at viewer.max_fps
    [stop event] or SIGTERM or the ring shut      -> window closes -> STOPPED ("run stopped")
    the person closes the window                  -> STOPPED ("window closed"); the run goes on
    anything raised, or no display                -> FAILED, exit 1 (the run goes on)
    [exit code != 0 or a signal: a death, logged, counted, restarted once]

Everything here is Qt-free; the window itself is :mod:`rt_eda.viewer`, imported inside the
viewer's own process only (the one import of the roles layer that goes up a layer), so the
engine never loads Qt.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from rt_eda.core.config import Config
from rt_eda.core.errors import RingError
from rt_eda.core.messages import Failure, RoleEventKind, RoleName, Stopped
from rt_eda.core.process import RoleChannels, enter_role, report
from rt_eda.live.controls import ControlSender, QueueSender, SocketSender
from rt_eda.live.display import STATE_ENV, no_display
from rt_eda.live.session import Session, find_sessions, session_dir

__all__ = ["run", "view"]

log = logging.getLogger(__name__)

VIEWER_NICENESS = 10
"""The viewer lowers its own priority by this much: on a busy machine the camera, workers and
writer win the CPU, and the display is what slows down."""


def run(config: Config, channels: RoleChannels) -> None:
    """Entry point of the viewer process (started by the engine once the rings exist).

    Reads ``channels.ring``, ``channels.output_ring`` and ``channels.trace`` (read-only),
    sends controls to the interpreter on ``channels.results`` (from a small thread: the GUI
    never waits on the queue), and leaves when ``channels.stop`` is set, on SIGTERM, when the
    ring is shut, or when its window is closed. Closing the window ends only this process.
    """
    me = RoleName.VIEWER
    enter_role(me, channels)
    terminated = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        terminated.set()  # the Qt loop would swallow SystemExit raised inside a slot

    signal.signal(signal.SIGTERM, on_sigterm)
    with contextlib.suppress(OSError):
        os.nice(VIEWER_NICENESS)
    reason = no_display()
    if reason:
        report(channels, me, 0, RoleEventKind.FAILED, Failure("", reason))
        _leave(1, channels.events, channels.log)
    try:
        from rt_eda.live.feed import LiveFeed
        from rt_eda.viewer import run_window

        feed = LiveFeed(channels.ring, channels.output_ring, channels.trace)
        sender = QueueSender(channels.results)

        def stopping() -> bool:
            return bool(channels.stop.is_set()) or terminated.is_set()

        def shown(window: object) -> None:
            report(channels, me, 0, RoleEventKind.READY)

        reason = run_window(feed, config.interpreter, max_fps=config.viewer.max_fps,
                            sender=sender, stop=stopping, quit_on_end=True,
                            workers=config.analysis.workers, on_shown=shown,
                            state_path=os.environ.get(STATE_ENV) or None,
                            position_names=_position_names(config, feed.positions))
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.debug("viewer failed", exc_info=True)  # the engine logs the one-line WARNING
        report(channels, me, 0, RoleEventKind.FAILED, Failure.from_exception(exc))
        _leave(1, channels.events, channels.log)
    log.info("viewer: %s", reason)
    report(channels, me, 0, RoleEventKind.STOPPED, Stopped(reason))
    _leave(0, channels.events, channels.log)


def _position_names(config: Config, positions: int) -> tuple[str, ...]:
    """The names of the run's positions (the plan's), for the position selector."""
    from rt_eda.storage.recording import position_names

    return position_names(config, positions) if positions > 1 else ()


def _leave(code: int, *queues: Any) -> NoReturn:
    """End a viewer process without the interpreter's final garbage collection.

    Qt objects finalized in arbitrary order in that collection can touch deleted C++
    objects after the window is long gone; pyqtgraph's own ``pg.exit()`` exists for the same
    reason. Everything that matters is flushed first: the
    queues' feeder threads (events and log records to the engine) and stdio.
    """
    logging.shutdown()
    for q in queues:
        close, join = getattr(q, "close", None), getattr(q, "join_thread", None)
        if close is not None and join is not None:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                close()
                join()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def view(pid: int | None = None, *, directory: str | Path | None = None,
         controls: bool = True) -> int:
    """``rt-eda view``: attach a viewer to a running engine, in this process, until its
    window is closed.

    Parameters
    ----------
    pid
        The engine to attach to; default: the newest live session.
    directory
        Where session files are (default :func:`~rt_eda.live.session.session_dir`).
    controls
        Send controls when the session offers a control socket; False: read-only.

    Returns
    -------
    int
        0 after the window was closed; 2 when there is no such session or no display.
    """
    sessions = find_sessions(directory)
    where = directory if directory is not None else session_dir()
    if not sessions:
        log.error("no running rt-eda engine found (no live session file in %s)", where)
        return 2
    if pid is None:
        session = sessions[0]
        if len(sessions) > 1:
            log.info("%d runs found (pids %s); attaching to the newest, pid %d",
                     len(sessions), ", ".join(str(s.pid) for s in sessions), session.pid)
    else:
        match = [s for s in sessions if s.pid == pid]
        if not match:
            log.error("no running rt-eda engine with pid %d; running: %s", pid,
                      ", ".join(str(s.pid) for s in sessions))
            return 2
        session = match[0]
    reason = no_display()
    if reason:
        log.error("%s: cannot show the viewer", reason)
        return 2
    # The window runs in a child process named rt-eda-viewer: Qt stays out of this one, and
    # the child can end without the final garbage collection (see _leave).
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_attached_main,
                        args=(str(session.path), controls, logging.getLogger().level),
                        name=RoleName.VIEWER.process_name())
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:
        child.terminate()  # the child closes its window on SIGTERM
        child.join(10)
    if child.exitcode is None:
        child.kill()
        child.join()
    return 0 if child.exitcode in (0, -signal.SIGTERM) else 1


def _attached_main(session_path: str, controls: bool, level: int) -> None:
    """Body of the attached viewer's process: show the window, then :func:`_leave`."""
    import setproctitle

    setproctitle.setproctitle(RoleName.VIEWER.process_name())
    logging.basicConfig(level=level or logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 1
    try:
        from rt_eda.live.session import read_session

        code = _attach(read_session(session_path), controls=controls, stop=stopped.is_set)
    except Exception:  # the process's top loop: log, then exit non-zero
        log.exception("viewer failed")
    _leave(code)


def _attach(session: Session, *, controls: bool, stop: Any = None) -> int:
    from rt_eda.live.feed import LiveFeed
    from rt_eda.viewer import run_window

    try:
        feed = LiveFeed(session.ring, session.output_ring, session.trace)
    except RingError as exc:
        log.error("cannot attach to run %d: %s", session.pid, exc)
        return 2
    sender: ControlSender | None = None
    reason = ""
    if not controls:
        reason = "read-only (asked for)"
    elif not session.control:
        reason = "read-only: this run takes no controls from an attached viewer"
    else:
        sender = SocketSender(session.control)
    log.info("attached to run %d (ring %s)%s", session.pid, session.ring,
             "" if sender is not None else f"; {reason}")
    ended = run_window(feed, session.config.interpreter,
                       max_fps=session.config.viewer.max_fps, sender=sender,
                       read_only_reason=reason, quit_on_end=False,
                       workers=session.config.analysis.workers, stop=stop,
                       state_path=os.environ.get(STATE_ENV) or None,
                       position_names=_position_names(session.config, feed.positions))
    log.info("viewer: %s", ended)
    return 0
