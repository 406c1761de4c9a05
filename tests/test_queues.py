"""rt_eda.core.queues: a message queue and a stop event made of pipes only (nothing named).

Every process is started with ``spawn`` (as in the engine) and is killed in ``finally``.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import logging.handlers
import multiprocessing as mp
import os
import queue
import signal
import termios
import threading
import time
from collections.abc import Iterator
from typing import Any

import proc_tools
import pytest
import queue_procs

from rt_eda.core.queues import MessageQueue, StopEvent

CTX = mp.get_context("spawn")


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def start(procs: list[Any], target: Any, *args: object, daemon: bool = True) -> Any:
    p = CTX.Process(target=target, args=args, daemon=daemon)
    p.start()
    procs.append(p)
    return p


def test_nothing_named_is_created() -> None:
    before = proc_tools.shm_mapped()
    q, stop = MessageQueue(CTX), StopEvent(CTX)
    q.put("x")
    assert q.get(timeout=5) == "x"
    stop.set()
    assert stop.is_set()
    assert proc_tools.shm_mapped() == before  # a multiprocessing.Lock would map /dev/shm/sem.*
    lock = CTX.Lock()  # the check sees one
    assert any(f.startswith("/dev/shm/sem.") for f in proc_tools.shm_mapped() - before)
    del lock
    q.close()
    stop.close()


def test_many_producers_every_message_whole_and_in_order(procs: list[Any]) -> None:
    # 3 processes x 3 threads, a third of the messages longer than a pipe's 4 KiB atomic
    # write (up to 200 kB: dozens of frames), all at once: nothing lost, mixed or reordered.
    q = MessageQueue(CTX)
    go = StopEvent(CTX)
    producers, threads, n = 3, 3, 60
    for p in range(producers):
        start(procs, queue_procs.produce, q, p, n, threads, go)
    go.set()
    got: dict[tuple[int, int], list[int]] = {}
    big = 0
    for _ in range(producers * threads * n):
        producer, thread, index, data = q.get(timeout=60)
        assert data == queue_procs.payload(producer * 100 + thread, index)
        got.setdefault((producer, thread), []).append(index)
        big += len(data) > 4096
    assert all(indices == list(range(n)) for indices in got.values())
    assert len(got) == producers * threads
    assert big > 0 and q.dropped == 0
    assert q.empty()
    with pytest.raises(queue.Empty):
        q.get_nowait()


def _bytes_waiting(q: MessageQueue) -> int:
    count = array.array("i", [0])
    fcntl.ioctl(q._rfd, termios.FIONREAD, count)
    return count[0]


def test_a_producer_killed_mid_message_costs_only_that_message(procs: list[Any]) -> None:
    q, out = MessageQueue(CTX), MessageQueue(CTX)
    # 200 kB do not fit in the pipe (64 KiB): nobody reads, so the producer blocks half-way.
    victim = start(procs, queue_procs.put_forever, q, 200_000, out)
    assert out.get(timeout=60) == victim.pid
    deadline = time.monotonic() + 60
    while _bytes_waiting(q) < 60_000:
        assert time.monotonic() < deadline, "the producer never filled the pipe"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)  # a message half-sent, the pipe full of its frames
    victim.join(timeout=10)
    later = threading.Thread(target=lambda: [q.put("after"), q.put(b"z" * 9000)])
    later.start()
    assert q.get(timeout=30) == "after"  # the half-sent frames are read and set aside
    assert q.get(timeout=30) == b"z" * 9000
    later.join()
    assert q.empty() and q.dropped == 0
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def test_get_times_out_and_waits_for_a_late_message() -> None:
    q = MessageQueue(CTX)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.04
    timer = threading.Timer(0.1, q.put, args=({"late": True},))
    timer.start()
    assert q.get(timeout=30) == {"late": True}
    timer.join()


def test_stop_event_in_another_process_and_when_its_creator_dies(procs: list[Any]) -> None:
    # Set by its creator: a watcher wakes; only the creator may set it.
    out = MessageQueue(CTX)
    stop = StopEvent(CTX)
    watcher = start(procs, queue_procs.watch, stop, out)
    assert out.get(timeout=60) == ("pid", watcher.pid)
    assert out.get(timeout=10) == ("set at start", False)
    kind, message = out.get(timeout=10)
    assert kind == "set refused" and "only the process that created" in message
    stop.set()
    assert out.get(timeout=10) == ("woken", True)
    assert out.get(timeout=10) == ("set", True)
    # Its creator SIGKILLed: the watcher reads the event as set (end of file on the pipe).
    creator = start(procs, queue_procs.create_stop_and_watcher, out, daemon=False)
    kind, pid = out.get(timeout=60)
    assert kind == "pid"
    try:
        assert out.get(timeout=10) == ("set at start", False)
        assert out.get(timeout=10)[0] == "set refused"
        os.kill(creator.pid, signal.SIGKILL)
        assert out.get(timeout=10) == ("woken", True)
        assert out.get(timeout=10) == ("set", True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the watcher is the dead creator's child


def test_log_records_through_a_queue_handler(procs: list[Any]) -> None:
    q = MessageQueue(CTX)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    listener = logging.handlers.QueueListener(q, Keep())
    listener.start()
    try:
        child = start(procs, queue_procs.log_through, q, 20_000)
        child.join(timeout=60)
        assert child.exitcode == 0
    finally:
        listener.stop()  # puts the sentinel through the same queue
    assert [r.levelname for r in records] == ["INFO", "WARNING"]
    assert records[0].getMessage() == "short record"
    assert records[1].getMessage() == "long record " + "y" * 20_000


def test_stop_event_polled_by_many_threads_at_once() -> None:
    """The bridge's lanes and its main thread all ask whether to stop: one shared poll
    object raised ``RuntimeError: concurrent poll() invocation`` (lanes died mid-run)."""
    stop = StopEvent(CTX)
    errors: list[BaseException] = []
    woken: list[bool] = []

    def poll_hard() -> None:
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and not stop.is_set():
                stop.wait(0.0005)
            woken.append(stop.wait(10))
        except BaseException as exc:  # noqa: BLE001 - the test reports every error
            errors.append(exc)

    threads = [threading.Thread(target=poll_hard) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert woken == [True] * 8
    stop.close()
