"""Channels between processes that leave nothing behind: a message queue and a stop event.

Both are made of anonymous pipes and nothing else. ``multiprocessing.Queue``, ``Lock`` and
``Event`` are built on *named* POSIX semaphores (``/dev/shm/sem.mp-*``) that only a clean exit
unlinks: when a run's whole process group is SIGKILLed (``kill -9 -PGID``), resource tracker
included, they stay, and their names say nothing about whose they were, so no later run can
sweep them. A pipe goes with the last process holding it.

:class:`MessageQueue`: no feeder thread, no lock.
    ``multiprocessing.Queue`` hands every ``put`` to a feeder thread, which must win the GIL
    before the message leaves the process: in a worker whose main thread runs Python code, a
    ``put`` can wait a whole GIL switch interval (5 ms), and messages of different workers
    arrive out of order. ``MessageQueue.put`` writes the pickled message to the pipe itself,
    so it is on its way when ``put`` returns. No lock either: Linux writes at most
    ``PIPE_BUF`` (4096) bytes to a pipe atomically, never interleaved with another writer's
    bytes, and every message goes out as frames of at most ``PIPE_BUF`` bytes, each with its
    sender (pid, thread id), its offset in the message and the message's length. A message
    that fits one frame (every result, command and row; nearly every log record) costs one
    ``write``; a larger one (a role's final statistics, a traceback) is cut into frames that
    the consumer puts back together per sender, so messages of several producers never mix.
    Measured on the 2-core development machine against the queue it replaced (a pipe
    written under a ``multiprocessing.Lock``, read through ``Connection.poll``): put -> get
    between two spawned processes, a small message every 1 ms, p50 106-117 us before,
    66-83 us after (3 runs of 3,000 each; ``poll`` on a registered ``select.poll`` instead
    of a selector built per call); put + get in one process 17-18 us before, 7.3-7.6 us after.

:class:`StopEvent`: set once, by its creator.
    ``set`` writes one byte to a pipe that nobody reads; ``is_set`` polls the read end. Only
    the read end is handed to other processes, so when the creator (the engine) dies the read
    end reaches end-of-file and polls readable too: a role sees the engine's death as a stop.

Same API as ``multiprocessing.Queue`` / ``Event`` where callers use it (``put``,
``put_nowait``, ``get(timeout=...)``, ``get_nowait``, ``empty``; :class:`queue.Empty` on
timeout; ``set``, ``is_set``, ``wait``), so callers' habits keep working, and both work as the
queue of :class:`logging.handlers.QueueHandler` / ``QueueListener``. Meant for many producers
and one consumer process. A pipe holds 64 KiB: ``put`` (and ``put_nowait``) blocks while the
consumer is that far behind. Linux only (``PIPE_BUF`` atomicity, ``poll``).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import struct
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.reduction import ForkingPickler
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Channel", "MessageQueue", "Sender", "StopEvent", "StopFlag"]

log = logging.getLogger(__name__)

# Frame header: payload bytes in this frame, offset of the payload in the message, message
# length, sender pid, sender thread id (Linux thread ids are unique machine-wide).
_HEAD = struct.Struct("<IIIII")
_FRAME = select.PIPE_BUF
_PAYLOAD = _FRAME - _HEAD.size
_MAX_MESSAGE = 0xFFFFFFFF


T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Sender(Protocol[T_contra]):
    """The producer's side of a queue of ``T`` (a :class:`MessageQueue`, a
    ``multiprocessing.Queue`` or a ``queue.Queue`` in tests)."""

    def put(self, obj: T_contra, /) -> None:
        """Send one message."""
        ...

    def put_nowait(self, obj: T_contra, /) -> None:
        """Send one message (a :class:`MessageQueue` never waits longer than ``put``)."""
        ...


class Channel(Sender[T], Protocol[T]):
    """Both sides of a queue of ``T``: what a role holds when it reads the queue."""

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The next message; :class:`queue.Empty` after ``timeout`` s."""
        ...

    def get_nowait(self) -> T:
        """The next message, or :class:`queue.Empty` at once."""
        ...

    def empty(self) -> bool:
        """True if nothing is waiting (a snapshot)."""
        ...


class StopFlag(Protocol):
    """What a role polls to know the run is ending (a :class:`StopEvent`; a
    ``threading.Event`` in tests)."""

    def is_set(self) -> bool:
        """True once the run is stopping."""
        ...


def _ms(timeout: float | None) -> float | None:
    """A ``poll`` timeout in milliseconds (None: wait for ever)."""
    return None if timeout is None else max(0.0, timeout) * 1e3


