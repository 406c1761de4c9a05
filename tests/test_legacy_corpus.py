"""The legacy model corpus (tests/legacy_models/, saved by Keras 2 with tools/make_legacy_corpus.py)
against every built-in worker that takes a model: each model runs with every worker it fits,
and a misfit is refused naming both shapes - by the static reading only where the file states
the shape for certain (a fixed size, two outputs), otherwise by a real forward pass.

In this process (one TensorFlow) every pair is set up, warmed up and analyses a real stack;
through ``rt-eda run`` (the preflight probe, then a short real run) a few pairs by default
and every pair with ``--run-slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import assert_clean, assert_counts_add_up, role_processes, rt_eda, summary

from rt_eda.core.errors import ModelError
from rt_eda.shm import StackSpec, list_blocks
from rt_eda.workers import KerasRescaleWorker, KerasTilingWorker, KerasWorker, WorkerSettings

pytestmark = [
    pytest.mark.tf,
    # Keras 3 says so of a Keras 2 Sequential saved with input_shape (nested.h5); a warning
    pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`:UserWarning"),
]

CORPUS = Path(__file__).parent / "legacy_models"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
SIZE = 256
WORKERS = {"KerasWorker": KerasWorker, "KerasRescaleWorker": KerasRescaleWorker,
           "KerasTilingWorker": KerasTilingWorker}
RESAMPLED = round(SIZE * 56 / 81)  # the tiling worker's image (56 -> 81 nm pixels)

#: (model, worker) -> the network image it makes, or the words of its refusal.
EXPECTED: dict[tuple[str, str], tuple[int, int] | str | None] = {}
for _w in WORKERS:
    EXPECTED["dyn_unet.h5", _w] = (SIZE, SIZE)
    EXPECTED["dyn5d.h5", _w] = (SIZE, SIZE)
    EXPECTED["nested.h5", _w] = (SIZE, SIZE)
    EXPECTED["two_outputs.h5", _w] = "has 2 outputs; rt-eda workers read exactly one"
    EXPECTED["classifier.h5", _w] = None  # a decision, no image
    for _m, _n in (("lab5d_tiles.h5", 128), ("fixed64_reshape.h5", 64)):
        EXPECTED[_m, _w] = (f"takes {_n}x{_n} px images (input (None, {_n}, {_n}, 2"
                            f"{', 1' if _m.startswith('lab5d') else ''})), the worker feeds "
                            f"{SIZE}x{SIZE} px")
for _m in ("dyn_unet.h5", "dyn5d.h5", "nested.h5", "lab5d_tiles.h5", "fixed64_reshape.h5"):
    EXPECTED[_m, "KerasTilingWorker"] = (RESAMPLED, RESAMPLED)
EXPECTED["classifier.h5", "KerasTilingWorker"] = (
    "maps a (128, 128) tile to an output of spatial size None (a forward pass of "
    "(4, 128, 128, 2) gave (4, 1))")
PAIRS = sorted(EXPECTED)


@pytest.fixture(scope="module")
def stack_and_spec() -> tuple[np.ndarray, StackSpec]:
    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    source = SyntheticSource(SyntheticSettings(height=SIZE, width=SIZE))
    spec = source.open()
    stack = np.empty(spec.shape, spec.np_dtype)
    source.render_stack(3.0, stack)
    source.close()
    return stack, spec


def reference_input(shape: list[int | None]) -> np.ndarray:
    """tools/make_legacy_corpus.py's reference_input."""
    dims = [1] + [32 if d is None else int(d) for d in shape[1:]]
    return np.random.default_rng(MANIFEST["seed"]).random(dims, dtype=np.float32)


def test_the_corpus_was_saved_by_keras_2() -> None:
    import h5py

    assert "tf_keras" in MANIFEST["keras"]
    for name in MANIFEST["models"]:
        with h5py.File(CORPUS / name, "r") as f:
            version = f.attrs["keras_version"]
            version = version.decode() if isinstance(version, bytes) else str(version)
        assert version.startswith("2."), (name, version)
        assert (CORPUS / name).stat().st_size < 32_000


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_keras_3_loads_each_model_with_keras_2s_weights(name: str) -> None:
    """Loaded by rt-eda's loader (Keras 3), each model gives Keras 2's own output."""
    from rt_eda.workers._models import load_model

    model = load_model(CORPUS / name)
    expected = MANIFEST["models"][name]
    x = reference_input(expected["inputs"][0])
    out = model([x] if isinstance(model.input, list) else x, training=False)
    first = np.asarray(out[0] if isinstance(out, list | tuple) else out, np.float64)
    ref = expected["reference_output"]
    assert list(first.shape) == ref["shape"]
    assert first.sum() == pytest.approx(ref["sum"], rel=1e-5, abs=1e-5)
    assert first.max() == pytest.approx(ref["max"], abs=1e-6)
    np.testing.assert_allclose(first.reshape(-1)[:8], ref["first"], atol=1e-6)


