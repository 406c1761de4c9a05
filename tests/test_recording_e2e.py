"""Recording end to end: ``rt-eda run --save`` writes every frame and decision; the saved
run reads back, inspects, and replays; a disk that fills is a loud fault that loses nothing
already written."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.core.runfolder import open_run
from rt_eda.shm import list_blocks
from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

SMALL = ["--set", "camera.synthetic.height=128", "--set", "camera.synthetic.width=128",
         "--no-viewer", "--worker", "ImageWorker"]


def test_every_frame_and_decision_is_saved_and_replays(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    for run in range(2):
        folder = tmp_path / f"run{run}"
        out = tmp_path / f"s{run}.json"
        proc = rt_eda("--save", str(folder), "--summary", str(out), "--duration", "4",
                      "--set", "interpreter.slow_interval=0.05",
                      "--set", "interpreter.fast_interval=0.01",
                      "--set", "camera.synthetic.event_every_s=1.5",
                      "--set", "camera.synthetic.event_duration_s=0.6",
                      "--set", f"camera.synthetic.seed={run}", *SMALL, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        s = summary(out)
        assert_counts_add_up(s)
        assert s["frames_written"] == s["frames_acquired"] > 0 and s["frames_lost"] == 0
        saved = open_run(folder)
        assert saved.complete and saved.timepoints == s["stacks_published"]
        assert len(saved.decisions["seq"]) == s["stacks_analysed"]
        assert len(saved.intervals["interval_s"]) == s["interval_switches"] + 1
        assert (folder / "report.png").stat().st_size > 10_000
        assert json.loads((folder / "summary.json").read_text())["frames_written"] == \
            s["frames_written"]
        # The stored pixels are the source's: render the same timepoints again, in order
        # (the camera noise follows the frame count), and compare checksums.
        src = SyntheticSource(SyntheticSettings(height=128, width=128, seed=run,
                                                event_every_s=1.5, event_duration_s=0.6))
        src.open()
        t0 = float(saved.frames["t_exposure"][0])
        expected = np.empty((2, 1, 128, 128), np.uint16)
        for t in range(saved.timepoints):
            row = np.flatnonzero(saved.frames["t_index"] == t)[0]
            src.render_stack(float(saved.frames["t_exposure"][row]) - t0, expected)
            got = np.asarray(saved.stack(t))
            assert zlib.crc32(got.tobytes()) == zlib.crc32(expected.tobytes()), t
    inspect = subprocess.run([sys.executable, "-m", "rt_eda.cli", "inspect", str(folder)],
                             capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0 and "timepoints" in inspect.stdout
    replay_out = tmp_path / "replay.json"
    proc = rt_eda("--source", f"replay:{folder}", "--summary", str(replay_out),
                  "--duration", "2", "--no-viewer", "--worker", "ImageWorker", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary(replay_out)["stacks_published"] > 0
    assert_clean(before)


def test_an_existing_run_folder_is_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "images.ome.zarr").mkdir()
    proc = rt_eda("--save", str(folder), "--duration", "1", *SMALL, cwd=tmp_path)
    assert proc.returncode == 2
    assert str(folder) in proc.stderr and "Traceback" not in proc.stderr


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_a_loud_fault_and_keeps_what_was_written(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    with small_disk(tmp_path / "disk", "3m") as disk:
        out = tmp_path / "s.json"
        proc = rt_eda("--save", str(disk / "run"), "--summary", str(out), "--duration", "20",
                      "--interpreter", "manual", "--interval", "0.01", *SMALL, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        s = summary(out)
        assert s["frames_written"] > 0
        assert s["frames_lost"] == s["frames_acquired"] - s["frames_written"] > 0
        assert any("ENOSPC" in e or "No space" in e for e in s["errors"]), s["errors"]
        assert s["stop_reason"].startswith("fault")
        saved = open_run(disk / "run")  # what was written is readable
        assert saved.timepoints >= s["frames_written"] // 2 - 1
        np.asarray(saved.stack(0))
    assert_clean(before)
