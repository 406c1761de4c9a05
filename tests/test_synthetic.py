"""Tests of the synthetic source: pixels, events and ground truth, stamps, timing, settings."""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
import threading
import time
from typing import Any

import numpy as np
import pytest

from rt_eda.core.config import Config, all_keys
from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.shm import check_stack, read_stamp
from rt_eda.sources import make_source
from rt_eda.sources._protocol import Source
from rt_eda.sources.synthetic import (
    SyntheticEvent,
    SyntheticSettings,
    SyntheticSource,
)

SMALL: dict[str, Any] = {"height": 64, "width": 96}
EVENT = (1.0, 2.0, 30.0, 40.0, 0)  # start 1 s, lasts 2 s, at y=30, x=40, z=0
NOISE_SD = {"uint8": 0.008 * 255, "uint16": 0.008 * 4095, "float32": 0.008}


def _pair(**kw: Any) -> tuple[SyntheticSource, SyntheticSource]:
    """Two sources identical but for the events: the first has EVENT, the second none.

    Driven by the same calls they draw the same noise, so their difference is the focus.
    """
    base = {**SMALL, "event_every_s": 0.0, **kw}
    with_event = SyntheticSource(SyntheticSettings(**base, events=(EVENT,)))
    without = SyntheticSource(SyntheticSettings(**base))
    return with_event, without


def _stack(src: SyntheticSource) -> np.ndarray:
    return np.empty(src.spec.shape, src.spec.dtype)


def _focus_diff(t_s: float, **kw: Any) -> np.ndarray:
    a, b = _pair(**kw)
    sa, sb = _stack(a), _stack(b)
    a.render_stack(t_s, sa)
    b.render_stack(t_s, sb)
    return sa.astype(np.float64) - sb.astype(np.float64)


# --------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_shapes_and_dtypes(dtype: str) -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, z_slices=3, dtype=dtype))
    spec = src.open()
    try:
        assert spec.shape == (2, 3, 64, 96)
        assert spec.dtype == dtype
        stack = _stack(src)
        src.render_stack(0.5, stack)
        assert stack.dtype == np.dtype(dtype)
        assert np.isfinite(stack.astype(np.float64)).all()
        # Structure is brighter than the marker's background; neither is flat.
        assert stack[0].mean() > stack[1].mean()
        assert stack[0].std() > 0 and stack[1].std() > 0
        # Background noise has about the intended spread (camera offset 0.025 full scale).
        marker_bg = np.median(stack[1].astype(np.float64))
        assert 0.015 * {"uint8": 255, "uint16": 4095, "float32": 1}[dtype] < marker_bg
        assert marker_bg < 0.05 * {"uint8": 255, "uint16": 4095, "float32": 1}[dtype]
    finally:
        src.close()


def test_structure_is_a_filament_network() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, seed=3))
    stack = _stack(src)
    src.render_stack(0.0, stack)
    frame = stack[0, 0].astype(np.float64)
    background = np.median(frame)
    bright = frame > background + 10 * NOISE_SD["uint16"]
    # Thin structures covering a minority of the image, not speckle and not a blanket.
    assert 0.02 < bright.mean() < 0.6
    assert frame.max() > background + 0.4 * 4095


