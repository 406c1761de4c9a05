"""MicroManagerSource against Micro-Manager's DemoCamera (mm-test-adapters): the real camera
of these tests, driven through pymmcore-plus exactly as hardware would be."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rt_eda.core.config import Config, all_keys
from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.sources.micromanager import (
    AcquisitionMode,
    MicroManagerSettings,
    MicroManagerSource,
    make_micromanager_source,
)

pytest.importorskip("pymmcore_plus")
pytest.importorskip("mm_test_adapters")

NEVER = threading.Event()
FAST_DEMO = (("Camera", "FastImage", "1"),)  # the DemoCamera reuses its image: ~1 ms frames


@pytest.fixture
def sources() -> Iterator[list[MicroManagerSource]]:
    """Sources made by a test; every one is closed at the end."""
    made: list[MicroManagerSource] = []
    yield made
    for source in made:
        source.close()


def _open(made: list[MicroManagerSource], **kwargs: Any) -> MicroManagerSource:
    source = MicroManagerSource(MicroManagerSettings.create(**kwargs))
    made.append(source)
    source.open()
    return source


def _timepoints(source: MicroManagerSource, n: int) -> list[float]:
    """Acquire ``n`` timepoints; the first frame's exposure time of each."""
    spec = source.spec
    out = np.empty((spec.height, spec.width), spec.dtype)
    firsts = []
    for _ in range(n):
        assert source.next_timepoint(NEVER) is not None
        frame_times = [source.read_frame(c, z, out) for c, z in source.frame_order()]
        firsts.append(frame_times[0])
    return firsts


def test_demo_frames_shape_dtype_and_times(sources: list[MicroManagerSource]) -> None:
    source = _open(sources, exposure_ms=2.0)
    spec = source.spec
    assert (spec.channels, spec.z_slices, spec.height, spec.width, spec.dtype) == (
        1, 1, 512, 512, "uint16")
    assert source.core.getExposure() == pytest.approx(2.0)
    source.start(0.0)
    assert source.mode is AcquisitionMode.SEQUENCE
    frames = np.zeros((5, 512, 512), np.uint16)
    times = []
    for i in range(5):
        assert source.next_timepoint(NEVER) is not None
        times.append(source.read_frame(0, 0, frames[i]))
    now = time.monotonic()
    assert all(frames[i].std() > 0 for i in range(5))  # real images, not zeros
    assert np.all(np.diff(times) > 0)
    assert now - 2.0 < times[0] and times[-1] <= now  # the camera's clock, mapped to ours
    stats = source.statistics()
    assert stats["timepoints"] == 5 and stats["frames"] == 5
    assert stats["mm_frames_lost"] == 0 and stats["mm_timestamp_fallbacks"] == 0
    source.stop()
    assert source.next_timepoint(NEVER) is None


def test_interval_change_changes_the_achieved_interval(
    sources: list[MicroManagerSource],
) -> None:
    source = _open(sources, exposure_ms=1.0, properties=FAST_DEMO)
    source.start(0.02)
    assert source.mode is AcquisitionMode.SEQUENCE
    fast = np.diff(_timepoints(source, 12))
    source.set_interval(0.1)
    slow = _timepoints(source, 5)
    assert source.mode is AcquisitionMode.SNAP
    slow_dt = np.diff(slow)
    assert np.median(fast) == pytest.approx(0.02, abs=0.004)
    assert np.median(slow_dt) == pytest.approx(0.1, abs=0.005)
    source.set_interval(0.0)  # back to a sequence, free-run
    free = np.diff(_timepoints(source, 30))
    assert source.mode is AcquisitionMode.SEQUENCE
    assert np.median(free) < 0.01
    stats = source.statistics()
    assert stats["mode_switches"] == 2 and stats["mm_sequence_starts"] == 2
    assert stats["mm_frames_skipped"] > 0  # the DemoCamera ignores the interval: decimated
    assert stats["interval_error_ms_p50"] < 4.0


