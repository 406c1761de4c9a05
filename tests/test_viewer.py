"""The live viewer: read-only feed, drawing, controls, session files, the viewer role.

Headless: ``QT_QPA_PLATFORM=offscreen`` (set here if unset). Every test builds its own stack
ring, network-image ring and decision trace, fills them from a producer thread with frames
that change, and unlinks them in the fixture. Set ``RT_EDA_VIEWER_SCREENSHOT=DIR`` to keep
the screenshot the window test takes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from rt_eda.config import Config, load_config
from rt_eda.errors import RingClosedError, RingOverrunError
from rt_eda.messages import ControlMessage, RoleEventKind
from rt_eda.process import RoleChannels
from rt_eda.queues import MessageQueue
from rt_eda.shm import DecisionTrace, StackRing, StackSpec
from rt_eda.viewer import (
    ControlRelay,
    LiveFeed,
    QueueSender,
    SocketSender,
    find_sessions,
    read_session,
    remove_session,
    write_session,
)
from rt_eda.viewer._raster import Raster, visible_block

CTX = mp.get_context("spawn")
SPEC = StackSpec(2, 1, 96, 128, "uint16")
NET = StackSpec(1, 1, 48, 64, "float32")


@dataclass
class Run:
    ring: StackRing
    out: StackRing
    trace: DecisionTrace


def frame_for(seq: int, spec: StackSpec = SPEC) -> np.ndarray:
    """A stack whose content moves with ``seq``: a bright blob on a ramp, pixel (0, 0) = seq."""
    yy, xx = np.mgrid[0:spec.height, 0:spec.width]
    cx = (seq * 3) % spec.width
    cy = spec.height / 2 + spec.height / 4 * math.sin(seq / 7)
    blob = 3000 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 8.0**2))
    stack = np.empty(spec.shape, dtype=spec.np_dtype)
    stack[0, 0] = (200 + xx + blob).astype(spec.np_dtype)
    stack[1, 0] = (100 + yy * 2 + blob[::-1]).astype(spec.np_dtype)
    stack[:, :, 0, 0] = seq % 65536
    return stack


class Producer(threading.Thread):
    """Publishes stacks, a network image per stack, and trace rows, every ``period_s``."""

    def __init__(self, run: Run, period_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.period_s = period_s
        self.halt = threading.Event()
        self.published = 0

    def run(self) -> None:
        ring, out, trace = self.run_.ring, self.run_.out, self.run_.trace
        fast = 0.0
        while not self.halt.is_set():
            try:
                with ring.write_slot() as slot:
                    seq = slot.seq
                    slot.pixels[...] = frame_for(seq)
                    slot.frame_times[:] = time.monotonic()
                with out.write_slot(seq) as img:
                    img.pixels[0, 0] = np.linspace(0, seq % 10, NET.height * NET.width,
                                                   dtype=np.float32).reshape(NET.height,
                                                                              NET.width)
            except RingOverrunError:
                continue
            except RingClosedError:
                return
            self.published += 1
            decision = 0.5 + 0.4 * math.sin(seq / 5)
            t_exp = time.monotonic() - 0.004
            if decision > 0.8 and not fast:
                fast = 1.0
                trace.append(seq, 0.0, time.monotonic(), math.nan, 0.05, fast, 0, 1)
            elif decision < 0.2 and fast:
                fast = 0.0
                trace.append(seq, 0.0, time.monotonic(), math.nan, 0.5, fast, 0, 1)
            trace.append(seq, t_exp, time.monotonic(), decision, 0.05 if fast else 0.5,
                         fast, 1 + seq % 2, 0)
            time.sleep(self.period_s)


@pytest.fixture
def shm_run() -> Iterator[Run]:
    """A stack ring, a network-image ring and a trace, unlinked at the end."""
    ring = StackRing.create(SPEC, 6)
    out = StackRing.create(NET, 8)
    trace = DecisionTrace.create(1024)
    try:
        yield Run(ring, out, trace)
    finally:
        for r in (ring, out):
            r.shutdown()
            r.close()
            r.unlink()
        trace.close()
        trace.unlink()


@pytest.fixture
def producer(shm_run: Run) -> Iterator[Producer]:
    p = Producer(shm_run)
    p.start()
    try:
        yield p
    finally:
        p.halt.set()
        p.join(5)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- the read side (no Qt) -------------------------------------------------------------------
def test_feed_copies_the_newest_stack_without_claiming_or_pinning(shm_run: Run,
                                                                   producer: Producer) -> None:
    with LiveFeed(shm_run.ring.name, shm_run.out.name, shm_run.trace.name) as feed:
        seen = set()
        deadline = time.monotonic() + 5
        while len(seen) < 20 and time.monotonic() < deadline:
            if feed.poll_stack():
                seq = feed.stack_seq
                np.testing.assert_array_equal(feed.stack, frame_for(seq))  # never torn
                seen.add(seq)
            if feed.poll_image():
                assert feed.image is not None
                assert feed.image[0, 0, -1, -1] == pytest.approx(feed.image_seq % 10)
                if feed.image_stack_ok:
                    assert feed.image_stack is not None
                    assert int(feed.image_stack[0, 0, 0, 0]) == feed.image_seq % 65536
            time.sleep(0.003)
        assert len(seen) >= 20
        assert feed.poll_trace() > 0
        assert feed.decisions.n > 0 and feed.fast.n >= feed.decisions.n
        st = feed.status()
        assert st.decisions == feed.decisions.n
        assert st.workers_seen == 2
        assert 0 < st.latency_p50_ms < 1000
    stats = shm_run.ring.statistics()
    assert stats.claimed == 0 and stats.slots_claimed == 0  # the viewer never claimed


def test_feed_history_keeps_the_newest_in_a_fixed_buffer(shm_run: Run) -> None:
    for i in range(50):
        shm_run.trace.append(i, 0.0, float(i), float(i), 1.0, float(i % 2), 1, 0)
    with LiveFeed(shm_run.ring.name, "", shm_run.trace.name, history=16) as feed:
        buf = feed.decisions._t
        assert feed.poll_trace() == 16  # only what the history holds
        np.testing.assert_array_equal(feed.decisions.v, np.arange(34, 50))
        for i in range(50, 55):
            shm_run.trace.append(i, 0.0, float(i), float(i), 1.0, 0.0, 1, 0)
        assert feed.poll_trace() == 5
        np.testing.assert_array_equal(feed.decisions.v, np.arange(39, 55))
        assert feed.decisions._t is buf  # same buffer, no reallocation
        assert not feed.has_images and not feed.poll_image()


def test_visible_block_decimates_to_screen_pixels_and_crops() -> None:
    whole = visible_block(2048, 2048, (-10, 2060), (-10, 2060), 3.2)
    assert (whole.y0, whole.y1, whole.x0, whole.x1, whole.step) == (0, 2048, 0, 2048, 3)
    assert whole.shape == (683, 683)
    zoom = visible_block(2048, 2048, (100.5, 300.2), (1000, 1100), 0.4)
    assert (zoom.x0, zoom.x1, zoom.y0, zoom.y1, zoom.step) == (100, 302, 1000, 1101, 1)
    aligned = visible_block(2048, 2048, (101, 900), (7, 900), 4.0)
    assert aligned.x0 == 100 and aligned.y0 == 4  # aligned to the step: no shimmer
    outside = visible_block(100, 100, (500, 600), (500, 600), 1.0)
    assert outside.shape == (100, 100)
    raster = Raster(2048, 2048, np.uint16)
    src = np.arange(2048 * 2048, dtype=np.uint32).reshape(2048, 2048).astype(np.uint16)
    view = raster.fill(src, zoom)
    np.testing.assert_array_equal(view, src[1000:1101, 100:302])
    assert np.shares_memory(view, raster.fill(src, whole))  # one buffer, reused


# -- controls --------------------------------------------------------------------------------
class _FrozenQueue:
    """A results queue whose reader is frozen: ``put`` never returns."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got: list[object] = []

    def put(self, obj: object) -> None:
        self.release.wait()
        self.got.append(obj)


