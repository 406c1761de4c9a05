"""Event-driven actuation on MicroManagerSource against Micro-Manager's DemoCamera
(mm-test-adapters): the camera ROI, the channel presets and the shared core a stimulation
device is loaded into, all through the real pymmcore-plus core."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rt_eda.core.errors import SourceError
from rt_eda.core.regions import FrameRegion
from rt_eda.sources.micromanager import (
    AcquisitionMode,
    MicroManagerSettings,
    MicroManagerSource,
)

pytest.importorskip("pymmcore_plus")
pytest.importorskip("mm_test_adapters")

NEVER = threading.Event()
SENTINEL = 7  # the DemoCamera's images never hold it everywhere


@pytest.fixture
def sources() -> Iterator[list[MicroManagerSource]]:
    """Sources made by a test; every one is closed at the end."""
    made: list[MicroManagerSource] = []
    yield made
    for source in made:
        source.close()


def _open(made: list[MicroManagerSource], python_devices: bool = False,
          **kwargs: Any) -> MicroManagerSource:
    source = MicroManagerSource(MicroManagerSettings.create(
        exposure_ms=1.0, python_devices=python_devices, **kwargs))
    made.append(source)
    source.open()
    return source


def _timepoint(source: MicroManagerSource) -> np.ndarray:
    """One timepoint into a full-frame stack prefilled with SENTINEL."""
    spec = source.spec
    stack = np.full(spec.shape, SENTINEL, spec.dtype)
    assert source.next_timepoint(NEVER) is not None
    for c, z in source.frame_order():
        source.read_frame(c, z, stack[c, z])
    return stack


def _camera_region(source: MicroManagerSource) -> FrameRegion:
    x, y, w, h = source.core.getROI()
    return FrameRegion(y, x, h, w)


def _assert_only_inside(frame: np.ndarray, region: FrameRegion) -> None:
    """The frame's pixels were written inside ``region`` and nowhere else."""
    inside = np.zeros(frame.shape, bool)
    inside[region.slices()] = True
    assert np.all(frame[~inside] == SENTINEL)
    assert frame[inside].std() > 0 and np.mean(frame[inside] == SENTINEL) < 0.01


@pytest.mark.parametrize("interval", [0.0, 0.005], ids=["sequence", "snap"])
def test_roi_reads_the_sub_rectangle_then_the_full_frame_again(
    sources: list[MicroManagerSource], interval: float,
) -> None:
    # sequence_below_s 0: an interval of 5 ms (> 2 x exposure) snaps
    source = _open(sources, sequence_below_s=0.0)
    assert source.sensor_shape == (512, 512)
    assert source.frame_region == FrameRegion.full(512, 512)
    source.start(interval)
    mode = AcquisitionMode.SEQUENCE if interval == 0.0 else AcquisitionMode.SNAP
    assert source.mode is mode
    _assert_only_inside(_timepoint(source)[0, 0], FrameRegion.full(512, 512))
    starts = source.statistics()["mm_sequence_starts"]

    region = FrameRegion(40, 96, 128, 160)  # y, x, height, width
    source.set_roi(region)
    assert source.frame_region == region == _camera_region(source)
    for _ in range(3):
        _assert_only_inside(_timepoint(source)[0, 0], region)
    assert source.mode is mode

    source.set_roi(None)
    assert source.frame_region == FrameRegion.full(512, 512) == _camera_region(source)
    _assert_only_inside(_timepoint(source)[0, 0], FrameRegion.full(512, 512))

    stats = source.statistics()
    assert stats["roi_changes"] == 2
    assert 0 < stats["roi_change_ms_mean"] <= stats["roi_change_ms_max"]
    assert stats["roi_change_s"] == pytest.approx(2e-3 * stats["roi_change_ms_mean"])
    # a sequence is restarted around each change (Micro-Manager sizes its buffer at start)
    assert stats["mm_sequence_starts"] - starts == (2 if mode is AcquisitionMode.SEQUENCE
                                                    else 0)
    assert stats["mm_frames_lost"] == 0
    source.set_roi(FrameRegion.full(512, 512))  # the same region: nothing to do
    assert source.statistics()["roi_changes"] == 2


def test_roi_of_a_multichannel_stack(sources: list[MicroManagerSource]) -> None:
    source = _open(sources, channel_group="Channel", channels=("FITC", "Cy5"))
    source.start(0.0)
    region = FrameRegion(0, 384, 512, 128)  # the right-hand strip, to the sensor's edges
    source.set_roi(region)
    stack = _timepoint(source)
    for c in range(2):
        _assert_only_inside(stack[c, 0], region)


def test_roi_outside_the_sensor_is_refused_and_changes_nothing(
    sources: list[MicroManagerSource],
) -> None:
    source = _open(sources)
    source.start(0.0)
    _timepoint(source)
    inside = FrameRegion(0, 0, 64, 64)
    source.set_roi(inside)
    for bad in (FrameRegion(480, 0, 64, 64), FrameRegion(-1, 0, 10, 10),
                FrameRegion(0, 0, 513, 512)):
        with pytest.raises(SourceError, match=r"outside the 512x512 sensor of camera Camera"):
            source.set_roi(bad)
    assert source.frame_region == inside == _camera_region(source)
    assert source.core.isSequenceRunning()
    _assert_only_inside(_timepoint(source)[0, 0], inside)
    assert source.statistics()["roi_changes"] == 1


