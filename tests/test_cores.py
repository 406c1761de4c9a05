"""More compute threads than cores is allowed, but said once, before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.shm import list_blocks

SMALL = ["--worker", "ImageWorker", "--no-viewer", "--duration", "1", "--set",
         "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
         "--interpreter", "manual", "--interval", "0.05"]
CORES = len(os.sched_getaffinity(0))


def warnings_before_start(stderr: str) -> tuple[list[str], list[str]]:
    lines = stderr.splitlines()
    start = next(i for i, x in enumerate(lines) if "acquisition started" in x)
    warned = [x for x in lines if x.startswith("WARNING") and "compute threads" in x]
    return warned, [x for x in lines[:start] if x in warned]


@pytest.mark.parametrize(("workers", "threads"), [(1, CORES + 1), (CORES + 1, 1)])
def test_more_threads_than_cores_is_said_once_before_start(tmp_path: Path, workers: int,
                                                           threads: int) -> None:
    if workers > 8:
        pytest.skip(f"{workers} worker processes: too many for a test on {CORES} cores")
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = rt_eda(*SMALL, "--workers", str(workers), "--threads-per-worker", str(threads),
                  "--summary", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warned, early = warnings_before_start(proc.stderr)
    assert len(warned) == 1 and early == warned, proc.stderr
    line = warned[0]
    assert f"= {workers} x {threads} = {workers * threads} compute threads on {CORES} core" \
        in line, line
    assert "analysis.workers" in line and "analysis.threads_per_worker" in line
    assert ("worker processes costs about" in line) == (workers > CORES), line
    s = summary(out)
    assert_counts_add_up(s)
    assert (s["workers"], s["threads_per_worker"]) == (workers, threads)
    assert_clean(before)


def test_no_warning_within_the_cores(tmp_path: Path) -> None:
    proc = rt_eda(*SMALL, "--workers", "1", "--threads-per-worker", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "compute threads" not in proc.stderr
