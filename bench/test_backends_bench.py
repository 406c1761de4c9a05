"""Inference backends and precisions, per model: time per call, interleaved in one process.

    pytest bench/test_backends_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

For every model rt-eda ships or tests (the demo model and demo_v1, the 0.5 M U-Net of
test_keras_bench.py, the legacy corpus of tests/legacy_models/ with a worker each fits), one
worker per backend configuration is set up on the real 2x512x512 input in this process, with
one compute thread: ``call`` (the reference), ``xla``, ``onnx``, ``openvino``, their int8
versions (calibrated on a recording of another synthetic seed, :func:`calibration`), and
``auto`` (float32, and int8: the fastest int8 backend). Their inference calls are then timed
in interleaved rounds (each round calls every configuration once on the same prepared input,
in a random order, each call after a 3 ms pause), so every configuration meets the same load
on a shared machine; the medians and their ratios to ``call`` are what to compare.

``extra_info`` per model and configuration: median ms per call, ratio to call, the largest
absolute difference from the call over 24 real stacks (t = 0 .. 11.5 s of seed 0, events in
view), and whether every decision (the maximum of the output) falls on the same side of the
binary interpreter's thresholds (0.3 and 0.48) as the call's. int8 is built with tolerance 1 so
that it is measured even where the default tolerance (0.05) would refuse it; the table says
which it would. The timed benchmark itself is ``auto``'s call (what a run uses).

``test_int8_decisions`` (demo model): held-out precision and recall (the evaluation of
``rt-eda train-demo-model``: seeds 101-103, 450 frames) per configuration.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_timing import figures

from rt_eda.workers import (
    DemoModelWorker,
    KerasRescaleWorker,
    KerasTilingWorker,
    KerasWorker,
    WorkerSettings,
)
from rt_eda.workers._backends import backend_unavailable
from rt_eda.workers._models import demo_model_path

# Keras 3 says so of a Keras 2 Sequential saved with input_shape (nested.h5): a warning
pytestmark = pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`:UserWarning")

BENCH = Path(__file__).parent
CORPUS = BENCH.parent / "tests" / "legacy_models"
SIZE = 512
THRESHOLDS = (0.3, 0.48)

#: model -> (worker class, model file or None for the bundled one)
LEGACY = {"dyn_unet.h5": KerasRescaleWorker, "dyn5d.h5": KerasRescaleWorker,
          "nested.h5": KerasRescaleWorker, "classifier.h5": KerasRescaleWorker,
          "lab5d_tiles.h5": KerasTilingWorker, "fixed64_reshape.h5": KerasTilingWorker}
MODELS = ["demo", "demo_v1", "heavy-0.5M", *LEGACY]
CONFIGS: dict[str, dict[str, object]] = {
    "call": {"inference": "call"},
    "xla": {"inference": "xla"},
    "onnx": {"inference": "onnx"},
    "openvino": {"inference": "openvino"},
    "onnx/int8": {"inference": "onnx", "precision": "int8", "tolerance": 1.0},
    "openvino/int8": {"inference": "openvino", "precision": "int8", "tolerance": 1.0},
    "auto": {"inference": "auto"},
    "auto/int8": {"inference": "auto", "precision": "int8", "tolerance": 1.0},
}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """This process computes with one thread, as a worker with threads_per_worker = 1."""
    from rt_eda.workers import configure_threads

    saved = dict(os.environ)
    configure_threads(1, tensorflow=True)
    os.environ.clear()
    os.environ.update(saved)
    yield


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Conversions and "auto" choices of this run only (nothing remembered from before)."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


def _stacks(seed: int, times: list[float]) -> tuple[list[np.ndarray], Any]:
    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    source = SyntheticSource(SyntheticSettings(height=SIZE, width=SIZE, seed=seed))
    spec = source.open()
    out = []
    for t in times:
        stack = np.empty(spec.shape, spec.np_dtype)
        source.render_stack(t, stack)
        out.append(stack)
    source.close()
    return out, spec


@pytest.fixture(scope="module")
def stacks() -> tuple[list[np.ndarray], Any]:
    """24 real stacks, seed 0, t = 0 .. 11.5 s (events in view)."""
    return _stacks(0, [0.5 * i for i in range(24)])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording of another seed (7; 32 stacks 2 s apart, events in it) as an OME-TIFF:
    int8's calibration, never the stacks it is measured on."""
    import tifffile

    data, _ = _stacks(7, [2.0 * i for i in range(32)])
    path = tmp_path_factory.mktemp("calibration") / "seed7.ome.tif"
    tifffile.imwrite(path, np.stack(data), ome=True, metadata={"axes": "TCZYX"})
    return path


