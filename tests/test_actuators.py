"""Actuators (issue 16): what each built-in one decides, what it does to a real source and a
real pymmcore-plus SLM device, how they are found and refused, and each of them end to end in
``rt-eda run`` (the synthetic source; ``roi`` and ``stimulate`` on mm-demo too), with the
user's own actuator of ``examples/`` found through ``actuation.actuator_modules``."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.actuators import (
    ActuatorSettings,
    ChannelActuator,
    RoiActuator,
    StimulateActuator,
    make_actuators,
)
from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError
from rt_eda.core.messages import DecisionRecord, Result
from rt_eda.core.regions import EventRegion, FrameRegion
from rt_eda.shm import list_blocks
from rt_eda.workers import demo_model_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = ["--set", "camera.synthetic.height=256", "--set", "camera.synthetic.width=256",
         "--no-viewer"]


def _record(seq: int, fast: bool, *regions: EventRegion, position: int = 0) -> DecisionRecord:
    r = Result(seq=seq, worker=0, decision=0.9 if fast else 0.1, t_exposure=1.0 + seq,
               t_published=1.0 + seq, t_claimed=1.0 + seq, t_done=1.0 + seq,
               position=position, regions=tuple(regions))
    return DecisionRecord(r, 2.0 + seq, 0.1 if fast else 1.0, fast)


def _region(y: int, x: int, half: int = 4) -> EventRegion:
    return EventRegion(float(y), float(x), y - half, x - half, y + half + 1, x + half + 1,
                       0.9, (2 * half + 1) ** 2)


def _settings(name: str, **options: Any) -> ActuatorSettings:
    return ActuatorSettings(name, options, (512, 512), 1)


# -- what each one decides -----------------------------------------------------------------
def test_roi_follows_the_events_with_a_margin_and_returns_to_the_full_frame() -> None:
    roi = RoiActuator(_settings("roi", margin_px=32, min_size_px=96, align_px=16))
    assert roi.decide(_record(1, False, _region(100, 100))) is None  # slow: nothing
    first = roi.decide(_record(2, True, _region(100, 300)))
    assert first is not None and first.frame is not None
    f = first.frame
    # the event's box [96, 105) x [296, 305) grown by 32 px, aligned to 16
    assert f.contains(96 - 32, 296 - 32, 105 + 32, 305 + 32)
    assert f.y % 16 == 0 and f.x % 16 == 0 and f.height % 16 == 0 and f.width % 16 == 0
    assert f.height >= 96 and f.width >= 96
    # the event moves a little, still well inside: no change (no ROI churn)
    assert roi.decide(_record(3, True, _region(102, 302))) is None
    # fast without a region (not located this time): keep what is read
    assert roi.decide(_record(4, True)) is None
    # the event leaves the region: it follows
    moved = roi.decide(_record(5, True, _region(200, 300)))
    assert moved is not None and moved.frame is not None and moved.frame.contains(
        196 - 16, 296, 205 + 16, 305)
    back = roi.decide(_record(6, False))
    assert back is not None and back.frame is None and back.after_seq == 6
    assert roi.decide(_record(7, False)) is None


def test_roi_region_stays_inside_the_sensor_at_its_edges() -> None:
    roi = RoiActuator(_settings("roi"))
    for y, x in ((2, 2), (509, 509), (2, 509), (256, 0)):
        f = roi.region_for((max(0, y - 4), max(0, x - 4), min(512, y + 5), min(512, x + 5)))
        assert f.inside(512, 512) and f.height >= 96 and f.width >= 96, (y, x, f)
        assert f.contains(max(0, y - 4), max(0, x - 4), min(512, y + 5), min(512, x + 5))


def test_positions_are_decided_apart() -> None:
    stim = StimulateActuator(_settings("stimulate"))
    a = stim.decide(_record(1, True, _region(50, 50), position=0))
    b = stim.decide(_record(2, True, _region(60, 60), position=1))
    assert a is not None and b is not None and (a.position, b.position) == (0, 1)
    off = stim.decide(_record(3, False, position=1))
    assert off is not None and off.position == 1 and off.regions == ()
    assert stim.decide(_record(4, False, position=1)) is None


def test_channel_decides_only_on_a_change_of_state() -> None:
    ch = ChannelActuator(_settings("channel"))
    assert ch.decide(_record(1, False)) is None
    on = ch.decide(_record(2, True))
    assert on is not None and on.presets == ("fast",)
    assert ch.decide(_record(3, True)) is None
    off = ch.decide(_record(4, False))
    assert off is not None and off.presets == ("slow",)


# -- what they do to a real source and device ----------------------------------------------
def _synthetic(**settings: Any) -> Any:
    from rt_eda.sources._synthetic_settings import SyntheticSettings
    from rt_eda.sources.synthetic import SyntheticSource

    src = SyntheticSource(SyntheticSettings(height=128, width=128, **settings))
    src.open()
    src.start(0.05)
    return src


def test_roi_and_channel_change_the_synthetic_source_from_its_next_timepoint() -> None:
    src = _synthetic()
    try:
        roi = RoiActuator(ActuatorSettings("roi", {}, (128, 128), 1))
        roi.open(src)
        action = roi.decide(_record(1, True, _region(40, 40)))
        assert action is not None
        roi.apply(action, src)
        src.next_timepoint(_never())
        assert src.frame_region == action.frame
        ch = ChannelActuator(ActuatorSettings("channel", {"fast_presets": ["marker2", ""]},
                                              (128, 128), 1))
        ch.open(src)
        on = ch.decide(_record(2, True))
        assert on is not None
        ch.apply(on, src)
        src.next_timepoint(_never())
        assert src.channel_presets == ("marker2", "marker")
        off = ch.decide(_record(3, False))
        assert off is not None
        ch.apply(off, src)
        src.next_timepoint(_never())
        assert src.channel_presets == ("structure", "marker")
    finally:
        src.close()


class _Never:
    def is_set(self) -> bool:
        return False


def _never() -> _Never:
    return _Never()


@pytest.mark.parametrize(("options", "fragment"), [
    ({"fast_presets": ["FITC", ""]}, "'FITC' is not a preset of this source"),
    ({"fast_presets": ["marker2"]}, "names 1 preset(s); the acquisition has 2 channel(s)"),
    ({"fast_presets": 3}, "must be a list of strings"),
    ({}, "needs actuation.options.channel.fast_presets: the preset of each of the 2 "
         "channel(s) while fast, '' to keep one, e.g. ['', 'marker2']"),
])
def test_channel_refuses_presets_the_source_does_not_have(options: dict[str, Any],
                                                          fragment: str) -> None:
    src = _synthetic()
    try:
        with pytest.raises(ConfigError, match=None) as info:
            ChannelActuator(ActuatorSettings("channel", options, (128, 128), 1)).open(src)
        assert fragment in str(info.value)
    finally:
        src.close()


def test_stimulate_shows_the_event_mask_on_a_pymmcore_plus_slm_and_scores_it() -> None:
    src = _synthetic()
    stim = StimulateActuator(ActuatorSettings("stimulate", {}, (128, 128), 1))
    try:
        stim.open(src)
        region = _region(30, 70, 3)
        action = stim.decide(_record(1, True, region))
        assert action is not None
        t0 = time.monotonic()
        t = stim.apply(action, src)
        assert t is not None and t0 <= t <= time.monotonic()
        shown = stim._slm.shown()  # read back through the device, not a copy
        assert shown is not None and shown.shape == (128, 128)
        ys, xs = np.nonzero(shown)
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (27, 33, 67, 73)
        blank = stim.decide(_record(2, False))
        assert blank is not None
        stim.apply(blank, src)
        assert not np.asarray(stim._slm.shown()).any()
        m = stim.measures()
        assert m["masks_shown"] == 2 and m["blank_masks"] == 1
    finally:
        stim.close()
        src.close()


# -- found, listed, refused ----------------------------------------------------------------
def test_unknown_actuators_and_stray_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown actuator 'nope'; known: channel, interval"):
        make_actuators(Config().with_overrides({"actuation.actuators": ["nope"]}))
    with pytest.raises(ConfigError, match=r"actuation\.options\.roi: 'roi' is not one of"):
        make_actuators(Config().with_overrides({"actuation.options": {"roi": {"x": 1}}}))
    with pytest.raises(ConfigError, match=r"margin_px must be an integer >= 0, got -3"):
        make_actuators(Config().with_overrides({"actuation.actuators": ["roi"],
                                                "actuation.options": {"roi": {"margin_px": -3}}}))
    names = [a.name for a in make_actuators(Config().with_overrides(
        {"actuation.actuators": ["stimulate", "interval", "roi"]}))]
    assert names == ["interval", "stimulate", "roi"]


def test_an_actuator_the_source_cannot_serve_exits_2_before_the_start(tmp_path: Path
                                                                        ) -> None:
    """A replay cannot change what it reads: --actuator roi on one is refused when the
    camera opens it, before anything is acquired."""
    proc = rt_eda("--duration", "3", "--save", str(tmp_path / "rec"), *SMALL, cwd=tmp_path,
                  timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = {n for n, _ in list_blocks()}
    for actuator in ("roi", "channel"):
        options = (["--set", "actuation.options.channel.fast_presets=['', '']"]
                   if actuator == "channel" else [])
        proc = rt_eda("--duration", "5", "--source", f"replay:{tmp_path / 'rec'}",
                      "--actuator", actuator, *options, "--no-viewer", cwd=tmp_path,
                      timeout=180)
        assert proc.returncode == 2, proc.stderr[-2000:]
        err = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
        assert err == [f"rt-eda: actuator {actuator!r} needs a source that can "
                       + ("read a region of its sensor" if actuator == "roi" else
                          "change its channel presets")
                       + "; ReplaySource cannot (use the synthetic source, mm-demo or a "
                       "Micro-Manager camera)"], proc.stderr
        assert "Traceback" not in proc.stderr
    assert_clean(before)


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_rt_eda_actuators_lists_the_built_ins_and_the_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "actuators", "--module", "bookmark_actuator"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **_env()},
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert names == ["bookmark", "channel", "interval", "roi", "stimulate"]
    assert "[bookmark_actuator]" in proc.stdout


@pytest.mark.parametrize(("args", "line"), [
    (["--actuator", "nope"], "rt-eda: actuation.actuators: unknown actuator 'nope'"),
    (["--actuator", "channel", "--set", "actuation.options.channel.fast_presets=['DAPI','']"],
     "rt-eda: actuation.options.channel.fast_presets: 'DAPI' is not a preset of this source"),
    (["--actuator", "stimulate", "--set", "actuation.options.stimulate.device='SLM9'"],
     "rt-eda: actuation.options.stimulate.device 'SLM9': SyntheticSource has no "
     "Micro-Manager configuration to hold an SLM"),
    (["--actuator", "stimulate", "--set", "actuation.options.stimulate.shape='square'"],
     "rt-eda: actuation.options.stimulate.shape must be 'disc' or 'mask', got 'square'"),
    (["--set", "actuation.actuator_modules=['no_such_module']"],
     "rt-eda: actuation.actuator_modules: cannot import 'no_such_module'"),
    (["--actuator", "roi", "--worker", "KerasTilingWorker", "--model",
      str(demo_model_path())],
     "rt-eda: actuator 'roi' hands the worker only a region of the sensor; KerasTilingWorker "
     "needs the full frame"),
    (["--actuator", "roi", "--set", "actuation.options.roi.marginpx=1"],
     "rt-eda: actuation.options.roi.marginpx: 'roi' has no option 'marginpx'; its options: "
     "margin_px, min_size_px, align_px"),
    (["--actuator", "stimulate", "--set", "analysis.options.locations=false"],
     "rt-eda: actuator 'stimulate' acts on the events' locations, which "
     "analysis.options.locations = false turns off"),
])
def test_bad_actuator_configuration_exits_2_with_one_line(tmp_path: Path, args: list[str],
                                                          line: str) -> None:
    before = {n for n, _ in list_blocks()}
    proc = rt_eda("--duration", "5", *SMALL, *args, cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    err = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
    assert err and err[0].startswith(line), proc.stderr
    assert "Traceback" not in proc.stderr
    assert_clean(before)


# -- end to end ----------------------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
         duration: str = "20") -> dict[str, Any]:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    proc = rt_eda("--duration", duration, "--summary", str(out), "--save",
                  str(tmp_path / "run"), *args, cwd=tmp_path, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(out)
    assert_counts_add_up(s)
    assert_clean(before)
    return s


@pytest.mark.parametrize("plan", [False, True], ids=["timed", "plan"])
def test_every_built_in_actuator_runs_end_to_end_on_the_synthetic_source(tmp_path: Path,
                                                                          plan: bool) -> None:
    """Without a plan (the source times the stacks) and with one (the camera's scheduler):
    ``examples/second_marker.yaml``, three channels, the third swapped to the second marker
    while fast, the model reading the first two."""
    s = _run(tmp_path, "--actuator", "roi", "--actuator", "channel", "--actuator",
             "stimulate", "--no-viewer", "--verify", "--set", "camera.synthetic.event_every_s=5",
             "--set", "actuation.options.channel.fast_presets="
             + ("['', '', 'marker2']" if plan else "['', 'marker2']"),
             *(["--plan", str(EXAMPLES / "second_marker.yaml"), "--set",
                "analysis.channels_to_use=[0, 1]"] if plan else []))
    acts = s["actions"]
    assert list(acts) == ["interval", "roi", "channel", "stimulate"]
    assert s["interval_switches"] > 0, s
    # Every stack's stamps are where the camera says it read them (the region's first row):
    # a stack published with one region and read with another is torn.
    assert s["torn_reads"] == 0, s
    # Reading a region does not make the detector lose the event: one fast period per event
    # (a region that did not hold it would switch back to slow at once, and again, and again)
    eda = s["eda"]
    assert eda is not None and s["interval_switches"] <= 2 * eda["events"] + 2, (
        s["interval_switches"], eda)
    for kind in ("interval", "roi", "channel", "stimulate"):
        a = acts[kind]
        assert a["count"] > 0 and a["applied"] > 0 and a["failed"] == 0, (kind, a)
        assert a["count"] == a["applied"] + a["failed"] + a["unapplied"], (kind, a)
        assert a["decision_to_actuation_ms"]["count"] > 0, (kind, a)
    # a region or a preset acts at the next (fast) timepoint: within one fast interval
    for kind in ("roi", "channel"):
        assert acts[kind]["decision_to_actuation_ms"]["max"] <= 100 + 50, acts[kind]
    loc = s["locations"]
    assert loc is not None and loc["located"] > 0 and loc["roi_stacks"] > 0
    assert loc["error_px"]["p50"] <= 5, loc
    assert loc["roi_coverage"] is not None and loc["mask_precision"] is not None
    run = tmp_path / "run"
    rows = _rows(run / "actions.csv")
    for kind in ("roi", "channel", "stimulate"):
        mine = [r for r in rows if r["kind"] == kind]
        assert len(mine) == acts[kind]["applied"], kind
    height, width = s["stack_shape"][-2:]
    roi_rows = [r for r in rows if r["kind"] == "roi" and r["frame_height"]]
    assert roi_rows and all(int(r["frame_height"]) * int(r["frame_width"]) < height * width
                            for r in roi_rows)
    # what the ROI read is in the recording: frames with a region smaller than the sensor
    frames = _rows(run / "frames.csv")
    assert any(int(r["roi_height"]) < height for r in frames)
    assert len(_rows(run / "locations.csv")) >= loc["located"]
    # rt-eda inspect says what the actuators did
    seen = subprocess.run([sys.executable, "-m", "rt_eda.cli", "inspect", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert seen.returncode == 0, seen.stderr
    said = {line.split()[0]: line for line in seen.stdout.splitlines() if line[:1] != " "}
    assert "read from a region of the sensor" in said["regions"]
    assert f"roi {acts['roi']['applied'] + acts['roi']['failed']}" in said["actions"]
    assert said["locations"].startswith(f"locations    {len(_rows(run / 'locations.csv'))} ")
    # the report draws what the actuators did: the sensor fraction read, the masks shown
    drawn = json.loads((run / "report.json").read_text())["actions"]
    assert min(drawn["sensor_fraction"]["fraction"]) < 1.0
    assert any(drawn["stimulate"]["on"]) and drawn["channel"]["t_s"]


def test_a_users_actuator_from_examples_runs_through_actuator_modules(tmp_path: Path) -> None:
    s = _run(tmp_path, "--set", "actuation.actuator_modules=['bookmark_actuator']",
             "--actuator", "bookmark", "--set", "actuation.options.bookmark.path='events.tsv'",
             "--set", "camera.synthetic.event_every_s=5", *SMALL, env=_env())
    a = s["actions"]["bookmark"]
    assert a["applied"] > 0 and a["failed"] == 0 and a["measures"]["lines"] == a["applied"]
    lines = (tmp_path / "events.tsv").read_text().splitlines()
    assert len(lines) == a["applied"]
    t, position, seq, y, x, score = lines[0].split("\t")
    assert 0 <= float(x) < 256
    assert int(position) == 0 and int(seq) >= 0 and 0 <= float(y) < 256
    assert 0.0 < float(score) <= 1.0 and math.isfinite(float(t))


@pytest.mark.parametrize("actuator", ["roi", "stimulate"])
def test_roi_and_stimulate_run_on_mm_demo(tmp_path: Path, actuator: str) -> None:
    """The demo camera images no events: the binary interpreter's thresholds are set below
    every decision (fast from the first result on) and the locations keep the brightest
    pixels of the demo model's map (location_threshold 0, 0.95 of the peak), so every
    result acts, on the real DemoCamera (a sensor ROI through pymmcore-plus) and on rt-eda's
    DMD loaded into the same UniMMCore."""
    s = _run(tmp_path, "--source", "mm-demo", "--actuator", actuator, "--no-viewer",
             "--set", "camera.channel_group=Channel", "--set",
             "camera.channels=['DAPI','FITC']", "--set", "interpreter.upper_threshold=0.0",
             "--set", "interpreter.lower_threshold=-1.0", "--set",
             "analysis.options.location_threshold=0.0", "--set",
             "analysis.options.location_relative=0.95", duration="12")
    a = s["actions"][actuator]
    assert a["applied"] > 0 and a["failed"] == 0, a
    assert a["decision_to_actuation_ms"]["count"] > 0, a
    if actuator == "roi":
        frames = _rows(tmp_path / "run" / "frames.csv")
        assert any(r["roi_height"] and int(r["roi_height"]) < int(s["stack_shape"][-2])
                   for r in frames), frames[-3:]


FAULTY = '''
from rt_eda.actuators import Actuator
from rt_eda.core.errors import SourceError


class Faulty(Actuator):
    """Decides on every result; its decide raises on every third, its apply always."""

    name = "faulty"

    def __init__(self, settings):
        super().__init__(settings)
        self.calls = 0

    def decide(self, record):
        self.calls += 1
        if self.calls % 3 == 0:
            raise ZeroDivisionError("a bug in decide")
        return self.action(record, note="try")

    def apply(self, action, source):
        if action.after_seq % 2:
            raise SourceError("the device refused it")
        raise KeyError("a bug in apply")
'''


def test_an_actuator_that_cannot_open_exits_2_in_one_line(tmp_path: Path) -> None:
    """Any exception of an actuator's open (before anything is acquired) is a refusal of
    the input: exit 2, one line, no traceback."""
    (tmp_path / "shut_actuator.py").write_text(
        "from rt_eda.actuators import Actuator\n\n\n"
        "class Shut(Actuator):\n"
        "    \"\"\"Cannot open.\"\"\"\n\n"
        "    name = 'shut'\n\n"
        "    def open(self, source):\n"
        "        raise RuntimeError('the shutter controller is not connected')\n")
    before = {n for n, _ in list_blocks()}
    proc = rt_eda("--duration", "5", "--set", "actuation.actuator_modules=['shut_actuator']",
                  "--actuator", "shut", *SMALL, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                  timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
    assert err == ["rt-eda: actuator 'shut' could not open: RuntimeError: the shutter "
                   "controller is not connected"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert_clean(before)


def test_an_actuator_that_fails_never_stops_the_acquisition(tmp_path: Path) -> None:
    """A device's refusal and a plug-in's bugs (in decide and in apply) are counted,
    recorded and logged once each; the run goes on and ends with exit 0, nothing lost."""
    (tmp_path / "faulty_actuator.py").write_text(FAULTY)
    env = {"PYTHONPATH": str(tmp_path)}
    s = _run(tmp_path, "--set", "actuation.actuator_modules=['faulty_actuator']",
             "--actuator", "faulty", "--set", "camera.synthetic.event_every_s=5", *SMALL,
             env=env, duration="10")
    a = s["actions"]["faulty"]
    assert s["decisions"] > 5 and s["frames_lost"] == 0
    assert a["decide_failed"] == s["decisions"] // 3, (a, s["decisions"])
    assert a["count"] == s["decisions"] - a["decide_failed"]
    assert a["applied"] == 0 and a["failed"] + a["unapplied"] == a["count"]
    assert a["unapplied"] <= 3  # sent as the acquisition stopped
    rows = _rows(tmp_path / "run" / "actions.csv")
    errors = [r["error"] for r in rows if r["kind"] == "faulty"]
    assert len(errors) == a["failed"]
    assert {e.split(":")[0] for e in errors} <= {"the device refused it", "KeyError"}
    assert any(e == "the device refused it" for e in errors)
    assert any(e.startswith("KeyError: ") for e in errors)


def test_with_a_plan_each_position_keeps_its_own_mask_shown_only_there() -> None:
    """Two positions: a mask decided for position 1 while the stage is at 0 waits for it;
    at 0 the DMD is blank (its rest), back at 1 the mask is shown again (reapplied, not a new
    decision); at the end it is blank whatever was shown last."""
    from rt_eda.actuators._camera import CameraActuation

    src = _synthetic()
    stim = StimulateActuator(ActuatorSettings("stimulate", {}, (128, 128), 2))
    act = CameraActuation([stim], src, 2, None)
    try:
        act.open()
        device = stim._slm.device
        act.arrived(0)
        action = stim.decide(_record(1, True, _region(30, 70, 3), position=1))
        assert action is not None
        act.receive(action)
        assert not device.displayed.any()  # position 1's mask: not while the stage is at 0
        act.arrived(1)
        assert device.displayed.any()
        act.arrived(0)
        assert not device.displayed.any()  # back to rest where nothing was decided
        act.arrived(1)
        assert device.displayed.any()
        (s,) = [a for a in act.statistics() if a.kind == "stimulate"]
        assert (s.count, s.applied, s.reapplied) == (1, 1, 2)  # shown, blanked, shown again
    finally:
        act.close()
        src.close()
    assert not device.displayed.any()  # nothing left shining on the sample


def test_every_device_is_back_at_rest_at_the_end() -> None:
    from rt_eda.actuators._camera import CameraActuation

    src = _synthetic()
    roi = RoiActuator(ActuatorSettings("roi", {}, (128, 128), 1))
    ch = ChannelActuator(ActuatorSettings("channel", {"fast_presets": ["marker2", ""]},
                                          (128, 128), 1))
    act = CameraActuation([roi, ch], src, 1, None)
    try:
        act.open()
        for a in (roi.decide(_record(1, True, _region(40, 40))), ch.decide(_record(1, True))):
            assert a is not None
            act.receive(a)
        act.prepare(0)
        src.next_timepoint(_never())
        assert src.frame_region != FrameRegion.full(128, 128)
        assert src.channel_presets == ("marker2", "marker")
        act.close()
        src.next_timepoint(_never())
        assert src.frame_region == FrameRegion.full(128, 128)
        assert src.channel_presets == ("structure", "marker")
    finally:
        src.close()


def test_a_run_of_four_positions_stimulates_each_where_it_is(tmp_path: Path) -> None:
    """A plan of 4 positions: every position's masks are shown while the stage is there
    (re-sent on every return), so they still match that position's events."""
    s = _run(tmp_path, "--plan", str(EXAMPLES / "four_positions.yaml"), "--actuator",
             "stimulate", "--actuator", "roi", "--no-viewer", "--set",
             "camera.synthetic.event_every_s=4", "--set", "camera.synthetic.event_duration_s=3",
             *SMALL[:-1], duration="15")
    stim = s["actions"]["stimulate"]
    assert stim["applied"] > 0 and stim["reapplied"] > 0, stim
    loc = s["locations"]
    assert loc["masks_scored"] > 0 and loc["mask_precision"] >= 0.6, loc
    assert loc["mask_recall"] >= 0.6, loc


def test_an_slm_the_configuration_does_not_have_exits_2(tmp_path: Path) -> None:
    """stimulate.device names an SLM of the microscope's configuration; the demo
    configuration has none: refused in one line that says so, before anything starts."""
    proc = rt_eda("--duration", "5", "--source", "mm-demo", "--set",
                  "camera.channel_group=Channel", "--set", "camera.channels=['DAPI','FITC']",
                  "--actuator", "stimulate", "--set",
                  "actuation.options.stimulate.device='NoSuchSLM'", "--no-viewer",
                  cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
    assert err == ["rt-eda: actuation.options.stimulate.device 'NoSuchSLM' is not an SLM of "
                   "this Micro-Manager configuration (its SLMs: none); leave it '' for "
                   "rt-eda's own DMD"], proc.stderr
    assert "Traceback" not in proc.stderr
