"""A multiprocessing queue for small messages with no feeder thread.

:class:`multiprocessing.Queue` hands every ``put`` to a feeder thread, which must win the GIL
before the message leaves the process: in a worker whose main thread runs Python code, a
``put`` can wait a whole GIL switch interval (5 ms), and messages of different workers arrive
out of order. :class:`MessageQueue` writes the pickled message to the pipe in ``put`` itself
(under a process-shared lock), so a message is on its way when ``put`` returns.

Same API as :class:`multiprocessing.Queue` where it matters (``put``, ``get(timeout=...)``,
``get_nowait``, ``empty``; :class:`queue.Empty` on timeout), so callers' habits keep working.
Meant for many producers and one consumer; messages must be small (a pipe holds ~64 KiB: a
``put`` blocks while it is full).
"""

from __future__ import annotations

import queue
from multiprocessing.context import BaseContext
from typing import Any

__all__ = ["MessageQueue"]


class MessageQueue:
    """A queue for small messages between processes (see the module docstring).

    ``put`` is atomic with respect to other producers (each message is written whole, under a
    lock); ``get`` is meant for one consumer process.
    """

    def __init__(self, ctx: BaseContext) -> None:
        self._reader, self._writer = ctx.Pipe(duplex=False)
        self._wlock = ctx.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader, "_writer": self._writer, "_wlock": self._wlock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def put(self, obj: object) -> None:
        """Send ``obj`` (pickled now, in the caller's thread)."""
        from multiprocessing.reduction import ForkingPickler

        data = bytes(ForkingPickler.dumps(obj))
        with self._wlock:
            self._writer.send_bytes(data)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next message; raises :class:`queue.Empty` if none comes within ``timeout``."""
        if not block:
            timeout = 0.0
        if (timeout is not None or not block) and not self._reader.poll(timeout):
            raise queue.Empty
        from multiprocessing.reduction import ForkingPickler

        return ForkingPickler.loads(self._reader.recv_bytes())

    def get_nowait(self) -> Any:
        """The next message, or :class:`queue.Empty` at once."""
        return self.get(block=False)

    def empty(self) -> bool:
        """True if no message is waiting (a snapshot; another process may put one now)."""
        return not self._reader.poll(0)

    def close(self) -> None:
        """Close both ends in this process."""
        self._reader.close()
        self._writer.close()