@pytest.fixture(scope="module")
def heavy_path(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    sys.path.insert(0, str(BENCH))
    from test_keras_bench import heavy_model

    return heavy_model(tmp_path_factory.mktemp("heavy") / "heavy.keras")


def make_worker(model: str, options: dict[str, object], heavy: Path) -> KerasWorker:
    opts = tuple(sorted(options.items()))
    if model == "demo":
        return DemoModelWorker(WorkerSettings(options=opts))
    if model == "demo_v1":
        return DemoModelWorker(WorkerSettings(
            model=str(demo_model_path().with_name("demo_v1.keras")), options=opts))
    if model == "heavy-0.5M":
        return KerasRescaleWorker(WorkerSettings(model=str(heavy), options=opts))
    return LEGACY[model](WorkerSettings(model=str(CORPUS / model), options=opts))


#: Untimed pause before each timed call: runtimes whose idle threads spin for a while after a
#: call (TensorFlow's, OpenVINO's) would otherwise slow down whichever call comes next.
PAUSE_S = 0.003


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, np.ndarray]:
    """Seconds per call of each function: one untimed call each, then ``rounds`` rounds that
    call every function once, in a new random order each round (seeded), each call after an
    untimed pause of :data:`PAUSE_S`."""
    for fn in fns.values():
        fn()
    names = list(fns)
    rng = np.random.default_rng(17)
    out = {n: np.empty(rounds) for n in names}
    for r in range(rounds):
        for i in rng.permutation(len(names)):
            n = names[i]
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            fns[n]()
            out[n][r] = time.perf_counter() - t0
    return out


def _side(d: float) -> tuple[bool, ...]:
    return tuple(d > t for t in THRESHOLDS)