def test_channel_presets_change_the_cores_channel_config(
    sources: list[MicroManagerSource],
) -> None:
    source = _open(sources, channel_group="Channel", channels=("FITC", "Rhodamine"))
    assert source.channel_presets == ("FITC", "Rhodamine")
    assert set(source.available_channel_presets) == {"Cy5", "DAPI", "FITC", "Rhodamine"}
    source.start(0.0)
    assert source.mode is AcquisitionMode.SNAP
    core = source.core

    def presets_seen() -> list[str]:
        assert source.next_timepoint(NEVER) is not None
        out = np.empty((512, 512), np.uint16)
        seen: list[str] = []
        for c, z in source.frame_order():
            source.read_frame(c, z, out)
            seen.append(core.getCurrentConfig("Channel"))
        return seen

    assert presets_seen() == ["FITC", "Rhodamine"]
    source.set_channel_presets(("Cy5", "DAPI"))
    assert source.channel_presets == ("Cy5", "DAPI")
    assert presets_seen() == ["Cy5", "DAPI"]
    assert presets_seen() == ["Cy5", "DAPI"]
    with pytest.raises(SourceError, match=r"\['GFP'\] not in group 'Channel' \(presets: "):
        source.set_channel_presets(("GFP", "DAPI"))
    with pytest.raises(SourceError, match=r"1 channel presets .* for 2 channel"):
        source.set_channel_presets(("DAPI",))
    assert source.channel_presets == ("Cy5", "DAPI")
    assert source.statistics()["preset_changes"] == 1


def test_channel_preset_of_a_running_sequence(sources: list[MicroManagerSource]) -> None:
    """No camera.channels: the configuration's channel group, its current preset; a change
    restarts the sequence with the new preset applied."""
    source = _open(sources)
    core = source.core
    assert source.channel_presets == (core.getCurrentConfig("Channel"),) == ("DAPI",)
    source.start(0.0)
    _timepoint(source)
    starts = source.statistics()["mm_sequence_starts"]
    source.set_channel_presets(("FITC",))
    assert core.getCurrentConfig("Channel") == "FITC"
    assert core.isSequenceRunning()
    assert source.statistics()["mm_sequence_starts"] == starts + 1
    for _ in range(3):
        _timepoint(source)
    assert core.getCurrentConfig("Channel") == "FITC"
    source.set_channel_presets(("FITC",))  # unchanged: no restart
    assert source.statistics()["mm_sequence_starts"] == starts + 1


def test_stimulation_device_in_the_cameras_core(sources: list[MicroManagerSource]) -> None:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from rt_eda.sources._slm import open_slm

    source = _open(sources, python_devices=True)
    core = source.slm_core()
    assert core is source.core and isinstance(core, UniMMCore)
    source.start(0.0)
    slm = open_slm(source.sensor_shape, core=core)
    try:
        assert slm.core is core and "Camera" in core.getLoadedDevices()
        mask = np.zeros(source.sensor_shape, bool)
        mask[100:140, 200:260] = True
        times = []
        for k in range(3):
            _timepoint(source)
            mask = np.roll(mask, 7 * k, axis=1)
            times.append(slm.show(mask))
            np.testing.assert_array_equal(slm.shown(), mask)
            np.testing.assert_array_equal(core.getSLMImage(slm.label), mask * np.uint8(255))
        assert np.all(np.diff(times) > 0)
        assert slm.device is not None and slm.device.displays == 3
        assert source.statistics()["mm_frames_lost"] == 0
    finally:
        slm.close()
    assert slm.label not in core.getLoadedDevices()
    assert "Camera" in core.getLoadedDevices()


def test_plain_core_has_no_slm_core(sources: list[MicroManagerSource]) -> None:
    source = _open(sources)
    with pytest.raises(SourceError, match="python_devices=True"):
        source.slm_core()


def test_python_devices_core_loads_configuration_errors_alike(tmp_path: Any) -> None:
    """The UniMMCore source loads the configuration with Micro-Manager's own loader: a
    missing adapter is Micro-Manager's message, as with a plain core."""
    from rt_eda.core.errors import ConfigError
    from rt_eda.sources.micromanager import demo_adapter_path

    cfg = tmp_path / "bad.cfg"
    cfg.write_text("Device,Cam,NoSuchLibrary,DCam\n")
    messages = []
    for python_devices in (False, True):
        source = MicroManagerSource(MicroManagerSettings.create(
            config_path=str(cfg), adapter_path=demo_adapter_path(),
            python_devices=python_devices))
        with pytest.raises(ConfigError, match="could not load") as info:
            source.open()
        source.close()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
