"""Faults injected into a running engine: it keeps working where it can, loses nothing that
was acquired, says what went wrong, and leaves no process or shared memory behind."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    role_processes,
    rt_eda,
    start_rt_eda,
    summary,
    wait_for_role,
)

from rt_eda.core.errors import RingError
from rt_eda.core.runfolder import open_run
from rt_eda.shm import StackRing, list_blocks

SMALL = ["--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
         "--no-viewer"]


def sleepy_module(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sleepy_workers.py").write_text(textwrap.dedent("""
        import time
        import numpy as np
        from rt_eda.workers import Worker

        class Sleepy(Worker):
            '''Holds each claim for 0.2 s.'''
            def run_model(self, data):
                time.sleep(0.2)
                return np.zeros(1)
    """))
    return {"PYTHONPATH": str(tmp_path)}


def finish(proc: subprocess.Popen[str], sig: int = signal.SIGINT,
           timeout: float = 60) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, err


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _stack_ring(engine_pid: int, timeout: float = 120.0) -> StackRing:
    """The running engine's stack ring (two channels), attached once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, pid in list_blocks():
            if pid != engine_pid or "_ring_" not in name:
                continue
            try:
                ring = StackRing.attach(name)
            except RingError:
                continue  # unlinked or not yet initialised
            if ring.spec.channels == 2:
                return ring
            ring.close()  # the network-image ring
        time.sleep(0.05)
    raise TimeoutError(f"engine {engine_pid} made no stack ring within {timeout} s")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _stop_inside_a_claim(ring: StackRing, pid: int, timeout: float = 60.0) -> None:
    """SIGSTOP ``pid``, the ring's only reader, at a moment it holds a claim (checked while
    it is stopped, so the claim cannot be released meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ring.statistics().slots_claimed == 1:
            os.kill(pid, signal.SIGSTOP)
            assert _until(lambda: _state(pid) == "T", 10.0)
            if ring.statistics().slots_claimed == 1:
                return
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise TimeoutError(f"worker {pid} never held a claim within {timeout} s")


def test_a_sigkilled_worker_is_recovered_and_restarted(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = start_rt_eda("--worker", "Sleepy", "--set",
                        "analysis.worker_modules=['sleepy_workers']", "--workers", "1",
                        "--interpreter", "manual", "--interval", "0.02", "--summary",
                        str(out), "--save", str(tmp_path / "run"), *SMALL,
                        cwd=tmp_path, env=sleepy_module(tmp_path))
    ring = None
    try:
        ring = _stack_ring(proc.pid)
        rs = ring
        victim = wait_for_role("worker-1")
        assert _until(lambda: rs.statistics().completed >= 3, 120.0), "no analysis"
        _stop_inside_a_claim(ring, victim)  # the worker holds a claim: then it is killed
        at_kill = ring.statistics()
        assert at_kill.slots_claimed == 1 and at_kill.recovered == 0
        os.kill(victim, signal.SIGKILL)
        # The engine takes the dead worker's claim back, and restarts it under its name.
        assert _until(lambda: rs.statistics().recovered == 1, 60.0), (
            f"the claim of the killed worker was not recovered: {rs.statistics()}")
        assert _until(lambda: wait_for_role("worker-1") != victim, 60.0), "no restart"
        assert _until(lambda: rs.statistics().completed >= at_kill.completed + 3, 120.0), (
            "the restarted worker analyses nothing")
    finally:
        if ring is not None:
            ring.close()
        code, err = finish(proc)
    assert code == 0, err
    s = summary(out)
    assert s["worker_restarts"] == 1
    assert s["claims_recovered"] == 1  # exactly the claim it held when it was killed
    assert_counts_add_up(s)
    assert s["stacks_analysed"] >= at_kill.completed + 3
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    assert_clean(before)


@pytest.mark.parametrize("role", ["interp", "camera"])
def test_losing_the_interpreter_or_camera_stops_the_run_safely(tmp_path: Path,
                                                               role: str) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = start_rt_eda("--worker", "ImageWorker", "--interpreter", "manual", "--interval",
                        "0.01", "--summary", str(out), "--save", str(tmp_path / "run"),
                        *SMALL, cwd=tmp_path)
    try:
        victim = wait_for_role(role)
        wait_for_role("interp")
        time.sleep(2.0)
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=90)
    finally:
        code, err = finish(proc)
    assert code == 1, err
    s = summary(out)
    assert s["stop_reason"].startswith("fault")
    assert any(role[:4] in e for e in s["errors"]), s["errors"]
    assert s["stacks_published"] > 0
    # Everything that reached the ring before the fault is on disk.
    assert s["frames_written"] == s["stacks_published"] * 2 > 0
    assert open_run(tmp_path / "run").timepoints == s["stacks_published"]
    assert_clean(before)


def test_a_killed_writer_loses_nothing_that_was_acquired(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    folder = tmp_path / "run"
    proc = start_rt_eda("--worker", "ImageWorker", "--interpreter", "manual", "--interval",
                        "0.01", "--summary", str(out), "--save", str(folder), *SMALL,
                        cwd=tmp_path)
    try:
        victim = wait_for_role("writer")
        wait_for_role("interp")
        time.sleep(1.0)
        os.kill(victim, signal.SIGSTOP)  # a backlog of pinned, unwritten stacks builds up
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=90)
    finally:
        code, err = finish(proc)
    assert code == 1, err
    s = summary(out)
    assert any("writer" in e for e in s["errors"]), s["errors"]
    assert s["frames_salvaged"] > 0
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    saved, salvaged = open_run(folder), open_run(folder / "salvage")
    assert (saved.timepoints + salvaged.timepoints) * 2 == s["frames_acquired"]
    assert_clean(before)


def test_ctrl_c_during_warm_up_ends_cleanly(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    # The demo model's TensorFlow start-up takes seconds: interrupt it (with a recording
    # folder that never gets a frame).
    proc = start_rt_eda("--summary", str(out), "--save", str(tmp_path / "run"), *SMALL,
                        cwd=tmp_path)
    try:
        wait_for_role("worker-1")
        time.sleep(0.5)
    finally:
        code, err = finish(proc, signal.SIGINT)
    assert code == 0, err
    s = summary(out)
    assert s["started"] is False and s["stop_reason"] == "SIGINT"
    assert "Traceback" not in err
    assert_clean(before)


def test_a_second_ctrl_c_forces_a_quick_exit(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    proc = start_rt_eda("--worker", "Sleepy", "--set",
                        "analysis.worker_modules=['sleepy_workers']", *SMALL,
                        cwd=tmp_path, env=sleepy_module(tmp_path))
    try:
        wait_for_role("interp")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert time.monotonic() - t0 < 15
    finally:
        finish(proc)
    assert_clean(before)


def test_a_sigkilled_engine_leaves_nothing_behind(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    proc = start_rt_eda("--worker", "ImageWorker", *SMALL, cwd=tmp_path)
    try:
        wait_for_role("interp")
        time.sleep(1.0)
        proc.kill()  # SIGKILL: no handler runs in the engine
        proc.wait(timeout=10)
        # Roles follow their parent (PR_SET_PDEATHSIG); the resource tracker unlinks.
        deadline = time.monotonic() + 20
        while role_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert role_processes() == []
        # The next run sweeps whatever is left (and there must be nothing after it).
        done = rt_eda("--worker", "ImageWorker", "--duration", "0.5", *SMALL, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    finally:
        finish(proc)
    assert_clean(before)


def write_models(tmp_path: Path) -> dict[str, Path]:
    """A corrupt file, a truncated .keras, and a model wanting 3 channels."""
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a keras archive")
    code = f"""
