"""Sources and run folders as a hostile user meets them, through the ``rt-eda`` command line:
replays of damaged recordings, replays played to the end, absurd and long exposures,
Micro-Manager configurations that do not load, and ``rt-eda inspect`` on damaged folders.

Each class is tried with several members. What every test checks: the exit code, what the
command said (one line for bad input, one WARNING per class of damage, never a traceback),
the summary's counts, and that nothing is left running or in /dev/shm."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    role_processes,
    rt_eda,
    summary,
)

from rt_eda.shm import list_blocks
from rt_eda.storage.recording import Recording

H, W = 32, 24
N_T = 20
DT = 0.05  # recorded spacing: the whole recording lasts 1 s
REPLAY = ["--worker", "ImageWorker", "--no-viewer", "--interpreter", "manual",
          "--interval", "0", "--duration", "60"]
SMALL = ["--worker", "ImageWorker", "--no-viewer", "--set", "camera.synthetic.height=64",
         "--set", "camera.synthetic.width=64"]


@pytest.fixture
def blocks_before() -> set[str]:
    return {name for name, _ in list_blocks()}


def saved_run(folder: Path, fmt: str = "zarr", n_t: int = N_T) -> Path:
    """A run folder written by rt-eda's Recording: 2 channels, plane (t, c) = t*100+c*10+1."""
    folder.mkdir()
    rec = Recording(folder, (2, 1, H, W), "uint16", fmt=fmt)
    for t in range(n_t):
        stack = np.empty((2, 1, H, W), np.uint16)
        stack[0], stack[1] = t * 100 + 1, t * 100 + 11
        rec.write_stack(t, stack, 100.0 + t * DT + np.array([0.0, 0.002]), DT)
    rec.close()
    return folder


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not line.startswith("INFO")]


