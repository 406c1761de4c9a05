"""Inference backends: each checked against the call, "auto" chosen by measurement, conversions
cached beside the model, reduced precision only where it runs, and ``rt-eda bench`` searching
the backend too.

The backends run for real (TensorFlow, XLA, ONNX Runtime via tf2onnx, OpenVINO: the test
extras install them); a backend whose package is missing is skipped with the reason
:func:`rt_eda.workers._backends.backend_unavailable` gives.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import assert_clean, role_processes, rt_eda

from rt_eda.core.errors import ConfigError
from rt_eda.shm import StackSpec, list_blocks
from rt_eda.workers import DemoModelWorker, KerasRescaleWorker, WorkerSettings
from rt_eda.workers._backends import (
    BACKENDS,
    TOLERANCE,
    Backend,
    BackendError,
    backend_cache_dir,
    backend_unavailable,
    check_backend,
    compare_outputs,
    precision_unsupported,
)
from rt_eda.workers._models import demo_model_path

pytestmark = pytest.mark.tf

SIZE = 128
SMALL = ["--no-viewer", "--set", f"camera.synthetic.height={SIZE}", "--set",
         f"camera.synthetic.width={SIZE}"]


def needs(name: str) -> None:
    why = backend_unavailable(name)
    if why is not None:
        pytest.skip(f"backend {name}: {why}")


@pytest.fixture(scope="module")
def stack_and_spec() -> tuple[np.ndarray, StackSpec]:
    """A real synthetic stack with an event in view: of the first 60 s of seed 0 (every
    0.5 s), the one the demo model rates highest."""
    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    source = SyntheticSource(SyntheticSettings(height=SIZE, width=SIZE))
    spec = source.open()
    stacks = [np.empty(spec.shape, spec.np_dtype) for _ in range(120)]
    for i, stack in enumerate(stacks):
        source.render_stack(0.5 * i, stack)
    source.close()
    w = worker({"inference": "call"})
    w.setup(spec)
    best = max(stacks, key=lambda st: w.analyse(st).decision)
    w.teardown()
    return best, spec


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Converted files and remembered "auto" choices of this test only."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def worker(options: dict[str, object], model: Path | None = None,
           cls: type[KerasRescaleWorker] = DemoModelWorker) -> KerasRescaleWorker:
    settings = WorkerSettings(model=str(model) if model else "",
                              options=tuple(sorted(options.items())))
    return cls(settings)


@pytest.fixture(scope="module")
def reference(stack_and_spec: tuple[np.ndarray, StackSpec]) -> tuple[float, np.ndarray]:
    stack, spec = stack_and_spec
    w = worker({"inference": "call"})
    w.setup(spec)
    a = w.analyse(stack)
    w.teardown()
    assert a.network_image is not None
    return a.decision, a.network_image


# -- each backend -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["predict_on_batch", "xla", "onnx", "openvino"])
def test_every_backend_matches_the_call_on_a_real_stack(
        name: str, stack_and_spec: tuple[np.ndarray, StackSpec],
        reference: tuple[float, np.ndarray]) -> None:
    needs(name)
    stack, spec = stack_and_spec
    w = worker({"inference": name})
    w.setup(spec)
    try:
        w.warm_up()
        a = w.analyse(stack)
    finally:
        w.teardown()
    if name != "predict_on_batch":
        assert w.inference_plan is not None
        assert w.inference_plan.chosen.name == name
        diff = w.inference_plan.max_abs_diff[name]
        assert 0 <= diff <= TOLERANCE
    assert a.network_image is not None
    assert abs(a.decision - reference[0]) <= TOLERANCE
    assert float(np.max(np.abs(a.network_image - reference[1]))) <= TOLERANCE
    assert reference[0] > 0.48  # the stack holds an event: the comparison is not of zeros


def test_auto_times_every_backend_and_keeps_the_call_unless_another_is_faster(
        stack_and_spec: tuple[np.ndarray, StackSpec], own_cache: Path) -> None:
    _, spec = stack_and_spec
    w = worker({"inference": "auto"})
    w.setup(spec)
    w.teardown()
    plan = w.inference_plan
    assert plan is not None
    available = [b for b in BACKENDS if backend_unavailable(b) is None]
    assert sorted(plan.median_ms) == sorted(available)
    fastest = min(plan.median_ms, key=lambda k: plan.median_ms[k])
    chosen = plan.chosen.name
    if chosen == "call":
        assert plan.median_ms[fastest] > 0.95 * plan.median_ms["call"]
    else:
        assert chosen == fastest and plan.median_ms[chosen] <= 0.95 * plan.median_ms["call"]
    for name in available[1:]:
        assert plan.max_abs_diff[name] <= TOLERANCE
    # remembered for this model, shape, threads and CPU: the next set-up does not time again
    again = worker({"inference": "auto"})
    again.setup(spec)
    again.teardown()
    assert again.inference_plan is not None
    assert again.inference_plan.chosen.name == chosen and again.inference_plan.median_ms == {}
    assert list((own_cache / "rt-eda" / "backends").glob("demo-*.auto.json"))


def test_auto_skips_a_backend_that_does_not_match(
        stack_and_spec: tuple[np.ndarray, StackSpec]) -> None:
    """With a tolerance no converted backend meets, "auto" refuses each with its number and
    runs the call."""
    needs("onnx")
    _, spec = stack_and_spec
    w = worker({"inference": "auto", "tolerance": 1e-12})
    w.setup(spec)
    w.teardown()
    plan = w.inference_plan
    assert plan is not None
    assert "onnx" in plan.refused and "differs from the reference call by up to" in plan.refused[
        "onnx"] and "allowed: 1e-12" in plan.refused["onnx"]
    assert plan.chosen.name == "call" or plan.max_abs_diff[plan.chosen.name] <= 1e-12


def test_a_conversion_is_cached_beside_the_model_keyed_by_its_bytes(
        tmp_path: Path, stack_and_spec: tuple[np.ndarray, StackSpec], own_cache: Path) -> None:
    needs("onnx")
    _, spec = stack_and_spec
    model = tmp_path / "models" / "mine.keras"
    model.parent.mkdir()
    shutil.copyfile(demo_model_path(), model)
    for _ in range(2):
        w = worker({"inference": "onnx"}, model, KerasRescaleWorker)
        w.setup(spec)
        w.teardown()
    beside = list((model.parent / ".rt-eda-cache").glob("mine-*.onnx"))
    assert len(beside) == 1  # converted once, loaded the second time
    assert str(beside[0]) in w.inference_plan.chosen.detail  # type: ignore[union-attr]
    # other bytes under the same name: another conversion
    shutil.copyfile(demo_model_path().with_name("demo_v1.keras"), model)
    w = worker({"inference": "onnx"}, model, KerasRescaleWorker)
    w.setup(spec)
    w.teardown()
    assert len(list((model.parent / ".rt-eda-cache").glob("mine-*.onnx"))) == 2
    # the bundled model's folder belongs to the installed package: the user's cache instead
    assert backend_cache_dir(demo_model_path()) == own_cache / "rt-eda" / "backends"


# -- the checks ---------------------------------------------------------------------------------
def test_nan_or_another_shape_is_a_mismatch() -> None:
    ref = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    assert compare_outputs(ref, ref + 1e-4) == pytest.approx(1e-4, rel=1e-2)
    assert math.isnan(compare_outputs(ref, np.where(ref > 0.35, np.nan, ref)))
    assert compare_outputs(ref, ref.reshape(4)) == math.inf
    both_nan = np.array([np.nan, 1.0])
    assert compare_outputs(both_nan, both_nan) == 0.0  # NaN where the call has NaN too
    x = np.zeros((1, 2, 2), np.float32)

    def nan_run(_: np.ndarray) -> np.ndarray:
        return np.full((2, 2), np.nan, np.float32)

    with pytest.raises(BackendError, match="gives NaN where the reference call gives none"):
        check_backend(Backend("litert", "float32", nan_run), [x], [ref], TOLERANCE)

    def off_run(_: np.ndarray) -> np.ndarray:
        return ref + 0.01

    with pytest.raises(BackendError, match=r"differs from the reference call by up to 0\.01 "
                                           r"\(allowed: 0\.001"):
        check_backend(Backend("other", "float32", off_run), [x], [ref], TOLERANCE)


def test_options_that_cannot_work_are_refused_when_the_worker_is_made() -> None:
    for options, words in [
        ({"inference": "tensorrt"}, "is not one of ['call', 'predict_on_batch', 'xla'"),
        ({"precision": "float8"}, "analysis.options.precision = 'float8' is not one of"),
        ({"precision": "int8"}, "needs analysis.options.inference 'onnx', 'openvino' or"),
        ({"precision": "int8", "inference": "xla"}, "not 'xla'"),
        ({"tolerance": -1}, "analysis.options.tolerance must be a number >= 0"),
        ({"calibration": "/no/such/run"}, "analysis.options.calibration = '/no/such/run' does "
                                          "not exist"),
    ]:
        with pytest.raises(ConfigError, match=None) as info:
            worker(options)
        assert words in str(info.value), (options, str(info.value))


def test_bfloat16_runs_only_where_the_cpu_computes_it() -> None:
    needs("openvino")
    why = precision_unsupported("openvino", "bfloat16")
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in caps:
        assert why is None
    else:
        assert why is not None and "does not compute bfloat16 natively" in why
        assert ", ".join(caps) in why
    assert precision_unsupported("onnx", "bfloat16") == ("precision bfloat16 runs on openvino, "
                                                         "not onnx")


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not line.startswith("INFO")]


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line holding every word, no traceback, nothing started."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = problem_lines(proc.stderr)
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "source open" not in proc.stderr
    assert role_processes() == []
    return lines[0]


@pytest.mark.parametrize(("options", "words"), [
    (["analysis.options.inference=onnx", "analysis.options.tolerance=1e-12"],
     ["inference backend onnx differs from the reference call by up to", "allowed: 1e-12"]),
    (["analysis.options.inference=onnx", "analysis.options.precision=int8"],
     ["precision int8 needs calibration stacks", "analysis.options.calibration"]),
])
def test_an_explicit_backend_that_cannot_run_stops_the_run_before_acquisition(
        tmp_path: Path, options: list[str], words: list[str]) -> None:
    needs("onnx")
    before = {n for n, _ in list_blocks()}
    sets = [a for o in options for a in ("--set", o)]
    proc = rt_eda("--duration", "3", *SMALL, *sets, "--summary", str(tmp_path / "s.json"),
                  cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=300)
    refused(proc, *words)
    assert not (tmp_path / "s.json").exists()
    assert_clean(before)


def test_int8_calibrated_on_a_recording_of_the_acquisition(
        tmp_path: Path, stack_and_spec: tuple[np.ndarray, StackSpec],
        recording: Path, reference: tuple[float, np.ndarray]) -> None:
    """A recording (60 s, an event in it) calibrates int8; it is checked on recorded stacks it
    was not calibrated on and decides like the call on the event's stack."""
    needs("onnx")
    stack, spec = stack_and_spec
    for name in ("onnx", "openvino"):
        if backend_unavailable(name) is not None:
            continue
        w = worker({"inference": name, "precision": "int8", "calibration": str(recording)})
        w.setup(spec)
        try:
            a = w.analyse(stack)
        finally:
            w.teardown()
        plan = w.inference_plan
        assert plan is not None and plan.chosen.label == f"{name}/int8"
        assert 0 < plan.max_abs_diff[f"{name}/int8"] <= 0.05  # int8 is not float32
        assert abs(a.decision - reference[0]) <= 0.05, (name, a.decision, reference[0])
    # a recording of another shape is refused with both shapes
    w = worker({"inference": "onnx", "precision": "int8", "calibration": str(recording)})
    with pytest.raises(ConfigError, match=r"holds stacks of \(2, 1, 128, 128\), the "
                                          r"acquisition's are \(2, 1, 64, 64\)"):
        w.setup(StackSpec(2, 1, 64, 64, spec.dtype))


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 60 s of the synthetic source (every 0.5 s) as an OME-TIFF (t, c, z, y, x)."""
    import tifffile

    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    source = SyntheticSource(SyntheticSettings(height=SIZE, width=SIZE))
    spec = source.open()
    data = np.empty((120, *spec.shape), spec.np_dtype)
    for i in range(len(data)):
        source.render_stack(0.5 * i, data[i])
    source.close()
    path = tmp_path_factory.mktemp("recording") / "sixty_s.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCZYX"})
    return path


# -- rt-eda bench -------------------------------------------------------------------------------
def test_bench_grid_items_may_pin_a_backend() -> None:
    from rt_eda.tuning import parse_grid

    assert parse_grid("1x2, onnx:2x1") == [(1, 2), (2, 1, "onnx")]
    for bad, words in [("2x", "is not [BACKEND:]WORKERSxTHREADS"),
                       ("tensorrt:2x1", "backend 'tensorrt' is not one of")]:
        with pytest.raises(ConfigError, match=None) as info:
            parse_grid(bad)
        assert words in str(info.value)


def test_bench_searches_backend_x_workers_x_threads(tmp_path: Path) -> None:
    needs("onnx")
    before = {n for n, _ in list_blocks()}
    proc = subprocess.run(
        ["rt-eda", "bench", "--grid", "call:1x1,onnx:1x1", "--duration", "3", "--interval",
         "0.02", "--set", f"camera.synthetic.height={SIZE}", "--set",
         f"camera.synthetic.width={SIZE}"], cwd=tmp_path, capture_output=True, text=True,
        timeout=400, env={**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.strip().startswith(("call ", "onnx "))]
    assert sorted(r[0] for r in rows) == ["call", "onnx"], proc.stdout
    assert all(float(r[2]) > 0 for r in rows)  # analysed/s
    best = [line for line in proc.stdout.splitlines() if line.startswith("recommended:")]
    assert best and best[0].startswith("recommended: --workers 1 --threads-per-worker 1")
    assert ("inference=onnx" in best[0]) == ("<- recommended" in next(
        line for line in proc.stdout.splitlines() if line.strip().startswith("onnx ")))
    assert_clean(before)


def test_bench_backends_follow_the_worker_and_device() -> None:
    from rt_eda.core.config import load_config
    from rt_eda.tuning import bench_backends

    config = load_config(None)
    installed = [b for b in BACKENDS if backend_unavailable(b) is None]
    assert bench_backends(config) == installed
    assert bench_backends(config.with_overrides({"analysis.worker": "ImageWorker"})) == ["-"]
    assert bench_backends(config.with_overrides({"analysis.device": "gpu"})) == [
        b for b in installed if b in ("call", "xla")]
