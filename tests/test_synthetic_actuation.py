"""Actuation of the synthetic source: camera ROI, channel presets, where the events are.

Real sources throughout (no mocks). Two sources with the same settings driven by the same
calls draw the same noise, so a source read through an ROI is compared pixel for pixel with
one read in full; sources started on one shared ``t0`` with a long interval have their first
timepoint at that very moment, so events look the same in both.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from rt_eda.core.errors import SourceError
from rt_eda.core.location_truth import TrueEvent
from rt_eda.core.regions import FrameRegion
from rt_eda.shm import check_stack, read_stamp
from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource
from rt_eda.sources.synthetic_positions import SyntheticPositions

H, W = 64, 96
ROI = FrameRegion(20, 30, 24, 40)  # rows 20..44, columns 30..70
# Events on the acquisition clock (start, duration, y, x, z). With exposure 5 ms and two
# channels x two slices the marker frames (frame indices 2 and 3) are at 10 and 15 ms: the
# middle of a 20 ms event, at full intensity.
STRADDLING = (0.0, 0.02, 22.3, 35.6, 0)  # inside the ROI near its top edge: its focus crosses it
OUTSIDE = (0.0, 0.02, 55.0, 85.0, 1)  # entirely outside the ROI
STOP = threading.Event()
FILL = 65535  # a uint16 frame is filled with it before a read: far above the 12-bit levels


def _source(**kw: Any) -> SyntheticSource:
    base: dict[str, Any] = {"height": H, "width": W, "z_slices": 2, "exposure_s": 0.005,
                            "event_every_s": 0.0, "seed": 11}
    src = SyntheticSource(SyntheticSettings(**{**base, **kw}))
    src.open()
    return src


def _sentinel(dtype: str) -> float:
    return -1.0 if dtype == "float32" else float(np.iinfo(np.dtype(dtype)).max)


def _read(src: SyntheticSource, fill: float) -> tuple[np.ndarray, list[float]]:
    """Read the current timepoint into a stack pre-filled with ``fill``; the exposure times."""
    stack = np.full(src.spec.shape, fill, src.spec.dtype)
    times = [src.read_frame(c, z, stack[c, z]) for c, z in src.frame_order()]
    return stack, times


def _first_timepoint_together(*sources: SyntheticSource) -> None:
    """Start every source on one ``t0`` with a long interval: each first timepoint is ``t0``."""
    t0 = time.monotonic()
    for src in sources:
        src.start(60.0, t0=t0)
        assert src.next_timepoint(STOP) == t0


def _outside(stack: np.ndarray, region: FrameRegion) -> np.ndarray:
    """The pixels of every frame outside ``region``."""
    mask = np.ones(stack.shape[-2:], bool)
    mask[region.slices()] = False
    return stack[..., mask]


# --------------------------------------------------------------------------- ROI


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_roi_render_equals_the_full_render_inside_and_touches_nothing_outside(dtype: str
                                                                               ) -> None:
    full = _source(dtype=dtype, events=(STRADDLING, OUTSIDE))
    roi = _source(dtype=dtype, events=(STRADDLING, OUTSIDE))
    assert roi.sensor_shape == (H, W)
    assert roi.frame_region == FrameRegion.full(H, W)
    roi.set_roi(ROI)
    assert roi.frame_region == ROI
    _first_timepoint_together(full, roi)
    sentinel = _sentinel(dtype)
    a, ta = _read(full, sentinel)
    b, tb = _read(roi, sentinel)
    assert ta == tb
    rows, cols = ROI.slices()
    np.testing.assert_array_equal(b[:, :, rows, cols], a[:, :, rows, cols])
    assert (_outside(b, ROI) == sentinel).all()
    assert (_outside(a, ROI) != sentinel).any()  # the full render did write there
    # Not a trivial equality: the straddling focus is drawn in the ROI and cut at its edge.
    marker = a[1, 0].astype(np.float64)
    assert marker[22, 36] > marker[35, 60] + 0.3 * (marker.max() - marker[35, 60])
    assert marker[ROI.y - 3, 36] > marker[35, 60]  # its focus goes on above the ROI


def test_roi_applies_from_the_next_timepoint_and_none_restores_the_full_frame() -> None:
    src = _source()
    src.start(0.0)
    assert src.next_timepoint(STOP) is not None
    src.set_roi(ROI)  # mid-acquisition: the current timepoint keeps the full frame
    assert src.frame_region == ROI
    stack, _ = _read(src, FILL)
    assert (stack != FILL).all()
    assert src.next_timepoint(STOP) is not None
    stack, _ = _read(src, FILL)
    assert (stack[:, :, ROI.y:ROI.y1, ROI.x:ROI.x1] != FILL).all()
    assert (_outside(stack, ROI) == FILL).all()
    src.set_roi(None)
    assert src.frame_region == FrameRegion.full(H, W)
    assert src.next_timepoint(STOP) is not None
    stack, _ = _read(src, FILL)
    assert (stack != FILL).all()
    src.set_roi(FrameRegion(0, 0, H, W))  # the full frame given as a region is the full frame
    assert src.frame_region == FrameRegion.full(H, W)
    src.close()


def test_a_small_roi_renders_only_its_own_pixels() -> None:
    """The kernels loop over the region alone: the pixels written (the kernels' own count)
    are the region's, a sixteenth of the frame here, focus included."""
    small = FrameRegion(24, 36, H // 4, W // 4)
    full = _source(events=(STRADDLING,))
    roi = _source(events=(STRADDLING,))
    roi.set_roi(small)
    _first_timepoint_together(full, roi)
    _read(full, 0)
    _read(roi, 0)
    frames = full.spec.frames
    assert full.statistics()["frames"] == roi.statistics()["frames"] == frames
    background_full = frames * H * W
    background_roi = frames * small.area
    focus_full = full.statistics()["pixels_rendered"] - background_full
    focus_roi = roi.statistics()["pixels_rendered"] - background_roi
    assert focus_full > 0  # the focus was drawn (over its whole 3.5 sigma box)
    assert 0 < focus_roi < focus_full  # only where its box meets the region
    assert roi.statistics()["pixels_rendered"] < full.statistics()["pixels_rendered"] / 10


@pytest.mark.parametrize("region", [
    FrameRegion(-1, 0, 10, 10),
    FrameRegion(0, -5, 10, 10),
    FrameRegion(60, 0, 10, 10),
    FrameRegion(0, 90, 10, 10),
    FrameRegion(0, 0, H + 1, W),
])
def test_a_region_not_inside_the_sensor_is_refused(region: FrameRegion) -> None:
    src = _source()
    with pytest.raises(SourceError, match="not inside the 96x64 sensor") as info:
        src.set_roi(region)
    assert "\n" not in str(info.value)
    assert region.describe() in str(info.value)
    assert src.frame_region == FrameRegion.full(H, W)  # nothing changed


def test_verify_stamps_the_roi_corner() -> None:
    src = _source(verify=True)
    with pytest.raises(SourceError, match="narrower than the 8-pixel verification stamp"):
        src.set_roi(FrameRegion(0, 0, 20, 7))
    src.set_roi(ROI)
    src.start(0.0)
    assert src.next_timepoint(STOP) is not None
    src.set_sequence(41)
    stack, _ = _read(src, 0)
    for c, z in src.frame_order():
        assert read_stamp(stack[c, z][ROI.slices()]) == (41, c, z)
    assert check_stack(stack[:, :, ROI.y:ROI.y1, ROI.x:ROI.x1], 41)
    assert (_outside(stack, ROI) == 0).all()  # the stamp too stays inside the region


# --------------------------------------------------------------------------- presets


def test_presets_are_named_and_switch_from_the_next_timepoint() -> None:
    plain = _source()
    swapped = _source(channels=(1, 0))
    switching = _source()
    assert switching.available_channel_presets == ("structure", "marker", "marker2",
                                                  "dark")
    assert switching.channel_presets == ("structure", "marker")
    assert swapped.channel_presets == ("marker", "structure")
    for src in (plain, swapped, switching):
        src.start(0.0)
        assert src.next_timepoint(STOP) is not None
    switching.set_channel_presets(("marker", "structure"))
    assert switching.channel_presets == ("marker", "structure")
    now = {name: _read(src, 0)[0] for name, src in
           (("plain", plain), ("swapped", swapped), ("switching", switching))}
    np.testing.assert_array_equal(now["switching"], now["plain"])  # this timepoint: as before
    assert not np.array_equal(now["switching"], now["swapped"])
    for src in (plain, swapped, switching):
        assert src.next_timepoint(STOP) is not None
    after = {name: _read(src, 0)[0] for name, src in
             (("plain", plain), ("swapped", swapped), ("switching", switching))}
    np.testing.assert_array_equal(after["switching"], after["swapped"])  # the next: switched


def test_marker2_shows_the_same_events_dimmer_over_more_structure() -> None:
    """Pairs with and without the event, driven alike, differ by the focus alone."""
    marker = _source(events=(STRADDLING,), channels=(0, 1))
    marker_none = _source(channels=(0, 1))
    marker2 = _source(events=(STRADDLING,), channels=(0, 2))
    marker2_none = _source(channels=(0, 2))
    assert marker2.channel_presets == ("structure", "marker2")
    sources = (marker, marker_none, marker2, marker2_none)
    _first_timepoint_together(*sources)
    a, a0, b, b0 = (_read(src, 0)[0].astype(np.float64) for src in sources)
    focus_marker = (a - a0)[1, 0]  # frame 2, at 10 ms: full intensity
    focus_marker2 = (b - b0)[1, 0]
    assert np.unravel_index(int(np.argmax(focus_marker2)), (H, W)) == (22, 36)
    assert focus_marker2.max() == pytest.approx(0.6 * focus_marker.max(), rel=0.01)
    structure = a0[0, 0]
    on_filament = structure > np.percentile(structure, 95)
    # more of the structure bleeds through into marker2 than into the marker
    contrast = [img[1, 0][on_filament].mean() - np.median(img[1, 0]) for img in (a0, b0)]
    assert contrast[1] > 2 * contrast[0] > 0


def test_preset_errors_name_the_allowed_ones_and_change_nothing() -> None:
    src = _source()
    with pytest.raises(SourceError, match=r"unknown channel preset 'dapi'; the presets are "
                                          r"structure, marker, marker2, dark"):
        src.set_channel_presets(("structure", "dapi"))
    with pytest.raises(SourceError, match=r"3 channel presets .* for a stack of 2 channels"):
        src.set_channel_presets(("structure", "marker", "marker2"))
    assert src.channel_presets == ("structure", "marker")
    src.set_channel_presets(["marker2", "marker2"])  # any sequence; a preset may repeat
    assert src.channel_presets == ("marker2", "marker2")


# --------------------------------------------------------------------------- true events


@pytest.mark.parametrize("region", [None, ROI])
def test_true_events_sit_where_the_focus_is_drawn(region: FrameRegion | None) -> None:
    event = (0.0, 0.02, 30.3, 40.6, 0)
    src = _source(events=(event, (5.0, 1.0, 10.0, 10.0, 0)), focus_sigma_px=1.0)
    src.set_roi(region)
    _first_timepoint_together(src)
    stack, times = _read(src, 0)
    c, z = 1, 0
    t_exp = times[c * src.spec.z_slices + z]
    truth = src.true_events(t_exp)
    assert len(truth) == 1  # the later event is not active yet
    (e,) = truth
    assert isinstance(e, TrueEvent)
    assert (e.y, e.x, e.sigma_px) == (30.3, 40.6, 1.0)
    assert e.intensity == pytest.approx(1.0) and e.visible
    y, x = np.unravel_index(int(np.argmax(stack[c, z])), (H, W))  # sensor pixels, ROI or not
    assert abs(y - e.y) <= 1.0 and abs(x - e.x) <= 1.0
    assert (int(y), int(x)) == (30, 41)
    rising = src.true_events(times[0])  # at the event's start: listed, invisible
    assert len(rising) == 1 and rising[0].intensity == 0.0 and not rising[0].visible
    assert src.true_events(times[0] + 1.0) == ()
    assert src.true_events(times[0] + 5.5)[0].intensity == pytest.approx(1.0)


def test_true_events_need_the_clock() -> None:
    with pytest.raises(SourceError, match=r"true_events\(\) called before start\(\)"):
        _source().true_events(time.monotonic())


# --------------------------------------------------------------------------- positions


def test_positions_share_the_actuation_and_answer_for_the_field_under_the_stage() -> None:
    settings = SyntheticSettings(height=H, width=W, z_slices=1, event_every_s=0.0,
                                 exposure_s=0.005,
                                 events=((0.0, 60.0, 30.0, 40.0, 0),))
    src = SyntheticPositions(settings, ("a", "b"), 0.0)
    src.open()
    assert src.sensor_shape == (H, W)
    assert src.available_channel_presets == ("structure", "marker", "marker2", "dark")
    src.start(0.0)
    src.set_roi(ROI)
    src.set_channel_presets(("marker2", "marker"))
    with pytest.raises(SourceError, match="not inside"):
        src.set_roi(FrameRegion(0, 0, H + 1, W))
    with pytest.raises(SourceError, match="unknown channel preset"):
        src.set_channel_presets(("marker", "nope"))
    for p in (0, 1):
        src.move_to(p, STOP)
        assert src.frame_region == ROI and src.channel_presets == ("marker2", "marker")
        assert src.next_timepoint(STOP) is not None
        stack = np.full(src.spec.shape, FILL, src.spec.dtype)
        times = [src.read_frame(c, z, stack[c, z]) for c, z in src.frame_order()]
        assert (_outside(stack, ROI) == FILL).all()
        assert (stack[:, :, ROI.y:ROI.y1, ROI.x:ROI.x1] != FILL).all()
        assert src.true_events(times[1]) == src.fields[p].true_events(times[1])
        assert len(src.true_events(times[1])) == 1
    assert src.true_events(times[1], position=0) == src.fields[0].true_events(times[1])
    with pytest.raises(SourceError, match="position 2 is not one of the plan's 2"):
        src.true_events(times[1], position=2)
    src.close()


def test_dark_shows_the_offset_and_noise_only() -> None:
    """'dark' is a channel whose light is off: no structure and no focus, only the camera's
    offset and read noise."""
    dark = _source(events=(STRADDLING,), channels=(0, 3))
    structure = _source(events=(STRADDLING,), channels=(0, 0))
    assert dark.channel_presets == ("structure", "dark")
    _first_timepoint_together(dark, structure)
    d = _read(dark, 0)[0][1, 0].astype(np.float64)  # frame 2, at the focus's full intensity
    st = _read(structure, 0)[0][1, 0].astype(np.float64)
    assert abs(np.median(d) - 0.025 * 4095) < 3  # the offset (100 counts)
    assert d.std() < 0.5 * st.std()  # no filaments
    assert d[22, 36] < np.median(d) + 5 * 0.008 * 4095  # no focus where the marker's is