@pytest.mark.parametrize(("model", "worker"), PAIRS)
def test_every_model_runs_with_every_worker_it_fits(
        model: str, worker: str, stack_and_spec: tuple[np.ndarray, StackSpec]) -> None:
    stack, spec = stack_and_spec
    expected = EXPECTED[model, worker]
    w = WORKERS[worker](WorkerSettings(model=str(CORPUS / model)))
    if isinstance(expected, str):
        with pytest.raises(ModelError) as info:
            w.check(spec)  # the engine's static reading
            w.setup(spec)  # the worker process (what the probe runs)
        assert expected in str(info.value), str(info.value)
        return
    w.check(spec)
    w.setup(spec)
    try:
        w.warm_up()
        a = w.analyse(stack)
    finally:
        w.teardown()
    assert np.isfinite(a.decision)
    assert w.network_image_shape() == expected
    if expected is None:
        assert a.network_image is None
    else:
        assert a.network_image is not None and a.network_image.shape == expected


def _run(model: str, worker: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return rt_eda("--model", str(CORPUS / model), "--worker", worker, "--duration", "3",
                  "--interpreter", "manual", "--interval", "0.2", "--no-viewer",
                  "--set", f"camera.synthetic.height={SIZE}", "--set",
                  f"camera.synthetic.width={SIZE}", "--summary", str(tmp_path / "s.json"),
                  cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=300)


#: Through the probe and a real run by default: the lab's layout, a nested model, a dynamic
#: 5-D model, and a misfit only a forward pass shows.
DEFAULT_RUNS = [("lab5d_tiles.h5", "KerasTilingWorker"), ("nested.h5", "KerasRescaleWorker"),
                ("dyn5d.h5", "KerasWorker"), ("classifier.h5", "KerasTilingWorker")]


@pytest.mark.parametrize(("model", "worker"), [
    pytest.param(m, w, marks=[] if (m, w) in DEFAULT_RUNS else [pytest.mark.slow])
    for m, w in PAIRS if not (isinstance(EXPECTED[m, w], str) and m == "two_outputs.h5")])
def test_through_the_probe_and_a_short_run(model: str, worker: str, tmp_path: Path,
                                           run_slow: bool) -> None:
    if (model, worker) not in DEFAULT_RUNS and not run_slow:
        pytest.skip("every pair runs with --run-slow")
    before = {n for n, _ in list_blocks()}
    proc = _run(model, worker, tmp_path)
    expected = EXPECTED[model, worker]
    if isinstance(expected, str):
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("INFO")]
        assert len(lines) == 1 and expected in lines[0], lines
        assert "Traceback" not in proc.stderr and "source open" not in proc.stderr
        assert role_processes() == []
    else:
        assert proc.returncode == 0, proc.stderr
        probe = [ln for ln in proc.stderr.splitlines() if "probe: " in ln]
        assert len(probe) == 1 and f"network image {expected}" in probe[0], proc.stderr
        s = summary(tmp_path / "s.json")
        assert s["stacks_analysed"] > 0 and s["stacks_failed"] == 0
        assert s["network_images_refused"] == 0
        assert_counts_add_up(s)
    assert_clean(before)


def test_the_generator_reproduces_the_committed_corpus(tmp_path: Path) -> None:
    """tools/make_legacy_corpus.py (Keras 2: tf-keras) writes the same architectures and
    weights again (the reference outputs agree); the HDF5 bytes may differ."""
    if find_spec("tf_keras") is None:
        pytest.skip("tf-keras is not installed (pip install --no-deps tf-keras): the corpus "
                    "is committed, only its regeneration needs Keras 2")
    script = Path(__file__).resolve().parents[1] / "tools" / "make_legacy_corpus.py"
    if not script.is_file():
        pytest.skip("tools/ is not installed with the package (a wheel's test run)")
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads((tmp_path / "manifest.json").read_text())["models"]
    assert sorted(fresh) == sorted(MANIFEST["models"])
    for name, entry in fresh.items():
        old = MANIFEST["models"][name]
        assert entry["inputs"] == old["inputs"] and entry["outputs"] == old["outputs"]
        assert entry["parameters"] == old["parameters"]
        assert entry["reference_output"]["sum"] == pytest.approx(
            old["reference_output"]["sum"], rel=1e-6)
