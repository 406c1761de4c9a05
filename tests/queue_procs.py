"""Process bodies for the queue tests (importable by spawned children)."""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import threading
import time
from typing import Any

from rt_eda.core.queues import MessageQueue, StopEvent


def payload(producer: int, index: int) -> bytes:
    """Message ``index`` of ``producer``: a size that varies from a few bytes to 3 pipe
    buffers' worth (many messages need several frames), content that depends on both."""
    size = (index * 7919 + producer * 104729) % 200_000 if index % 3 == 0 else index % 300
    seed = hashlib.sha256(f"{producer}:{index}".encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def produce(q: MessageQueue, producer: int, n: int, threads: int, go: Any) -> None:
    """Put ``n`` messages from each of ``threads`` threads: (producer, thread, index, data)."""
    go.wait()

    def body(t: int) -> None:
        who = producer * 100 + t
        for i in range(n):
            q.put((producer, t, i, payload(who, i)))

    workers = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def put_forever(q: MessageQueue, size: int, out: MessageQueue) -> None:
    """Report this pid, then put messages of ``size`` bytes until killed (the pipe fills)."""
    out.put(os.getpid())
    while True:
        q.put(b"x" * size)


def watch(stop: StopEvent, out: MessageQueue) -> None:
    """Report whether ``stop`` reads as set, then wait for it and report again."""
    out.put(("pid", os.getpid()))
    out.put(("set at start", stop.is_set()))
    try:
        stop.set()
    except RuntimeError as exc:
        out.put(("set refused", str(exc)))
    out.put(("woken", stop.wait(60.0)))
    out.put(("set", stop.is_set()))


def create_stop_and_watcher(out: MessageQueue) -> None:
    """Create a StopEvent, start a watcher process with it, then hang (the test SIGKILLs this
    process, the event's creator)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop = StopEvent(ctx)
    watcher = ctx.Process(target=watch, args=(stop, out))
    watcher.start()
    time.sleep(120)


def log_through(q: MessageQueue, size: int) -> None:
    """Log one short record and one of ``size`` characters through a QueueHandler."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(logging.INFO)
    logging.getLogger("child").info("short record")
    logging.getLogger("child").warning("long record %s", "y" * size)
