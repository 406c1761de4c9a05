"""The live viewer (pyqtgraph): the only package of rt-eda that imports Qt.

Importing this package does not load Qt: the session-file and control-relay helpers the
engine uses are Qt-free, and Qt is imported when a window is made (:func:`run`, :func:`view`,
:mod:`._window`).

- :func:`run` -- the engine's viewer role (``rt-eda-viewer``);
- :func:`view` -- ``rt-eda view``: attach to a running engine by its session file;
- :func:`write_session` / :func:`remove_session` / :func:`find_sessions` /
  :func:`sweep_sessions` -- session files, and what dead engines left beside them;
- :class:`ControlRelay` -- engine side of controls from an attached viewer (Unix socket);
- :class:`LiveFeed` -- the read-only copies a window draws (no Qt; usable headless).
"""

from ._controls import CONTROL_KEYS, ControlRelay, ControlSender, QueueSender, SocketSender
from ._feed import FeedStatus, LiveFeed
from ._process import STATE_ENV, display_available, no_display, run, view, viewer_enabled
from ._session import (
    SESSION_VERSION,
    Session,
    find_sessions,
    read_session,
    remove_session,
    session_dir,
    sweep_sessions,
    write_session,
)

__all__ = [
    "CONTROL_KEYS",
    "SESSION_VERSION",
    "STATE_ENV",
    "ControlRelay",
    "ControlSender",
    "FeedStatus",
    "LiveFeed",
    "QueueSender",
    "Session",
    "SocketSender",
    "display_available",
    "find_sessions",
    "no_display",
    "read_session",
    "remove_session",
    "run",
    "session_dir",
    "sweep_sessions",
    "view",
    "viewer_enabled",
    "write_session",
]