class MessageQueue(Generic[T]):
    """A queue of picklable messages of type ``T`` between processes (see the module
    docstring). Type it where it is made: ``MessageQueue[Result](ctx)``.

    ``put`` may be called from any thread of any process holding the queue; it never takes a
    lock and never waits on another thread. ``get`` is for one consumer process (its threads
    take turns on an ordinary thread lock).

    Parameters
    ----------
    ctx
        The multiprocessing context whose ``Pipe`` carries the messages (its file descriptors
        travel to spawned children when the queue is passed to them).
    """

    def __init__(self, ctx: BaseContext) -> None:
        reader, writer = ctx.Pipe(duplex=False)
        self._reader: Connection = reader
        self._writer: Connection = writer
        self._local()

    def _local(self) -> None:
        """Per-process state (not pickled)."""
        self._rfd = self._reader.fileno()
        self._wfd = self._writer.fileno()
        self._poller = select.poll()
        self._poller.register(self._rfd, select.POLLIN)
        self._get_lock = threading.Lock()
        self._partial: dict[tuple[int, int], bytearray] = {}
        self.dropped = 0  # messages cut short by their sender (see _frame)

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader, "_writer": self._writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reader = state["_reader"]
        self._writer = state["_writer"]
        self._local()

    # -- producers ---------------------------------------------------------------------------
    def put(self, obj: T, /) -> None:
        """Send ``obj`` (pickled now, in the caller's thread).

        Atomic with respect to every other producer: the message arrives whole or (if this
        process dies half-way through a message of more than one frame) not at all. Blocks
        while the pipe is full; raises ``ValueError`` for a message of 4 GiB or more.
        """
        data = ForkingPickler.dumps(obj)
        total = len(data)
        pid, tid = os.getpid(), threading.get_native_id()
        if total <= _PAYLOAD:
            self._write(_HEAD.pack(total, 0, total, pid, tid) + data)
            return
        if total > _MAX_MESSAGE:
            raise ValueError(f"a message of {total} bytes is too large for a MessageQueue "
                             f"(at most {_MAX_MESSAGE})")
        view = memoryview(data)
        for offset in range(0, total, _PAYLOAD):
            part = view[offset:offset + _PAYLOAD]
            self._write(_HEAD.pack(len(part), offset, total, pid, tid) + part)

    put_nowait = put

    def _write(self, frame: bytes) -> None:
        # At most PIPE_BUF bytes to a blocking pipe: written whole or not at all.
        written = os.write(self._wfd, frame)
        if written != len(frame):  # cannot happen on Linux; never send a torn frame silently
            raise OSError(f"short write of a message frame: {written} of {len(frame)} bytes")

    # -- the consumer ------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The next message; raises :class:`queue.Empty` if none is complete within
        ``timeout`` seconds (at once with ``block=False``; never with ``timeout=None``).

        Raises ``EOFError`` when every process holding the queue has closed it.
        """
        if not block:
            timeout = 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._get_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise queue.Empty
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if not self._poller.poll(_ms(left)):
                    raise queue.Empty
                message = self._frame()
                if message is not None:
                    obj: T = ForkingPickler.loads(message)
                    return obj
        finally:
            self._get_lock.release()

    def get_nowait(self) -> T:
        """The next message, or :class:`queue.Empty` at once."""
        return self.get(block=False)

    def _read(self, n: int) -> bytes:
        data = os.read(self._rfd, n)
        while len(data) < n:  # a frame is in the pipe whole; this loop is only a guard
            more = os.read(self._rfd, n - len(data))
            if not more:
                raise EOFError("message queue closed by every sender")
            data += more
        return data

    def _frame(self) -> bytes | None:
        """Read one frame; the message when it completes one, else None."""
        head = self._read(_HEAD.size)
        size, offset, total, pid, tid = _HEAD.unpack(head)
        payload = self._read(size) if size else b""
        if offset == 0 and size == total:
            return payload
        key = (pid, tid)
        buf = self._partial.get(key)
        if offset == 0:
            if buf is not None:
                self._drop(key, "a new message began before the last one ended")
            buf = self._partial[key] = bytearray()
        if buf is None or len(buf) != offset:
            # The sender's thread left a message half-sent (a signal handler raised during
            # its put and it went on to send others): drop what cannot be completed.
            self._drop(key, f"frame at offset {offset} does not follow {len(buf or b'')}")
            return None
        buf += payload
        if len(buf) < total:
            return None
        del self._partial[key]
        return bytes(buf)

    def _drop(self, key: tuple[int, int], why: str) -> None:
        self._partial.pop(key, None)
        self.dropped += 1
        log.warning("message queue: dropped a message from pid %d thread %d: %s", *key, why)

    def empty(self) -> bool:
        """True if no byte is waiting (a snapshot; another process may put one now)."""
        return not self._poller.poll(0)

    def close(self) -> None:
        """Close both ends in this process."""
        self._reader.close()
        self._writer.close()


class StopEvent:
    """An event that its creator sets once and every other process polls (module docstring).

    ``set`` is for the creating process only; ``is_set`` and ``wait`` work anywhere, from any
    number of threads at once. The
    event also reads as set in a process that outlives the creator (end of file on the pipe).
    There is no ``clear``: a run stops once.

    Parameters
    ----------
    ctx
        The multiprocessing context whose ``Pipe`` carries the event.
    """

    def __init__(self, ctx: BaseContext) -> None:
        reader, writer = ctx.Pipe(duplex=False)
        self._reader: Connection = reader
        self._writer: Connection | None = writer
        self._local()

    def _local(self) -> None:
        # one poll object per thread: a select.poll may not be polled by two threads at once
        # (RuntimeError: concurrent poll() invocation; the bridge's lanes and its main thread
        # all ask whether to stop)
        self._threads = threading.local()
        self._set_here = False

    def _poller(self) -> select.poll:
        poller: select.poll | None = getattr(self._threads, "poller", None)
        if poller is None:
            poller = self._threads.poller = select.poll()
            poller.register(self._reader.fileno(), select.POLLIN)
        return poller

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader}  # never the write end: the creator's death is EOF

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reader = state["_reader"]
        self._writer = None
        self._local()

    def set(self) -> None:
        """Set the event for every process (creator only; a second call does nothing)."""
        if self._writer is None:
            raise RuntimeError("only the process that created a StopEvent may set it")
        if not self._set_here:
            self._set_here = True
            self._writer.send_bytes(b"\1")

    def is_set(self) -> bool:
        """True once the creator has set the event, or has died (one ``poll``, no wait)."""
        return bool(self._poller().poll(0))

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the event is set (or the creator dies); False after ``timeout`` s."""
        return bool(self._poller().poll(_ms(timeout)))

    def close(self) -> None:
        """Close this process's ends."""
        self._reader.close()
        if self._writer is not None:
            self._writer.close()
