"""End-to-end: ``rt-eda run`` as a user runs it, in a subprocess; summary, exit code, cleanup."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    role_processes,
    rt_eda,
    summary,
)

from rt_eda.shm import list_blocks

CONTRACT_KEYS = {
    "frames_acquired", "stacks_published", "stacks_analysed", "stacks_skipped",
    "frames_written", "frames_lost", "decisions", "results_dropped_out_of_order",
    "interval_switches", "torn_reads", "worker_restarts", "workers", "threads_per_worker",
    "acquired_fps", "analysed_per_s", "latency_ms", "errors",
}


def test_the_loop_closes_on_synthetic_events(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    # Events every ~3 s lasting 1.5 s; slow 0.25 s, fast 0.05 s.
    proc = rt_eda(
        "--duration", "9", "--summary", str(out), "--no-viewer", "--worker", "ImageWorker",
        "--set", "interpreter.slow_interval=0.25", "--set", "interpreter.fast_interval=0.05",
        "--set", "camera.synthetic.event_every_s=3.0",
        "--set", "camera.synthetic.event_duration_s=1.5",
        "--set", "camera.synthetic.height=128", "--set", "camera.synthetic.width=128",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(out)
    assert set(s) >= CONTRACT_KEYS
    assert_counts_add_up(s)
    assert s["errors"] == [] and s["torn_reads"] == 0
    changes = [c["interval_s"] for c in s["interval_changes"]]
    # start slow, then at least one event seen (fast) and its end (slow again)
    assert changes[0] == 0.25
    assert 0.05 in changes[1:] and changes.count(0.25) >= 2, changes
    assert s["interval_switches"] >= 2
    lat = s["latency_ms"]
    assert lat["decision_to_actuation"]["max"] > 0
    # Issue 17: actuation split by direction; every switch is one or the other.
    moves = s["actuations"]
    assert moves["speed_up"] >= 1 and moves["slow_down"] >= 1, moves
    # (a switch decided in the run's last moment may find no timepoint after it)
    assert s["interval_switches"] - 1 <= moves["speed_up"] + moves["slow_down"] \
        <= s["interval_switches"], s
    up, down = lat["decision_to_actuation_speed_up"], lat["decision_to_actuation_slow_down"]
    assert 0 < up["p50"] <= up["max"] and 0 < down["p50"] <= down["max"]
    assert lat["decision_to_actuation"]["max"] == max(up["max"], down["max"])
    # ... and the camera's jitter: p99 - p50 of each publication gap's distance from its
    # interval. The gaps themselves are 250 and 50 ms here (their p99 - p50 read as 200 ms
    # of "jitter" when the jitter was taken from them); the jitter is far below that.
    gaps = s["publish_interval_ms"]
    assert gaps["p99"] - gaps["p50"] > 150, gaps  # both intervals are among the gaps
    assert 0 <= s["camera_jitter_ms"] < 40, s["camera_jitter_ms"]
    assert "acquired" in proc.stdout and "jitter" in proc.stdout
    assert "speed-up x" in proc.stdout and "slow-down x" in proc.stdout
    assert_clean(before)


def test_free_run_with_verify_counts_add_up(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    proc = rt_eda(
        "--interpreter", "manual", "--interval", "0.002", "--verify", "--workers", "2",
        "--worker", "ImageWorker",
        "--duration", "3", "--summary", str(out), "--no-viewer",
        "--set", "camera.synthetic.height=256", "--set", "camera.synthetic.width=256",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(out)
    assert_counts_add_up(s)
    assert s["torn_reads"] == 0
    assert s["workers"] == 2 and s["worker_restarts"] == 0
    assert s["stacks_analysed"] > 100
    assert s["interval_switches"] == 0  # manual: the interval is held
    assert_clean(before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "analysis.workers"),
        (["--set", "interpreter.lower_treshold=0.1"], "lower_threshold"),
        (["--worker", "NoSuchWorker"], "NoSuchWorker"),
        (["--interval", "-1"], "camera.interval"),
    ],
)
def test_bad_input_exits_2_with_nothing_started(tmp_path: Path, args: list[str],
                                                message: str) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    proc = rt_eda(*args, "--duration", "1", "--summary", str(out), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert_clean(before)


def _write_module(tmp_path: Path, body: str) -> None:
    (tmp_path / "faulty_workers.py").write_text(textwrap.dedent(body))


def test_a_worker_that_always_raises_is_given_up_on(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    _write_module(tmp_path, """
        from rt_eda.workers import Worker

        class AlwaysFails(Worker):
            '''Raises on every stack.'''
            def extract_decision_parameter(self, output):
                if output.size and output.flat[0] != 0:  # warm-up stacks are zeros
                    raise RuntimeError("hook exploded")
                return 0.0
    """)
    out = tmp_path / "summary.json"
    proc = rt_eda(
        "--worker", "AlwaysFails", "--set", "analysis.worker_modules=['faulty_workers']",
        "--interpreter", "manual", "--interval", "0.02", "--duration", "60",
        "--summary", str(out), "--set", "camera.synthetic.height=64",
        "--set", "camera.synthetic.width=64", cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stderr
    s = summary(out)
    assert s["worker_restarts"] == 3
    assert any("worker 1" in e and "hook exploded" in e and "giving up" in e
               for e in s["errors"]), s["errors"]
    assert s["stop_reason"].startswith("fault")
    assert_counts_add_up(s)
    assert_clean(before)


def test_sigterm_and_sigint_end_the_run_cleanly(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"summary-{sig.name}.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "rt_eda.cli", "run", "--summary", str(out),
             "--interpreter", "manual", "--interval", "0.01", "--no-viewer",
             "--worker", "ImageWorker",
             "--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any("worker-1" in p for p in role_processes()) and \
                        any("interp" in p for p in role_processes()):
                    break
                time.sleep(0.2)
            time.sleep(2.0)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        s = summary(out)
        assert s["stop_reason"] == sig.name
        assert_counts_add_up(s)
        assert_clean(before)


@pytest.mark.tf
def test_the_default_run_with_the_demo_model_switches_on_events(tmp_path: Path) -> None:
    """The embedded default (bundled demo model) closes the loop on synthetic events."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    proc = rt_eda(
        "--duration", "15", "--summary", str(out), "--no-viewer",
        "--set", "interpreter.slow_interval=0.3", "--set", "interpreter.fast_interval=0.1",
        "--set", "camera.synthetic.event_every_s=3.0",
        "--set", "camera.synthetic.event_duration_s=1.5",
        "--set", "camera.synthetic.height=256", "--set", "camera.synthetic.width=256",
        cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(out)
    assert s["worker"] == "DemoModelWorker"
    assert_counts_add_up(s)
    changes = [c["interval_s"] for c in s["interval_changes"]]
    assert 0.1 in changes and changes.count(0.3) >= 2, changes
    assert_clean(before)


def test_mm_demo_camera_through_the_engine(tmp_path: Path) -> None:
    """Micro-Manager's DemoCamera (a real MM device adapter) drives the whole loop."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    proc = rt_eda(
        "--source", "mm-demo", "--worker", "ImageWorker", "--interpreter", "manual",
        "--interval", "0.05", "--duration", "3", "--summary", str(out), "--no-viewer",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(out)
    assert_counts_add_up(s)
    assert s["stack_shape"] == [1, 1, 512, 512]
    assert 40 <= s["stacks_published"] <= 70  # 20 stacks/s for 3 s
    assert s["source_statistics"]["mm_frames_lost"] == 0
    assert_clean(before)