def test_queue_sender_never_blocks_on_a_frozen_interpreter() -> None:
    frozen = _FrozenQueue()
    sender = QueueSender(frozen, backlog=4)
    t0 = time.perf_counter()
    results = [sender.send("upper_threshold", 0.5 + i / 100) for i in range(50)]
    assert time.perf_counter() - t0 < 0.5
    assert results[:4] == [True] * 4 and not all(results)
    assert sender.dropped >= 50 - 5
    with pytest.raises(ValueError, match="unknown"):
        sender.send("exposure", 1.0)
    with pytest.raises(ValueError, match="finite"):
        sender.send("lower_threshold", math.nan)
    frozen.release.set()
    sender.close()
    assert frozen.got[0] == ControlMessage("upper_threshold", 0.5)


def test_control_relay_forwards_valid_datagrams_only(tmp_path: Path) -> None:
    results = MessageQueue(CTX)
    path = tmp_path / "c.sock"
    with ControlRelay(path, results) as relay:
        assert path.stat().st_mode & 0o777 == 0o600
        sender = SocketSender(path)
        assert sender.send("lower_threshold", 0.25)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        raw.sendto(b"not json", str(path))
        raw.sendto(b'{"key": "rm -rf", "value": 1}', str(path))
        raw.close()
        assert sender.send("paused", 1.0)
        assert results.get(timeout=5) == ControlMessage("lower_threshold", 0.25)
        assert results.get(timeout=5) == ControlMessage("paused", 1.0)
        wait_for(lambda: relay.refused == 2)
        sender.close()
    assert not path.exists()
    gone = SocketSender(path)
    assert not gone.send("paused", 0.0) and gone.dropped == 1  # no engine: dropped, no wait
    gone.close()
    results.close()


