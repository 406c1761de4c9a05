"""Analysis benchmarks: one analysis by a worker, timed beside the plain inference call; the
workers x threads scaling runs and the comparison with the original plugin's pattern (whole
engine runs) are module fixtures recorded in ``extra_info`` and the tables printed at the end.

    pytest bench/test_keras_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

``test_analysis[model]`` times ``worker.analyse`` of a real synthetic 2x512x512 uint16 stack in
this process, with one compute thread (the worker of a ``2x1`` grid point), for the demo
U-Net, a 0.5 M-parameter U-Net, and a pure-Python worker holding the GIL for 20 ms.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_timing import figures, median, per_op, times

from rt_eda.core.config import load_config
from rt_eda.engine import Engine
from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource
from rt_eda.workers import DemoModelWorker, KerasRescaleWorker, Worker, WorkerSettings

GRID = [(1, 2), (2, 1), (2, 2)]
BENCH = Path(__file__).parent
MODELS = ["demo", "heavy-0.5M", "gil-python-20ms"]
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "NUMBA_NUM_THREADS")


def engine_run(overrides: dict[str, object]) -> dict[str, Any]:
    config = load_config(None).with_overrides({"viewer.enabled": False, **overrides})
    logging.getLogger().setLevel(logging.WARNING)
    engine = Engine(config)
    code = engine.run()
    assert code == 0, engine.errors
    return engine.summary


def heavy_model(path: Path) -> Path:
    """A two-level U-Net of about 0.5 M parameters, 2 channels in, dynamic size."""
    import keras
    from keras import layers

    def block(x: Any, f: int) -> Any:
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(f, 3, padding="same", activation="relu")(x)

    inp = keras.Input((None, None, 2))
    c1 = block(inp, 32)
    c2 = block(layers.MaxPooling2D()(c1), 64)
    c3 = block(layers.MaxPooling2D()(c2), 128)
    c4 = block(layers.Concatenate()([layers.UpSampling2D()(c3), c2]), 64)
    c5 = block(layers.Concatenate()([layers.UpSampling2D()(c4), c1]), 32)
    model = keras.Model(inp, layers.Conv2D(1, 1, activation="sigmoid")(c5))
    model.save(str(path))
    params = model.count_params()
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


@pytest.fixture(scope="module")
def heavy_path(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """The 0.5 M-parameter model, built here (TensorFlow is loaded here anyway)."""
    return heavy_model(tmp_path_factory.mktemp("heavy") / "heavy.keras")


@pytest.fixture(scope="module", params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def analysis_config(model: str, request: pytest.FixtureRequest) -> dict[str, object]:
    """The ``[analysis]`` overrides of ``model`` (the demo model is the default worker)."""
    if model == "heavy-0.5M":
        return {"analysis.worker": "KerasRescaleWorker",
                "analysis.model": str(request.getfixturevalue("heavy_path"))}
    if model == "gil-python-20ms":
        return {"analysis.worker": "BusyWorker", "analysis.worker_modules": ["slow_workers"],
                "analysis.options": {"work_ms": 20.0}}
    return {}


@pytest.fixture(scope="module")
def grid(model: str, quick: bool, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Engine runs of ``model`` at each workers x threads point: synthetic 2x512x512 at 50
    stacks/s (faster than any analysis here), manual interpreter. ``--quick``: the 2x1 point
    of the pure-Python worker only (the Keras models' analyses are still timed, and the
    demo model still runs in the comparison with the original pattern)."""
    if quick and model != "gil-python-20ms":
        return []
    base: dict[str, object] = {
        "interpreter.kind": "manual", "camera.interval": 0.02,
        "interpreter.manual_interval": 0.02, "run.duration": 4.0 if quick else 6.0,
        **analysis_config(model, request),
    }
    rows = []
    for workers, threads in (GRID[1:2] if quick else GRID):
        s = engine_run({**base, "analysis.workers": workers,
                        "analysis.threads_per_worker": threads})
        rows.append(grid_row(s, workers, threads))
    return rows