def test_multichannel_z_stack_in_order(sources: list[MicroManagerSource]) -> None:
    source = _open(sources, exposure_ms=1.0, channel_group="Channel",
                   channels=("FITC", "Rhodamine"), z_positions=(0.0, 5.0, 10.0))
    spec = source.spec
    assert spec.shape == (2, 3, 512, 512)
    order = list(source.frame_order())
    assert order == [(c, z) for c in range(2) for z in range(3)]
    source.start(0.0)
    assert source.mode is AcquisitionMode.SNAP  # several frames per stack: snaps
    core = source.core
    stack = np.zeros(spec.shape, np.uint16)
    for _ in range(2):
        assert source.next_timepoint(NEVER) is not None
        seen, times = [], []
        for c, z in order:
            times.append(source.read_frame(c, z, stack[c, z]))
            seen.append((core.getCurrentConfig("Channel"), round(core.getPosition(), 3)))
        assert seen == [(ch, z) for ch in ("FITC", "Rhodamine") for z in (0.0, 5.0, 10.0)]
        assert np.all(np.diff(times) > 0)
        assert all(stack[c, z].std() > 0 for c, z in order)
    assert source.statistics()["frames"] == 12


def _wait_for_camera_frames(source: MicroManagerSource, n: int, timeout: float = 20.0) -> None:
    """Until the camera has numbered ``n`` frames of its sequence (not a fixed sleep: on a
    loaded machine the DemoCamera's thread produces fewer frames per second)."""
    import pymmcore

    md = pymmcore.Metadata()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            source.core.getLastImageMD(md)
        except IndexError:  # the buffer is empty: nothing new yet
            pass
        else:
            if int(md.GetSingleTag("ImageNumber").GetValue()) >= n:
                return
        time.sleep(0.02)
    raise AssertionError(f"the camera numbered fewer than {n} frames in {timeout} s")


def test_buffer_overflow_is_counted(sources: list[MicroManagerSource]) -> None:
    source = _open(sources, exposure_ms=1.0, properties=FAST_DEMO, buffer_mb=4)
    assert source.core.getBufferTotalCapacity() <= 8  # 4 MB of 512 KB frames
    source.start(0.0)
    _timepoints(source, 3)
    _wait_for_camera_frames(source, 3 + 80)  # it fills the tiny buffer many times over
    _timepoints(source, 20)
    stats = source.statistics()
    assert stats["mm_buffer_overflows"] >= 1
    assert stats["mm_frames_lost"] >= 50
    # every frame the core numbered (up to the last one popped) was popped or counted lost
    assert stats["mm_frames_popped"] + stats["mm_frames_lost"] == stats["mm_camera_frames"]
    assert stats["timepoints"] == 23 and stats["mm_frames_popped"] == 23


def test_device_error_mid_run_keeps_micromanagers_message(
    sources: list[MicroManagerSource],
) -> None:
    source = _open(sources, exposure_ms=1.0, channel_group="Channel",
                   channels=("FITC", "Rhodamine"))
    source.start(0.0)
    _timepoints(source, 1)
    # the Rhodamine preset now sets a binning the camera refuses
    source.core.defineConfig("Channel", "Rhodamine", "Camera", "Binning", "3")
    with pytest.raises(SourceError, match=r"Rhodamine.*Invalid property value: Binning \(3\)"):
        _timepoints(source, 1)


def test_stage_error_names_the_position(sources: list[MicroManagerSource]) -> None:
    source = _open(sources, exposure_ms=1.0, z_positions=(0.0, 1e9))
    source.start(0.0)
    with pytest.raises(SourceError, match=r"z = 1000000000.0 um.*Position out of range"):
        _timepoints(source, 1)


