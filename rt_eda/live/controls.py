"""Controls from the viewer to the interpreter, on paths that never block the GUI.

Two senders, one protocol (:class:`ControlSender`): ``send(key, value)`` returns at once,
``True`` if the control is on its way, ``False`` if it was dropped (counted and logged).

- :class:`QueueSender` (the viewer the engine starts): a small thread puts
  :class:`~rt_eda.core.messages.ControlMessage` on the interpreter's results queue.
  ``MessageQueue.put`` blocks while the pipe is full (a frozen interpreter); only that thread
  waits then, and the GUI thread's hand-off is a ``put_nowait`` on a bounded local queue.
- :class:`SocketSender` (a viewer attached by name, ``rt-eda view``): one datagram per
  control to the engine's :class:`ControlRelay` over a Unix socket, sent with
  ``MSG_DONTWAIT``: a full socket buffer drops the control instead of waiting. The relay, a
  thread in the engine, validates each datagram and forwards it to the results queue. The
  attached viewer never holds any lock of the run's queues, so killing it cannot wedge them.

Imports no Qt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import queue
import socket
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rt_eda.core.messages import ControlKey, ControlMessage

__all__ = [
    "CONTROL_KEYS",
    "ControlRelay",
    "ControlSender",
    "QueueSender",
    "SocketSender",
]

log = logging.getLogger(__name__)

CONTROL_KEYS = frozenset(k.value for k in ControlKey)
"""Every key an interpreter may accept at run time (each interpreter checks its own subset)."""

_MAX_DATAGRAM = 512


@runtime_checkable
class ControlSender(Protocol):
    """Where the viewer's controls go. ``send`` never blocks; ``close`` is idempotent."""

    sent: int
    dropped: int

    def send(self, key: str, value: float) -> bool:
        """Hand one control on; False if it had to be dropped."""
        ...

    def close(self) -> None:
        """Stop sending (controls still pending may be lost)."""
        ...


def _check(key: str, value: float) -> float:
    if key not in CONTROL_KEYS:
        raise ValueError(f"control key {key!r} unknown; allowed: {', '.join(sorted(CONTROL_KEYS))}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"control {key}: value {value!r} is not a finite number")
    return value


class QueueSender:
    """Puts controls on the interpreter's results queue from a small daemon thread.

    Parameters
    ----------
    results
        The results queue (anything with ``put``; a :class:`~rt_eda.core.queues.MessageQueue`).
    backlog
        Controls waiting for the thread at most; more are dropped (and counted).

    Notes
    -----
    :meth:`send` is called from the GUI thread and only does a ``put_nowait`` on a local
    bounded queue. If the interpreter stops reading, the thread waits in ``put``, the local
    queue fills, and further controls are dropped: the GUI never waits.
    """

    def __init__(self, results: Any, *, backlog: int = 64) -> None:
        self._results = results
        self._pending: queue.Queue[ControlMessage | None] = queue.Queue(backlog)
        self.sent = 0
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._forward, name="viewer-controls",
                                        daemon=True)
        self._thread.start()

    def send(self, key: str, value: float) -> bool:
        """Queue ``ControlMessage(key, value)`` for the thread; False (dropped) if the
        backlog is full or the sender is closed. Raises ValueError for an unknown key or a
        non-finite value."""
        checked = _check(key, value)
        msg = ControlMessage(ControlKey(key), checked)
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._pending.put_nowait(msg)
        except queue.Full:
            self.dropped += 1
            log.warning("control %s=%g dropped: the interpreter is not reading controls",
                        key, value)
            return False
        return True

    def _forward(self) -> None:
        while True:
            msg = self._pending.get()
            if msg is None:
                return
            try:
                self._results.put(msg)
            except (OSError, ValueError) as exc:  # the run is gone (pipe closed)
                log.warning("control %s=%g not delivered: %s", msg.key, msg.value, exc)
                self.dropped += 1
                continue
            self.sent += 1
            log.info("control sent: %s = %g", msg.key, msg.value)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread after what is pending (waits at most ``timeout``; a thread stuck
        on a frozen interpreter is a daemon and does not keep the process alive)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._pending.put_nowait(None)
        self._thread.join(timeout)


class SocketSender:
    """Sends controls as datagrams to an engine's :class:`ControlRelay` (never blocks).

    Parameters
    ----------
    path
        The relay's socket path (from the session file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.sent = 0
        self.dropped = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, key: str, value: float) -> bool:
        """One datagram ``{"key", "value"}``; False (dropped) when the relay is gone or its
        buffer is full. Raises ValueError for an unknown key or a non-finite value."""
        data = json.dumps({"key": key, "value": _check(key, value)}).encode()
        try:
            self._sock.sendto(data, socket.MSG_DONTWAIT, self.path)
        except OSError as exc:
            self.dropped += 1
            log.warning("control %s=%g dropped: %s", key, value,
                        "engine busy" if exc.errno == errno.EAGAIN else exc)
            return False
        self.sent += 1
        log.info("control sent to %s: %s = %g", self.path, key, value)
        return True

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class ControlRelay:
    """Engine side of :class:`SocketSender`: receives control datagrams on a Unix socket
    and forwards each valid one as a :class:`~rt_eda.core.messages.ControlMessage`.

    Parameters
    ----------
    path
        Socket path to bind (``<session dir>/<pid>.sock``); an old file there is replaced.
        Made ``0600``: only this user can send controls.
    results
        The interpreter's results queue.

    Notes
    -----
    A daemon thread does the receiving and the ``put`` (which may wait while the interpreter
    is busy: only this thread waits). A datagram that is not ``{"key": <known key>,
    "value": <finite number>}`` is logged and dropped, so nothing an attached viewer sends can
    reach the interpreter as an unexpected message. Call :meth:`close` before the engine puts
    its final ``None`` on the results queue.
    """

    def __init__(self, path: str | Path, results: Any) -> None:
        self.path = Path(path)
        self._results = results
        self.forwarded = 0
        self.refused = 0
        self.path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(str(self.path))
            self.path.chmod(0o600)
            self._sock.settimeout(0.2)
        except OSError:
            self._sock.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="control-relay", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(_MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            msg = self._parse(data)
            if msg is None:
                self.refused += 1
                continue
            try:
                self._results.put(msg)
            except (OSError, ValueError) as exc:
                log.warning("control %s=%g not forwarded: %s", msg.key, msg.value, exc)
                return
            self.forwarded += 1
            log.info("control from an attached viewer: %s = %g", msg.key, msg.value)

    @staticmethod
    def _parse(data: bytes) -> ControlMessage | None:
        try:
            obj = json.loads(data)
            key, value = str(obj["key"]), float(obj["value"])
            value = _check(key, value)
            return ControlMessage(ControlKey(key), value)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("control datagram refused (%s): %r", exc, data[:100])
            return None

    def close(self) -> None:
        """Stop the thread, close and remove the socket (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(1.0)
        self._sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ControlRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