@pytest.fixture(scope="module")
def original_comparison(quick: bool) -> dict[str, Any]:
    """The original plugin's pattern (bench/original_pattern.py, a fresh process) and rt-eda
    (2 workers x 1 thread), demo model, 2x512x512 at 20 stacks/s."""
    duration = 4.0 if quick else 10.0
    interval = 0.05
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


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """This process computes with one thread (TensorFlow intra-op 1, numba 1), as a worker
    with ``threads_per_worker = 1``; the environment is restored at once, so the roles the
    runs spawn are not affected."""
    import numba

    from rt_eda.workers import configure_threads

    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    threads = numba.get_num_threads()
    configure_threads(1, tensorflow=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    yield
    numba.set_num_threads(threads)


def make_worker(model: str, request: pytest.FixtureRequest) -> Worker:
    if model == "demo":
        return DemoModelWorker(WorkerSettings())
    if model == "heavy-0.5M":
        return KerasRescaleWorker(WorkerSettings(model=str(request.getfixturevalue("heavy_path"))))
    sys.path.insert(0, str(BENCH))
    from slow_workers import BusyWorker

    return BusyWorker(WorkerSettings(options=(("work_ms", 20.0),)))


def test_analysis(benchmark: Any, quick: bool, report: Any, request: pytest.FixtureRequest,
                  one_thread: None, model: str, grid: list[dict[str, Any]]) -> None:
    """Timed: one ``worker.analyse`` (prepare_images -> run_model -> decision and network
    image) of a synthetic 2x512x512 uint16 stack (8 different timepoints in turn), in this
    process with one compute thread; one analysis per round (rounds x 1 iteration).

    Baselines, Keras models: the worker's inference call alone on the prepared input
    (``run_model``: the compiled ``model(x, training=False)``), same rounds, and for the demo
    model ``model.predict`` (the original plugin's call), at most 10 rounds. The BusyWorker is
    pure Python by construction: no baseline.
    ``extra_info``: the phases of the analysis, the grid runs (``grid``, ``best``) and, for
    the demo model, the comparison with the original plugin's pattern (``original_*``).
    """
    heavy = model == "heavy-0.5M"
    rounds = (2 if heavy else 5) if quick else (5 if heavy else 20)
    warmup = 0 if heavy else 1  # warm_up() has run it once already
    source = SyntheticSource(SyntheticSettings(height=512, width=512))
    spec = source.open()
    stacks = [np.empty(spec.shape, spec.np_dtype) for _ in range(8)]
    for i, stack in enumerate(stacks):
        source.render_stack(0.5 * i, stack)
    source.close()
    worker = make_worker(model, request)
    worker.setup(spec)
    worker.warm_up()
    phases: list[Any] = []
    step = iter(range(1 << 62))

    def analyse() -> None:
        phases.append(worker.analyse(stacks[next(step) % len(stacks)]))

    try:
        benchmark.pedantic(analyse, rounds=rounds, warmup_rounds=warmup)
        analyse_t = times(benchmark)
        result: dict[str, Any] = {
            **figures(analyse_t, "analyse", "ms"),
            "prepare_mean_ms": 1e3 * float(np.mean([a.t_prepare_s for a in phases])),
            "infer_mean_ms": 1e3 * float(np.mean([a.t_infer_s for a in phases])),
            "post_mean_ms": 1e3 * float(np.mean([a.t_post_s for a in phases])),
        }
        keras_model = getattr(worker, "model", None)
        if keras_model is not None:
            data = worker.prepare_images(stacks[0])
            infer_t = per_op(lambda: worker.run_model(data), rounds=rounds,
                             warmup_rounds=warmup)
            result.update({**figures(infer_t, "inference_call", "ms"),
                           "analyse_vs_inference_call": median(analyse_t) / median(infer_t)})
        if model == "demo":
            assert keras_model is not None
            predict_t = per_op(lambda: keras_model.predict(data["pixels"], verbose=0),
                               rounds=min(rounds, 10), warmup_rounds=1)
            result.update({**figures(predict_t, "predict", "ms"),
                           "predict_vs_analyse": median(predict_t) / median(analyse_t)})
    finally:
        worker.teardown()
    best = max(grid, key=lambda r: r["analysed_per_s"])["workers x threads"] if grid else ""
    result.update(grid=grid, best=best)
    report("one analysis, one thread (ms; ratios: time / analyse time)", {
        "model": model, "analyse p50": result["analyse_median_ms"],
        "prepare": result["prepare_mean_ms"], "infer": result["infer_mean_ms"],
        "post": result["post_mean_ms"],
        "inference call p50": result.get("inference_call_median_ms", ""),
        "model.predict p50": result.get("predict_median_ms", ""),
        "predict / analyse": result.get("predict_vs_analyse", ""),
    })
    for row in grid:
        report(f"scaling: {model}, 2x512x512 at 50 stacks/s (best {result['best']})",
               {"model": model, **row})
    if model == "demo":
        original = request.getfixturevalue("original_comparison")
        result.update(original)
        report("rt-eda (2x1) vs the original pattern (5-thread pool, model.predict), demo "
               "model, 2x512x512 at 20 stacks/s", original)
    benchmark.extra_info.update(result)
