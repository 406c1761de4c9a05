"""Live viewer benchmark: what it shows of a full-speed 2048 x 2048 producer, and what it costs
the producer, with the baseline (no viewer) measured in the same run.

    pytest bench/test_viewer_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

A producer process publishes (1, 1, 2048, 2048) uint16 stacks as fast as it can (a new frame
copied into each slot, like a camera), a 512 x 512 float32 network image for every 8th stack
and a decision-trace row per network image. Phases, each ``seconds`` long, in this order:
producer alone; producer + viewer at ``viewer.max_fps`` 30 (the default); producer + viewer
uncapped (headroom); producer alone again. The viewer is the real window (offscreen Qt) in
its own process, reniced like the viewer role. Figures: displayed frames/s (distinct stacks
drawn per second) and the producer's publish rate relative to the mean of the two baselines.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rt_eda.core.errors import RingOverrunError
from rt_eda.roles.viewer import VIEWER_NICENESS
from rt_eda.shm import DecisionTrace, StackRing, StackSpec

CTX = mp.get_context("spawn")
PHASES = [  # label, viewer.max_fps, overlay on, niceness
    ("role nice+10, 30 fps", 30.0, False, VIEWER_NICENESS),
    ("nice 0, 30 fps", 30.0, False, 0),
    ("nice 0, 30 fps, overlay", 30.0, True, 0),
]
SIZE = 2048
NET_SIZE = 512
IMAGE_EVERY = 8
NO_BOX = (float("nan"),) * 4  # a result row without event regions (the trace's y0..x1)


def producer_proc(ring_name: str, out_name: str, trace_name: str, seconds: float, go: Any,
                  out: Any) -> None:
    """Publish stacks at full speed for ``seconds`` after ``go``; report (count, elapsed)."""
    ring = StackRing.attach(ring_name)
    net_ring = StackRing.attach(out_name)
    trace = DecisionTrace.attach(trace_name)
    rng = np.random.default_rng(0)
    frames = [rng.integers(100, 4000, (SIZE, SIZE), dtype=np.uint16) for _ in range(2)]
    net = rng.random((NET_SIZE, NET_SIZE), dtype=np.float32)
    out.put("ready")
    go.wait()
    count = overruns = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        try:
            with ring.write_slot() as slot:
                np.copyto(slot.pixels[0, 0], frames[slot.seq % 2])
                slot.frame_times[:] = time.monotonic()
                seq = slot.seq
            if seq % IMAGE_EVERY == 0:
                with net_ring.write_slot(seq) as img:
                    np.copyto(img.pixels[0, 0], net)
                now = time.monotonic()
                trace.append(seq, now - 0.01, now, float(np.sin(seq / 50)), 0.1,
                             float(seq % 400 < 200), 1, 0, 0, *NO_BOX)
        except RingOverrunError:
            overruns += 1
            continue
        count += 1
    out.put((count, time.perf_counter() - t0, overruns))
    ring.close()
    net_ring.close()
    trace.close()


def viewer_proc(ring_name: str, out_name: str, trace_name: str, max_fps: float,
                overlay: bool, niceness: int, measure: Any, stop: Any, out: Any) -> None:
    """The viewer window (``run_window``, offscreen, reniced like the role); reports
    (stacks shown, seconds, draws, cpu s, draw step, view size) over the time ``measure``
    was set before ``stop``."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from rt_eda.core.config import load_config
    from rt_eda.live.feed import LiveFeed
    from rt_eda.roles.viewer import _leave
    from rt_eda.viewer._window import ViewerWindow, run_window

    os.nice(niceness)
    feed = LiveFeed(ring_name, out_name, trace_name)
    marks: dict[str, float] = {}
    shown: list[ViewerWindow] = []

    def on_shown(window: ViewerWindow) -> None:
        window.overlay_box.setChecked(overlay)
        shown.append(window)
        out.put("ready")

    def stopping() -> bool:
        window = shown[0]
        now = time.perf_counter()
        if measure.is_set() and "t0" not in marks:
            marks.update(t0=now, n0=window.frames_shown, d0=window.draws,
                         c0=time.process_time())
            out.put("measuring")
        if not stop.is_set():
            return False
        px = min(window.view.viewPixelSize())
        out.put((window.frames_shown - marks["n0"], now - marks["t0"],
                 window.draws - marks["d0"], time.process_time() - marks["c0"],
                 int(px), window.view.width(), window.view.height()))
        return True

    run_window(feed, load_config(None).interpreter, max_fps=max_fps, sender=None,
               stop=stopping, on_shown=on_shown)
    _leave(0, out)  # as the viewer role ends: no final garbage collection