# -- session files ---------------------------------------------------------------------------
def test_session_files_round_trip_and_stale_ones_are_ignored(tmp_path: Path,
                                                             shm_run: Run) -> None:
    config = load_config(None)
    live = write_session(tmp_path, shm_run.ring.name, shm_run.out.name, shm_run.trace.name,
                         config, os.getpid(), control="/x.sock")
    assert live == tmp_path / f"{os.getpid()}.json"
    session = read_session(live)
    assert session.ring == shm_run.ring.name and session.control == "/x.sock"
    assert session.config == config
    dead = CTX.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    assert dead.pid is not None
    stale_pid = write_session(tmp_path, shm_run.ring.name, "", "", config, dead.pid)
    stale_ring = write_session(tmp_path / "other.json", "rt_eda_1_ring_00000000", "", "",
                               config, os.getpid())
    (tmp_path / "junk.json").write_text("{")
    found = find_sessions(tmp_path)
    assert [s.path for s in found] == [live]
    assert not stale_pid.exists() and not stale_ring.exists()  # pruned
    remove_session(live)
    remove_session(live)  # idempotent
    assert find_sessions(tmp_path) == []
    assert find_sessions(tmp_path / "absent") == []


def test_session_dir_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rt_eda.viewer import session_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = session_dir(create=True)
    assert folder == tmp_path / "rt-eda" and folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o755)
    with pytest.raises(PermissionError, match="mode 755"):
        session_dir()


# -- the window ------------------------------------------------------------------------------
def _image_region(window: Any) -> np.ndarray:
    import pyqtgraph as pg

    grab = window.graphics.grab().toImage()
    arr = pg.functions.ndarray_from_qimage(grab)
    r = window.view.sceneBoundingRect()
    y0, x0 = max(0, int(r.top())), max(0, int(r.left()))
    region: np.ndarray = arr[y0:int(r.bottom()), x0:int(r.right()), :3]
    return region.astype(np.int16)