def test_seeded_determinism() -> None:
    def render(seed: int) -> np.ndarray:
        src = SyntheticSource(SyntheticSettings(**SMALL, seed=seed))
        stacks = np.empty((3, *src.spec.shape), src.spec.dtype)
        for i, t in enumerate((0.0, 5.0, 9.5)):
            src.render_stack(t, stacks[i])
        return stacks

    a, b, c = render(7), render(7), render(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # Frames differ from each other (noise changes frame to frame, not a frozen image).
    assert not np.array_equal(a[0, 1], a[1, 1])
    assert (
        SyntheticSource(SyntheticSettings(seed=7)).events
        == SyntheticSource(SyntheticSettings(seed=7)).events
    )
    assert (
        SyntheticSource(SyntheticSettings(seed=7)).events
        != SyntheticSource(SyntheticSettings(seed=8)).events
    )


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_focus_visible_exactly_while_event_active(dtype: str) -> None:
    src, _ = _pair(dtype=dtype, exposure_s=0.0)  # the marker frame's clock is t itself
    sd = NOISE_SD[dtype]
    for t in np.arange(0.0, 4.0, 0.125):
        diff = _focus_diff(float(t), dtype=dtype, exposure_s=0.0)
        truth = src.ground_truth(float(t))
        assert np.all(diff[0] == 0), "the structure channel must not see events"
        if truth == 0.0:
            assert np.all(diff == 0), f"a focus at t={t} with no event"
            continue
        # The focus is where the event is, as bright as its intensity says.
        y, x = np.unravel_index(np.argmax(diff[1, 0]), diff.shape[2:])
        assert abs(y - EVENT[2]) <= 1 and abs(x - EVENT[3]) <= 1
        expected = 0.5 * {"uint8": 255, "uint16": 4095, "float32": 1.0}[dtype] * truth
        assert diff[1, 0].max() == pytest.approx(expected, rel=0.1, abs=2 * sd)
        if truth >= 0.2:
            assert diff[1, 0].max() > 5 * sd
        # Only within the focus's bounding box (3.5 sigma of 3 px, +1 for rounding).
        far = np.ones(diff.shape[2:], bool)
        far[30 - 12 : 30 + 13, 40 - 12 : 40 + 13] = False
        assert np.all(diff[1, 0][far] == 0)


def test_focus_stands_out_in_the_marker_channel() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, event_every_s=0.0, events=(EVENT,)))
    stack = _stack(src)
    src.render_stack(2.0, stack)  # the event's peak
    marker = stack[1, 0].astype(np.float64)
    background = np.median(marker)
    peak = marker[28:33, 38:43].max()
    assert peak - background > 20 * NOISE_SD["uint16"]
    # Away from the focus nothing comes close (faint structure bleed-through at most).
    away = marker.copy()
    away[18:43, 28:53] = background
    assert away.max() - background < 0.3 * (peak - background)
    src.render_stack(0.5, stack)  # before the event
    assert stack[1, 0, 28:33, 38:43].max() - background < 0.3 * (peak - background)


def test_focus_sits_at_one_z_and_blurs_into_neighbours() -> None:
    event = (1.0, 2.0, 30.0, 40.0, 2)
    base: dict[str, Any] = {**SMALL, "z_slices": 5, "event_every_s": 0.0, "exposure_s": 0.0}
    a = SyntheticSource(SyntheticSettings(**base, events=(event,)))
    b = SyntheticSource(SyntheticSettings(**base))
    sa, sb = _stack(a), _stack(b)
    a.render_stack(2.0, sa)
    b.render_stack(2.0, sb)
    peaks = (sa[1].astype(np.float64) - sb[1]).max(axis=(1, 2))
    assert int(np.argmax(peaks)) == 2
    assert peaks[2] > peaks[1] > peaks[0] and peaks[2] > peaks[3] > peaks[4]
    assert peaks[1] < 0.8 * peaks[2]


def test_ground_truth_and_mask() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, event_every_s=0.0, events=(EVENT,)))
    assert src.events == (SyntheticEvent(1.0, 2.0, 30.0, 40.0, 0),)
    assert src.ground_truth(0.99) == 0.0
    assert src.ground_truth(1.0) == 0.0  # sin(0): grows from nothing
    assert src.ground_truth(2.0) == pytest.approx(1.0)
    assert src.ground_truth(1.5) == pytest.approx(math.sin(math.pi / 4))
    assert src.ground_truth(3.0) == 0.0
    assert src.has_event(2.0) and not src.has_event(1.01) and not src.has_event(5.0)
    assert src.has_event(1.01, min_intensity=0.0)
    mask = src.event_mask(1.5)
    assert mask.shape == (64, 96) and mask.dtype == np.float32
    assert mask[30, 40] == pytest.approx(math.sin(math.pi / 4), rel=1e-5)
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[0, 0] == 0.0
    assert not src.event_mask(0.5).any()


