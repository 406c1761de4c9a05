"""Scaling of analysis over workers x threads_per_worker, and rt-eda against the original
plugin's pattern with the same model at the same frame rate.

    pytest bench/test_keras_bench.py --benchmark-only [--quick]
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rt_eda.config import load_config
from rt_eda.engine import Engine

GRID = [(1, 2), (2, 1), (2, 2)]
BENCH = Path(__file__).parent


def engine_run(overrides: dict[str, object]) -> dict[str, Any]:
    config = load_config(None).with_overrides({"viewer.enabled": False, **overrides})
    logging.getLogger().setLevel(logging.WARNING)
    engine = Engine(config)
    code = engine.run()
    assert code == 0, engine.errors
    return engine.summary


def heavy_model(path: Path) -> Path:
    """A two-level U-Net of about 0.5 M parameters, 2 channels in, dynamic size."""
    code = f"""
import keras
from keras import layers
inp = keras.Input((None, None, 2))
def block(x, f):
    x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    return layers.Conv2D(f, 3, padding="same", activation="relu")(x)
c1 = block(inp, 32); p1 = layers.MaxPooling2D()(c1)
c2 = block(p1, 64); p2 = layers.MaxPooling2D()(c2)
c3 = block(p2, 128)
u2 = layers.Concatenate()([layers.UpSampling2D()(c3), c2]); c4 = block(u2, 64)
u1 = layers.Concatenate()([layers.UpSampling2D()(c4), c1]); c5 = block(u1, 32)
out = layers.Conv2D(1, 1, activation="sigmoid")(c5)
model = keras.Model(inp, out)
model.save({str(path)!r})
print(model.count_params())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=300)
    params = int(proc.stdout.strip().splitlines()[-1])
    assert 300_000 < params < 800_000, params
    return path


def grid_row(s: dict[str, Any], workers: int, threads: int) -> dict[str, Any]:
    p2d = s["latency_ms"]["publish_to_decision"]
    return {
        "workers x threads": f"{workers}x{threads}",
        "analysed_per_s": s["analysed_per_s"],
        "acquired_per_s": s["acquired_fps"],
        "p2d_p50_ms": p2d["p50"], "p2d_p99_ms": p2d["p99"],
        "camera_jitter_ms": s["publish_interval_ms"]["p99"] - s["publish_interval_ms"]["p50"],
    }


@pytest.mark.parametrize("model", ["demo", "heavy-0.5M", "gil-python-20ms"])
def test_scaling_grid(benchmark: Any, quick: bool, report: Any, tmp_path: Path,
                      model: str) -> None:
    duration = 4.0 if quick else 6.0
    grid = GRID[1:2] if quick else GRID
    base: dict[str, object] = {
        "interpreter.kind": "manual", "camera.interval": 0.02,
        "interpreter.manual_interval": 0.02, "run.duration": duration,
    }
    if model == "heavy-0.5M":
        base.update({"analysis.worker": "KerasRescaleWorker",
                     "analysis.model": str(heavy_model(tmp_path / "heavy.keras"))})
    elif model == "gil-python-20ms":
        sys.path.insert(0, str(BENCH))
        base.update({"analysis.worker": "BusyWorker",
                     "analysis.worker_modules": ["slow_workers"],
                     "analysis.options": {"work_ms": 20.0}})

    def experiment() -> dict[str, Any]:
        rows = []
        for workers, threads in grid:
            s = engine_run({**base, "analysis.workers": workers,
                            "analysis.threads_per_worker": threads})
            rows.append(grid_row(s, workers, threads))
        best = max(rows, key=lambda r: r["analysed_per_s"])
        return {"rows": rows, "best": best["workers x threads"]}

    result = benchmark.pedantic(experiment, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    for row in result["rows"]:
        report(f"scaling: {model}, 2x512x512 at 50 stacks/s (best {result['best']})",
               {"model": model, **row})


def test_against_the_original_pattern(benchmark: Any, quick: bool, report: Any) -> None:
    duration = 4.0 if quick else 10.0
    interval = 0.05

    def experiment() -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, str(BENCH / "original_pattern.py"), "512", str(interval),
             str(duration)], capture_output=True, text=True, check=True, timeout=600,
        )
        original = json.loads(proc.stdout.strip().splitlines()[-1])
        s = engine_run({"interpreter.kind": "manual", "camera.interval": interval,
                        "interpreter.manual_interval": interval, "run.duration": duration,
                        "analysis.workers": 2, "analysis.threads_per_worker": 1})
        ours = grid_row(s, 2, 1)
        return {
            "original_analysed_per_s": original["analysed_per_s"],
            "rt_eda_analysed_per_s": ours["analysed_per_s"],
            "throughput_ratio": ours["analysed_per_s"] / original["analysed_per_s"],
            "original_p2d_p50_ms": original["p2d_p50_ms"],
            "rt_eda_p2d_p50_ms": ours["p2d_p50_ms"],
            "original_p2d_p99_ms": original["p2d_p99_ms"],
            "rt_eda_p2d_p99_ms": ours["p2d_p99_ms"],
            "original_jitter_ms": original["camera_jitter_ms"],
            "rt_eda_jitter_ms": ours["camera_jitter_ms"],
            "jitter_ratio": original["camera_jitter_ms"] / max(1e-6, ours["camera_jitter_ms"]),
            "original_out_of_order_acted_on": original["out_of_order_acted_on"],
        }

    result = benchmark.pedantic(experiment, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    report("rt-eda (2x1) vs the original pattern (5-thread pool, model.predict), demo model, "
           "2x512x512 at 20 stacks/s", result)
