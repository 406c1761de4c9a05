"""The writer role against real stack rings: every published frame persisted, bit for bit.

Most tests run :func:`rt_eda.roles.writer.serve` in a thread of the test process (the role
without the process set-up) while the test publishes stamped stacks into a ring it owns; one
spawns the real ``rt-eda-writer`` process onto a tiny filesystem that fills up.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rt_eda.core.config import Config, load_config
from rt_eda.core.errors import RingOverrunError
from rt_eda.core.messages import (
    Command,
    ControlKey,
    ControlRecord,
    DecisionRecord,
    Failure,
    IntervalChange,
    Result,
    RoleEvent,
    RoleEventKind,
    WriterStatistics,
)
from rt_eda.core.process import RoleChannels
from rt_eda.core.runfolder import open_run
from rt_eda.roles import writer
from rt_eda.shm import StackRing, StackSpec
from rt_eda.storage.recording import prepare_save_dir

CTX = mp.get_context("spawn")


def stamped(seq: int, spec: StackSpec) -> np.ndarray:
    """The known pixels of stack ``seq`` (different for every stack and frame)."""
    rng = np.random.default_rng(1000 + seq)
    return rng.integers(0, 2**16, spec.shape, dtype=np.uint64).astype(spec.np_dtype)


def digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def publish(ring: StackRing, seq_pixels: Any, n: int, *, interval: float = 0.1,
            t0: float = 1000.0, timeout: float = 30.0) -> list[str]:
    """Publish n stamped stacks (waiting, never losing one, while the writer holds every
    slot); returns their checksums in order."""
    sums = []
    for _ in range(n):
        deadline = time.monotonic() + timeout
        while True:
            try:
                slot = ring.write_slot()
                break
            except RingOverrunError:
                assert time.monotonic() < deadline, "the writer never released a slot"
                time.sleep(0.001)
        with slot:
            pixels = seq_pixels(slot.seq)
            np.copyto(slot.pixels, pixels)
            slot.frame_times[:] = t0 + slot.seq * interval + np.arange(ring.spec.frames) * 1e-3
            slot.publish(interval_s=interval if slot.seq % 7 else interval / 2)
        sums.append(digest(pixels))
    return sums


def decision_record(seq: int) -> DecisionRecord:
    """What the interpreter sends for stack ``seq``; the one of stack 3 switched to fast."""
    t = 1000.0 + seq * 0.1
    result = Result(seq=seq, worker=1 + seq % 2, decision=seq / 10, t_exposure=t,
                    t_published=t + 0.01, t_claimed=t + 0.011, t_done=t + 0.02,
                    n_timepoints=1, t_prepare_s=0.001, t_infer_s=0.005, t_post_s=0.001)
    change = None
    if seq == 3:
        change = IntervalChange(Command(0.05, "upper threshold", 3, t + 0.021), fast=True)
    return DecisionRecord(result, t + 0.021, 0.05 if seq >= 3 else 0.5, seq >= 3, change)


def net_image(seq: int) -> np.ndarray:
    return (np.full((16, 24), seq) + np.arange(24) / 100).astype(np.float32)


def make_config(save: Path, fmt: str = "zarr", network: bool = True) -> Config:
    return load_config(None).with_overrides({
        "run.save": str(save), "writer.format": fmt, "writer.save_network_images": network})


class Harness:
    """The writer role in a thread, with the channels a test can see."""

    def __init__(self, config: Config, ring: StackRing, out_ring: StackRing | None) -> None:
        self.events: queue.Queue[RoleEvent] = queue.Queue()
        self.rows: queue.Queue[Any] = queue.Queue()
        self.stop = threading.Event()
        self.channels = RoleChannels(
            events=self.events, camera=None, results=None, stop=self.stop, log=None,
            writer=self.rows, ring=ring.name, output_ring=out_ring.name if out_ring else "")
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self.thread.start()
        self.wait_for(RoleEventKind.READY)

    def _run(self, config: Config) -> None:
        self.code = writer.serve(config, self.channels)

    def wait_for(self, kind: RoleEventKind, timeout: float = 30.0) -> RoleEvent:
        deadline = time.monotonic() + timeout
        while True:
            ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if ev.kind is kind:
                return ev
            assert ev.kind is not RoleEventKind.FAILED, ev.payload

    def finish(self, rings: list[StackRing]) -> WriterStatistics:
        for r in rings:
            r.shutdown()
        self.rows.put(None)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the writer did not end"
        events = []
        while not self.events.empty():
            events.append(self.events.get())
        stats = [e for e in events if e.kind is RoleEventKind.STATS]
        assert stats, f"no STATS event among {events}"
        assert self.code == 0, events
        assert events[-1].kind is RoleEventKind.STOPPED
        assert isinstance(stats[0].payload, WriterStatistics), stats[0]
        return stats[0].payload


@pytest.mark.parametrize(("fmt", "shape", "slots", "n"), [
    ("zarr", (2, 1, 64, 64), 4, 150),
    ("zarr", (2, 3, 32, 48), 3, 40),
    ("tiff", (2, 2, 32, 32), 4, 60),
])
def test_every_published_frame_is_written_bit_for_bit(tmp_path: Path, make_ring: Any,
                                                      fmt: str, shape: tuple[int, ...],
                                                      slots: int, n: int) -> None:
    spec = StackSpec(*shape, "uint16")
    ring = make_ring(spec, slots)
    save = prepare_save_dir(tmp_path / "run")
    h = Harness(make_config(save, fmt, network=False), ring, None)
    sums = publish(ring, lambda s: stamped(s, spec), n)
    stats = h.finish([ring])
    assert stats.stacks_written == n
    assert stats.frames_written == n * spec.frames
    assert stats.bytes_written == n * spec.nbytes
    run = open_run(save)
    assert run.complete
    assert run.timepoints == n
    assert tuple(run.images.shape) == (n, *spec.shape)
    assert [digest(run.stack(t)) for t in range(n)] == sums
    frames = run.frames
    assert len(frames["seq"]) == n * spec.frames
    assert np.array_equal(frames["seq"], np.repeat(np.arange(n), spec.frames))
    assert np.array_equal(frames["c"][: spec.frames], np.repeat(np.arange(spec.channels),
                                                                spec.z_slices))
    expected_t = 1000.0 + frames["seq"] * 0.1 + np.tile(np.arange(spec.frames), n) * 1e-3
    assert np.array_equal(frames["t_exposure"], expected_t)
    expected_iv = np.where(frames["seq"] % 7 == 0, 0.05, 0.1)
    assert np.array_equal(frames["interval_s"], expected_iv)
    rs = ring.statistics()
    assert rs.overruns >= 0 and rs.published == n


def test_several_runs_write_exactly_what_was_published(tmp_path: Path, make_ring: Any) -> None:
    spec = StackSpec(2, 1, 32, 32, "uint16")
    for i, n in enumerate((1, 17, 64)):
        ring = make_ring(spec, 3)
        save = prepare_save_dir(tmp_path / f"run{i}")
        h = Harness(make_config(save, network=False), ring, None)
        publish(ring, lambda s: stamped(s, spec), n)
        stats = h.finish([ring])
        assert stats.frames_written == n * spec.frames == ring.statistics().published * 2
        assert open_run(save).timepoints == n


def test_decisions_intervals_controls_and_network_images(tmp_path: Path,
                                                          make_ring: Any) -> None:
    spec = StackSpec(2, 1, 32, 32, "uint16")
    ring = make_ring(spec, 8)
    out = make_ring(StackSpec(1, 1, 16, 24, "float32"), 4)
    save = prepare_save_dir(tmp_path / "run")
    h = Harness(make_config(save), ring, out)
    n = 30
    publish(ring, lambda s: stamped(s, spec), n)
    analysed = [s for s in range(n) if s % 3 != 1]  # gaps: stacks 1, 4, 7, ... skipped
    for seq in reversed(analysed):  # several producers: out of order
        deadline = time.monotonic() + 30
        while True:
            try:
                slot = out.write_slot(seq)
                break
            except RingOverrunError:
                assert time.monotonic() < deadline
                time.sleep(0.001)
        with slot:
            slot.pixels[0, 0] = net_image(seq)
            slot.frame_times[:] = 0.0
    start = IntervalChange(Command(0.5, "start", -1, 999.0), fast=False)
    h.rows.put(start)  # no result caused it: no trigger
    for seq in analysed:  # stack 3's record carries its interval change
        h.rows.put(decision_record(seq))
    h.rows.put(ControlRecord(ControlKey.UPPER_THRESHOLD, 0.7, 1001.0, accepted=True))
    h.rows.put(("decision", {"seq": 1}))  # the old untyped row: rejected, counted
    stats = h.finish([ring, out])
    assert stats.network_images_written == len(analysed)
    assert stats.decisions == len(analysed)
    assert stats.intervals == 2 and stats.controls == 1
    assert stats.rows_received == len(analysed) + 3 and stats.rows_rejected == 1
    run = open_run(save)
    d = run.decisions
    assert np.array_equal(d["seq"], analysed)
    for key in ("t_exposure", "t_published", "t_claimed", "t_done"):
        assert np.array_equal(d[key], [getattr(decision_record(s).result, key)
                                       for s in analysed])
    assert np.array_equal(d["t_decided"], [decision_record(s).t_decided for s in analysed])
    assert d["command_interval"][analysed.index(3)] == 0.05
    assert np.isnan(d["command_interval"][0])
    iv = run.intervals
    assert iv["after_seq"].tolist() == [-1, 3]
    assert iv["interval_s"].tolist() == [0.5, 0.05]
    assert np.isnan(iv["trigger_decision"][0]) and np.isnan(iv["trigger_t_exposure"][0])
    assert iv["trigger_decision"][1] == 0.3  # from the record itself, no lookup
    assert iv["trigger_t_exposure"][1] == decision_record(3).result.t_exposure
    assert run.controls["key"].tolist() == ["upper_threshold"]
    index = run.network_index
    assert sorted(index["seq"].tolist()) == analysed  # no blanks, nothing missing
    assert run.network_images.shape == (len(analysed), 16, 24)
    for seq in analysed:
        img = run.network_image(seq)
        assert img is not None
        assert np.array_equal(img, net_image(seq))
    assert run.network_image(1) is None


def test_the_writer_pins_every_stack_the_camera_cannot_overwrite(tmp_path: Path,
                                                                 make_ring: Any) -> None:
    """A ring full of unsaved stacks refuses the producer (an overrun, counted)."""
    spec = StackSpec(1, 1, 16, 16, "uint16")
    ring = make_ring(spec, 2)
    pin = ring.register_pin()  # a writer that never writes
    try:
        for _ in range(2):
            with ring.write_slot() as slot:
                slot.frame_times[:] = 0.0
        with pytest.raises(RingOverrunError):
            ring.write_slot()
        assert ring.statistics().overruns == 1
    finally:
        pin.unregister()


def test_a_folder_that_holds_a_run_is_refused(tmp_path: Path, make_ring: Any) -> None:
    from rt_eda.core.errors import ConfigError

    spec = StackSpec(1, 1, 16, 16, "uint16")
    ring = make_ring(spec, 3)
    save = prepare_save_dir(tmp_path / "run")
    h = Harness(make_config(save, network=False), ring, None)
    publish(ring, lambda s: stamped(s, spec), 3)
    h.finish([ring])
    with pytest.raises(ConfigError, match="already holds") as err:
        prepare_save_dir(save)
    assert str(save) in str(err.value)
    # The role itself refuses too (files are created exclusively).
    events: queue.Queue[RoleEvent] = queue.Queue()
    ring2 = make_ring(spec, 3)
    ch = RoleChannels(events=events, camera=None, results=None, stop=threading.Event(),
                      log=None, writer=None, ring=ring2.name)
    assert writer.serve(make_config(save, network=False), ch) == 1
    failed = [e.payload for e in _drain(events) if e.kind is RoleEventKind.FAILED]
    assert failed and isinstance(failed[0], Failure), failed
    assert failed[0].error_type == "WriterError" and not failed[0].bad_input
    assert "already exists" in failed[0].text
    assert open_run(save).timepoints == 3  # untouched


def _drain(q: queue.Queue[RoleEvent]) -> list[RoleEvent]:
    out = []
    while not q.empty():
        out.append(q.get())
    return out


# -- the real process on a disk that fills -----------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and mount); skipped where mounting is not permitted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run mount to make a tiny filesystem: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mounting a 2 MiB tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30,
                       check=False)


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_a_full_disk_fails_loudly_and_keeps_what_was_written(tiny_fs: Path, make_ring: Any,
                                                             fmt: str) -> None:
    spec = StackSpec(2, 1, 128, 128, "uint16")  # 64 KiB stacks: ~30 fit in 2 MiB
    ring = make_ring(spec, 4)
    save = prepare_save_dir(tiny_fs / "run")
    channels = RoleChannels(events=CTX.Queue(), camera=None, results=None, stop=CTX.Event(),
                            log=CTX.Queue(), writer=CTX.Queue(), ring=ring.name,
                            parent_pid=os.getpid())
    proc = CTX.Process(target=writer.run, args=(make_config(save, fmt, network=False),
                                                channels), daemon=True)
    proc.start()
    try:
        ready = channels.events.get(timeout=120)
        assert ready.kind is RoleEventKind.READY, ready
        comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
        assert comm == "rt-eda-writer"
        published = 0
        sums = []
        events: list[RoleEvent] = []
        deadline = time.monotonic() + 60
        while not any(e.kind is RoleEventKind.FAILED for e in events):
            assert time.monotonic() < deadline and proc.is_alive(), events
            assert published < 200, "the 2 MiB disk never filled"
            with contextlib.suppress(queue.Empty):
                events.append(channels.events.get_nowait())
            try:
                with ring.write_slot() as slot:
                    pixels = stamped(slot.seq, spec)
                    np.copyto(slot.pixels, pixels)
                    slot.frame_times[:] = 1000.0 + slot.seq
                sums.append(digest(pixels))
                published += 1
            except RingOverrunError:
                time.sleep(0.002)
        channels.writer.put(decision_record(0))  # drained, not written
        channels.writer.put(None)  # what the engine sends once the interpreter stopped
        proc.join(30)
        assert proc.exitcode == 1
        with contextlib.suppress(queue.Empty):
            while True:
                events.append(channels.events.get(timeout=1))
        failed = [e for e in events if e.kind is RoleEventKind.FAILED]
        assert failed, events
        failure = failed[0].payload
        assert isinstance(failure, Failure), failure
        detail = failure.text
        assert detail.startswith("WriterError:"), detail
        assert str(save) in detail and "ENOSPC" in detail
        stats = next(e for e in events if e.kind is RoleEventKind.STATS).payload
        assert isinstance(stats, WriterStatistics), stats
        saved = stats.frames_written
        assert saved > 0
        assert f"{saved} frame(s) of {saved // 2} stack(s) saved" in detail
        run = open_run(save)
        assert run.timepoints * spec.frames == saved
        assert [digest(run.stack(t)) for t in range(run.timepoints)] == sums[:run.timepoints]
        # the pin is gone: the camera could go on (the ring is not blocked by a dead writer)
        with ring.write_slot() as slot:
            slot.frame_times[:] = 0.0
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)