def test_window_shows_changing_frames_decisions_and_sends_controls(
        qtbot: Any, shm_run: Run, producer: Producer, tmp_path: Path) -> None:
    from rt_eda.viewer._window import ViewerWindow

    config = load_config(None)
    results = MessageQueue(CTX)
    sender = QueueSender(results)
    feed = LiveFeed(shm_run.ring.name, shm_run.out.name, shm_run.trace.name)
    window = ViewerWindow(feed, config.interpreter, max_fps=30, sender=sender, workers=2)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    try:
        qtbot.waitUntil(lambda: window.frames_shown >= 3, timeout=10_000)
        first = _image_region(window)
        assert first.std() > 5, "the rendered frame is blank"
        n0 = feed.decisions.n
        shown0 = window.frames_shown
        qtbot.waitUntil(lambda: window.frames_shown >= shown0 + 10, timeout=10_000)
        qtbot.wait(100)
        second = _image_region(window)
        assert np.abs(second - first).mean() > 0.5, "the rendered frame does not change"
        assert feed.decisions.n > n0, "the decision plot does not grow"
        x, _y = window.curve.getData()
        assert x is not None and len(x) == feed.decisions.n
        assert window.overlay.isVisible() and window.overlay.image is not None
        # overlay drawn on the very stack its network image came from
        assert window._shown_key[0] == feed.image_seq or not feed.image_stack_ok

        # a threshold edit goes to the interpreter as a ControlMessage
        window.upper_box.setValue(0.7)
        window.upper_box.editingFinished.emit()
        assert results.get(timeout=5) == ControlMessage("upper_threshold", 0.7)
        assert window.upper_line.value() == pytest.approx(0.7)
        # a value the interpreter would refuse is refused here, and not sent
        window.lower_box.setValue(0.9)
        window.lower_box.editingFinished.emit()
        assert "refused" in window.control_note.text()
        assert window.lower_box.value() == pytest.approx(config.interpreter.lower_threshold)
        window.pause_button.click()
        assert results.get(timeout=5) == ControlMessage("paused", 1.0)
        window.slow_box.setValue(2.0)
        window.slow_box.editingFinished.emit()
        assert results.get(timeout=5) == ControlMessage("slow_interval", 2.0)
        assert results.empty()

        qtbot.waitUntil(lambda: window.last_status is not None
                        and window.last_status.decisions > 0, timeout=5000)
        assert "acquired" in window.status_label.text()
        assert window.auto_contrast.isChecked()  # our own level changes keep it on
        window.histogram.setLevels(0, 5000)  # a person sets the contrast
        window.histogram.sigLevelChangeFinished.emit(window.histogram)
        assert not window.auto_contrast.isChecked()
        qtbot.waitUntil(lambda: window.frames_shown >= shown0 + 15, timeout=10_000)
        assert window.image.levels is not None
        assert tuple(window.image.levels) == (0.0, 5000.0)  # fixed contrast is kept
        out_dir = Path(os.environ.get("RT_EDA_VIEWER_SCREENSHOT", tmp_path))
        out_dir.mkdir(parents=True, exist_ok=True)
        shot = out_dir / "viewer.png"
        assert window.grab().save(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        window.close()
        results.close()
    assert feed.run_ended  # the window closed the feed
    assert producer.is_alive()  # closing the window ends only the viewer


def test_window_manual_mode_toggle_and_read_only(qtbot: Any, shm_run: Run,
                                                 producer: Producer) -> None:
    from rt_eda.viewer._window import ViewerWindow

    config = load_config(None).with_overrides({"interpreter.kind": "manual"})
    results = MessageQueue(CTX)
    sender = QueueSender(results)
    feed = LiveFeed(shm_run.ring.name, "", shm_run.trace.name)
    window = ViewerWindow(feed, config.interpreter, max_fps=30, sender=sender)
    qtbot.addWidget(window)
    try:
        assert not window.upper_box.isEnabled() and window.mode_button.isEnabled()
        assert not window.overlay_box.isEnabled()  # no network images in this run
        window.mode_button.click()
        assert results.get(timeout=5) == ControlMessage("mode", 1.0)
        window.mode_button.click()
        assert results.get(timeout=5) == ControlMessage("mode", 0.0)
    finally:
        window.close()
        results.close()
    feed2 = LiveFeed(shm_run.ring.name, "", "")
    ro = ViewerWindow(feed2, config.interpreter, sender=None, read_only_reason="attached")
    qtbot.addWidget(ro)
    try:
        assert not ro.controls_group.isEnabled()
        assert "attached" in ro.control_note.text()
    finally:
        ro.close()


def test_attached_viewer_finds_the_session_and_sends_through_the_relay(
        qtbot: Any, shm_run: Run, producer: Producer, tmp_path: Path) -> None:
    from rt_eda.viewer._qt import QtCore, QtWidgets

    from rt_eda.viewer import view
    from rt_eda.viewer._process import _attach
    from rt_eda.viewer._window import ViewerWindow

    results = MessageQueue(CTX)
    relay = ControlRelay(tmp_path / "run.sock", results)
    write_session(tmp_path, shm_run.ring.name, shm_run.out.name, shm_run.trace.name,
                  load_config(None), os.getpid(), control=str(relay.path))
    seen: dict[str, Any] = {}

    def act() -> None:
        windows = [w for w in QtWidgets.QApplication.topLevelWidgets()
                   if isinstance(w, ViewerWindow) and w.isVisible()]
        if not windows or windows[0].frames_shown < 2:
            QtCore.QTimer.singleShot(50, act)
            return
        w = windows[0]
        seen["frames"] = w.frames_shown
        seen["enabled"] = w.controls_group.isEnabled()
        w.lower_box.setValue(0.1)
        w.lower_box.editingFinished.emit()
        w.close()

    try:
        (session,) = find_sessions(tmp_path)
        QtCore.QTimer.singleShot(50, act)
        assert _attach(session, controls=True) == 0  # what the rt-eda view process runs
        assert seen["frames"] >= 2 and seen["enabled"]
        assert results.get(timeout=5) == ControlMessage("lower_threshold", 0.1)
        assert view(pid=1, directory=tmp_path) == 2  # no such run
    finally:
        relay.close()
        results.close()


def test_rt_eda_view_runs_the_window_in_a_child_and_ends_on_sigterm(
        shm_run: Run, producer: Producer, tmp_path: Path, capfd: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    from rt_eda.viewer import view

    caplog.set_level(logging.INFO)  # the child logs at this process's level
    err: list[str] = []

    write_session(tmp_path, shm_run.ring.name, shm_run.out.name, shm_run.trace.name,
                  load_config(None), os.getpid())
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(view(directory=tmp_path)))
    thread.start()
    try:
        wait_for(lambda: len(mp.active_children()) == 1, timeout=30)
        (child,) = mp.active_children()
        wait_for(lambda: err.append(capfd.readouterr().err) or "attached to run" in "".join(err),
                 timeout=60)
        assert "rt-eda-viewer" in Path(f"/proc/{child.pid}/cmdline").read_text()
        time.sleep(1.0)
        assert child.pid is not None
        os.kill(child.pid, 15)
        thread.join(30)
        assert code == [0] and child.exitcode == 0
    finally:
        for c in mp.active_children():
            c.kill()
        thread.join(10)
    assert shm_run.ring.statistics().claimed == 0


# -- the role process ------------------------------------------------------------------------
def _events(q: Any, until: float) -> Iterator[Any]:
    while time.monotonic() < until:
        try:
            yield q.get(timeout=0.1)
        except queue.Empty:
            continue


def test_viewer_role_runs_in_its_own_process_and_leaves_on_stop(shm_run: Run,
                                                                producer: Producer) -> None:
    from rt_eda.viewer import run

    config: Config = load_config(None).with_overrides({"viewer.max_fps": 20.0})
    channels = RoleChannels(events=CTX.Queue(), camera=None, results=MessageQueue(CTX),
                            stop=CTX.Event(), log=CTX.Queue(), ring=shm_run.ring.name,
                            output_ring=shm_run.out.name, trace=shm_run.trace.name,
                            parent_pid=os.getpid())
    proc = CTX.Process(target=run, args=(config, channels), daemon=True)
    proc.start()
    try:
        ready = next((e for e in _events(channels.events, time.monotonic() + 60)
                      if e.role == "viewer"), None)
        assert ready is not None and ready.kind is RoleEventKind.READY, ready
        comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
        assert comm == "rt-eda-viewer"
        published = producer.published
        time.sleep(1.0)
        assert producer.published > published  # the producer is not held up
        channels.stop.set()
        proc.join(20)
        assert proc.exitcode == 0
        stopped = [e for e in _events(channels.events, time.monotonic() + 1)]
        assert [(e.kind, e.detail) for e in stopped] == [(RoleEventKind.STOPPED, "run stopped")]
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        channels.results.close()
