"""ReplaySource: recordings written here (OME-Zarr run folders, OME-TIFF, ImageJ, plain TIFF)
are replayed and checked frame by frame: pixels, recorded timing, skip-forward at slow
intervals, every timepoint at fast ones, the end of the recording, and clear errors."""

from __future__ import annotations

import csv
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.sources.replay import ReplaySettings, ReplaySource, ReplayTiming, make_replay_source

H, W = 16, 12
NEVER = threading.Event()


def _recording(n_t: int, n_c: int, n_z: int, dtype: str = "uint16") -> np.ndarray:
    """(T, C, Z, H, W) where every pixel of plane (t, c, z) is t*100 + c*10 + z."""
    t, c, z = np.meshgrid(np.arange(n_t), np.arange(n_c), np.arange(n_z), indexing="ij")
    values = (t * 100 + c * 10 + z).astype(dtype)
    return np.broadcast_to(values[..., None, None], (n_t, n_c, n_z, H, W)).copy()


def _write_zarr(path: Path, data: np.ndarray, axes: list[Any] | None = None,
                t_scale: float | None = None, version: str = "0.5") -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    axes = axes if axes is not None else [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    dataset: dict[str, Any] = {"path": "0"}
    if t_scale is not None:
        dataset["coordinateTransformations"] = [
            {"type": "scale", "scale": [t_scale] + [1.0] * (data.ndim - 1)}
        ]
    multiscales = [{"version": version, "axes": axes, "datasets": [dataset]}]
    if version == "0.5":
        root.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    else:
        root.attrs["multiscales"] = multiscales
    array = root.create_array("0", shape=data.shape, dtype=data.dtype,
                              chunks=(1,) * (data.ndim - 2) + data.shape[-2:])
    array[...] = data


def _write_frames_csv(path: Path, times: list[float], n_c: int, n_z: int,
                      frame_dt: float) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seq", "t_index", "c", "z", "t_exposure", "interval_s"])
        seq = 0
        for t, t0 in enumerate(times):
            for i, (c, z) in enumerate((c, z) for c in range(n_c) for z in range(n_z)):
                writer.writerow([seq, t, c, z, 1000.0 + t0 + i * frame_dt, 0.05])
                seq += 1


def _run_folder(tmp_path: Path, n_t: int, spacing: float, n_c: int = 2, n_z: int = 1,
                frame_dt: float = 0.001) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    _write_zarr(folder / "images.ome.zarr", _recording(n_t, n_c, n_z))
    _write_frames_csv(folder / "frames.csv", [k * spacing for k in range(n_t)], n_c, n_z,
                      frame_dt)
    return folder


Played = list[tuple[int, float, list[float], list[int]]]


def _play(source: ReplaySource, limit: int = 1000,
          switch: dict[int, float] | None = None) -> Played:
    """Play until exhausted: (recorded index, due, frame times, frame values) per timepoint."""
    spec = source.spec
    out = np.empty((spec.height, spec.width), spec.dtype)
    played = []
    for k in range(limit):
        if switch and k in switch:
            source.set_interval(switch[k])
        due = source.next_timepoint(NEVER)
        if due is None:
            break
        times, values = [], []
        for c, z in source.frame_order():
            times.append(source.read_frame(c, z, out))
            assert (out == out[0, 0]).all()
            values.append(int(out[0, 0]))
        played.append((source.current_index, due, times, values))
    return played


def _expected_values(t: int, n_c: int, n_z: int) -> list[int]:
    return [t * 100 + c * 10 + z for c in range(n_c) for z in range(n_z)]


def test_run_folder_plays_every_timepoint_at_recorded_timing(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=8, spacing=0.04)
    source = ReplaySource(ReplaySettings(str(folder)))
    try:
        spec = source.open()
        assert (spec.channels, spec.z_slices, spec.height, spec.width) == (2, 1, H, W)
        assert spec.dtype == "uint16" and source.timing is ReplayTiming.RECORDED
        np.testing.assert_allclose(source.recorded_times, np.arange(8) * 0.04, atol=1e-9)
        source.start(0.0)
        played = _play(source)
        assert [p[0] for p in played] == list(range(8))
        for index, _, _, values in played:
            assert values == _expected_values(index, 2, 1)
        dues = np.array([p[1] for p in played])
        np.testing.assert_allclose(np.diff(dues), 0.04, atol=0.015)
        assert abs(np.diff(dues).mean() - 0.04) < 0.003
        for _, due, times, _ in played:  # per-frame offsets from frames.csv
            np.testing.assert_allclose(np.array(times) - due, [0.0, 0.001], atol=1e-9)
        assert source.next_timepoint(NEVER) is None
        assert source.exhausted
        stats = source.statistics()
        assert stats["timepoints"] == 8 and stats["frames"] == 16
        assert stats["timepoints_skipped"] == 0 and stats["exhausted"] == 1.0
    finally:
        source.close()


def test_fast_interval_still_plays_every_timepoint(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=6, spacing=0.05, n_c=1)
    source = ReplaySource(ReplaySettings(str(folder)))
    try:
        source.open()
        t0 = time.monotonic()
        source.start(0.01)
        played = _play(source)
        assert [p[0] for p in played] == list(range(6))
        dues = np.array([p[1] for p in played])
        np.testing.assert_allclose(dues - t0, np.arange(6) * 0.05, atol=0.02)
        assert source.exhausted
    finally:
        source.close()


def test_slow_interval_skips_forward_in_recorded_time(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=10, spacing=0.1, n_c=1)
    source = ReplaySource(ReplaySettings(str(folder)))
    try:
        source.open()
        source.start(0.3)
        played = _play(source)
        # replay clock 0, 0.3, 0.6, 0.9 s -> recorded timepoints 0, 3, 6, 9; 1.2 s is past the end
        assert [p[0] for p in played] == [0, 3, 6, 9]
        for index, _, _, values in played:
            assert values == _expected_values(index, 1, 1)
        np.testing.assert_allclose(np.diff([p[1] for p in played]), 0.3, atol=0.02)
        assert source.exhausted
        assert source.statistics()["timepoints_skipped"] == 6
    finally:
        source.close()


def test_interval_command_from_slow_to_fast(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=10, spacing=0.1, n_c=1)
    source = ReplaySource(ReplaySettings(str(folder)))
    try:
        source.open()
        source.start(0.3)
        played = _play(source, switch={2: 0.0})
        assert [p[0] for p in played] == [0, 3, 4, 5, 6, 7, 8, 9]
        assert source.exhausted
    finally:
        source.close()


def test_ome_tiff_with_delta_t(tmp_path: Path) -> None:
    data = _recording(4, 2, 3)
    path = tmp_path / "rec.ome.tif"
    planes = [(t, c, z) for t in range(4) for c in range(2) for z in range(3)]
    tifffile.imwrite(path, data, metadata={
        "axes": "TCZYX",
        "Plane": {"DeltaT": [t * 0.05 + (c * 3 + z) * 0.002 for t, c, z in planes]},
    })
    source = ReplaySource(ReplaySettings(str(path)))
    try:
        spec = source.open()
        assert spec.shape == (2, 3, H, W)
        assert source.timing is ReplayTiming.RECORDED
        np.testing.assert_allclose(source.recorded_times, [0, 0.05, 0.1, 0.15], atol=1e-9)
        source.start(0.0)
        played = _play(source)
        assert [p[0] for p in played] == [0, 1, 2, 3]
        for index, due, times, values in played:
            assert values == _expected_values(index, 2, 3)
            np.testing.assert_allclose(np.array(times) - due, np.arange(6) * 0.002, atol=1e-9)
        assert source.exhausted
    finally:
        source.close()


def test_imagej_hyperstack_axes_reordered(tmp_path: Path) -> None:
    data = _recording(3, 2, 2)  # t, c, z
    path = tmp_path / "rec.tif"
    tifffile.imwrite(path, data.transpose(0, 2, 1, 3, 4), imagej=True,
                     metadata={"axes": "TZCYX", "finterval": 0.03})
    source = ReplaySource(ReplaySettings(str(path), exposure_s=0.004))
    try:
        assert source.open().shape == (2, 2, H, W)
        np.testing.assert_allclose(source.recorded_times, [0, 0.03, 0.06], atol=1e-9)
        source.start(0.0)
        played = _play(source)
        assert [p[0] for p in played] == [0, 1, 2]
        for index, due, times, values in played:
            assert values == _expected_values(index, 2, 2)  # channel-major despite TZCYX
            np.testing.assert_allclose(np.array(times) - due, np.arange(4) * 0.004, atol=1e-9)
    finally:
        source.close()


def test_plain_tiff_without_timing_plays_at_the_commanded_interval(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _recording(5, 1, 2, "float32"))
    source = ReplaySource(ReplaySettings(str(path)))
    try:
        spec = source.open()
        assert spec.shape == (1, 2, H, W) and spec.dtype == "float32"
        assert source.timing is ReplayTiming.COMMANDED and source.recorded_times is None
        source.start(0.03)
        played = _play(source)
        assert [p[0] for p in played] == list(range(5))
        np.testing.assert_allclose(np.diff([p[1] for p in played]), 0.03, atol=0.015)
        assert source.exhausted and source.next_timepoint(NEVER) is None
    finally:
        source.close()


def test_ngff_v04_t_scale_in_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "rec.ome.zarr"
    axes = [{"name": "t", "type": "time", "unit": "millisecond"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    _write_zarr(path, _recording(3, 1, 1)[:, 0, 0], axes=axes, t_scale=20.0, version="0.4")
    source = ReplaySource(ReplaySettings(str(path)))
    try:
        assert source.open().shape == (1, 1, H, W)
        np.testing.assert_allclose(source.recorded_times, [0, 0.02, 0.04], atol=1e-9)
        source.start(0.0)
        assert [p[0] for p in _play(source)] == [0, 1, 2]
    finally:
        source.close()


def test_stop_flag_and_stop(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=3, spacing=10.0, n_c=1)
    source = ReplaySource(ReplaySettings(str(folder)))
    try:
        source.open()
        source.start(0.0)
        assert source.next_timepoint(NEVER) is not None
        stop = threading.Event()
        threading.Timer(0.05, stop.set).start()
        t = time.monotonic()
        assert source.next_timepoint(stop) is None  # the next one is due in 10 s
        assert time.monotonic() - t < 1.0
        assert not source.exhausted
        source.stop()
        assert source.next_timepoint(NEVER) is None
    finally:
        source.close()
        source.close()


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: tifffile.imwrite(p / "a.tif", np.zeros((8, 8, 3), np.uint8),
                                    photometric="rgb"),
         r"axes 'yxs'.*unknown: \['s'\]"),
        (lambda p: tifffile.imwrite(p / "a.tif", np.zeros((4, 8, 8), np.uint16),
                                    photometric="minisblack"),
         r"3 dimensions \(4, 8, 8\) with unnamed axes 'QYX'"),
        (lambda p: tifffile.imwrite(p / "a.tif", np.zeros((8, 8), np.uint16)),
         r"2 dimensions \(8, 8\)"),
        (lambda p: tifffile.imwrite(p / "a.tif", np.zeros((2, 1, 1, 8, 8), np.complex64)),
         r"pixel type complex64"),
        (lambda p: _write_zarr(p / "a.zarr", np.zeros((2, 1, 1, 8, 8), np.uint16),
                               axes=["t", "c", "q", "y", "x"]),
         r"axes 'tcqyx'.*unknown: \['q'\]"),
        (lambda p: _write_zarr(p / "a.zarr", np.zeros((2, 1, 1, 8, 8), np.uint16),
                               axes=["time", "c", "z", "y", "x"]),
         r"axes \['time', 'c', 'z', 'y', 'x'\]"),
        (lambda p: _write_zarr(p / "a.zarr", np.zeros((2, 1, 8, 8), np.uint16),
                               axes=["t", "c", "x", "y"]),
         r"axes 'tcxy'.*y, x last"),
        (lambda p: zarr.create_array(str(p / "a.zarr"), shape=(2, 8, 8), dtype="uint8"),
         r"3 dimensions \(2, 8, 8\) and no axis names"),
        (lambda p: _write_zarr(p / "a.zarr", np.zeros((2, 1, 1, 8, 8), bool)),
         r"pixel type bool"),
    ],
    ids=["tiff-rgb", "tiff-3d", "tiff-2d", "tiff-complex", "zarr-bad-axis",
         "zarr-long-names", "zarr-xy-order", "zarr-bare-3d", "zarr-bool"],
)
def test_bad_recordings_are_named(tmp_path: Path, write: Any, match: str) -> None:
    write(tmp_path)
    (path,) = [p for p in tmp_path.iterdir()]
    source = ReplaySource(ReplaySettings(str(path)))
    with pytest.raises(ConfigError, match=match) as info:
        source.open()
    assert str(path) in str(info.value)
    source.close()


