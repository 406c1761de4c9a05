"""A worker that hangs without dying (SIGSTOP, a hook that never returns) is found by the
engine's watchdog, killed, its claim recovered and counted, and the worker restarted."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    start_rt_eda,
    summary,
    wait_for_role,
)

from rt_eda.engine.watchdog import FIRST_CLAIMS_S, MIN_BOUND_S, Watchdog
from rt_eda.shm import StackRing, StackSpec, list_blocks

SMALL = ["--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
         "--no-viewer", "--interpreter", "manual", "--interval", "0.02"]


# -- the ring's view of its claims, and the watchdog's arithmetic ----------------------------

def test_claims_lists_who_holds_what_since_when(make_ring: object) -> None:
    ring: StackRing = make_ring(StackSpec(1, 1, 8, 8), 6)  # type: ignore[operator]
    for _ in range(3):
        with ring.write_slot() as slot:
            slot.publish()
    assert ring.claims() == []
    t0 = time.monotonic()
    claim = ring.try_claim(7)
    assert claim is not None
    ((actor, seq, t_claimed),) = ring.claims()
    assert (actor, seq) == (7, claim.seq) and t0 <= t_claimed <= time.monotonic()
    claim.release()
    assert ring.claims() == []


def test_the_automatic_bound_follows_the_workers_own_p99() -> None:
    dog = Watchdog()
    assert dog.bound(1)[0] == FIRST_CLAIMS_S  # nothing timed yet
    t = 100.0
    for seq in range(200):  # worker 1: claims of 0.1 s, worker 2: of 2 s
        dog.observe([(1, seq, t), (2, seq, t)], t + 0.05)
        dog.observe([(2, seq, t)], t + 0.1)
        dog.observe([], t + 2.0)
        t += 3.0
    assert dog.bound(1)[0] == MIN_BOUND_S  # 10 x 0.1 s is below the floor
    assert math.isclose(dog.bound(2)[0], 20.0)
    assert Watchdog(fixed_s=1.5).bound(2) == (1.5, "analysis.watchdog_s")


def test_an_overdue_claim_is_reported_once_and_is_not_a_sample() -> None:
    dog = Watchdog(fixed_s=1.0)
    assert dog.observe([(3, 10, 50.0)], 50.5) == []
    (late,) = dog.observe([(3, 10, 50.0)], 51.2)
    assert (late.worker, late.seq, late.bound_s) == (3, 10, 1.0) and late.age_s > 1.0
    assert "analysis.watchdog_s" in late.message() and "stack 10" in late.message()
    assert dog.observe([(3, 10, 50.0)], 52.0) == []  # once
    dog.observe([], 53.0)  # recovered
    assert dog.bound(3) == (1.0, "analysis.watchdog_s")
    assert not Watchdog().observe([(1, 1, math.nan)], 10.0)  # not stamped yet: age 0


# -- end to end --------------------------------------------------------------------------------

def workers_module(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "hanging_workers.py").write_text(textwrap.dedent(f"""
        import os
        import time
        import numpy as np
        from rt_eda.workers import Worker

        FLAG = {str(tmp_path / "hang-once")!r}

        class Sleepy(Worker):
            '''Holds each claim for 0.2 s.'''
            def run_model(self, data):
                time.sleep(0.2)
                return np.zeros(1)

        class HangsOnce(Worker):
            '''Never returns from the stack it analyses once the flag file appears (the
            first worker to take the flag hangs; the others go on).'''
            def run_model(self, data):
                try:
                    os.rename(FLAG, FLAG + ".taken")
                except FileNotFoundError:
                    return np.zeros(1)
                while True:
                    time.sleep(3600)

        class AlwaysHangs(Worker):
            '''Never returns from a real stack (warm-up stacks are zeros).'''
            def run_model(self, data):
                if np.any(data["pixels"]):
                    while True:
                        time.sleep(3600)
                return np.zeros(1)
    """))
    return {"PYTHONPATH": str(tmp_path)}


def wait_running(run_dir: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = run_dir / "frames.csv"
        if table.exists() and table.read_text().count("\n") > 5:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no frames saved in {run_dir} within {timeout} s")


def wait_restarted(fragment: str, old_pid: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = wait_for_role(fragment, timeout)
        if pid != old_pid:
            return pid
        time.sleep(0.1)
    raise TimeoutError(f"{fragment} was not restarted within {timeout} s")


def in_sleep(pid: int) -> bool:
    """True while the process sleeps in time.sleep (inside its claim, for Sleepy)."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def end(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return err