def test_configuration_errors(sources: list[MicroManagerSource]) -> None:
    with pytest.raises(ConfigError, match=r"\['GFP'\] not in group 'Channel'.*'FITC'"):
        _open(sources, channel_group="Channel", channels=("FITC", "GFP"))
    with pytest.raises(ConfigError, match=r"'Colour' is not a group"):
        _open(sources, channel_group="Colour", channels=("FITC",))
    with pytest.raises(SourceError, match=r"setting Camera.Binning = '3'.*Binning"):
        _open(sources, properties=(("Camera", "Binning", "3"),))
    with pytest.raises(ConfigError, match=r"camera\.source: .*/nonexistent/scope.cfg does not "
                                          r"exist; expected a Micro-Manager configuration"):
        _open(sources, config_path="/nonexistent/scope.cfg")
    # A configuration that is not there any more when the source opens (the engine's case:
    # the configuration was checked at load).
    gone = MicroManagerSettings(config_path="/nonexistent/scope.cfg")
    with pytest.raises(ConfigError, match=r"camera\.source: Micro-Manager configuration "
                                          r"/nonexistent/scope\.cfg does not exist"):
        sources.append(MicroManagerSource(gone))
        sources[-1].open()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exposure_ms": 0}, r"camera\.exposure_ms: 0 \(int\) is not allowed; expected a number "
                             r"> 0"),
        ({"exposure_ms": "fast"}, r"camera\.exposure_ms: 'fast' \(str\) is not allowed"),
        ({"channels": ("FITC",)}, r"camera\.channel_group is empty but camera\.channels is "
                                  r"\['FITC'\]"),
        ({"channels": "FITC"}, r"camera\.channels: 'FITC' \(str\) is not allowed"),
        ({"z_positions": (0.0, float("nan"))}, r"camera\.z_positions"),
        ({"buffer_mb": 0}, r"Micro-Manager source settings: buffer_mb must be an integer >= 1 "
                           r"\(MB\) or None, got 0"),
        ({"sequence_below_s": -1.0}, r"sequence_below_s must be a finite number >= 0"),
        ({"properties": (("Camera", "Binning"),)}, r"properties must be \(device, property, "
                                                   r"value\) string triples, got \('Camera', "
                                                   r"'Binning'\)"),
        ({"adapter_path": ""}, r"adapter_path must be a folder path"),
    ],
)
def test_settings_refused_name_the_key(kwargs: dict[str, Any], message: str) -> None:
    """Keys of the configuration are checked by the configuration, named as in a file; the
    four without a key are checked once, by name. Nothing is opened."""
    with pytest.raises(ConfigError, match=message) as info:
        MicroManagerSettings.create(**kwargs)
    assert all(k in all_keys() for k in re.findall(r"camera\.[\w.]+", str(info.value)))


def test_settings_come_from_the_configuration() -> None:
    # The plain constructor's defaults are the configuration's.
    demo = Config().with_overrides({"camera.source": "mm-demo"})
    assert MicroManagerSettings() == MicroManagerSettings.from_config(demo)
    settings = MicroManagerSettings.create(exposure_ms=3, channel_group="Channel",
                                           channels=["DAPI"], z_positions=[1, 2.5],
                                           properties=[["Camera", "FastImage", "1"]])
    assert settings == MicroManagerSettings(
        exposure_ms=3.0, channel_group="Channel", channels=("DAPI",), z_positions=(1.0, 2.5),
        properties=(("Camera", "FastImage", "1"),))
    assert isinstance(settings.z_positions[0], float)


def test_mmconfig_file_and_factory(tmp_path: object, sources: list[MicroManagerSource]) -> None:
    from rt_eda.sources.micromanager import DEMO_CONFIG_NAME, demo_adapter_path

    cfg = f"{demo_adapter_path()}/{DEMO_CONFIG_NAME}"
    config = Config().with_overrides({
        "camera.source": f"mmconfig:{cfg}", "camera.exposure_ms": 3.0,
        "camera.channel_group": "Channel", "camera.channels": ["DAPI"],
        "camera.z_positions": [2.5],
    })
    source = make_micromanager_source(config)
    sources.append(source)
    assert source.settings.config_path == cfg and source.settings.channels == ("DAPI",)
    clone = pickle.loads(pickle.dumps(source))
    sources.append(clone)
    assert clone.open().shape == (1, 1, 512, 512)
    assert clone.core.getCurrentConfig("Channel") == "DAPI"
    assert clone.core.getPosition() == pytest.approx(2.5)
    assert clone.core.getExposure() == pytest.approx(3.0)
    demo = make_micromanager_source(Config().with_overrides({"camera.source": "mm-demo"}))
    assert demo.settings.config_path is None
    with pytest.raises(ConfigError, match="not a Micro-Manager source"):
        make_micromanager_source(Config())