def test_bad_paths_and_csv(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ReplaySource(ReplaySettings(str(tmp_path / "nope.tif"))).open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="neither a zarr store nor a run folder"):
        ReplaySource(ReplaySettings(str(empty))).open()
    folder = _run_folder(tmp_path, n_t=3, spacing=0.1)
    (folder / "frames.csv").write_text("seq,t_index,c,z,t_exposure\n0,2,0,0,4.0\n"
                                       "1,1,0,0,5.0\n")
    with pytest.raises(ConfigError, match=r"go backwards \(timepoint 2 at 4 s after 5 s\)"):
        ReplaySource(ReplaySettings(str(folder))).open()
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((2, 1, 1, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="has no recorded timing"):
        ReplaySource(ReplaySettings(str(plain), timing="recorded")).open()
    with pytest.raises(ConfigError, match=r"replay source settings: timing must be one of "
                                          r"\['auto', 'recorded', 'commanded'\], got 'fast'"):
        ReplaySettings.create(str(plain), timing="fast")
    with pytest.raises(ConfigError, match=r"camera\.source: 'replay:.*nope\.tif': .*nope\.tif "
                                          r"does not exist; expected a recording"):
        ReplaySettings.create(str(tmp_path / "nope.tif"))
    with pytest.raises(ConfigError, match=r"camera\.exposure_ms: -1 \(int\) is not allowed"):
        ReplaySettings.create(str(plain), exposure_ms=-1)


def test_misuse_raises_source_error(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=2, spacing=0.01, n_c=1)
    source = ReplaySource(ReplaySettings(str(folder)))
    with pytest.raises(SourceError, match="before open"):
        source.start(0.0)
    source.open()
    source.start(0.0)
    with pytest.raises(SourceError, match="before next_timepoint"):
        source.read_frame(0, 0, np.empty((H, W), np.uint16))
    source.next_timepoint(NEVER)
    with pytest.raises(SourceError, match=r"frame buffer \(16, 12\) uint8, expected"):
        source.read_frame(0, 0, np.empty((H, W), np.uint8))
    with pytest.raises(SourceError, match=r"\(c=1, z=0\) out of range"):
        source.read_frame(1, 0, np.empty((H, W), np.uint16))
    with pytest.raises(ConfigError, match="interval_s"):
        source.set_interval(-1.0)
    source.close()


def test_factory_and_pickle(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, n_t=2, spacing=0.01, n_c=1)
    config = Config().with_overrides({"camera.source": f"replay:{folder}",
                                      "camera.exposure_ms": 4.0})
    source = make_replay_source(config)
    assert source.settings == ReplaySettings(str(folder), exposure_s=0.004)
    assert ReplaySettings.create(str(folder), exposure_ms=4.0) == source.settings
    assert ReplaySettings.from_config(config, timing="recorded").timing == "recorded"
    clone = pickle.loads(pickle.dumps(source))
    assert isinstance(clone, ReplaySource) and clone.settings == source.settings
    try:
        assert clone.open().shape == (1, 1, H, W)
    finally:
        clone.close()
    with pytest.raises(ConfigError, match="not a replay"):
        make_replay_source(Config())


# --------------------------------------------------------------------------- damaged recordings
# Every class of damage: the replay either plays every recorded frame or names, in one WARNING
# per class, what it cannot play and why, and counts it; the counts always add up.

DT = 0.01  # recorded spacing of the damaged-recording fixtures


def _saved_run(tmp_path: Path, fmt: str = "zarr", n_t: int = 12) -> Path:
    """A run folder written by rt-eda's own Recording (2 channels, 1 z); plane (t, c) holds
    t*100 + c*10 + 1 (never all zero)."""
    from rt_eda.storage.recording import Recording

    folder = tmp_path / f"run-{fmt}"
    folder.mkdir()
    rec = Recording(folder, (2, 1, H, W), "uint16", fmt=fmt)
    for t in range(n_t):
        stack = np.empty((2, 1, H, W), np.uint16)
        for c in range(2):
            stack[c] = t * 100 + c * 10 + 1
        rec.write_stack(t, stack, 500.0 + t * DT + np.array([0.0, 0.001]), DT)
    rec.close()
    return folder


def _replay_all(path: Path, interval: float = 0.0,
                timing: str = "commanded") -> tuple[ReplaySource, list[int]]:
    """Open, play to the end; the recorded indices played (pixels checked on the way).

    Commanded timing by default: every replayable timepoint plays however loaded the machine
    is (at recorded timing a late caller skips ahead, as it should)."""
    source = ReplaySource(ReplaySettings(str(path), timing=timing))
    source.open()
    source.start(interval)
    played = []
    for index, _, _, values in _play(source):
        assert values == [index * 100 + 1, index * 100 + 11]
        played.append(index)
    return source, played


def _assert_accounted(stats: dict[str, float]) -> None:
    """Every recorded timepoint is played, skipped, missing, damaged or not reached."""
    parts = ("timepoints", "timepoints_skipped", "timepoints_missing", "timepoints_damaged",
             "timepoints_not_reached")
    assert sum(stats[k] for k in parts) == stats["recorded_timepoints"], stats


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_truncated_frames_csv_still_replays_every_timepoint(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's repro: frames.csv cut to 300 bytes once replayed 5 of 41 timepoints."""
    folder = _saved_run(tmp_path)
    table = folder / "frames.csv"
    table.write_bytes(table.read_bytes()[:300])  # 5 timepoints and a torn row
    source, played = _replay_all(folder)
    try:
        assert played == list(range(12))
        stats = source.statistics()
        assert stats["timepoints_untimed"] > 0 and stats["exhausted"] == 1.0
        assert stats["frames_csv_bad_rows"] <= 1  # the torn last row, if it is one
        _assert_accounted(stats)
        times = source.recorded_times
        assert times is not None
        np.testing.assert_allclose(np.diff(times), DT, rtol=1e-6)  # extrapolated at DT
        (line,) = [w for w in _warnings(caplog) if "no recorded time" in w]
        assert f"{int(stats['timepoints_untimed'])} of 12 replayable timepoints" in line
    finally:
        source.close()


def test_garbage_rows_in_frames_csv_are_counted_and_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _saved_run(tmp_path)
    table = folder / "frames.csv"
    lines = table.read_text().splitlines()
    lines[3] = "3,not-a-number,0,0,1.0,0.01"  # timepoint 1, channel 0
    lines[4] = "\x00\x01garbage"  # timepoint 1, channel 1: too few fields
    lines[7] = "6,3,0,0,nan,0.01"  # timepoint 3, channel 0: not a time
    lines.append("99,57,0,0,600.0,0.01")  # a timepoint the store does not have
    table.write_text("\n".join(lines) + "\n")
    source, played = _replay_all(folder)
    try:
        assert played == list(range(12))
        stats = source.statistics()
        assert stats["frames_csv_bad_rows"] == 4
        assert stats["timepoints_untimed"] == 1  # timepoint 1 lost both rows; 3 kept one
        _assert_accounted(stats)
        warned = _warnings(caplog)
        assert any("4 row(s) unusable" in w and "line 4" in w for w in warned), warned
        assert any("(timepoints 1)" in w for w in warned), warned
    finally:
        source.close()


def test_binary_frames_csv_falls_back_to_the_commanded_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _saved_run(tmp_path)
    (folder / "frames.csv").write_bytes(bytes(range(256)) * 4)
    source, played = _replay_all(folder, interval=0.0, timing="auto")
    try:
        assert played == list(range(12)) and source.timing is ReplayTiming.COMMANDED
        assert any("frames.csv is unusable" in w for w in _warnings(caplog))
        _assert_accounted(source.statistics())
    finally:
        source.close()
    with pytest.raises(ConfigError, match="timing 'recorded' asked"):
        ReplaySource(ReplaySettings(str(folder), timing="recorded")).open()


@pytest.mark.parametrize("damage", ["deleted", "truncated", "padded"])
def test_a_damaged_chunk_is_skipped_and_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """A deleted chunk once replayed as zeros without a word."""
    folder = _saved_run(tmp_path)
    chunk = folder / "images.ome.zarr" / "0" / "c.4.0.0.0.0"
    if damage == "deleted":
        chunk.unlink()
    elif damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:100])
    else:
        chunk.write_bytes(chunk.read_bytes() + b"x")
    source, played = _replay_all(folder)
    try:
        assert played == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
        stats = source.statistics()
        key = "timepoints_missing" if damage == "deleted" else "timepoints_damaged"
        assert stats[key] == 1 and stats["timepoints"] == 11
        _assert_accounted(stats)
        (line,) = [w for w in _warnings(caplog) if "cannot be replayed" in w]
        assert "1 of 12 timepoints" in line and "(timepoints 4)" in line
        assert ("no chunk file" in line) if damage == "deleted" else ("c.4.0.0.0.0 of" in line)
    finally:
        source.close()