@pytest.fixture
def shm() -> Iterator[tuple[StackRing, StackRing, DecisionTrace]]:
    ring = StackRing.create(StackSpec(1, 1, SIZE, SIZE, "uint16"), 8)
    net = StackRing.create(StackSpec(1, 1, NET_SIZE, NET_SIZE, "float32"), 8)
    trace = DecisionTrace.create(65536)
    try:
        yield ring, net, trace
    finally:
        for r in (ring, net):
            r.shutdown()
            r.close()
            r.unlink()
        trace.close()
        trace.unlink()


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def _produce(procs: list[Any], names: tuple[str, str, str], seconds: float) -> float:
    out, go = CTX.Queue(), CTX.Event()
    p = CTX.Process(target=producer_proc, args=(*names, seconds, go, out), daemon=True)
    p.start()
    procs.append(p)
    assert out.get(timeout=120) == "ready"
    go.set()
    count, elapsed, _overruns = out.get(timeout=120 + seconds)
    p.join(10)
    return float(count / elapsed)


def _with_viewer(procs: list[Any], names: tuple[str, str, str], seconds: float,
                 max_fps: float, overlay: bool = False,
                 niceness: int = VIEWER_NICENESS) -> tuple[float, dict[str, Any]]:
    out, measure, stop = CTX.Queue(), CTX.Event(), CTX.Event()
    v = CTX.Process(target=viewer_proc,
                    args=(*names, max_fps, overlay, niceness, measure, stop, out),
                    daemon=True)
    v.start()
    procs.append(v)
    assert out.get(timeout=120) == "ready"
    time.sleep(1.0)  # the window is up and drawing (nothing new to draw yet)
    pout, go = CTX.Queue(), CTX.Event()
    p = CTX.Process(target=producer_proc, args=(*names, seconds, go, pout), daemon=True)
    p.start()
    procs.append(p)
    assert pout.get(timeout=120) == "ready"
    go.set()
    time.sleep(min(0.5, seconds / 4))  # the viewer sees a running producer
    measure.set()
    assert out.get(timeout=30) == "measuring"
    count, elapsed, _overruns = pout.get(timeout=120 + seconds)
    stop.set()
    shown, v_s, draws, cpu_s, step, vw, vh = out.get(timeout=30)
    v.join(10)
    p.join(10)
    assert v.exitcode == 0, f"viewer exit code {v.exitcode}"
    return float(count / elapsed), {
        "displayed_fps": shown / v_s, "draws_per_s": draws / v_s,
        "viewer_cpu_pct": 100 * cpu_s / v_s, "draw_step": step,
        "view_px": f"{vw:.0f}x{vh:.0f}",
    }


def test_viewer_display_rate_and_producer_cost(benchmark: Any, report: Any, quick: bool,
                                               shm: tuple[StackRing, StackRing, DecisionTrace],
                                               procs: list[Any]) -> None:
    ring, net, trace = shm
    names = (ring.name, net.name, trace.name)
    seconds = 1.5 if quick else 3.0
    figures: dict[str, Any] = {}

    def experiment() -> None:
        base1 = _produce(procs, names, seconds)
        for label, max_fps, overlay, niceness in PHASES:
            rate, shown = _with_viewer(procs, names, seconds, max_fps, overlay, niceness)
            rows.append({"viewer": label, "producer/s": rate, **shown})
        base2 = _produce(procs, names, seconds)
        figures.update(producer_alone_first=base1, producer_alone_last=base2,
                       producer_alone_per_s=(base1 + base2) / 2)

    rows: list[dict[str, Any]] = []
    benchmark.pedantic(experiment, rounds=1, iterations=1)
    base = figures["producer_alone_per_s"]
    table = "viewer: 2048x2048 uint16 producer at full speed, 2 phases alone averaged"
    report(table, {"viewer": "none", "producer/s": base, "vs alone": 1.0})
    for row in rows:
        row["vs alone"] = row["producer/s"] / base
        key = row["viewer"].replace(" ", "_").replace(",", "")
        figures[f"{key}_producer_per_s"] = row["producer/s"]
        figures[f"{key}_vs_alone"] = row["vs alone"]
        figures[f"{key}_displayed_fps"] = row["displayed_fps"]
        figures[f"{key}_cpu_pct"] = row["viewer_cpu_pct"]
        report(table, {"viewer": row["viewer"], "producer/s": row["producer/s"],
                       "vs alone": row["vs alone"], "displayed fps": row["displayed_fps"],
                       "viewer cpu %": row["viewer_cpu_pct"], "step": row["draw_step"],
                       "view px": row["view_px"]})
    benchmark.extra_info.update(figures, cpus=os.cpu_count(), seconds_per_phase=seconds,
                                load_avg_1m=os.getloadavg()[0])
    assert all(row["displayed_fps"] > 0 for row in rows) and base > 0
