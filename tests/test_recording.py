"""The run-folder layout: written by Recording, read back by open_run/describe/report/replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rt_eda.core.config import load_config
from rt_eda.core.errors import ConfigError, WriterError
from rt_eda.core.messages import Command, DecisionRecord, IntervalChange, Result
from rt_eda.core.runfolder import FRAME_COLUMNS, REPORT_JSON, open_run, read_table
from rt_eda.storage import zarr_store
from rt_eda.storage.inspect import describe
from rt_eda.storage.recording import Recording, prepare_save_dir, write_summary
from rt_eda.storage.report import write_report

SHAPE = (2, 3, 16, 20)


def stack(t: int) -> np.ndarray:
    return np.random.default_rng(t).integers(0, 2**16, SHAPE, dtype=np.uint64).astype(
        np.uint16)


def fill(path: Path, fmt: str, n: int, *, close: bool = True,
         network: bool = True) -> Recording:
    rec = Recording(path, SHAPE, "uint16", fmt=fmt, config_toml=load_config(None).to_toml(),
                    network_shape=(8, 8) if network else None)
    for t in range(n):
        rec.write_stack(t + 5, stack(t), 100.0 + t * 0.5 + np.arange(6) * 0.01,
                        0.5 if t < n // 2 else 0.1)
        if network and t % 2 == 0:
            rec.write_network_image(t + 5, np.full((8, 8), t, np.float32), 100.2 + t)
        result = Result(seq=t + 5, worker=1, decision=t / n, t_exposure=100.0 + t * 0.5,
                        t_published=100.01 + t * 0.5, t_claimed=100.02 + t * 0.5,
                        t_done=100.03 + t * 0.5)
        change = None
        if t == n // 2:  # this result switched to fast: its record carries the change
            change = IntervalChange(Command(0.1, "upper threshold", t + 5, 1.0), fast=True)
        rec.log(DecisionRecord(result, 100.04 + t * 0.5, 0.1 if t >= n // 2 else 0.5,
                               t >= n // 2, change))
    rec.flush()
    if close:
        rec.close()
    return rec


def test_prepare_save_dir_creates_and_refuses(tmp_path: Path) -> None:
    new = prepare_save_dir(tmp_path / "a" / "b")
    assert new.is_dir() and not any(new.iterdir())
    assert prepare_save_dir(new) == new  # empty: fine
    (new / "images.ome.zarr").mkdir()
    with pytest.raises(ConfigError, match="already holds 1 entry") as err:
        prepare_save_dir(new)
    assert str(new) in str(err.value)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        prepare_save_dir(afile)
    with pytest.raises(ConfigError, match="cannot write") as err2:
        prepare_save_dir(afile / "under")
    assert str(afile / "under") in str(err2.value)


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    run_dir = prepare_save_dir(tmp_path / "run")
    rec = fill(run_dir, fmt, 70)  # past the first growth step of the zarr store (64)
    assert rec.stats.frames_written == 70 * 6
    run = open_run(run_dir)
    assert run.format == fmt and run.complete
    assert run.timepoints == 70
    assert tuple(run.images.shape) == (70, *SHAPE)
    assert np.array_equal(np.asarray(run.images[:]), np.stack([stack(t) for t in range(70)]))
    frames = run.frames
    assert tuple(frames) == FRAME_COLUMNS
    assert frames["seq"][:6].tolist() == [5] * 6
    assert frames["c"][:6].tolist() == [0, 0, 0, 1, 1, 1]
    assert frames["z"][:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert frames["t_exposure"][7] == 100.5 + 0.01
    assert run.network_index["seq"].tolist() == [t + 5 for t in range(0, 70, 2)]
    assert run.network_images.shape == (35, 8, 8)
    assert run.decisions["seq"].size == 70
    assert run.intervals["trigger_decision"].tolist() == [0.5]
    assert run.config["interpreter"]["kind"] == "binary"


def test_zarr_store_is_valid_ome_ngff_and_replayable(tmp_path: Path) -> None:
    yaozarrs = pytest.importorskip("yaozarrs")
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 5)
    yaozarrs.validate_zarr_store(str(run_dir / "images.ome.zarr"))
    meta = json.loads((run_dir / "images.ome.zarr" / "zarr.json").read_text())
    axes = [a["name"] for a in meta["attributes"]["ome"]["multiscales"][0]["axes"]]
    assert axes == ["t", "c", "z", "y", "x"]
    from rt_eda.sources.replay import ReplaySettings, ReplaySource, ReplayTiming

    source = ReplaySource(ReplaySettings(str(run_dir)))
    try:
        assert source.open().shape == SHAPE and source.n_timepoints == 5
        assert source.playable.tolist() == [0, 1, 2, 3, 4]
        assert source.timing is ReplayTiming.RECORDED  # from frames.csv
        np.testing.assert_allclose(source.recorded_times, np.arange(5) * 0.5, atol=1e-9)
    finally:
        source.close()


def test_tiff_has_ome_xml_with_plane_times(tmp_path: Path) -> None:
    import tifffile

    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "tiff", 4, network=False)
    with tifffile.TiffFile(run_dir / "images.ome.tif") as tif:
        assert tif.is_ome
        assert tif.series[0].shape == (4, *SHAPE) and tif.series[0].axes == "TCZYX"
        assert np.array_equal(tif.series[0].asarray()[3], stack(3))
        assert 'DeltaT="1.5' in tif.ome_metadata


def test_big_stacks_get_one_chunk_per_frame(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zarr_store, "STACK_CHUNK_MAX_BYTES", 100)
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 3, network=False)
    chunks = sorted(p.name for p in (run_dir / "images.ome.zarr" / "0").glob("c.*"))
    assert len(chunks) == 3 * 6 and "c.2.1.2.0.0" in chunks
    assert np.array_equal(np.asarray(open_run(run_dir).images[2]), stack(2))


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_an_unclosed_recording_is_still_readable(tmp_path: Path, fmt: str) -> None:
    """A writer that died: rows and data written so far are read back, marked incomplete."""
    run_dir = prepare_save_dir(tmp_path / "run")
    rec = fill(run_dir, fmt, 9, close=False)
    run = open_run(run_dir)
    assert not run.complete
    assert run.timepoints == 9
    for t in range(9):
        assert np.array_equal(run.stack(t), stack(t))
    assert "INCOMPLETE" in describe(run_dir)
    rec.abandon()


def test_recording_never_overwrites(tmp_path: Path) -> None:
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 2)
    with pytest.raises(WriterError, match="already exists"):
        Recording(run_dir, SHAPE, "uint16", fmt="zarr", config_toml="")
    assert open_run(run_dir).timepoints == 2


def test_describe_and_summary(tmp_path: Path) -> None:
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 10)
    write_summary(run_dir, {"frames_acquired": 60, "frames_written": 60, "frames_lost": 0,
                            "acquired_fps": 2.0, "errors": [],
                            "latency_ms": {"publish_to_decision": {"p50": 1.5, "p99": 3.0,
                                                                   "max": 4.0}}})
    text = describe(run_dir)
    assert "10 timepoints x (C, Z, Y, X) (2, 3, 16, 20) uint16, 60 frames" in text
    assert "4.550 s from first to last exposure" in text
    assert "decisions    10 from 1 worker(s)" in text
    assert "1 interval command(s)" in text and "after stack 10 (upper threshold)" in text
    assert "network      5 image(s) (8, 8) float32" in text
    assert "frames_written=60" in text and "frames_lost=0" in text
    assert "errors: none" in text
    with pytest.raises(WriterError, match="not an rt-eda run folder"):
        describe(tmp_path)


def test_read_table_types(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b,c\n1,2.5,x\n2,,y\n")
    t = read_table(p)
    assert t["a"].dtype == np.int64 and np.isnan(t["b"][1]) and t["c"].tolist() == ["x", "y"]
    assert read_table(tmp_path / "missing.csv") == {}


def test_report_png_and_data(tmp_path: Path) -> None:
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 40)
    png = write_report(run_dir, {"frames_lost": 0, "acquired_fps": 2.0},
                       events=[(5.0, 3.0), (15.0, 2.0)])
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    data = json.loads((run_dir / REPORT_JSON).read_text())
    assert len(data["decisions"]["t_s"]) == 40
    assert data["thresholds"]["lower"] is not None
    assert [r["interval_s"] for r in data["intervals_in_force"]] == [0.5, 0.1]
    assert len(data["events"]) == 2
    assert data["publish_to_decision_ms"]["p50"] == pytest.approx(30.0)


# Each member of "a damaged run folder": how to damage it, the part named DAMAGED and what the
# text says about it. describe() names the damage and describes everything else.
DAMAGES = {
    "corrupt-summary": (lambda d: (d / "summary.json").write_text('{"frames_acquired": 8'),
                        "summary", "Expecting"),
    "summary-not-an-object": (lambda d: (d / "summary.json").write_text("[1, 2]"),
                              "summary", "a JSON list, not an object"),
    "corrupt-group-zarr-json": (
        lambda d: (d / "images.ome.zarr" / "zarr.json").write_text('{"zarr_format": 3, "no'),
        "images", "not a readable zarr group or array"),
    "corrupt-array-zarr-json": (
        lambda d: (d / "images.ome.zarr" / "0" / "zarr.json").write_text('{"shape": [1'),
        "images", "(its first dataset) is not a readable zarr array"),
    "binary-frames-csv": (lambda d: (d / "frames.csv").write_bytes(bytes(range(128, 256)) * 8),
                          "frames", "frames.csv is not a CSV table"),
    "frames-csv-with-nul": (lambda d: (d / "frames.csv").write_bytes(b"seq,t_index\0\n1,2\n"),
                            "frames", "frames.csv"),
    "binary-decisions-csv": (lambda d: (d / "decisions.csv").write_bytes(b"\xff\xfe\x00" * 50),
                             "decisions", "decisions.csv is not a CSV table"),
    "text-in-decisions": (
        lambda d: (d / "decisions.csv").write_text(
            (d / "decisions.csv").read_text().replace("0.0,", "zero,", 1)),
        "decisions", "not a number"),
    "corrupt-config": (lambda d: (d / "config.toml").write_text("[camera\nsource = "),
                       "config", "Expected ']'"),
    "missing-images": (lambda d: __import__("shutil").rmtree(d / "images.ome.zarr"),
                       "images", "no image store"),
}


@pytest.mark.parametrize("member", sorted(DAMAGES))
def test_describe_names_what_is_damaged_and_describes_the_rest(tmp_path: Path,
                                                               member: str) -> None:
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 6)
    write_summary(run_dir, {"frames_acquired": 36, "frames_written": 36, "errors": []})
    damage, part, said = DAMAGES[member]
    damage(run_dir)
    text = describe(run_dir)
    (line,) = [x for x in text.splitlines() if x.startswith(f"{part:<12} DAMAGED: ")]
    assert said in line, line
    assert "damaged      1 part(s) could not be read in full:" in text
    others = {"images", "frames", "decisions", "intervals", "controls", "network", "summary",
              "config"} - {part}
    for other in others:  # every other part is still described
        assert any(x.startswith(f"{other:<12} ") and "DAMAGED" not in x
                   for x in text.splitlines()), (other, text)


def test_describe_names_missing_chunks_and_rows_without_times(tmp_path: Path) -> None:
    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "zarr", 8)
    (run_dir / "images.ome.zarr" / "0" / "c.3.0.0.0.0").unlink()
    frames = run_dir / "frames.csv"
    frames.write_text("\n".join(frames.read_text().splitlines()[:1 + 6 * 5]) + "\n")
    text = describe(run_dir)
    assert "7 timepoints x (C, Z, Y, X) (2, 3, 16, 20) uint16, 42 frames" in text
    assert "the store declares 8 timepoints; 1 cannot be read:" in text
    assert "1 timepoint(s) missing: no chunk file" in text and "(timepoints 3)" in text
    assert "3 of them have no row in frames.csv (timepoints 5..7)" in text
    assert "damaged      2 part(s)" in text


def test_describe_a_tiff_cut_short(tmp_path: Path) -> None:
    import tifffile

    run_dir = prepare_save_dir(tmp_path / "run")
    fill(run_dir, "tiff", 6, network=False)
    image = run_dir / "images.ome.tif"
    with tifffile.TiffFile(image) as tif:
        offset = int(tif.pages.first.dataoffsets[0])
    with image.open("r+b") as f:
        f.truncate(offset + 4 * stack(0).nbytes + 10)
    text = describe(run_dir)
    assert "4 timepoints x (C, Z, Y, X) (2, 3, 16, 20) uint16" in text
    assert "2 timepoint(s) missing: past the end of images.ome.tif" in text
    assert "cut short" in text


@pytest.mark.parametrize("member", ["empty", "not-a-run", "a-file", "nothing-readable",
                                    "does-not-exist"])
def test_describe_refuses_what_is_not_a_run_folder(tmp_path: Path, member: str) -> None:
    folder = tmp_path / "x"
    if member != "does-not-exist":
        folder.mkdir()
    if member == "not-a-run":
        (folder / "notes.txt").write_text("hello")
    elif member == "a-file":
        folder.rmdir()
        folder.write_text("hello")
    elif member == "nothing-readable":
        (folder / "summary.json").write_text("{broken")
    expected = {"nothing-readable": "nothing in this run folder could be read: images.ome.zarr: "
                                    "no image store",
                "a-file": "not a folder", "does-not-exist": "it does not exist"}
    with pytest.raises(WriterError, match=expected.get(member, "none of images.ome.zarr")):
        describe(folder)
