"""The live viewer: read-only feed, drawing, controls, session files, the viewer role, and
the viewer in real runs on a real X server.

The window tests in this process run headless (``QT_QPA_PLATFORM=offscreen``, set here if
unset); each builds its own stack ring, network-image ring and decision trace, fills them
from a producer thread with frames that change, and unlinks them in the fixture.

The end-to-end tests run ``rt-eda run --viewer`` as a subprocess on an Xvfb server that they
start on a free display in :91-:99 (``apt-get install xvfb xdotool``; missing tools skip them,
except under CI, where they fail). They drive the real window from outside as a person would,
with xdotool (move, resize, unmap/map, mouse wheel, every control's key), read back what the
window shows from its state file (``RT_EDA_VIEWER_STATE``), and take screenshots from the X
server. Set ``RT_EDA_VIEWER_SCREENSHOT=DIR`` to keep the screenshots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_helpers import assert_counts_add_up, role_processes, summary

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from rt_eda.core.config import Config, load_config
from rt_eda.core.errors import RingClosedError, RingOverrunError
from rt_eda.core.messages import ControlMessage, RoleEventKind, Stopped
from rt_eda.core.process import RoleChannels
from rt_eda.core.queues import MessageQueue
from rt_eda.live.controls import ControlRelay, QueueSender, SocketSender
from rt_eda.live.feed import LiveFeed
from rt_eda.live.raster import Raster, visible_block
from rt_eda.live.session import find_sessions, read_session, remove_session, write_session
from rt_eda.shm import DecisionTrace, StackRing, StackSpec, list_blocks, sweep_stale_blocks

CTX = mp.get_context("spawn")
SPEC = StackSpec(2, 1, 96, 128, "uint16")
NET = StackSpec(1, 1, 48, 64, "float32")
NO_BOX = (math.nan,) * 4  # a trace row's box columns (y0, x0, y1, x1): none


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


def blob_box(seq: int, spec: StackSpec = SPEC) -> tuple[float, float, float, float]:
    """``(y0, x0, y1, x1)`` of the blob of :func:`frame_for` (an event region's box)."""
    cx = (seq * 3) % spec.width
    cy = spec.height / 2 + spec.height / 4 * math.sin(seq / 7)
    return (float(max(0, int(cy) - 8)), float(max(0, cx - 8)),
            float(min(spec.height, int(cy) + 9)), float(min(spec.width, cx + 9)))


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
                trace.append(seq, 0.0, time.monotonic(), math.nan, 0.05, fast, 0, 1, 0, *NO_BOX)
            elif decision < 0.2 and fast:
                fast = 0.0
                trace.append(seq, 0.0, time.monotonic(), math.nan, 0.5, fast, 0, 1, 0, *NO_BOX)
            # The interpreter's rows for a result: the result (its regions' union box), one
            # row per event region, and an action now and then (issue 16): the feed must
            # take neither of the last two for a decision, a worker or a state change.
            box = blob_box(seq)
            trace.append(seq, t_exp, time.monotonic(), decision, 0.05 if fast else 0.5,
                         fast, 1 + seq % 2, 0, 0, *box)
            trace.append(seq, t_exp, time.monotonic(), 0.9, 0.0, 0.0, 1 + seq % 2, 2, 0, *box)
            if seq % 5 == 0:
                trace.append(seq, 0.0, time.monotonic(), 1.0, 0.0, 1.0 - fast, 3, 3, 0, *box)
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


def wait_state(path: Path, condition: Any, timeout: float = 20.0) -> dict[str, Any]:
    """The viewer window's state file (``RT_EDA_VIEWER_STATE``) once ``condition`` holds."""
    state: dict[str, Any] = {}

    def holds() -> bool:
        nonlocal state
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return bool(condition(state))

    try:
        wait_for(holds, timeout)
    except AssertionError:
        raise AssertionError(f"viewer state never met the condition; last: {state}") from None
    return state


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
        shm_run.trace.append(i, 0.0, float(i), float(i), 1.0, float(i % 2), 1, 0, 0,
                             *NO_BOX)
    with LiveFeed(shm_run.ring.name, "", shm_run.trace.name, history=16) as feed:
        buf = feed.decisions._t
        assert feed.poll_trace() == 16  # only what the history holds
        np.testing.assert_array_equal(feed.decisions.v, np.arange(34, 50))
        for i in range(50, 55):
            shm_run.trace.append(i, 0.0, float(i), float(i), 1.0, 0.0, 1, 0, 0, *NO_BOX)
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
    from rt_eda.live.session import session_dir

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
        second = _image_region(window)
        h, w = min(first.shape[0], second.shape[0]), min(first.shape[1], second.shape[1])
        change = np.abs(second[:h, :w] - first[:h, :w]).mean()  # (the axes may re-layout)
        assert change > 0.5, "the rendered frame does not change"
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
        shot = out_dir / "viewer-offscreen.png"
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
    from rt_eda.roles.viewer import _attach, view
    from rt_eda.viewer._qt import QtCore, QtWidgets
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
        # Spin the event loop once after run_window's own loop returned: left to pytest-qt's
        # teardown, what that loop left posted stops every QTimer of the later tests in this
        # process (a window test after this one never ticked).
        qtbot.wait(1)
        assert seen["frames"] >= 2 and seen["enabled"]
        assert results.get(timeout=5) == ControlMessage("lower_threshold", 0.1)
        assert view(pid=1, directory=tmp_path) == 2  # no such run
    finally:
        relay.close()
        results.close()


def test_rt_eda_view_runs_the_window_in_a_child_and_ends_on_sigterm(
        shm_run: Run, producer: Producer, tmp_path: Path, capfd: Any,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from rt_eda.live.display import STATE_ENV
    from rt_eda.roles.viewer import view

    caplog.set_level(logging.INFO)  # the child logs at this process's level
    err: list[str] = []
    state_path = tmp_path / "state.json"
    monkeypatch.setenv(STATE_ENV, str(state_path))  # the spawned child reads it

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
        # the child is the one drawing: its window shows frames that keep coming
        first = wait_state(state_path, lambda st: st["frames_shown"] >= 2, timeout=60)
        assert first["pid"] == child.pid and first["controls_sent"] == 0
        wait_state(state_path, lambda st: st["frames_shown"] >= first["frames_shown"] + 3)
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
    from rt_eda.roles.viewer import run

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
        wait_for(lambda: producer.published >= published + 20)  # the producer is not held up
        channels.stop.set()
        proc.join(20)
        assert proc.exitcode == 0
        stopped = [e for e in _events(channels.events, time.monotonic() + 1)]
        assert [(e.kind, e.payload) for e in stopped] == [(RoleEventKind.STOPPED,
                                                           Stopped("run stopped"))]
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        channels.results.close()


# -- session folder: what SIGKILLed engines leave ----------------------------------------------
def _dead_pid() -> int:
    dead = CTX.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    assert dead.pid is not None and not Path(f"/proc/{dead.pid}").exists()
    return dead.pid


def test_sweep_removes_only_what_dead_engines_left(tmp_path: Path) -> None:
    from rt_eda.live.session import sweep_sessions

    dead, me = _dead_pid(), os.getpid()
    left = [tmp_path / f"{dead}.json", tmp_path / f"{dead}.sock", tmp_path / f".{dead}-x1.tmp"]
    for path in left[::2]:
        path.write_text("{}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a real socket file, as left
    sock.bind(str(left[1]))
    sock.close()
    live = [tmp_path / f"{me}.json", tmp_path / f"{me}.sock"]
    for path in live:
        path.write_text("{}")
    reused = tmp_path / "1.json"  # pid 1 lives, but started long after this file was written
    reused.write_text("{}")
    os.utime(reused, (1e6, 1e6))
    foreign = [tmp_path / "notes.json", tmp_path / "12ab.sock", tmp_path / f"{dead}.txt"]
    for path in foreign:
        path.write_text("x")
    removed = sweep_sessions(tmp_path)
    assert sorted(removed) == sorted([*left, reused])
    assert not any(p.exists() for p in [*left, reused])
    assert all(p.exists() for p in [*live, *foreign])
    assert sweep_sessions(tmp_path) == []
    assert sweep_sessions(tmp_path / "absent") == []


# -- the viewer in real runs, on a real X server -------------------------------------------------
X_DISPLAYS = range(91, 100)
VIEWER = "rt-eda-viewer"


@dataclass
class XServer:
    """An Xvfb server this test session started (1600 x 1000 x 24)."""

    display: str
    process: subprocess.Popen[bytes]

    def alive(self) -> str:
        """Why this server cannot be used any more, or "" (for failure messages)."""
        if self.process.poll() is not None:
            return f"Xvfb {self.display} exited ({self.process.returncode})"
        if not Path(f"/tmp/.X11-unix/X{self.display[1:]}").exists():
            return f"Xvfb {self.display} runs, but its socket file is gone"
        return ""

    def xdotool(self, *args: str, timeout: float = 30.0) -> str:
        done = subprocess.run(["xdotool", *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "DISPLAY": self.display})
        assert done.returncode == 0, f"xdotool {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout.strip()

    def screenshot(self, path: Path) -> np.ndarray:
        """The whole screen, as the X server has it (not the window's own rendering)."""
        from PIL import ImageGrab

        image = ImageGrab.grab(xdisplay=self.display)
        image.save(path)
        return np.asarray(image)


@pytest.fixture(scope="module")
def xserver() -> Iterator[XServer]:
    """Xvfb on the first free display in :91-:99, ready (``-displayfd``) before use."""
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install xvfb xdotool)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for n in X_DISPLAYS:
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        read, write = os.pipe()
        proc = subprocess.Popen(
            ["Xvfb", f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp",
             "-displayfd", str(write)],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write)
        answer = b""
        deadline = time.monotonic() + 30.0
        # the whole line: Xvfb writes "N" and "\n" apart, and dies if the pipe is gone
        while not answer.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], deadline - time.monotonic())
            chunk = os.read(read, 16) if ready else b""
            if not chunk:
                break
            answer += chunk
        os.close(read)
        if answer.strip() == str(n).encode():
            break
        proc.kill()  # the display was taken meanwhile, or Xvfb did not come up
        proc.wait(10)
    else:
        pytest.fail(f"no free X display in :{X_DISPLAYS[0]}-:{X_DISPLAYS[-1]}")
    try:
        yield XServer(f":{n}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _x_env(x: XServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's terminal on display ``x``: no offscreen platform, and a
    private runtime folder (session files) per test."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "RT_EDA_VIEWER_STATE")}
    env.update(DISPLAY=x.display, XDG_RUNTIME_DIR=str(runtime), **extra)
    return env


def _start_run(tmp_path: Path, env: dict[str, str], *args: str, name: str = "run"
               ) -> tuple[subprocess.Popen[str], Path, Path]:
    """``rt-eda run ARGS`` in the background; stdout and stderr go to files (a pipe nobody
    reads would block the run)."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "rt_eda.cli", "run", *args],
                                cwd=tmp_path, stdout=fo, stderr=fe, text=True, env=env)
    return proc, out, err


def _viewer_pids() -> set[int]:
    return {int(p.split(":", 1)[0]) for p in role_processes() if p.endswith(":" + VIEWER)}


def _viewer_window(x: XServer, pid: int, timeout: float = 180.0) -> str:
    """The X window of viewer process ``pid``, once it is mapped (waits on the X server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = x.xdotool("search", "--sync", "--onlyvisible", "--name", "^rt-eda viewer",
                          timeout=max(1.0, deadline - time.monotonic()))
        for window in found.split():
            if x.xdotool("getwindowpid", window) == str(pid):
                return window
    raise AssertionError(f"no window of viewer {pid} within {timeout} s")


def _wait_viewer(x: XServer, proc: subprocess.Popen[str], other_than: set[int],
                 timeout: float = 180.0) -> int:
    """Pid of a live viewer of this test's run that is not in ``other_than``."""
    pid = 0

    def found() -> bool:
        nonlocal pid
        assert proc.poll() is None, (f"rt-eda ended (exit {proc.returncode}) with no viewer "
                                     f"{x.alive() or '(the X server is fine)'}")
        new = _viewer_pids() - other_than
        pid = min(new) if new else 0
        return bool(pid)

    wait_for(found, timeout)
    return pid


def _assert_left_nothing(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    """No role process of the run lives, no shared memory block of its engine exists, and
    its session folder is empty (other runs on the machine are none of this test's
    business)."""
    wait_for(lambda: not role_processes(), timeout=10)
    assert [name for name, pid in list_blocks() if pid == proc.pid] == []
    assert list((tmp_path / "xdg" / "rt-eda").iterdir()) == []


def _keep_screenshot(x: XServer, tmp_path: Path, name: str) -> np.ndarray:
    out = Path(os.environ.get("RT_EDA_VIEWER_SCREENSHOT", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return x.screenshot(out / name)


def _finish(proc: subprocess.Popen[str], err: Path, timeout: float = 180.0) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"rt-eda did not end; stderr:\n{err.read_text()[-3000:]}") from None
    return err.read_text()


class _Driver:
    """A person at the viewer window: keys, mouse, moving and resizing (through xdotool),
    each action checked against what the window then shows (its state file)."""

    def __init__(self, x: XServer, window: str, state: Path, pid: int) -> None:
        self.x, self.window, self.state, self.pid = x, window, state, pid
        self.round = 0

    def now(self, condition: Any = lambda st: True, timeout: float = 20.0) -> dict[str, Any]:
        return wait_state(self.state, lambda st: st["pid"] == self.pid and condition(st),
                          timeout)

    def resize(self, width: int, height: int) -> dict[str, Any]:
        """Resize as a person drags a corner: again if the first one was lost (the window
        may be applying its own size at that moment)."""
        for _ in range(3):
            self.x.xdotool("windowsize", "--sync", self.window, str(width), str(height))
            try:
                return self.now(lambda s: s["geometry"][2:] == [width, height], timeout=5)
            except AssertionError:
                continue
        return self.now(lambda s: s["geometry"][2:] == [width, height], timeout=1)

    def keys(self, *keys: str) -> None:
        self.x.xdotool("windowfocus", "--sync", self.window)
        self.x.xdotool("key", "--clearmodifiers", *keys)

    def type_value(self, key: str, value: str) -> None:
        self.keys(key, "ctrl+a")
        self.x.xdotool("type", value)
        self.keys("Return")

    def one_round(self) -> None:
        """Every control once, the window moved, resized, hidden and shown, and zoomed."""
        x, w = self.x, self.window
        self.round += 1
        even = self.round % 2 == 0
        st = self.now()
        self.keys("alt+c")
        st = self.now(lambda s, c=st["channel"]: s["channel"] != c)
        self.keys("alt+z")  # one z slice: nothing to change, nothing may break
        self.keys("alt+a")
        st = self.now(lambda s, a=st["auto_contrast"]: s["auto_contrast"] != a)
        for _ in range(2):
            self.keys("alt+n")
            st = self.now(lambda s, o=st["overlay_checked"]: s["overlay_checked"] != o)
        step = -3 if even else 3
        self.keys("alt+o", *["Left" if even else "Right"] * 3)
        st = self.now(lambda s, o=st["opacity"]: s["opacity"] == o + step)
        for key, name, values in (
            ("alt+l", "lower_threshold", ("0.25", "0.3")),
            ("alt+u", "upper_threshold", ("0.5", "0.48")),
            ("alt+m", "min_fast_frames", ("2", "1")),
            ("alt+s", "slow_interval", ("0.8", "1")),
            ("alt+f", "fast_interval", ("0.2", "0.1")),
        ):
            value = values[even]
            self.type_value(key, value)
            st = self.now(lambda s, n=name, v=float(value): float(s[n]) == v)
        self.keys("alt+i")  # manual interval: disabled with the binary interpreter
        self.keys("alt+t")  # manual fast/slow: disabled too
        for paused in (True, False):
            self.keys("alt+p")
            st = self.now(lambda s, p=paused: s["paused"] is p)
        assert st["manual_interval"] is None and st["mode_fast"] is False
        # zoom the frame and the decision plot with the wheel, then Alt+R resets both
        _, _, gw, gh = st["geometry"]
        x.xdotool("mousemove", "--window", w, str(gw // 4), str(gh // 3))
        x.xdotool("click", "--repeat", "3", "4")
        x.xdotool("mousemove", "--window", w, str(gw // 4), str(gh - 90))
        x.xdotool("click", "--repeat", "2", "5")
        zoomed = self.now(lambda s, r=st["view_range"]: s["view_range"] != r
                          and s["follow_y"] is False)
        self.keys("alt+r")
        self.now(lambda s, r=zoomed["view_range"]: s["follow_y"] and s["view_range"] != r)
        # move, resize, hide and show again: every one a full repaint
        width, height = ((900, 650), (1500, 950), (1600, 1000))[self.round % 3]
        x.xdotool("windowmove", w, str(37 * self.round % 200), str(23 * self.round % 120))
        st = self.resize(width, height)
        x.xdotool("windowunmap", "--sync", w)
        x.xdotool("windowmap", "--sync", w)
        self.now(lambda s, d=st["draws"]: s["draws"] > d + 2)


@pytest.mark.slow
def test_viewer_stays_up_through_a_real_run_driven_like_a_person(
        xserver: XServer, tmp_path: Path, run_slow: bool) -> None:

    driven_s = 600.0 if run_slow else 60.0
    state = tmp_path / "viewer-state.json"
    env = _x_env(xserver, tmp_path, RT_EDA_VIEWER_STATE=str(state))
    save, summary_path = tmp_path / "saved", tmp_path / "summary.json"
    proc, out, err = _start_run(
        tmp_path, env, "--duration", str(driven_s + 300), "--viewer", "--save", str(save),
        "--summary", str(summary_path))
    try:
        pid = _wait_viewer(xserver, proc, set())
        window = _viewer_window(xserver, pid)
        shown = time.monotonic()
        driver = _Driver(xserver, window, state, pid)
        first = driver.now(lambda s: s["frames_shown"] >= 2 and s["image_seq"] >= 0, 60)
        # the network image reaches the overlay
        assert first["overlay_enabled"] and first["overlay_checked"]
        assert first["overlay_visible"]
        xserver.xdotool("windowmove", window, "0", "0")
        driver.resize(1500, 950)
        # what the network sees, on the frame it saw: an event on screen, seen by the X server
        hot, deadline = 0, time.monotonic() + 120
        while hot < 10:
            assert time.monotonic() < deadline, f"no network image on the frame ({hot} pixels)"
            seen = driver.now(lambda s: s["overlay_visible"] and (s["image_max"] or 0) >= 0.9,
                              120)
            shot = _keep_screenshot(xserver, tmp_path, "viewer.png")[:950, :1500].astype(int)
            if driver.now()["image_seq"] != seen["image_seq"]:
                continue  # the image changed during the grab: look again
            assert shot.std() > 20, "the screen shows no window content"
            frame = shot[: int(950 * 0.6), : int(1500 * 0.6)]  # the image view, not the panel
            hot = int((np.ptp(frame, axis=2) > 40).sum())  # frames are grey: colour = overlay
        while time.monotonic() - shown < driven_s:
            driver.one_round()
            assert _viewer_pids() == {pid}, "the viewer died (or was restarted)"
            assert proc.poll() is None
        lived = time.monotonic() - shown
        driver.keys("ctrl+w")  # a person closes the window: the run goes on without it
        wait_for(lambda: pid not in _viewer_pids(), timeout=20)
        rows = (save / "frames.csv").read_text().count("\n")
        wait_for(lambda: (save / "frames.csv").read_text().count("\n") >= rows + 4, timeout=30)
        assert proc.poll() is None, "closing the window ended the run"
        assert _viewer_pids() == set(), "a closed window was opened again"
        proc.send_signal(signal.SIGINT)  # and ends the run with Ctrl-C
        stderr = _finish(proc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stdout = out.read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert lived >= driven_s
    s = summary(summary_path)
    assert s["viewer_exits"] == 0 and s["viewer_last_error"] == "", s
    assert s["errors"] == [] and s["frames_lost"] == 0
    assert_counts_add_up(s)
    assert "Traceback" not in stderr and "viewer died" not in stderr + stdout
    assert "network-image overlay on (512 x 512)" in stderr
    for key in ("lower_threshold", "upper_threshold", "min_fast_frames", "slow_interval",
                "fast_interval"):
        assert f"control sent: {key} =" in stderr, key
    assert stderr.count("control sent: paused = 1") == driver.round
    assert "window closed" in stderr
    inspect = subprocess.run([sys.executable, "-m", "rt_eda.cli", "inspect", str(save)],
                             capture_output=True, text=True, timeout=120, env=env)
    assert inspect.returncode == 0, inspect.stderr
    network = next(line for line in inspect.stdout.splitlines() if line.startswith("network"))
    assert "image(s) (512, 512) float32" in network, network
    _assert_left_nothing(proc, tmp_path)


def test_a_viewer_that_dies_is_started_again_once_and_the_run_goes_on(
        xserver: XServer, tmp_path: Path) -> None:

    state = tmp_path / "viewer-state.json"
    env = _x_env(xserver, tmp_path, RT_EDA_VIEWER_STATE=str(state))
    summary_path = tmp_path / "summary.json"
    proc, out, err = _start_run(tmp_path, env, "--duration", "40", "--viewer",
                                "--summary", str(summary_path))
    seen: set[int] = set()
    try:
        first = _wait_viewer(xserver, proc, seen)
        _viewer_window(xserver, first)
        wait_state(state, lambda s: s["pid"] == first and s["frames_shown"] >= 1, 60)
        seen.add(first)
        os.kill(first, signal.SIGKILL)
        second = _wait_viewer(xserver, proc, seen, timeout=60)  # started again, window back
        _viewer_window(xserver, second, timeout=60)
        wait_state(state, lambda s: s["pid"] == second and s["frames_shown"] >= 1, 60)
        seen.add(second)
        os.kill(second, signal.SIGKILL)
        wait_for(lambda: "not started again" in err.read_text(), timeout=30)
        while proc.poll() is None:  # never a third viewer
            assert _viewer_pids() <= seen
            time.sleep(0.2)
        stderr = _finish(proc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stderr[-3000:]
    s = summary(summary_path)
    assert s["viewer_exits"] == 2 and s["viewer_last_error"] == "killed by SIGKILL", s
    assert s["errors"] == [] and s["frames_lost"] == 0
    assert s["stop_reason"] == "duration reached"
    assert_counts_add_up(s)
    assert stderr.count("WARNING: viewer died (killed by SIGKILL); starting it again") == 1
    assert stderr.count("WARNING: viewer died (killed by SIGKILL); not started again") == 1
    assert "viewer died 2 time(s)" in out.read_text()
    assert "Traceback" not in stderr
    _assert_left_nothing(proc, tmp_path)


@pytest.mark.parametrize("display", ["unset", "xcb-unset", "no-server"])
def test_viewer_without_a_display_says_so_in_one_line_and_the_run_goes_on(
        tmp_path: Path, display: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    if display == "xcb-unset":
        env["QT_QPA_PLATFORM"] = "xcb"
    elif display == "no-server":
        free = next(n for n in range(99, 80, -1) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                    and not Path(f"/tmp/.X{n}-lock").exists())
        env["DISPLAY"] = f":{free}"
    summary_path = tmp_path / "s.json"
    done = subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "run", "--duration", "2", "--viewer",
         "--worker", "ImageWorker", "--summary", str(summary_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "display" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING: viewer: no display ("), lines
    assert lines[0].endswith("; going on without the viewer")
    assert "Traceback" not in done.stderr and "qt.qpa" not in done.stderr
    s = summary(summary_path)
    assert s["viewer_exits"] == 0 and s["stacks_published"] > 0
    assert_counts_add_up(s)


@pytest.mark.parametrize("sweeper", ["rt-eda view", "the next run"])
def test_files_of_a_killed_run_are_swept(tmp_path: Path, sweeper: str) -> None:

    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {**{k: v for k, v in os.environ.items() if k != "DISPLAY"},
           "XDG_RUNTIME_DIR": str(runtime)}
    folder = runtime / "rt-eda"
    with (tmp_path / "killed.err").open("w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rt_eda.cli", "run", "--duration", "60", "--no-viewer",
             "--worker", "ImageWorker"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=fe, env=env,
            start_new_session=True)
    left = [folder / f"{proc.pid}.json", folder / f"{proc.pid}.sock"]
    try:
        wait_for(lambda: all(p.exists() for p in left), timeout=120)  # the run is going
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 -PGID: nobody cleans up
        proc.wait(10)
        wait_for(lambda: not role_processes(), timeout=20)
        assert all(p.exists() for p in left)
        if sweeper == "rt-eda view":
            done = subprocess.run([sys.executable, "-m", "rt_eda.cli", "view"], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120, env=env)
            assert done.returncode == 2
            assert "no running rt-eda engine found" in done.stderr
        else:
            done = subprocess.run(
                [sys.executable, "-m", "rt_eda.cli", "run", "--duration", "1", "--no-viewer",
                 "--worker", "ImageWorker"],
                cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
            assert done.returncode == 0, done.stderr[-3000:]
        assert not any(p.exists() for p in left), sorted(folder.iterdir())
        assert list(folder.iterdir()) == []  # the next run removed its own files too
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sweep_stale_blocks()  # the killed run's ring and trace


def test_the_default_run_records_what_the_network_sees(tmp_path: Path) -> None:
    """The bundled demo worker's network images reach the recording without a viewer."""
    save, summary_path = tmp_path / "saved", tmp_path / "s.json"
    done = subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "run", "--duration", "6", "--no-viewer",
         "--save", str(save), "--summary", str(summary_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    s = summary(summary_path)
    assert_counts_add_up(s)
    inspect = subprocess.run([sys.executable, "-m", "rt_eda.cli", "inspect", str(save)],
                             capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    network = next(line for line in inspect.stdout.splitlines() if line.startswith("network"))
    saved = int(network.split()[1])
    assert network.split(None, 2)[2].startswith("image(s) (512, 512) float32"), network
    assert 1 <= saved <= s["stacks_analysed"], (network, s["stacks_analysed"])


PLAN = Path(__file__).resolve().parents[1] / "examples" / "four_positions.yaml"


def test_a_run_of_four_positions_shows_each_and_every_trace(xserver: XServer,
                                                           tmp_path: Path) -> None:
    """The position selector (Alt+E) shows each position's newest frame and decisions; the
    small multiples show every position's decisions and fast periods at once."""
    state = tmp_path / "viewer-state.json"
    env = _x_env(xserver, tmp_path, RT_EDA_VIEWER_STATE=str(state))
    summary_path = tmp_path / "summary.json"
    proc, out, err = _start_run(
        tmp_path, env, "--plan", str(PLAN), "--duration", "150", "--viewer", "--workers", "2",
        "--set", "camera.synthetic.height=256", "--set", "camera.synthetic.width=256",
        "--summary", str(summary_path))
    try:
        pid = _wait_viewer(xserver, proc, set())
        window = _viewer_window(xserver, pid)
        driver = _Driver(xserver, window, state, pid)
        first = driver.now(lambda s: s["frames_shown"] >= 1
                           and min(s["position_decisions"]) >= 3, 120)
        assert first["positions"] == 4 and first["small_multiples"] == 4
        assert first["position"] == 0
        xserver.xdotool("windowmove", window, "0", "0")
        driver.resize(1500, 950)
        for expected in (1, 2, 3, 0):
            shown = driver.now()["frames_shown"]
            driver.keys("alt+e")
            # the selector moved, the feed follows, and a frame of that position is drawn
            driver.now(lambda s, p=expected, n=shown: s["position"] == p
                       and s["position_choice"] == p and s["frames_shown"] > n, 60)
        # Every position's trace grows in its own small plot, and some position went fast.
        grown = driver.now(lambda s, d=first["position_decisions"]: all(
            a > b for a, b in zip(s["position_decisions"], d, strict=True)), 60)
        driver.now(lambda s: any(s["position_fast_now"]), 120)
        shot = _keep_screenshot(xserver, tmp_path, "viewer-positions.png")[:950, :1500]
        assert shot.astype(int).std() > 20, "the screen shows no window content"
        assert sum(grown["position_decisions"]) > 0
        proc.send_signal(signal.SIGINT)
        stderr = _finish(proc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stderr[-3000:]
    s = summary(summary_path)
    assert_counts_add_up(s)
    assert s["viewer_exits"] == 0 and len(s["positions"]) == 4
    assert "Traceback" not in stderr
    assert "viewer died" not in stderr + out.read_text()
    _assert_left_nothing(proc, tmp_path)
