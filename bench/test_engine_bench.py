"""End-to-end benchmarks of ``rt-eda run`` (the engine's targets), each run in-process
through :class:`rt_eda.engine.Engine`, beside the bare synthetic render rate as a baseline.

    pytest bench/test_engine_bench.py --benchmark-only [--quick]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pytest

from rt_eda.config import load_config
from rt_eda.engine import Engine
from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource


def run_engine(overrides: dict[str, object]) -> dict[str, Any]:
    config = load_config(None).with_overrides({"viewer.enabled": False, **overrides})
    engine = Engine(config)
    logging.getLogger().setLevel(logging.WARNING)
    code = engine.run()
    assert code == 0, engine.errors
    s = engine.summary
    assert s["stacks_published"] == s["stacks_analysed"] + s["stacks_skipped"]
    return s


def render_rate(size: int, seconds: float = 1.0) -> float:
    """Baseline: stacks/s the synthetic source renders in-process with no engine at all."""
    src = SyntheticSource(SyntheticSettings(height=size, width=size))
    spec = src.open()
    out = np.empty(spec.shape, spec.np_dtype)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        src.render_stack(n * 1e-3, out)
        n += 1
    return n / (time.perf_counter() - t0)


@pytest.mark.parametrize("interval", [0.01, 0.002, 0.001])
def test_end_to_end_at_several_frame_rates(benchmark: Any, quick: bool, report: Any,
                                           interval: float) -> None:
    duration = 3.0 if quick else 10.0

    def experiment() -> dict[str, Any]:
        baseline = render_rate(512)
        s = run_engine({
            "interpreter.kind": "manual", "camera.interval": interval,
            "interpreter.manual_interval": interval, "run.verify": True,
            "analysis.workers": 2, "analysis.worker": "ImageWorker",
            "run.duration": duration,
        })
        lat = s["latency_ms"]
        requested = 1 / interval
        return {
            "requested_per_s": requested,
            "acquired_per_s": s["acquired_fps"],
            "acquired_ratio": s["acquired_fps"] / requested,
            "render_only_per_s": baseline,
            "analysed_per_s": s["analysed_per_s"],
            "skipped_fraction": s["stacks_skipped"] / max(1, s["stacks_published"]),
            "p2c_p50_ms": lat["publish_to_claim"]["p50"],
            "p2c_p99_ms": lat["publish_to_claim"]["p99"],
            "p2d_p50_ms": lat["publish_to_decision"]["p50"],
            "p2d_p99_ms": lat["publish_to_decision"]["p99"],
            "torn_reads": s["torn_reads"],
            "interval_error_p99_ms": s["interval_error_ms"]["p99"],
        }

    result = benchmark.pedantic(experiment, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    report("end to end: synthetic 2x512x512 -> 2 ImageWorkers -> manual interpreter", result)
    assert result["torn_reads"] == 0


def test_decision_to_actuation(benchmark: Any, quick: bool, report: Any) -> None:
    """Binary interpreter flipping between 2 ms and 1 ms on frequent synthetic events."""
    duration = 4.0 if quick else 8.0

    def experiment() -> dict[str, Any]:
        s = run_engine({
            "interpreter.slow_interval": 0.002, "interpreter.fast_interval": 0.001,
            "camera.synthetic.event_every_s": 0.6, "camera.synthetic.event_duration_s": 0.3,
            "analysis.workers": 2, "analysis.worker": "ImageWorker",
            "run.duration": duration,
        })
        d2a = s["latency_ms"]["decision_to_actuation"]
        return {
            "interval_switches": s["interval_switches"],
            "d2a_p50_ms": d2a["p50"], "d2a_p99_ms": d2a["p99"], "d2a_max_ms": d2a["max"],
            "target_p99_ms": 2.0 + 5.0,
            "p2d_p99_ms": s["latency_ms"]["publish_to_decision"]["p99"],
        }

    result = benchmark.pedantic(experiment, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    report("decision -> actuation (binary interpreter, 2 ms / 1 ms)", result)
    assert result["interval_switches"] >= 2


def test_analysis_ten_times_slower_than_the_camera(benchmark: Any, quick: bool,
                                                   report: Any) -> None:
    duration = 4.0 if quick else 8.0
    interval, work_ms = 0.01, 100.0

    def experiment() -> dict[str, Any]:
        s = run_engine({
            "interpreter.kind": "manual", "camera.interval": interval,
            "interpreter.manual_interval": interval,
            "analysis.worker": "BusyWorker", "analysis.worker_modules": ["slow_workers"],
            "analysis.options": {"work_ms": work_ms}, "analysis.workers": 1,
            "run.duration": duration,
        })
        p2d = s["latency_ms"]["publish_to_decision"]
        return {
            "requested_per_s": 1 / interval, "acquired_per_s": s["acquired_fps"],
            "acquired_ratio": s["acquired_fps"] * interval,
            "analysis_ms": work_ms, "analysed_per_s": s["analysed_per_s"],
            "skipped_fraction": s["stacks_skipped"] / max(1, s["stacks_published"]),
            "p2d_p50_ms": p2d["p50"], "p2d_p99_ms": p2d["p99"],
            "target_p2d_p99_ms": 1.5 * work_ms + 5,
        }

    result = benchmark.pedantic(experiment, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    report("overload: analysis 10x slower than the camera (100 ms vs 10 ms)", result)
