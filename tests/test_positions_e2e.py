"""Many positions, end to end, as a user meets them: ``rt-eda run --plan`` with the synthetic
source (saved, inspected, replayed) and with Micro-Manager's demo XY stage.

Each run is the command line as a subprocess: exit code, summary (every count adding up per
position as for the run), the run folder in OME-Zarr's multi-position layout, and nothing
left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.core.runfolder import open_run, read_table, read_truth
from rt_eda.shm import list_blocks

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "four_positions.yaml"
SMALL = ["--set", "camera.synthetic.height=128", "--set", "camera.synthetic.width=128"]


def inspect(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rt_eda.cli", "inspect", str(folder)],
                          capture_output=True, text=True, timeout=120)


def test_four_positions_saved_inspected_and_replayed(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    run = tmp_path / "run"
    proc = rt_eda("--plan", str(EXAMPLE), "--duration", "15", "--workers", "2",
                  "--no-viewer", "--save", str(run), "--summary", "s.json", *SMALL,
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(tmp_path / "s.json")
    assert_counts_add_up(s)
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    positions = s["positions"]
    assert [p["name"] for p in positions] == ["A1", "A2", "B1", "B2"]
    for p in positions:
        assert p["stacks_published"] > 5 and p["decisions"] > 0 and p["timepoints"] > 5
        assert p["eda"] is not None
    eda = s["eda"]
    assert eda is not None
    assert eda["events"] == sum(p["eda"]["events"] for p in positions)
    assert eda["events_detected"] == sum(p["eda"]["events_detected"] for p in positions)
    assert 0 < eda["dose_vs_always_fast"] < 1
    sched = s["scheduler"]
    assert sched is not None and sched["moves"] > 0 and sched["starved"] == []
    assert sched["visits"] == sum(p["timepoints"] for p in positions)

    # The recording: one image per position in the bioformats2raw layout, read back.
    import zarr

    root = zarr.open_group(store=str(run / "images.ome.zarr"), mode="r")
    assert root.attrs["ome"]["bioformats2raw.layout"] == 3
    series = zarr.open_group(store=str(run / "images.ome.zarr" / "OME"), mode="r")
    assert series.attrs["ome"]["series"] == ["0", "1", "2", "3"]
    frames = read_table(run / "frames.csv")
    saved = open_run(run)
    assert saved.positions == 4
    for p in range(4):
        image = zarr.open_group(store=str(run / "images.ome.zarr" / str(p)), mode="r")
        assert image.attrs["ome"]["multiscales"][0]["name"] == positions[p]["name"]
        n_t = int(np.unique(frames["t_index"][frames["position"] == p]).size)
        assert image["0"].shape[0] == n_t == positions[p]["stacks_published"]
        assert saved.position_images(p).shape == (n_t, 2, 1, 128, 128)
    decisions = read_table(run / "decisions.csv")
    assert sorted(set(decisions["position"].tolist())) == [0, 1, 2, 3]
    for p in range(4):
        assert int((decisions["position"] == p).sum()) == positions[p]["decisions"]
    intervals = read_table(run / "intervals.csv")
    assert intervals["position"][0] == -1  # the start: every position
    assert (run / "plan.json").is_file()
    assert json.loads((run / "plan.json").read_text())["stage_positions"][0]["name"] == "A1"
    truth = read_truth(run / "truth.csv")
    assert truth is not None and sum(len(v) for v in truth.values()) >= eda["events"]

    text = inspect(run)
    assert text.returncode == 0, text.stderr
    assert "4 positions" in text.stdout and "DAMAGED" not in text.stdout, text.stdout
    for p, name in enumerate(("A1", "A2", "B1", "B2")):  # by the plan's names
        assert f"position {p} {name} (" in text.stdout, text.stdout

    # Replayed: the recording's positions, its timeline, and its truth file for the outcome.
    replay = rt_eda("--source", f"replay:{run}", "--duration", "8", "--workers", "1",
                    "--no-viewer", "--summary", "r.json", cwd=tmp_path, timeout=300)
    assert replay.returncode == 0, replay.stderr[-3000:]
    r = summary(tmp_path / "r.json")
    assert_counts_add_up(r)
    assert [p["name"] for p in r["positions"]] == ["A1", "A2", "B1", "B2"]
    assert all(p["stacks_published"] > 0 for p in r["positions"])
    assert r["eda"] is not None and r["scheduler"] is None
    assert r["source_statistics"]["positions"] == 4
    assert_clean(before)


def test_mm_demo_moves_its_xy_stage_between_the_plan_positions(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    proc = rt_eda("--source", "mm-demo", "--plan", str(EXAMPLE), "--worker", "ImageWorker",
                  "--duration", "6", "--no-viewer", "--summary", "s.json",
                  "--set", "camera.exposure_ms=5", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(tmp_path / "s.json")
    assert_counts_add_up(s)
    assert len(s["positions"]) == 4
    assert all(p["timepoints"] >= 3 for p in s["positions"]), s["positions"]
    sched = s["scheduler"]
    assert sched["moves"] >= 10 and sched["move_ms"]["p50"] > 1.0  # the stage's own time
    stats = s["source_statistics"]
    assert stats["stage_moves"] == sched["moves"]
    assert stats["stage_moves_off_target"] == 0
    assert s["eda"] is None  # a real sample has no ground truth
    assert_clean(before)


@pytest.mark.parametrize("positions", [1])
def test_a_single_position_synthetic_run_has_its_outcome(tmp_path: Path,
                                                         positions: int) -> None:
    proc = rt_eda("--duration", "8", "--no-viewer", "--summary", "s.json", *SMALL,
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(tmp_path / "s.json")
    assert_counts_add_up(s)
    assert len(s["positions"]) == positions and s["scheduler"] is None
    assert s["eda"] is not None and s["positions"][0]["eda"] == s["eda"]
    assert 0 < s["eda"]["dose_vs_always_fast"] <= 1