def test_engine_side_import_does_not_load_micromanager() -> None:
    code = (
        "import sys, pickle\n"
        "from rt_eda.sources.micromanager import MicroManagerSource, MicroManagerSettings\n"
        "pickle.dumps(MicroManagerSource(MicroManagerSettings()))\n"
        "bad = [m for m in sys.modules if m.startswith(('pymmcore', 'mm_test_adapters'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _demo_cfg() -> str:
    from rt_eda.sources.micromanager import DEMO_CONFIG_NAME, demo_adapter_path

    with open(f"{demo_adapter_path()}/{DEMO_CONFIG_NAME}") as f:
        return f.read()


# Each member: what is written as the .cfg, and what Micro-Manager says (kept, on one line).
BAD_CFGS = {
    "missing-library": (
        lambda cfg: cfg.replace("Device,Camera,DemoCamera,DCam", "Device,Camera,NoSuchLib,DCam"),
        r'Line 8: Device,Camera,NoSuchLib,DCam Failed to load device adapter "NoSuchLib"'),
    "missing-device": (
        lambda cfg: cfg.replace("Device,Camera,DemoCamera,DCam",
                                "Device,Camera,DemoCamera,NoSuchCam"),
        r'failed to instantiate device "NoSuchCam"'),
    "bad-property-value": (
        lambda cfg: cfg + "\nProperty,Camera,Binning,3\n",
        r'Property,Camera,Binning,3 Cannot set property "Binning" to "3".*Invalid property '
        r'value: Binning \(3\)'),
    "syntax-error": (lambda cfg: "Device,Camera,DemoCamera\nnot a configuration line\n",
                     r"Wrong number of tokens"),
    "empty": (lambda cfg: "", r"sets no camera device"),
    "no-camera": (
        lambda cfg: "\n".join(line for line in cfg.splitlines()
                              if line.split(",")[1:2] != ["Camera"]
                              and not line.startswith("Property,Core,Camera,")),
        r"No device with label \"Camera\"|sets no camera device"),
}


@pytest.mark.parametrize("member", sorted(BAD_CFGS))
def test_configuration_that_does_not_load_is_a_config_error_on_one_line(
        tmp_path: object, sources: list[MicroManagerSource], member: str) -> None:
    from pathlib import Path

    write, said = BAD_CFGS[member]
    cfg = Path(str(tmp_path)) / f"{member}.cfg"
    cfg.write_text(write(_demo_cfg()))
    from rt_eda.sources.micromanager import demo_adapter_path

    with pytest.raises(ConfigError, match=said) as info:
        _open(sources, config_path=str(cfg), adapter_path=demo_adapter_path())
    message = str(info.value)
    assert "\n" not in message and str(cfg) in message, message
    assert message.startswith("camera.source: Micro-Manager"), message


def test_exposure_outside_the_cameras_limits(sources: list[MicroManagerSource]) -> None:
    # Beyond what any configuration allows: refused before anything is opened.
    with pytest.raises(ConfigError, match=r"camera\.exposure_ms: 1000000000000\.0 \(float\) is "
                                          r"not allowed; expected a number > 0 and at most"):
        _open(sources, exposure_ms=1e12)
    # Within the configuration's limit but beyond the camera's: refused when it opens.
    for exposure in (3_600_000.0, 10_000.5):
        asked = re.escape(f"{exposure:g}")
        with pytest.raises(ConfigError, match=(
                rf"camera\.exposure_ms: {asked} ms is outside what camera 'Camera' "
                r"\(DemoCamera DCam\) allows: 0 to 10000 ms")):
            _open(sources, exposure_ms=exposure)
    assert _open(sources, exposure_ms=10_000.0).core.getExposure() == 10_000.0
