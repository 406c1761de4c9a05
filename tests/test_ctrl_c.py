"""Ctrl-C as a terminal sends it: SIGINT to the whole process group, at any moment of a run.

The contract (README): a user's Ctrl-C is a clean stop, exit 0 unless a fault happened; the
summary is written (``started: false`` before acquisition); nothing prints a traceback; no
process and no shared memory is left. A second Ctrl-C leaves at once: roles still running
are killed, the summary is the minimal one (every contract key, ``cut_short: true``) and the
exit code is 1 (what was recorded may be incomplete); when everything had stopped already,
it changes nothing (exit 0, ``cut_short: false``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    role_processes,
    summary,
    wait_for_role,
)

from rt_eda.shm import list_blocks

CONTRACT_KEYS = {
    "frames_acquired", "stacks_published", "stacks_analysed", "stacks_skipped",
    "frames_written", "frames_lost", "decisions", "results_dropped_out_of_order",
    "interval_switches", "torn_reads", "worker_restarts", "workers", "threads_per_worker",
    "acquired_fps", "analysed_per_s", "latency_ms", "errors",
}

ARGS = ["--worker", "ImageWorker", "--no-viewer", "--interpreter", "manual", "--interval",
        "0.02", "--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
        "--workers", "2"]


def launch(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """``rt-eda run`` in its own process group, as a shell runs a foreground job."""
    return subprocess.Popen(
        [sys.executable, "-m", "rt_eda.cli", "run", *ARGS, *extra], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def ctrl_c(proc: subprocess.Popen[str]) -> None:
    """What a terminal's Ctrl-C does: SIGINT to every process of the foreground group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)


def wait_running(run_dir: Path, timeout: float = 120) -> None:
    """Until the writer has saved frames (acquisition is running; start-up may be slow on a
    loaded machine)."""
    deadline = time.monotonic() + timeout
    table = run_dir / "frames.csv"
    while time.monotonic() < deadline:
        if table.exists() and table.read_text().count("\n") > 5:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no frames saved in {run_dir} within {timeout} s")


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return err


@pytest.mark.parametrize("moment", ["0.2 s", "0.5 s", "1 s", "3 s", "camera", "worker-2",
                                    "interp", "writer"])
def test_ctrl_c_to_the_process_group_at_any_moment_of_start_up(tmp_path: Path,
                                                               moment: str) -> None:
    """At a time after launch, or the moment a role's process appears (while it imports:
    a child that did not ignore SIGINT from its first instruction would die of it)."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = launch(tmp_path, "--summary", str(out), "--save", str(tmp_path / "run"))
    try:
        if moment.endswith(" s"):
            time.sleep(float(moment.split()[0]))
        else:
            wait_for_role(moment)
    finally:
        ctrl_c(proc)
    err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "exited during start-up" not in err, err
    s = summary(out)
    assert set(s) >= CONTRACT_KEYS
    assert s["stop_reason"] == "SIGINT" and s["cut_short"] is False
    assert s["errors"] == [], s["errors"]
    if s["started"]:
        assert_counts_add_up(s)
    assert (tmp_path / "run" / "summary.json").exists() or not (tmp_path / "run").exists()
    assert_clean(before)


def test_ctrl_c_to_the_process_group_while_running(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = launch(tmp_path, "--summary", str(out), "--save", str(tmp_path / "run"))
    try:
        wait_running(tmp_path / "run")
        time.sleep(1.0)
    finally:
        ctrl_c(proc)
    err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    s = summary(out)
    assert s["started"] and s["stop_reason"] == "SIGINT" and s["cut_short"] is False
    assert_counts_add_up(s)
    assert s["frames_written"] == s["frames_acquired"] > 0 and s["frames_lost"] == 0
    assert (tmp_path / "run" / "report.png").exists()
    assert_clean(before)


@pytest.mark.parametrize("when", ["start-up", "running"])
def test_a_second_ctrl_c_leaves_at_once_with_a_minimal_summary(tmp_path: Path,
                                                              when: str) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = launch(tmp_path, "--summary", str(out), "--save", str(tmp_path / "run"))
    try:
        if when == "running":
            wait_running(tmp_path / "run")
            time.sleep(0.5)
        else:
            wait_for_role("camera")
        ctrl_c(proc)
        time.sleep(0.05)
        t0 = time.monotonic()
        ctrl_c(proc)
        proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        err = finish(proc)
    assert took < 10, took
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    s = summary(out)
    assert set(s) >= CONTRACT_KEYS
    assert s["stop_reason"] == "SIGINT"
    if s["cut_short"]:
        assert proc.returncode == 1, err
        assert any("cut short by a second Ctrl-C" in e for e in s["errors"]), s["errors"]
    else:  # everything had stopped before the second one arrived
        assert proc.returncode == 0, err
    assert role_processes() == []
    assert_clean(before)