def test_zarr_shape_larger_than_the_data(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    import json

    folder = _saved_run(tmp_path)
    meta_path = folder / "images.ome.zarr" / "0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][0] = 64  # what a writer that died leaves: the shape grows ahead of the data
    meta_path.write_text(json.dumps(meta))
    source, played = _replay_all(folder)
    try:
        assert played == list(range(12))
        stats = source.statistics()
        assert stats["recorded_timepoints"] == 64 and stats["timepoints_missing"] == 52
        _assert_accounted(stats)
        assert any("52 of 64 timepoints" in w and "12..63" in w for w in _warnings(caplog))
    finally:
        source.close()


def test_tiff_cut_short_replays_what_is_in_the_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _saved_run(tmp_path, fmt="tiff")
    image = folder / "images.ome.tif"
    stack_bytes = 2 * H * W * 2
    with tifffile.TiffFile(image) as tif:
        offset = int(tif.pages.first.dataoffsets[0])
    with image.open("r+b") as f:  # 7 whole stacks and half of the 8th
        f.truncate(offset + 7 * stack_bytes + stack_bytes // 2)
    source, played = _replay_all(folder)
    try:
        assert played == list(range(7))
        times = source.recorded_times  # from frames.csv: the OME-XML was lost
        assert times is not None
        np.testing.assert_allclose(times[:7], np.arange(7) * DT, atol=1e-9)
        stats = source.statistics()
        assert stats["timepoints_missing"] == 5
        _assert_accounted(stats)
        assert any("5 of 12 timepoints" in w and "cut short" in w for w in _warnings(caplog))
    finally:
        source.close()


def test_corrupt_compressed_chunk_is_found_while_replaying(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A compressed chunk cannot be checked by its size: its read fails, it is skipped."""
    path = tmp_path / "rec.ome.zarr"
    _write_zarr(path, _recording(5, 1, 1) + 1)
    chunk = path / "0" / "c" / "2" / "0" / "0" / "0" / "0"
    chunk.write_bytes(b"not zstd at all")
    source = ReplaySource(ReplaySettings(str(path)))
    try:
        source.open()
        source.start(0.0)
        assert [p[0] for p in _play(source)] == [0, 1, 3, 4]
        stats = source.statistics()
        assert stats["timepoints_damaged"] == 1 and stats["exhausted"] == 1.0
        _assert_accounted(stats)
        assert any("timepoint 2 cannot be read" in w for w in _warnings(caplog))
    finally:
        source.close()


def test_generic_zarr_absent_chunk_plays_the_fill_value_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rec.ome.zarr"
    _write_zarr(path, _recording(4, 2, 1) + 1)
    (path / "0" / "c" / "1" / "1" / "0" / "0" / "0").unlink()
    source = ReplaySource(ReplaySettings(str(path)))
    try:
        source.open()
        source.start(0.0)
        played = _play(source)
        assert [p[0] for p in played] == [0, 1, 2, 3]
        assert played[1][3] == [101, 0]
        assert source.statistics()["zarr_chunks_absent"] == 1
        assert any("1 chunk file(s)" in w and "fill value 0" in w for w in _warnings(caplog))
    finally:
        source.close()


def test_nothing_replayable_is_a_config_error(tmp_path: Path) -> None:
    folder = _saved_run(tmp_path, n_t=3)
    for chunk in (folder / "images.ome.zarr" / "0").glob("c.*"):
        chunk.unlink()
    with pytest.raises(ConfigError, match=r"nothing to replay in .*missing: no chunk file"):
        ReplaySource(ReplaySettings(str(folder))).open()


def test_slow_interval_to_the_end_accounts_for_every_timepoint(tmp_path: Path) -> None:
    folder = _saved_run(tmp_path)
    (folder / "images.ome.zarr" / "0" / "c.5.0.0.0.0").unlink()
    source, played = _replay_all(folder, interval=0.035, timing="auto")
    try:
        stats = source.statistics()
        assert stats["timepoints_skipped"] > 0 and stats["timepoints_missing"] == 1
        assert stats["timepoints_not_reached"] == 0
        _assert_accounted(stats)
        assert source.end_reason.startswith(f"end of the recording: {len(played)} of 12")
    finally:
        source.close()


def test_spec_before_open_checks_the_recording_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The engine asks for the spec before starting anything: a recording with nothing to
    replay is refused there (exit 2, nothing started); warnings wait for open()."""
    folder = _saved_run(tmp_path, n_t=3)
    (folder / "images.ome.zarr" / "0" / "c.1.0.0.0.0").unlink()
    source = ReplaySource(ReplaySettings(str(folder)))
    assert source.spec.shape == (2, 1, H, W)
    assert not _warnings(caplog)
    try:
        source.open()
        assert len(_warnings(caplog)) == 1
    finally:
        source.close()
    for chunk in (folder / "images.ome.zarr" / "0").glob("c.*"):
        chunk.unlink()
    with pytest.raises(ConfigError, match="nothing to replay"):
        _ = ReplaySource(ReplaySettings(str(folder))).spec


# --------------------------------------------------------------------------- the replay clock


def test_schedule_recorded_timing_plays_every_timepoint_at_fast_intervals() -> None:
    from rt_eda.sources._replay_timing import ReplaySchedule

    times = np.array([0.0, 0.1, 0.2, 0.3])
    schedule = ReplaySchedule(ReplayTiming.RECORDED, times, times.size)
    schedule.start(100.0)
    shown = []
    nxt, now = 0, 100.0
    while (chosen := schedule.choose(nxt, 0.01, now)) is not None:
        pos, due, late = chosen
        assert not late
        shown.append((pos, round(due - 100.0, 6)))
        schedule.shown(due)
        nxt, now = pos + 1, due  # the caller is back exactly when it was due
    assert shown == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)]


def test_schedule_recorded_timing_skips_forward_at_slow_intervals_and_when_late() -> None:
    from rt_eda.sources._replay_timing import ReplaySchedule

    times = np.arange(10) * 0.1  # recorded every 100 ms
    schedule = ReplaySchedule(ReplayTiming.RECORDED, times, times.size)
    schedule.start(0.0)
    assert schedule.choose(0, 0.25, 0.0) == (0, 0.0, False)
    schedule.shown(0.0)
    # 250 ms later the timepoint recorded nearest 0.25 s is shown (2, on a tie the earlier).
    assert schedule.choose(1, 0.25, 0.0) == (2, 0.25, False)
    schedule.shown(0.25)
    # A caller back 0.4 s after it was due gets the timepoint nearest to now, marked late.
    assert schedule.choose(3, 0.25, 0.9) == (9, 0.9, True)
    schedule.shown(0.9)
    assert schedule.choose(10, 0.25, 0.9) is None  # past the end of the recording


def test_schedule_commanded_timing_one_per_interval() -> None:
    from rt_eda.sources._replay_timing import ReplaySchedule

    schedule = ReplaySchedule(ReplayTiming.COMMANDED, None, 3)
    schedule.start(5.0)
    assert schedule.choose(0, 0.5, 5.0) == (0, 5.0, False)
    schedule.shown(5.0)
    assert schedule.choose(1, 0.5, 5.1) == (1, 5.5, False)
    schedule.shown(5.5)
    assert schedule.choose(2, 0.5, 7.0) == (2, 7.0, True)  # more than an interval late
    schedule.shown(7.0)
    assert schedule.choose(3, 0.5, 7.0) is None
    with pytest.raises(ValueError, match="recorded timing needs the recorded times"):
        ReplaySchedule(ReplayTiming.RECORDED, None, 3)