@pytest.mark.parametrize("model", MODELS)
def test_backend(benchmark: Any, model: str, quick: bool, report: Any, one_thread: None,
                 cache: Path, stacks: tuple[list[np.ndarray], Any], calibration: Path,
                 request: pytest.FixtureRequest) -> None:
    """Timed: ``auto``'s inference call on a prepared 2x512x512 input (one round = one call).
    ``extra_info``: every configuration's figures (see the module docstring)."""
    logging.getLogger().setLevel(logging.WARNING)
    heavy = request.getfixturevalue("heavy_path") if model == "heavy-0.5M" else Path()
    slow = model in ("heavy-0.5M", "demo_v1")
    rounds = (3 if slow else 7) if quick else (7 if slow else 25)
    data, spec = stacks
    workers: dict[str, KerasWorker] = {}
    refused: dict[str, str] = {}
    setup_s: dict[str, float] = {}
    for name, options in CONFIGS.items():
        backend = str(options["inference"])
        why = backend_unavailable(backend) if backend in ("onnx", "openvino") else None
        if why is not None:
            refused[name] = why
            continue
        if "precision" in options:
            options = {**options, "calibration": str(calibration)}
        w = make_worker(model, options, heavy)
        t0 = time.perf_counter()
        try:
            w.setup(spec)
        # a backend that cannot take this model is a result of this benchmark, not a failure
        except Exception as exc:  # noqa: BLE001
            refused[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        setup_s[name] = time.perf_counter() - t0
        workers[name] = w
    try:
        call = workers["call"]
        prepared = [call.prepare_images(s) for s in data]
        reference = [call.run_model(p) for p in prepared]
        result: dict[str, Any] = {"refused": refused}
        for name, w in workers.items():
            outs = [w.run_model(p) for p in prepared]
            diff = max(float(np.max(np.abs(np.asarray(o, np.float64) - r)))
                       for o, r in zip(outs, reference, strict=True))
            same = all(_side(float(np.max(o))) == _side(float(np.max(r)))
                       for o, r in zip(outs, reference, strict=True))
            plan = w.inference_plan
            result[name] = {"max_abs_diff": diff, "decisions_unchanged": same,
                            "setup_s": setup_s[name],
                            "chosen": plan.chosen.label if plan is not None else "call"}
        x = prepared[len(prepared) // 2]
        samples = interleaved({n: (lambda w=w: w.run_model(x)) for n, w in workers.items()},
                              rounds)
        base = float(np.median(samples["call"]))
        for name, s in samples.items():
            result[name].update(figures(s, "call", "ms"))
            result[name]["ratio_to_call"] = base / float(np.median(s))
        auto = workers["auto"]
        benchmark.pedantic(lambda: auto.run_model(x), rounds=rounds, warmup_rounds=1)
    finally:
        for w in workers.values():
            w.teardown()
    for name in CONFIGS:
        row = result.get(name)
        if row is None:
            report("inference backends: ms per call (median, interleaved), 2x512x512, one "
                   "thread", {"model": model, "backend": name, "refused": refused[name]})
            continue
        int8_default = ("" if "int8" not in name else
                        " (refused at tolerance 0.05)" if row["max_abs_diff"] > 0.05 else "")
        report("inference backends: ms per call (median, interleaved), 2x512x512, one thread", {
            "model": model, "backend": name + (f" -> {row['chosen']}" if name == "auto" else ""),
            "ms": row["call_median_ms"], "x call": row["ratio_to_call"],
            "max |diff|": f"{row['max_abs_diff']:.2g}{int8_default}",
            "decisions unchanged": "yes" if row["decisions_unchanged"] else "no",
        })
    benchmark.extra_info.update(result)


@pytest.fixture(scope="module")
def held_out() -> tuple[list[tuple[int, float]], Any]:
    """The held-out frames of ``rt-eda train-demo-model``'s evaluation: (seed, t) of seeds
    101-103, 150 timepoints 0.37 s apart each (event every 8 s)."""
    from rt_eda.training.demo_model import TrainConfig

    cfg = TrainConfig()
    frames = [(seed, i * cfg.eval_step_s) for seed in cfg.eval_seeds
              for i in range(cfg.eval_frames_per_seed)]
    return frames, cfg


@pytest.mark.parametrize("model", ["demo", "demo_v1"])
def test_precision_decisions(benchmark: Any, model: str, quick: bool, report: Any,
                             one_thread: None, cache: Path, calibration: Path,
                             held_out: tuple[list[tuple[int, float]], Any]) -> None:
    """Held-out precision and recall (threshold 0.48) of the demo models per backend and
    precision: every frame analysed by every configuration (one worker each, real
    preprocessing), scored against the synthetic ground truth as ``rt-eda train-demo-model``
    scores it. Timed: one analysis by the call (the benchmark is the scoring's reference)."""
    from rt_eda.training import demo_model as dm

    logging.getLogger().setLevel(logging.WARNING)
    frames, cfg = held_out
    if quick:
        frames = frames[::10]
    configs = {k: v for k, v in CONFIGS.items() if k in (
        "call", "onnx", "openvino", "onnx/int8", "openvino/int8")}
    workers: dict[str, KerasWorker] = {}
    spec = None
    by_seed: dict[int, Any] = {}
    for seed in sorted({s for s, _ in frames}):
        by_seed[seed] = dm._source(seed, cfg.image_size, 8.0)
        spec = by_seed[seed].spec
    for name, options in configs.items():
        backend = str(options["inference"])
        if backend in ("onnx", "openvino") and backend_unavailable(backend) is not None:
            continue
        if "precision" in options:
            options = {**options, "calibration": str(calibration)}
        w = make_worker(model, options, Path())
        w.setup(spec)
        workers[name] = w
    decisions: dict[str, list[float]] = {n: [] for n in workers}
    truth: list[bool] = []
    stack = np.empty(spec.shape, spec.np_dtype)
    try:
        for seed, t in frames:
            source = by_seed[seed]
            source.render_stack(t, stack)
            t_marker = dm._marker_time(source, t)
            truth.append(source.has_event(t_marker, dm.EVENT_MIN_INTENSITY))
            for name, w in workers.items():
                decisions[name].append(w.analyse(stack).decision)
        call = workers["call"]
        benchmark.pedantic(lambda: call.analyse(stack), rounds=3 if quick else 10,
                           warmup_rounds=1)
    finally:
        for w in workers.values():
            w.teardown()
    t_arr = np.asarray(truth)
    result: dict[str, Any] = {"frames": len(truth), "event_frames": int(t_arr.sum())}
    ref = np.asarray(decisions["call"])
    for name, d in decisions.items():
        arr = np.asarray(d)
        scores = dm.detection_scores(arr, t_arr, dm.UPPER_THRESHOLD)
        flips = int(np.sum((arr > dm.UPPER_THRESHOLD) != (ref > dm.UPPER_THRESHOLD)))
        result[name] = {**scores, "decision_flips_vs_call": flips,
                        "max_decision_diff": float(np.max(np.abs(arr - ref)))}
        report("held-out detection (seeds 101-103, threshold 0.48) per backend and precision", {
            "model": model, "backend": name, "frames": len(arr),
            "precision": scores["precision"], "recall": scores["recall"],
            "tp": scores["tp"], "fp": scores["fp"], "fn": scores["fn"],
            "flips vs call": flips, "max |decision diff|": result[name]["max_decision_diff"],
        })
    benchmark.extra_info.update(result)