def test_random_schedule_matches_what_is_rendered() -> None:
    kw: dict[str, Any] = {
        **SMALL,
        "event_every_s": 2.0,
        "event_duration_s": 1.0,
        "exposure_s": 0.0,
        "seed": 5,
    }
    a = SyntheticSource(SyntheticSettings(**kw))
    b = SyntheticSource(SyntheticSettings(**{**kw, "event_every_s": 0.0}))
    sa, sb = _stack(a), _stack(b)
    seen = 0
    for t in np.arange(0.0, 12.0, 0.1):
        a.render_stack(float(t), sa)
        b.render_stack(float(t), sb)
        diff = sa[1, 0].astype(np.float64) - sb[1, 0]
        assert np.all(sa[0] == sb[0])
        visible = diff.max() > 5 * NOISE_SD["uint16"]
        if a.has_event(float(t)):
            seen += 1
            assert visible, f"ground truth says event at t={t:.1f} but no focus"
            mask = a.event_mask(float(t))
            assert (
                np.unravel_index(np.argmax(diff), diff.shape)
                == np.unravel_index(np.argmax(mask), mask.shape)
                or mask[np.unravel_index(np.argmax(diff), diff.shape)] > 0.5 * mask.max()
            )
        elif a.ground_truth(float(t)) == 0.0:
            assert not diff.any(), f"a focus at t={t:.1f} with no event"
    assert seen > 10


def test_random_schedule_spacing() -> None:
    src = SyntheticSource(SyntheticSettings(event_every_s=8.0, event_duration_s=3.0))
    events = src.events
    starts = np.array([e.start_s for e in events])
    assert starts[0] >= 3.0
    assert np.all(np.diff(starts) >= 3.0)  # never overlapping
    assert 6.0 < np.diff(starts).mean() < 10.0  # mean spacing 8 s (about 75 events)
    for e in events:
        assert 2 <= e.y < 510 and 2 <= e.x < 510 and e.z == 0
    # Looking further ahead extends the schedule without changing what was there.
    src.ground_truth(5000.0)
    assert src.events[: len(events)] == events
    assert src.events[-1].start_s > 5000.0


def test_no_random_events_when_disabled() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, event_every_s=0.0))
    assert src.events == ()
    assert src.ground_truth(3.0) == 0.0


# --------------------------------------------------------------------------- verify stamps


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_verify_stamps(dtype: str) -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, z_slices=2, dtype=dtype, verify=True))
    src.open()
    stop = threading.Event()
    stack = _stack(src)
    try:
        src.start(0.0)
        for seq in (41, 42, 1000):
            assert src.next_timepoint(stop) is not None
            src.set_sequence(seq)
            for c, z in src.frame_order():
                src.read_frame(c, z, stack[c, z])
            assert check_stack(stack, seq)
            assert not check_stack(stack, seq + 1)
        # A torn stack (one frame from another timepoint) fails the check.
        torn = stack.copy()
        src.next_timepoint(stop)
        src.set_sequence(1001)
        src.read_frame(1, 1, torn[1, 1])
        assert read_stamp(torn[1, 1]) == (1001, 1, 1)
        assert not check_stack(torn, 1000) and not check_stack(torn, 1001)
    finally:
        src.close()
    plain = SyntheticSource(SyntheticSettings(**SMALL, dtype=dtype))
    out = _stack(plain)
    plain.render_stack(1.0, out, seq=77)
    assert check_stack(out, 77)


def test_no_stamp_without_verify() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, seed=1))
    src.open()
    src.start(0.0)
    src.next_timepoint(threading.Event())
    src.set_sequence(5)
    stack = _stack(src)
    for c, z in src.frame_order():
        src.read_frame(c, z, stack[c, z])
    assert not check_stack(stack, 5)


# --------------------------------------------------------------------------- timing


def test_satisfies_source_protocol() -> None:
    assert isinstance(SyntheticSource(), Source)


