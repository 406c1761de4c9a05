"""Image-source benchmarks against Micro-Manager's DemoCamera: each times one source
operation, beside a bare pymmcore-plus baseline timed the same way in the same run, same
process, same camera settings.

    pytest bench/test_sources_bench.py --benchmark-only [--quick] -p no:cacheprovider

- ``test_frame_read``: one free-run frame through ``MicroManagerSource`` (``next_timepoint``
  + ``read_frame`` into a ring-sized numpy buffer) vs a bare ``popNextImage`` loop, spinning,
  and sleeping 0.2 ms when no frame waits as the source does (target: the source's frame rate
  >= 0.9 x the bare loop's). 512x512 uint16, exposure 1 ms; with the DemoCamera's
  ``FastImage=1`` (the camera reuses its image, so the camera is not the bottleneck) and with
  its default generated images;
- ``test_timepoint``: one timepoint at a requested interval, a fast one (20 ms: sequence
  acquisition, decimated) and a slow one (200 ms: timed snaps): the round times are the
  achieved intervals, so their spread is the interval error; vs a bare loop of
  ``time.sleep``-scheduled ``snapImage`` calls (targets: error p99 <= 2 ms fast, <= 10 ms
  slow).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_timing import figures, median, pct, per_op, times

from rt_eda.sources.micromanager import (
    DEMO_CONFIG_NAME,
    MicroManagerSettings,
    MicroManagerSource,
    demo_adapter_path,
)

pytest.importorskip("pymmcore_plus")

NEVER = threading.Event()
SLOTS = 8


def bare_core(fast_image: bool) -> Any:
    from pymmcore_plus import CMMCorePlus

    path = demo_adapter_path()
    core = CMMCorePlus(mm_path=path)
    core.loadSystemConfiguration(str(Path(path) / DEMO_CONFIG_NAME))
    core.setProperty("Camera", "FastImage", "1" if fast_image else "0")
    core.setExposure(1.0)
    return core


def bare_pop(core: Any, poll_s: float) -> Any:
    """Wait for the camera's next frame and pop it (``poll_s`` 0: spinning; else sleeping
    that long while no frame waits, as the source does)."""

    def pop_one() -> None:
        while not core.getRemainingImageCount():
            if poll_s:
                time.sleep(poll_s)
        core.popNextImage()

    return pop_one


@pytest.mark.parametrize("fast_image", [True, False], ids=["FastImage", "generated"])
def test_frame_read(benchmark: Any, quick: bool, report: Any, fast_image: bool) -> None:
    """Timed: one free-run frame through ``MicroManagerSource`` (``next_timepoint``, then
    ``read_frame`` into one of 8 ring-sized buffers): the wait for the camera's next frame
    and its copy; rounds x iterations, per frame.

    Baselines, same rounds x iterations, in the same process with the same settings: a bare
    ``popNextImage`` loop, spinning, and sleeping 0.2 ms while no frame waits.
    """
    if fast_image:
        rounds, iterations = (5, 50) if quick else (10, 200)
    else:
        rounds, iterations = (3, 20) if quick else (10, 50)
    source = MicroManagerSource(MicroManagerSettings(
        exposure_ms=1.0, properties=(("Camera", "FastImage", "1" if fast_image else "0"),)))
    ring = np.empty((SLOTS, 1, 1, 512, 512), np.uint16)
    step = iter(range(1 << 62))
    try:
        source.open()
        source.start(0.0)

        def read_frame() -> None:
            source.next_timepoint(NEVER)
            source.read_frame(0, 0, ring[next(step) % SLOTS, 0, 0])

        benchmark.pedantic(read_frame, rounds=rounds, iterations=iterations, warmup_rounds=1)
        source.stop()
        stats = source.statistics()
    finally:
        source.close()
    source_t = times(benchmark)
    base: dict[str, np.ndarray] = {}
    for name, poll_s in (("bare", 0.0), ("bare_sleeping", 0.0002)):
        core = bare_core(fast_image)
        try:
            core.startContinuousSequenceAcquisition(0)
            base[name] = per_op(bare_pop(core, poll_s), rounds=rounds, iterations=iterations,
                                warmup_rounds=1)
            core.stopSequenceAcquisition()
        finally:
            core.unloadAllDevices()
    result = {
        "camera": "DemoCamera FastImage=1" if fast_image else "DemoCamera generated",
        **figures(source_t, "read_frame"), **figures(base["bare"], "bare_pop"),
        **figures(base["bare_sleeping"], "bare_sleeping_pop"),
        "source_fps": 1 / float(np.mean(source_t)),
        "bare_fps": 1 / float(np.mean(base["bare"])),
        "bare_sleeping_fps": 1 / float(np.mean(base["bare_sleeping"])),
        "ratio": median(base["bare"]) / median(source_t),
        "ratio_vs_sleeping": median(base["bare_sleeping"]) / median(source_t),
        "source_frames_lost": stats["mm_frames_lost"],
    }
    benchmark.extra_info.update(result)
    report("mm-demo free-run 512x512 uint16, exposure 1 ms: one frame through the source vs "
           "bare popNextImage (target ratio >= 0.9)", {
               "camera": result["camera"], "source us": result["read_frame_median_us"],
               "bare us": result["bare_pop_median_us"],
               "bare sleeping us": result["bare_sleeping_pop_median_us"],
               "source fps": result["source_fps"], "bare fps": result["bare_fps"],
               "ratio": result["ratio"], "ratio vs sleeping": result["ratio_vs_sleeping"],
               "lost": result["source_frames_lost"],
           })


def bare_snap_errors(interval: float, n: int) -> list[float]:
    """``time.sleep`` to each due time, then snapImage: |achieved - requested| in ms."""
    core = bare_core(True)
    try:
        stamps = []
        due = time.monotonic()
        for _ in range(n):
            time.sleep(max(0.0, due - time.monotonic()))
            stamps.append(time.monotonic())
            core.snapImage()
            core.getImage()
            due += interval
    finally:
        core.unloadAllDevices()
    return list(np.abs(np.diff(stamps) - interval) * 1e3)


@pytest.mark.parametrize(("interval", "target_p99"), [(0.02, 2.0), (0.2, 10.0)],
                         ids=["fast-20ms", "slow-200ms"])
def test_timepoint(benchmark: Any, quick: bool, report: Any, interval: float,
                   target_p99: float) -> None:
    """Timed: one timepoint of ``MicroManagerSource`` at ``interval`` (``next_timepoint``,
    which waits until it is due, then ``read_frame``), one per round (rounds x 1 iteration):
    each round lasts one achieved interval, so the mean is the interval kept and the spread
    (min, max, stddev) its error.

    Baseline, same number of timepoints: a bare loop of ``time.sleep`` to each due time then
    ``snapImage``. ``extra_info``: |achieved - requested| from the round times, from the
    source's own exposure times, and from the bare loop.
    """
    seconds = 1.5 if quick else 6.0
    n = max(8, round(seconds / interval))
    source = MicroManagerSource(MicroManagerSettings(
        exposure_ms=1.0, properties=(("Camera", "FastImage", "1"),)))
    out = np.empty((512, 512), np.uint16)
    try:
        source.open()
        source.start(interval)

        def timepoint() -> None:
            source.next_timepoint(NEVER)
            source.read_frame(0, 0, out)

        benchmark.pedantic(timepoint, rounds=n, warmup_rounds=2)
        mode = source.mode
        source.stop()
        stats = source.statistics()
    finally:
        source.close()
    achieved = times(benchmark)
    errors = np.abs(achieved - interval) * 1e3
    bare = bare_snap_errors(interval, n)
    result = {
        "interval_ms": interval * 1e3, "mode": str(mode), "timepoints": n,
        **figures(achieved, "timepoint", "ms"),
        "round_error_p50_ms": pct(errors, 50), "round_error_p99_ms": pct(errors, 99),
        "source_p50_ms": stats["interval_error_ms_p50"],
        "source_p99_ms": stats["interval_error_ms_p99"],
        "source_max_ms": stats["interval_error_ms_max"],
        "target_p99_ms": target_p99,
        "bare_snap_p50_ms": pct(bare, 50), "bare_snap_p99_ms": pct(bare, 99),
        "late": stats["timepoints_late"], "decimated": stats["mm_frames_skipped"],
        "lost": stats["mm_frames_lost"],
    }
    benchmark.extra_info.update(result)
    report("mm-demo achieved interval error |achieved - requested| (ms), exposure 1 ms", {
        k: result[k] for k in ("interval_ms", "mode", "timepoints", "timepoint_mean_ms",
                               "round_error_p50_ms", "round_error_p99_ms", "source_p50_ms",
                               "source_p99_ms", "source_max_ms", "target_p99_ms",
                               "bare_snap_p50_ms", "bare_snap_p99_ms", "late", "decimated",
                               "lost")})
