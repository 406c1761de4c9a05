"""Camera-ROI benchmarks against Micro-Manager's DemoCamera: what reading a sub-rectangle of
the sensor gains in frame rate, and what changing the ROI costs, each beside a bare
pymmcore-plus baseline timed the same way in the same run, same process, same camera
settings.

    pytest bench/test_roi_bench.py --benchmark-only [--quick] -p no:cacheprovider

- ``test_roi_frame_rate``: one free-run frame through ``MicroManagerSource``
  (``next_timepoint`` + ``read_frame`` into a full 512x512 ring-sized buffer, only the ROI
  written) at the full frame and with a 128x128 ROI, and at the full frame with the
  ``UniMMCore`` the source makes for a stimulation device (``python_devices=True``, to
  show what that core costs); vs a bare ``popNextImage`` loop (sleeping 0.2 ms while no
  frame waits, as the source does) on a bare ``CMMCorePlus`` with the same ROI. Exposure
  1 ms, the DemoCamera's generated images (it generates the ROI's pixels only, so the
  frame rate follows the ROI's area).
- ``test_roi_change``: one ROI change in a running free-run sequence, alternating between
  the full frame and a 128x128 ROI: ``set_roi`` alone (stop the sequence, ``setROI`` /
  ``clearROI``, read it back, restart) and ``set_roi`` plus the first timepoint of the new
  ROI (the change as the acquisition sees it); vs the same stop / setROI / start on a bare
  core. The p50 of the rounds is the figure. With Micro-Manager's default circular buffer
  (250 MB) and with 32 MB (``buffer_mb``): starting a sequence sizes the buffer for the new
  image, and that, not ``setROI``, is most of the cost (about proportional to the buffer).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_timing import figures, median, pct, per_op, times

from rt_eda.core.regions import FrameRegion
from rt_eda.sources.micromanager import (
    DEMO_CONFIG_NAME,
    MicroManagerSettings,
    MicroManagerSource,
    demo_adapter_path,
)

pytest.importorskip("pymmcore_plus")
pytest.importorskip("mm_test_adapters")

NEVER = threading.Event()
SLOTS = 8
SENSOR = (512, 512)
ROI = FrameRegion(192, 192, 128, 128)  # y, x, height, width: the sensor's centre


@pytest.fixture(autouse=True)
def no_core_in_captured_logs() -> Iterator[None]:
    """pymmcore-plus logs ``Initialized core <CMMCorePlus ...>`` at DEBUG with the core as the
    record's argument, and pytest's log capture keeps the records until the test ends: the
    core it names (its circular buffer allocated) stayed alive beside the next one, whose
    buffer then came from fresh pages, and its restarts took 135-240 ms instead of 35 ms at
    250 MB, whichever core was measured second. INFO for the length of a test."""
    logger = logging.getLogger("pymmcore-plus")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)


def bare_core(region: FrameRegion | None, buffer_mb: int | None = None) -> Any:
    from pymmcore_plus import CMMCorePlus

    path = demo_adapter_path()
    core = CMMCorePlus(mm_path=path)
    core.loadSystemConfiguration(str(Path(path) / DEMO_CONFIG_NAME))
    core.setExposure(1.0)
    if buffer_mb is not None:
        core.setCircularBufferMemoryFootprint(buffer_mb)
    if region is not None:
        core.setROI(region.x, region.y, region.width, region.height)
    return core


def bare_pop(core: Any) -> Any:
    def pop_one() -> None:
        while not core.getRemainingImageCount():
            time.sleep(0.0002)
        core.popNextImage()

    return pop_one


@pytest.mark.parametrize(("roi", "python_devices"), [(False, False), (True, False),
                                                     (False, True)],
                         ids=["full", "roi128", "full-UniMMCore"])
def test_roi_frame_rate(benchmark: Any, quick: bool, report: Any, roi: bool,
                        python_devices: bool) -> None:
    """Timed: one free-run frame through ``MicroManagerSource`` into one of 8 full-frame
    buffers; rounds x iterations, per frame. Baseline: a bare ``popNextImage`` loop with the
    same ROI, same rounds x iterations."""
    rounds, iterations = (5, 20) if quick else (10, 100)
    region = ROI if roi else None
    gc.collect()  # cores left by earlier tests (see test_roi_change)
    source = MicroManagerSource(MicroManagerSettings(exposure_ms=1.0,
                                                     python_devices=python_devices))
    ring = np.empty((SLOTS, *SENSOR), np.uint16)
    step = iter(range(1 << 62))
    try:
        source.open()
        source.set_roi(region)
        source.start(0.0)
        core_type = type(source.core).__name__

        def read_frame() -> None:
            source.next_timepoint(NEVER)
            source.read_frame(0, 0, ring[next(step) % SLOTS])

        benchmark.pedantic(read_frame, rounds=rounds, iterations=iterations, warmup_rounds=1)
        source.stop()
        stats = source.statistics()
    finally:
        source.close()
    source_t = times(benchmark)
    gc.collect()
    core = bare_core(region)
    try:
        core.startContinuousSequenceAcquisition(0)
        bare = per_op(bare_pop(core), rounds=rounds, iterations=iterations, warmup_rounds=1)
        core.stopSequenceAcquisition()
    finally:
        core.unloadAllDevices()
    result = {
        "region": (region or FrameRegion.full(*SENSOR)).describe(), "core": core_type,
        **figures(source_t, "read_frame"), **figures(bare, "bare_pop"),
        "source_fps": 1 / float(np.mean(source_t)), "bare_fps": 1 / float(np.mean(bare)),
        "ratio": median(bare) / median(source_t), "lost": stats["mm_frames_lost"],
    }
    benchmark.extra_info.update(result)
    report("mm-demo free-run frames/s, generated images, exposure 1 ms: full frame vs "
           "128x128 ROI (source vs bare popNextImage)", {
               "region": result["region"], "core": core_type,
               "source us": result["read_frame_median_us"],
               "bare us": result["bare_pop_median_us"], "source fps": result["source_fps"],
               "bare fps": result["bare_fps"], "ratio": result["ratio"],
               "lost": result["lost"],
           })


def bare_roi_changes(n: int, buffer_mb: int | None) -> np.ndarray:
    """Seconds per stop / setROI (or clearROI) / start on a bare core in free-run."""
    core = bare_core(None, buffer_mb)
    try:
        core.startContinuousSequenceAcquisition(0)
        time.sleep(0.05)
        flip = iter(range(1 << 62))

        def change() -> None:
            core.stopSequenceAcquisition()
            core.clearCircularBuffer()
            if next(flip) % 2:
                core.clearROI()
            else:
                core.setROI(ROI.x, ROI.y, ROI.width, ROI.height)
            core.startContinuousSequenceAcquisition(0)

        out = per_op(change, rounds=n, warmup_rounds=2)
        core.stopSequenceAcquisition()
    finally:
        core.unloadAllDevices()
    return out


@pytest.mark.parametrize("buffer_mb", [None, 32], ids=["buffer-default", "buffer-32MB"])
@pytest.mark.parametrize("with_frame", [False, True], ids=["set_roi", "set_roi+frame"])
def test_roi_change(benchmark: Any, quick: bool, report: Any, with_frame: bool,
                    buffer_mb: int | None) -> None:
    """Timed: one ROI change of a free-run sequence (full frame <-> 128x128, alternating),
    one per round; with ``set_roi+frame`` also the first timepoint read after it.
    Baseline: stop / setROI / start on a bare core with the same buffer, same rounds."""
    n = 10 if quick else 40
    # a core left alive (see no_core_in_captured_logs; the garbage collector frees those in
    # reference cycles) made the restarts measured after it 3-5x slower
    gc.collect()
    bare = bare_roi_changes(n, buffer_mb)
    gc.collect()
    source = MicroManagerSource(MicroManagerSettings(exposure_ms=1.0, buffer_mb=buffer_mb))
    out = np.empty(SENSOR, np.uint16)
    flip = iter(range(1 << 62))
    try:
        source.open()
        source.start(0.0)
        source.next_timepoint(NEVER)
        source.read_frame(0, 0, out)

        def change() -> None:
            source.set_roi(None if next(flip) % 2 else ROI)
            if with_frame:
                source.next_timepoint(NEVER)
                source.read_frame(0, 0, out)

        benchmark.pedantic(change, rounds=n, warmup_rounds=2)
        source.stop()
        stats = source.statistics()
        buffer = source.core.getCircularBufferMemoryFootprint()
    finally:
        source.close()
    source_t = times(benchmark)
    result = {
        "measured": "set_roi + first frame" if with_frame else "set_roi", "buffer_mb": buffer,
        **figures(source_t, "change", "ms"), **figures(bare, "bare_change", "ms"),
        "change_p50_ms": pct(source_t * 1e3, 50), "bare_change_p50_ms": pct(bare * 1e3, 50),
        "source_roi_change_ms_mean": stats["roi_change_ms_mean"],
        "roi_changes": stats["roi_changes"], "discarded": stats["mm_frames_discarded"],
    }
    benchmark.extra_info.update(result)
    report("mm-demo ROI change in a free-run sequence (full <-> 128x128), ms", {
        k: result[k] for k in ("measured", "buffer_mb", "change_p50_ms", "change_p99_ms",
                               "change_mean_ms", "bare_change_p50_ms",
                               "source_roi_change_ms_mean", "roi_changes", "discarded")})