def assert_one_line_refusal(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line holding every word, no traceback, no role process left."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = problem_lines(proc.stderr)
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert role_processes() == []
    return lines[0]


def accounted(stats: dict[str, Any]) -> None:
    """Every recorded timepoint was replayed, skipped, missing or damaged (none left)."""
    parts = ("timepoints", "timepoints_skipped", "timepoints_missing", "timepoints_damaged")
    assert sum(stats[k] for k in parts) == stats["recorded_timepoints"], stats
    assert stats["timepoints_not_reached"] == 0 and stats["exhausted"] == 1.0, stats


# --------------------------------------------------------------------------- replay to the end


def test_a_replay_played_to_the_end_is_a_clean_exit(tmp_path: Path,
                                                   blocks_before: set[str]) -> None:
    """Every complete replay once ended 'camera process died (exit code 0)', exit 1."""
    folder = saved_run(tmp_path / "rec")
    out = tmp_path / "again"
    proc = rt_eda("--source", f"replay:{folder}", *REPLAY, "--save", str(out),
                  "--summary", str(tmp_path / "s.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "died" not in proc.stderr
    s = summary(tmp_path / "s.json")
    assert s["stop_reason"].startswith("source exhausted: end of the recording: "), s
    assert s["errors"] == [] and s["started"]
    stats = s["source_statistics"]
    accounted(stats)
    assert stats["timepoints_missing"] == stats["timepoints_damaged"] == 0
    assert s["stacks_published"] == stats["timepoints"]
    assert_counts_add_up(s)
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    assert json.loads((out / "summary.json").read_text())["stop_reason"] == s["stop_reason"]
    assert_clean(blocks_before)


# --------------------------------------------------------------------------- damaged replays


def _cut_csv(folder: Path) -> None:
    table = folder / "frames.csv"
    table.write_bytes(table.read_bytes()[:300])


def _garbage_rows(folder: Path) -> None:
    table = folder / "frames.csv"
    lines = table.read_text().splitlines()
    lines[5] = "garbage,\x01\x02"
    lines[6] = "7,3,1,0,not-a-time,0.05"
    table.write_text("\n".join(lines) + "\n")


def _chunk(folder: Path, t: int) -> Path:
    return folder / "images.ome.zarr" / "0" / f"c.{t}.0.0.0.0"


def _delete_chunks(folder: Path) -> None:
    _chunk(folder, 4).unlink()
    _chunk(folder, 9).unlink()


def _truncate_chunk(folder: Path) -> None:
    chunk = _chunk(folder, 6)
    chunk.write_bytes(chunk.read_bytes()[:37])


def _larger_shape(folder: Path) -> None:
    meta_path = folder / "images.ome.zarr" / "0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][0] = 64
    meta_path.write_text(json.dumps(meta))


def _cut_tiff(folder: Path) -> None:
    image = folder / "images.ome.tif"
    with tifffile.TiffFile(image) as tif:
        offset = int(tif.pages.first.dataoffsets[0])
    with image.open("r+b") as f:
        f.truncate(offset + 15 * 2 * H * W * 2 + 100)  # 15 stacks and a bit of the 16th


# member: (damage, format, the WARNING's words, {statistic: value})
DAMAGED: dict[str, tuple[Callable[[Path], None], str, tuple[str, ...], dict[str, int]]] = {
    "frames-csv-cut-short": (_cut_csv, "zarr", ("replayable timepoints have no recorded time",
                                                "estimated"), {"timepoints_missing": 0}),
    "frames-csv-garbage-rows": (_garbage_rows, "zarr", ("2 row(s) unusable", "line 6"),
                                {"frames_csv_bad_rows": 2, "timepoints_missing": 0}),
    "deleted-chunks": (_delete_chunks, "zarr", ("2 of 20 timepoints cannot be replayed",
                                                "no chunk file", "(timepoints 4, 9)"),
                       {"timepoints_missing": 2}),
    "truncated-chunk": (_truncate_chunk, "zarr", ("1 of 20 timepoints cannot be replayed",
                                                  "damaged", "of 37 bytes"),
                        {"timepoints_damaged": 1}),
    "zarr-shape-larger-than-data": (_larger_shape, "zarr", ("44 of 64 timepoints", "20..63"),
                                    {"timepoints_missing": 44, "recorded_timepoints": 64}),
    "tiff-cut-short": (_cut_tiff, "tiff", ("5 of 20 timepoints", "cut short", "15..19"),
                       {"timepoints_missing": 5}),
}


@pytest.mark.parametrize("member", sorted(DAMAGED))
def test_a_damaged_recording_replays_what_it_holds_and_says_what_it_cannot(
        tmp_path: Path, blocks_before: set[str], member: str) -> None:
    """frames.csv cut to 300 bytes once replayed 5 of 41 timepoints; a deleted chunk replayed
    as zeros. Now: everything recorded plays, and each class of damage is one WARNING and a
    count in the summary."""
    damage, fmt, words, expected = DAMAGED[member]
    folder = saved_run(tmp_path / "rec", fmt=fmt)
    damage(folder)
    proc = rt_eda("--source", f"replay:{folder}", *REPLAY,
                  "--summary", str(tmp_path / "s.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING: replay")]
    matching = [w for w in warnings if all(word in w for word in words)]
    assert len(matching) == 1, (words, warnings)
    s = summary(tmp_path / "s.json")
    assert s["stop_reason"].startswith("source exhausted"), s["stop_reason"]
    stats = s["source_statistics"]
    for key, value in expected.items():
        assert stats[key] == value, (key, stats)
    accounted(stats)
    assert s["stacks_published"] == stats["timepoints"] > 0
    assert_counts_add_up(s)
    assert_clean(blocks_before)


NOTHING: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "every-chunk-deleted": (
        lambda d: [c.unlink() for c in (d / "images.ome.zarr" / "0").glob("c.*")],
        ("nothing to replay", "no chunk file")),
    "corrupt-zarr-json": (
        lambda d: (d / "images.ome.zarr" / "zarr.json").write_text('{"zarr_format": 3, "n'),
        ("images.ome.zarr is not a readable zarr group or array",)),
    "corrupt-array-zarr-json": (
        lambda d: (d / "images.ome.zarr" / "0" / "zarr.json").write_bytes(b"\x00\xff" * 40),
        ("images.ome.zarr/0 (its first dataset) is not a readable zarr array",)),
    "no-image-store": (lambda d: shutil.rmtree(d / "images.ome.zarr"),
                       ("neither a zarr store nor a run folder",)),
    "every-chunk-short": (
        lambda d: [c.write_bytes(b"x") for c in (d / "images.ome.zarr" / "0").glob("c.*")],
        ("nothing to replay", "damaged", "of 1 bytes")),
}


@pytest.mark.parametrize("member", sorted(NOTHING))
def test_nothing_replayable_is_refused_before_anything_starts(
        tmp_path: Path, blocks_before: set[str], member: str) -> None:
    damage, words = NOTHING[member]
    folder = saved_run(tmp_path / "rec")
    damage(folder)
    proc = rt_eda("--source", f"replay:{folder}", *REPLAY,
                  "--summary", str(tmp_path / "s.json"), cwd=tmp_path, timeout=60)
    assert_one_line_refusal(proc, "rt-eda: replay: ", str(folder), *words)
    assert not (tmp_path / "s.json").exists()  # nothing started: no summary
    assert_clean(blocks_before)


# --------------------------------------------------------------------------- exposure


@pytest.mark.parametrize("value", ["1e12", "3600001", "1e308"])
def test_an_absurd_exposure_is_refused_at_once(tmp_path: Path, value: str) -> None:
    """1e12 ms once ran 26 s and ended 'camera did not stop within 20 s; terminated'."""
    t = time.monotonic()
    proc = rt_eda(*SMALL, "--set", f"camera.exposure_ms={value}", "--duration", "3",
                  cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "camera.exposure_ms" in proc.stderr and "at most 3600000" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t < 20  # interpreter start-up only: nothing ran
    assert role_processes() == []


def test_an_exposure_beyond_the_devices_limits_names_them(tmp_path: Path,
                                                          blocks_before: set[str]) -> None:
    pytest.importorskip("pymmcore_plus")
    pytest.importorskip("mm_test_adapters")
    proc = rt_eda("--source", "mm-demo", "--worker", "ImageWorker", "--no-viewer",
                  "--set", "camera.exposure_ms=20000", "--duration", "2", cwd=tmp_path)
    assert_one_line_refusal(proc, "camera.exposure_ms: 20000 ms is outside what camera "
                            "'Camera' (DemoCamera DCam) allows: 0 to 10000 ms")
    assert_clean(blocks_before)


def _stop_latency(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str],
                                                       float]:
    """Run; seconds from the engine's 'stopping:' to the source's 'source stopped' lines,
    timed as they arrive on stderr (the engine logs each one as it happens)."""
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    lines = []
    with subprocess.Popen([sys.executable, "-m", "rt_eda.cli", "run", *args], cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            for key in ("stopping:", "source stopped"):
                if key in line and key not in seen:
                    seen[key] = time.monotonic() - t0
        proc.wait(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", "".join(lines))
    assert set(seen) == {"stopping:", "source stopped"}, done.stderr[-3000:]
    return done, seen["source stopped"] - seen["stopping:"]


def test_a_long_synthetic_exposure_stops_at_once(tmp_path: Path,
                                                 blocks_before: set[str]) -> None:
    proc, latency = _stop_latency([*SMALL, "--set", "camera.exposure_ms=20000",
                                   "--duration", "2", "--summary", "s.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latency < 1.5, latency
    s = summary(tmp_path / "s.json")
    assert s["stop_reason"] == "duration reached" and s["errors"] == []
    assert_counts_add_up(s)
    assert_clean(blocks_before)


def test_a_long_camera_exposure_stops_after_the_frame_in_progress(
        tmp_path: Path, blocks_before: set[str]) -> None:
    """Two channels: timed snaps, 2 x 1.5 s per stack. The stop (at 4 s, in the first frame
    of the second stack) is seen between the frames, so the run ends after that frame, not
    after the stack; the stack it cut short is not published, its one frame counted as
    abandoned."""
    pytest.importorskip("pymmcore_plus")
    pytest.importorskip("mm_test_adapters")
    exposure = 1.5
    proc, latency = _stop_latency([
        "--source", "mm-demo", "--worker", "ImageWorker", "--no-viewer",
        "--set", f"camera.exposure_ms={exposure * 1000:g}",
        "--set", "camera.channel_group=Channel", "--set", 'camera.channels=["DAPI","FITC"]',
        "--interpreter", "manual", "--interval", "0", "--duration", "4",
        "--summary", "s.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latency < exposure + 1.5, latency
    s = summary(tmp_path / "s.json")
    assert s["errors"] == [] and "terminated" not in proc.stderr
    assert s["stacks_published"] == 1 and s["frames_acquired"] == 2
    assert s["frames_abandoned"] == 1
    assert_counts_add_up(s)
    assert_clean(blocks_before)


# --------------------------------------------------------------------------- mmconfig


def _demo_cfg() -> str:
    from rt_eda.sources.micromanager import DEMO_CONFIG_NAME, demo_adapter_path

    return (Path(demo_adapter_path()) / DEMO_CONFIG_NAME).read_text()


BAD_CFGS: dict[str, tuple[Callable[[str], str], str]] = {
    "missing-device-library": (
        lambda c: c.replace("Device,Camera,DemoCamera,DCam", "Device,Camera,NoSuchLib,DCam"),
        'Failed to load device adapter "NoSuchLib"'),
    "missing-device": (
        lambda c: c.replace("Device,Camera,DemoCamera,DCam", "Device,Camera,DemoCamera,Nope"),
        'failed to instantiate device "Nope"'),
    "bad-property-value": (lambda c: c + "\nProperty,Camera,Binning,3\n",
                           'Cannot set property "Binning" to "3"'),
    "syntax-error": (lambda c: "Device,Camera,DemoCamera\n", "Wrong number of tokens"),
    "empty": (lambda c: "", "sets no camera device"),
    "no-camera": (lambda c: "\n".join(line for line in c.splitlines()
                                      if line.split(",")[1:2] != ["Camera"]
                                      and not line.startswith("Property,Core,Camera,")),
                  'No device with label "Camera"'),
}


@pytest.mark.parametrize("member", sorted(BAD_CFGS))
def test_an_mmconfig_that_does_not_load_is_one_line_and_exit_2(
        tmp_path: Path, blocks_before: set[str], member: str) -> None:
    """A device that does not exist once raised an OSError traceback."""
    pytest.importorskip("pymmcore_plus")
    pytest.importorskip("mm_test_adapters")
    write, said = BAD_CFGS[member]
    cfg = tmp_path / f"{member}.cfg"
    cfg.write_text(write(_demo_cfg()))
    proc = rt_eda("--source", f"mmconfig:{cfg}", "--worker", "ImageWorker", "--no-viewer",
                  "--duration", "2", "--summary", str(tmp_path / "s.json"), cwd=tmp_path)
    line = assert_one_line_refusal(proc, "rt-eda: camera.source: Micro-Manager", str(cfg),
                                   said)
    assert "OSError" not in line and "ConfigError" not in line
    assert_clean(blocks_before)


# --------------------------------------------------------------------------- rt-eda inspect


def _inspect(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rt_eda.cli", "inspect", str(folder)],
                          capture_output=True, text=True, timeout=120)


INSPECT_DAMAGED: dict[str, tuple[Callable[[Path], object], str]] = {
    "corrupt-summary-json": (lambda d: (d / "summary.json").write_text("{\"frames\": "),
                             "summary      DAMAGED: "),
    "corrupt-zarr-json": (lambda d: (d / "images.ome.zarr" / "zarr.json").write_text("{"),
                          "images       DAMAGED: "),
    "binary-frames-csv": (lambda d: (d / "frames.csv").write_bytes(bytes(range(256)) * 9),
                          "frames       DAMAGED: "),
    "missing-image-store": (lambda d: shutil.rmtree(d / "images.ome.zarr"),
                            "images       DAMAGED: no image store"),
    "deleted-chunk": (lambda d: _chunk(d, 3).unlink(),
                      "1 timepoint(s) missing: no chunk file"),
    "frames-csv-cut-short": (_cut_csv, "have no row in frames.csv"),
}


@pytest.mark.parametrize("member", sorted(INSPECT_DAMAGED))
def test_inspect_describes_a_damaged_run_folder(tmp_path: Path, member: str) -> None:
    """Exit 0 when something is readable: the rest described, the damage named."""
    damage, said = INSPECT_DAMAGED[member]
    folder = saved_run(tmp_path / "rec")
    (folder / "summary.json").write_text(json.dumps({"frames_acquired": 40, "errors": []}))
    damage(folder)
    proc = _inspect(folder)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr == ""
    assert said in proc.stdout, proc.stdout
    assert "damaged      " in proc.stdout and proc.stdout.startswith("run folder   ")


@pytest.mark.parametrize("member", ["empty-folder", "not-a-run", "a-file", "missing",
                                    "nothing-readable"])
def test_inspect_refuses_what_is_not_a_run_folder(tmp_path: Path, member: str) -> None:
    """Exit 2 and one line when it is not a run folder at all, or nothing in it is readable."""
    target = tmp_path / "x"
    if member in ("empty-folder", "not-a-run", "nothing-readable"):
        target.mkdir()
    if member == "not-a-run":
        (target / "holiday.jpg").write_bytes(b"\xff\xd8\xff")
    elif member == "a-file":
        target.write_text("hello")
    elif member == "nothing-readable":
        (target / "summary.json").write_bytes(b"\x00" * 10)
        (target / "frames.csv").write_bytes(b"\xff" * 10)
    proc = _inspect(target)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"rt-eda inspect: {target}"), line
