"""A run whose whole process group is SIGKILLed (``kill -9 -PGID``: engine, every role and the
resource tracker at once, so no cleanup code runs anywhere) leaves no process behind, holds
no named semaphore at any time, and leaves only its shared-memory blocks, which the next run
sweeps by their creator's dead pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import proc_tools
from engine_helpers import role_processes, rt_eda

from rt_eda.core.errors import RingError
from rt_eda.shm import StackRing, list_blocks

SMALL = ["--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
         "--no-viewer"]
ROLES = {"rt-eda-camera", "rt-eda-worker-1", "rt-eda-interp", "rt-eda-writer"}


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
                continue
            if ring.spec.channels == 2:
                return ring
            ring.close()
        time.sleep(0.05)
    raise TimeoutError(f"engine {engine_pid} made no stack ring within {timeout} s")


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_killed_process_group_leaves_nothing_the_next_run_does_not_sweep(
    tmp_path: Path,
) -> None:
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rt_eda.cli", "run", "--worker", "ImageWorker", "--interpreter",
         "manual", "--interval", "0.01", "--duration", "300", "--save", str(tmp_path / "run"),
         *SMALL], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
        start_new_session=True,  # its own process group, as a shell job would be
    )
    pgid = proc.pid
    ring = None
    try:
        ring = _stack_ring(pgid)
        rs = ring
        # Acquiring, analysing and writing: every role is up and every channel in use.
        assert _wait(lambda: rs.statistics().completed >= 5, 120.0), rs.statistics()
        group = proc_tools.group_pids(pgid)
        names = {proc_tools.comm(pid) for pid in group}
        assert names >= ROLES, names
        ours = {f"/dev/shm/{n}" for n, pid in list_blocks() if pid == pgid}
        mapped: dict[str, set[str]] = {}
        for pid in group:
            mapped[proc_tools.comm(pid)] = proc_tools.shm_mapped(pid)
        semaphores = {k: sorted(f for f in v if f.startswith("/dev/shm/sem.")) for k, v in
                      mapped.items()}
        assert not any(semaphores.values()), f"named semaphores in use: {semaphores}"
        others = {k: v - ours for k, v in mapped.items() if v - ours}
        assert not others, f"/dev/shm files that are not this run's blocks: {others}"

        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc_tools.wait_group_gone(pgid)
        assert role_processes() == []  # none escaped the group either
        ring.close()
        ring = None
        # Nothing could unlink the blocks (the tracker died with the rest); nothing else of
        # this run is in /dev/shm. The next run removes them.
        left = {n for n, pid in list_blocks() if pid == pgid}
        assert {f"/dev/shm/{n}" for n in left} <= ours
        done = rt_eda("--worker", "ImageWorker", "--duration", "0.5", *SMALL, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert [n for n, pid in list_blocks() if pid == pgid] == []
        for name in left:  # swept by this run, unless another run on the machine was first
            assert name in done.stderr or not Path("/dev/shm", name).exists()
    finally:
        if ring is not None:
            ring.close()
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=30)
        err.close()