def test_a_sigstopped_worker_is_killed_recovered_and_restarted(tmp_path: Path) -> None:
    """The automatic bound: Sleepy's p99 is 0.2 s, so 5 s (the floor) after the stop."""
    before = {n for n, _ in list_blocks()}
    out, run = tmp_path / "s.json", tmp_path / "run"
    proc = start_rt_eda("--worker", "Sleepy", "--set",
                        "analysis.worker_modules=['hanging_workers']", "--workers", "2",
                        "--summary", str(out), "--save", str(run), *SMALL, cwd=tmp_path,
                        env=workers_module(tmp_path))
    victim = 0
    try:
        wait_running(run)
        time.sleep(1.5)  # a few claims timed
        victim = wait_for_role("worker-1")
        deadline = time.monotonic() + 30
        while not in_sleep(victim) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(victim, signal.SIGSTOP)  # inside a claim: it holds stack t forever
        t_stop = time.monotonic()
        wait_restarted("worker-1", victim)
        found_after = time.monotonic() - t_stop
        time.sleep(2.0)  # the new worker-1 analyses
    finally:
        err = end(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    s = summary(out)
    assert s["watchdog_kills"] == 1 and s["worker_restarts"] == 1
    assert s["claims_recovered"] == 1
    assert any("worker 1: killed by the watchdog" in e and "at least 5 s" in e
               for e in s["errors"]), s["errors"]
    assert found_after >= 4.5, found_after  # not before the bound
    assert_counts_add_up(s)
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    assert_clean(before)


def test_a_hook_that_never_returns_is_killed_and_restarted(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out, run = tmp_path / "s.json", tmp_path / "run"
    proc = start_rt_eda("--worker", "HangsOnce", "--set",
                        "analysis.worker_modules=['hanging_workers']", "--workers", "2",
                        "--set", "analysis.watchdog_s=2", "--summary", str(out),
                        "--save", str(run), *SMALL, cwd=tmp_path,
                        env=workers_module(tmp_path))
    try:
        wait_running(run)
        pids = {n: wait_for_role(n) for n in ("worker-1", "worker-2")}
        (tmp_path / "hang-once").write_text("")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # one of them hangs, is killed, is restarted
            now = {n: wait_for_role(n) for n in pids}
            if now != pids:
                break
            time.sleep(0.1)
        time.sleep(2.0)
    finally:
        err = end(proc)
    assert proc.returncode == 0, err
    s = summary(out)
    assert (tmp_path / "hang-once.taken").exists()
    assert s["watchdog_kills"] == 1 and s["worker_restarts"] == 1
    assert s["claims_recovered"] == 1
    assert any("killed by the watchdog" in e and "bound of 2.0 s (analysis.watchdog_s" in e
               for e in s["errors"]), s["errors"]
    assert_counts_add_up(s)
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    assert_clean(before)


def test_a_worker_that_always_hangs_is_given_up_on(tmp_path: Path) -> None:
    """Restarts are bounded (3): the fourth kill makes the run a fault (exit 1)."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = start_rt_eda("--worker", "AlwaysHangs", "--set",
                        "analysis.worker_modules=['hanging_workers']",
                        "--set", "analysis.watchdog_s=1", "--summary", str(out), *SMALL,
                        cwd=tmp_path, env=workers_module(tmp_path))
    try:
        proc.wait(timeout=240)
    finally:
        err = end(proc)
    assert proc.returncode == 1, err
    s = summary(out)
    assert s["watchdog_kills"] == 4 and s["worker_restarts"] == 3
    assert s["claims_recovered"] == 4
    assert any("worker 1 failed 4 times" in e and "watchdog" in e and "giving up" in e
               for e in s["errors"]), s["errors"]
    assert s["stop_reason"].startswith("fault")
    assert_counts_add_up(s)
    assert_clean(before)