def test_timepoints_follow_the_schedule_without_drift() -> None:
    interval, duration = 0.02, 0.3
    src = SyntheticSource(SyntheticSettings(**SMALL, exposure_s=0.001))
    src.open()
    stop = threading.Event()
    stack = _stack(src)
    src.start(interval)
    times: list[float] = []
    exposures: list[list[float]] = []
    while True:
        t = src.next_timepoint(stop)
        assert t is not None
        assert time.monotonic() >= t  # never early
        if times and t - times[0] > duration - interval / 2:
            break
        times.append(t)
        exposures.append([src.read_frame(c, z, stack[c, z]) for c, z in src.frame_order()])
    stats = src.statistics()
    src.close()
    # Every scheduled time is on the grid t0 + k * interval (no drift), each k at most once.
    k = (np.array(times) - times[0]) / interval
    assert np.allclose(k, np.round(k), atol=1e-6)
    assert np.all(np.diff(np.round(k)) >= 1)
    # All timepoints of the run were either delivered or counted as skipped.
    expected = round(duration / interval)
    assert stats["timepoints"] - 1 + stats["timepoints_skipped"] == expected
    assert stats["frames"] == 2 * len(times)
    # Exposure clock: the timepoint's time plus frame index x exposure.
    assert exposures[3] == pytest.approx([times[3], times[3] + 0.001])


def test_late_caller_skips_ahead_without_a_burst() -> None:
    interval = 0.02
    src = SyntheticSource(SyntheticSettings(**SMALL))
    src.open()
    stop = threading.Event()
    src.start(interval)
    t0 = src.next_timepoint(stop)
    assert t0 is not None
    time.sleep(5.5 * interval)  # the camera was busy: 5 timepoints missed
    t1 = src.next_timepoint(stop)
    now = time.monotonic()
    assert t1 is not None
    assert now - t1 < interval  # the latest timepoint already due, not an old one
    k = (t1 - t0) / interval
    assert k == pytest.approx(round(k), abs=1e-6) and round(k) >= 5
    stats = src.statistics()
    assert stats["timepoints_late"] == 1
    assert stats["timepoints_skipped"] == round(k) - 1
    # No catch-up burst: the next one waits for its own time.
    t2 = src.next_timepoint(stop)
    assert t2 is not None
    assert t2 == pytest.approx(t1 + interval)
    assert time.monotonic() >= t2
    src.close()


def test_set_interval_applies_from_the_next_timepoint() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL))
    src.open()
    stop = threading.Event()
    src.start(0.05)
    t0 = src.next_timepoint(stop)
    src.set_interval(0.01)
    t1 = src.next_timepoint(stop)
    t2 = src.next_timepoint(stop)
    assert t0 is not None and t1 is not None and t2 is not None
    assert t1 - t0 == pytest.approx(0.01) and t2 - t1 == pytest.approx(0.01)
    src.close()


def test_free_run() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL))
    src.open()
    stop = threading.Event()
    stack = _stack(src)
    src.start(0.0)
    start = time.monotonic()
    times = []
    for _ in range(200):
        t = src.next_timepoint(stop)
        assert t is not None
        times.append(t)
        for c, z in src.frame_order():
            src.read_frame(c, z, stack[c, z])
    elapsed = time.monotonic() - start
    stats = src.statistics()
    src.close()
    assert np.all(np.diff(times) > 0)
    assert elapsed < 2.0  # no sleeping between timepoints
    assert stats["timepoints"] == 200 and stats["frames"] == 400
    assert stats["timepoints_late"] == 0 and stats["timepoints_skipped"] == 0


def test_stop_flag_interrupts_a_long_wait() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL))
    src.open()
    stop = threading.Event()
    src.start(30.0)
    assert src.next_timepoint(stop) is not None  # the first is due at once
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    t = time.monotonic()
    try:
        assert src.next_timepoint(stop) is None
    finally:
        timer.cancel()
    assert time.monotonic() - t < 1.0
    src.stop()
    assert src.next_timepoint(threading.Event()) is None
    src.close()
    src.close()  # twice is fine