import keras
inp = keras.Input((None, None, 3))
out = keras.layers.Conv2D(1, 1, activation="sigmoid")(inp)
keras.Model(inp, out).save({str(tmp_path / 'three.keras')!r})
"""
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    data = (tmp_path / "three.keras").read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    return {"corrupt": corrupt, "truncated": truncated, "three": tmp_path / "three.keras"}


@pytest.mark.tf
def test_bad_models_and_modules_exit_2_before_anything_starts(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    models = write_models(tmp_path)
    (tmp_path / "broken_module.py").write_text("import no_such_package_xyz\n")
    cases: list[tuple[list[str], list[str]]] = [
        (["--model", str(models["corrupt"])], ["corrupt.keras"]),
        (["--model", str(models["truncated"])], ["truncated.keras"]),
        (["--model", str(models["three"])], ["3", "2", "channels"]),
        (["--set", "analysis.worker_modules=['broken_module']"],
         ["broken_module", "no_such_package_xyz"]),
    ]
    for args, words in cases:
        proc = rt_eda(*args, "--duration", "1", *SMALL, cwd=tmp_path, timeout=120,
                      env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        for word in words:
            assert word in proc.stderr, (word, proc.stderr)
        assert role_processes() == []
    assert_clean(before)


def parent(pid: int) -> int:
    """The parent pid of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def sample(pid: int) -> tuple[int, int]:
    """(RSS kB, open fds) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_soak_memory_and_descriptors_stay_flat(tmp_path: Path, run_slow: bool) -> None:
    """A long run at a high frame rate (60 s here, 10 min with --run-slow)."""
    before = {n for n, _ in list_blocks()}
    seconds = 600.0 if run_slow else 60.0
    out = tmp_path / "s.json"
    proc = start_rt_eda("--worker", "ImageWorker", "--interpreter", "manual", "--interval",
                        "0.002", "--verify", "--workers", "2", "--summary", str(out),
                        "--duration", str(seconds), "--no-viewer", cwd=tmp_path)
    samples: dict[str, list[tuple[float, int, int]]] = {}
    try:
        wait_for_role("interp")
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < seconds - 2:
            for p in role_processes():
                pid, name = p.split(":", 1)
                try:
                    if parent(int(pid)) != proc.pid:
                        continue  # not this run's (another run on the machine)
                    rss, fds = sample(int(pid))
                except (OSError, StopIteration):
                    continue
                samples.setdefault(name, []).append((time.monotonic() - t0, rss, fds))
            samples.setdefault("engine", []).append((time.monotonic() - t0, *sample(proc.pid)))
            time.sleep(2.0)
        code = proc.wait(timeout=seconds + 60)
    finally:
        code, err = finish(proc)
    assert code == 0, err
    s = summary(out)
    assert_counts_add_up(s)
    assert s["torn_reads"] == 0 and s["frames_lost"] == 0
    for name, rows in samples.items():
        settled = [r for r in rows if r[0] > 10.0]  # after start-up and numba loading
        if len(settled) < 3:
            continue
        rss_growth = settled[-1][1] - min(r[1] for r in settled)
        fds = {r[2] for r in settled}
        assert rss_growth < 20_000, (name, rss_growth, settled)  # kB
        assert max(fds) - min(fds) <= 2, (name, fds)
    assert_clean(before)
