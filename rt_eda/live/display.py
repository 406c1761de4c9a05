"""Whether a window can be shown here, and whether the engine starts the viewer (no Qt).

The engine asks :func:`viewer_enabled` before it starts the viewer role; the viewer role and
``rt-eda view`` ask :func:`no_display` before they import Qt, because Qt aborts the whole
process when its platform plugin finds no display.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys

from rt_eda.core.config import Config

__all__ = ["STATE_ENV", "display_available", "no_display", "viewer_enabled"]

log = logging.getLogger(__name__)


def display_available() -> bool:
    """True when Qt can open a window here (see :func:`no_display`)."""
    return not no_display()


_LOCAL_X = re.compile(r"^(?:unix)?:(\d+)(?:\.\d+)?$")


def no_display() -> str:
    """Why Qt could not open a window here, in one line; "" when it can.

    A platform plugin that needs no display server (``QT_QPA_PLATFORM=offscreen``, ``vnc``,
    ...) can; ``xcb`` and ``wayland`` need ``DISPLAY`` / ``WAYLAND_DISPLAY``, and a local X
    display (``:N``) must have a server listening on its socket (Qt would otherwise abort the
    process). A remote X display or a Wayland socket is trusted. macOS and Windows always
    have a display.
    """
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if platform and platform != "xcb" and not platform.startswith("wayland"):
        return ""
    if not sys.platform.startswith("linux"):
        return ""
    display = "" if platform.startswith("wayland") else os.environ.get("DISPLAY", "")
    wayland = "" if platform == "xcb" else os.environ.get("WAYLAND_DISPLAY", "")
    if wayland:
        return ""
    if not display:
        if platform:
            needed = "DISPLAY" if platform == "xcb" else "WAYLAND_DISPLAY"
            return f"no display (QT_QPA_PLATFORM={platform}, but {needed} unset)"
        return "no display (DISPLAY and WAYLAND_DISPLAY unset, no QT_QPA_PLATFORM)"
    match = _LOCAL_X.match(display)
    if match is None:
        return ""
    path = f"/tmp/.X11-unix/X{match.group(1)}"
    for address in ("\0" + path, path):  # the abstract socket, then the file
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(address)
            except OSError:
                continue
            return ""
    return f"no display (DISPLAY={display}, but no X server listens on {path})"


STATE_ENV = "RT_EDA_VIEWER_STATE"
"""Set to a file path, the viewer writes its window's state there (see
:meth:`~rt_eda.viewer.ViewerWindow.state`): for tests that drive the real window."""


def viewer_enabled(config: Config) -> bool:
    """Whether the engine should start the viewer: ``viewer.enabled`` (``--viewer``) or
    ``auto``, and :func:`display_available`.

    Asked for (``viewer.enabled = true``) with no display, it logs one WARNING line saying so
    and returns False: the run goes on without the viewer.
    """
    enabled = config.viewer.enabled
    if enabled == "auto":
        return display_available()
    if not enabled:
        return False
    reason = no_display()
    if reason:
        log.warning("viewer: %s; going on without the viewer", reason)
        return False
    return True