def test_events_follow_the_acquisition_clock() -> None:
    src = SyntheticSource(
        SyntheticSettings.create(  # events given as integers: stored as the floats they are
            **SMALL, event_every_s=0.0, exposure_ms=1e-6, events=((0.0, 0.4, 30, 40, 0),)
        )
    )
    src.open()
    stop = threading.Event()
    stack = _stack(src)
    src.start(0.05)
    peaks = []
    for _ in range(10):
        t = src.next_timepoint(stop)
        assert t is not None
        for c, z in src.frame_order():
            src.read_frame(c, z, stack[c, z])
        peaks.append(float(stack[1, 0, 29:32, 39:42].max()))
    src.close()
    # Grows until 0.2 s, fades until 0.4 s, then nothing (timepoints at 0, 0.05, ... 0.45 s).
    assert int(np.argmax(peaks)) == 4
    assert peaks[4] > peaks[2] > peaks[0] and peaks[4] > peaks[6]
    assert peaks[9] < peaks[4] / 4


def test_misuse_raises_source_error() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL))
    with pytest.raises(SourceError, match="before open"):
        src.start(1.0)
    src.open()
    with pytest.raises(SourceError, match="before start"):
        src.next_timepoint(threading.Event())
    src.start(0.0)
    with pytest.raises(SourceError, match="before next_timepoint"):
        src.read_frame(0, 0, np.empty((64, 96), np.uint16))
    src.next_timepoint(threading.Event())
    with pytest.raises(SourceError, match=r"\(64, 96\) uint16"):
        src.read_frame(0, 0, np.empty((64, 95), np.uint16))
    with pytest.raises(SourceError, match="float32"):
        src.read_frame(0, 0, np.empty((64, 96), np.float32))
    with pytest.raises(SourceError, match="c=2"):
        src.read_frame(2, 0, np.empty((64, 96), np.uint16))
    with pytest.raises(ConfigError, match="-1"):
        src.set_interval(-1.0)
    src.close()


# --------------------------------------------------------------------------- settings, pickle


def test_pickle_round_trip_before_open() -> None:
    src = SyntheticSource(SyntheticSettings(**SMALL, seed=11, verify=True, events=(EVENT,)))
    copy = pickle.loads(pickle.dumps(src))
    assert copy.settings == src.settings
    assert copy.events == src.events
    a, b = _stack(src), _stack(copy)
    src.render_stack(2.0, a)
    copy.render_stack(2.0, b)
    assert np.array_equal(a, b)
    # After open the copy is an unopened source with the same settings (images are not sent).
    src.open()
    assert len(pickle.dumps(src)) < 2000
    src.close()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("height", 4, "camera.synthetic.height"),
        ("width", 2.5, "camera.synthetic.width"),
        ("z_slices", 0, "camera.synthetic.z_slices"),
        ("dtype", "int64", "camera.synthetic.dtype"),
        ("seed", -1, "camera.synthetic.seed"),
        ("event_every_s", -2.0, "camera.synthetic.event_every_s"),
        ("event_duration_s", float("nan"), "camera.synthetic.event_duration_s"),
        ("verify", "yes", "camera.synthetic.verify"),
        ("exposure_ms", "fast", "camera.exposure_ms"),
        ("exposure_ms", 1e12, "camera.exposure_ms"),
        ("exposure_ms", 3_600_000.5, "camera.exposure_ms"),
        ("exposure_ms", 0, "camera.exposure_ms"),
        ("noise_frames", 1, "noise_frames"),
        ("noise_frames", 2.0, "noise_frames"),
        ("focus_sigma_px", 0.0, "focus_sigma_px"),
        ("focus_sigma_px", True, "focus_sigma_px"),
        ("events", ((1.0, 2.0, 999.0, 3.0, 0),), "events[0]"),
        ("events", ((1.0, -2.0, 3.0, 3.0, 0),), "events[0]"),
        ("events", ((1.0, 2.0, 3.0, 3.0),), "events[0]"),
        ("events", ((1.0, 2.0, 3.0, 3.0, 0.5),), "events[0]"),
        ("events", "soon", "events"),
    ],
)
def test_bad_settings_name_the_key(key: str, value: Any, named: str) -> None:
    """Keys of the configuration are checked by the configuration, named as in a file; the
    three without a key are checked once, by name."""
    with pytest.raises(ConfigError) as info:
        SyntheticSettings.create(**{key: value})
    message = str(info.value)
    assert f"{named}: " in message or f"{named} must be" in message, message
    shown = repr(value) if key != "events" or isinstance(value, str) else repr(value[0])
    assert shown in message
    assert all(k in all_keys() for k in re.findall(r"camera\.[\w.]+", message)), message


def test_unknown_key_names_the_nearest_one() -> None:
    with pytest.raises(ConfigError, match=r"camera\.synthetic\.hieght: unknown key; did you mean "
                                          r"'camera\.synthetic\.height'"):
        SyntheticSettings.create(hieght=64)


def test_duration_longer_than_spacing_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"camera\.synthetic\.event_duration_s \(5\) must be "
                                          r"<= camera\.synthetic\.event_every_s \(4\)"):
        SyntheticSettings.create(event_every_s=4.0, event_duration_s=5.0)


def test_settings_are_frozen_and_lists_become_tuples() -> None:
    settings = SyntheticSettings.create(events=[[1, 2, 3, 4, 0]])
    assert settings.events == ((1.0, 2.0, 3.0, 4.0, 0),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.height = 3  # type: ignore[misc]
    assert hash(settings) == hash(SyntheticSettings(events=((1.0, 2.0, 3.0, 4.0, 0),)))


def test_settings_come_from_the_configuration() -> None:
    # The plain constructor's defaults are the configuration's.
    assert SyntheticSettings() == SyntheticSettings.from_config(Config())
    config = Config().with_overrides({
        "camera.synthetic.height": 64, "camera.synthetic.width": 96,
        "camera.synthetic.z_slices": 2, "camera.synthetic.dtype": "float32",
        "camera.synthetic.seed": 5, "camera.synthetic.event_every_s": 0.0,
        "camera.exposure_ms": 2.5, "run.verify": True,
    })
    settings = SyntheticSettings.from_config(config)
    assert settings == SyntheticSettings(height=64, width=96, z_slices=2, dtype="float32",
                                         seed=5, event_every_s=0.0, exposure_s=0.0025,
                                         verify=True)
    assert SyntheticSettings.create(height=64, width=96, z_slices=2, dtype="float32", seed=5,
                                    event_every_s=0.0, exposure_ms=2.5, verify=True) == settings
    source = make_source(config)
    assert isinstance(source, SyntheticSource) and source.settings == settings


# --------------------------------------------------------------------------- speed (reported)


def test_render_speed_report() -> None:
    """Prints the camera-path cost of a 512 x 512 two-channel uint16 stack (run with -s)."""
    src = SyntheticSource(SyntheticSettings())  # defaults: 512 x 512 x 1, uint16
    src.open()
    stop = threading.Event()
    stack = _stack(src)
    src.start(0.0)
    n = 500
    t = time.perf_counter()
    for _ in range(n):
        src.next_timepoint(stop)
        for c, z in src.frame_order():
            src.read_frame(c, z, stack[c, z])
    per_stack = (time.perf_counter() - t) / n
    render = src.statistics()["render_ms_mean"]
    src.close()
    print(
        f"\nsynthetic 512x512x2 uint16: {per_stack * 1e3:.3f} ms per stack through "
        f"next_timepoint + read_frame ({1 / per_stack:.0f} stacks/s), "
        f"{render:.3f} ms per frame rendering"
    )
    assert per_stack > 0


def test_a_long_exposure_is_cheap_and_a_stop_ends_the_wait() -> None:
    """An hour's exposure (the most allowed) renders at once; the next timepoint's wait still
    ends on the stop within the 20 ms poll."""
    src = SyntheticSource(SyntheticSettings(height=32, width=32, z_slices=4,
                                            exposure_s=3600.0, seed=3))
    src.open()
    src.start(30.0)
    out = np.empty((32, 32), np.uint16)
    t = time.perf_counter()
    assert src.next_timepoint(threading.Event()) is not None
    times = [src.read_frame(c, z, out) for c, z in src.frame_order()]
    assert time.perf_counter() - t < 2.0  # ~7 h of events scheduled, not 31 000 years
    assert times[-1] - times[0] == pytest.approx(7 * 3600.0)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    t = time.monotonic()
    assert src.next_timepoint(stop) is None  # the next one is due in 30 s
    assert time.monotonic() - t < 1.0
    src.close()
