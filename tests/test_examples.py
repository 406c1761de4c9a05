"""The custom workers of ``examples/`` run as a user runs them: found through
``analysis.worker_modules`` with ``examples/`` on ``PYTHONPATH``, by the ``rt-eda`` command,
and every count of the run adds up (``docs/workers.md`` points newcomers to them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.shm import list_blocks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = ["--set", "camera.synthetic.height=128", "--set", "camera.synthetic.width=128",
         "--no-viewer"]


def _env() -> dict[str, str]:
    """``examples/`` first on ``PYTHONPATH``, as the examples' docstrings tell a user."""
    path = os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run_example(tmp_path: Path, module: str, worker: str, *extra: str) -> dict[str, Any]:
    """``rt-eda run`` with the example's worker, saving the run; its summary, checked."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "summary.json"
    proc = rt_eda("--set", f"analysis.worker_modules=['{module}']", "--worker", worker,
                  "--duration", "6", "--summary", str(out), "--save", str(tmp_path / "run"),
                  *SMALL, *extra, cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(out)
    assert s["decisions"] > 0, s
    assert_counts_add_up(s)
    # Every analysed stack's network image has the shape the worker declares: stored, none
    # refused.
    assert s["network_images"] > 0 and s["network_images_refused"] == 0, s
    assert_clean(before)
    return s


def test_the_model_free_example_runs_through_worker_modules(tmp_path: Path) -> None:
    s = _run_example(tmp_path, "spot_worker", "SpotWorker")
    assert s["stacks_failed"] == 0 and s["worker_restarts"] == 0


def test_a_bad_option_of_the_model_free_example_exits_2(tmp_path: Path) -> None:
    proc = rt_eda("--set", "analysis.worker_modules=['spot_worker']", "--worker", "SpotWorker",
                  "--set", "analysis.options.block=0", "--duration", "5", *SMALL,
                  cwd=tmp_path, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "rt-eda: analysis.options.block must be a number > 0, got 0"]


@pytest.mark.tf
def test_the_keras_example_builds_its_model_and_runs_through_worker_modules(
        tmp_path: Path) -> None:
    code = f"""
import sys
import numpy as np
sys.path.insert(0, {str(EXAMPLES)!r})
from keras_spot_worker import build_model
from rt_eda.workers import load_model
a, b = (load_model(build_model({str(tmp_path)!r} + f"/{{n}}.keras")) for n in "ab")
assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
assert a.count_params() == 15 * 15 + 1
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=240, cwd=tmp_path,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    model = str(tmp_path / "a.keras")
    # As the example says: the model takes one channel, so the run is refused before anything
    # starts until analysis.channels_to_use picks it.
    refused = rt_eda("--set", "analysis.worker_modules=['keras_spot_worker']", "--worker",
                     "KerasSpotWorker", "--model", model, "--duration", "5", *SMALL,
                     cwd=tmp_path, env=_env(), timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "analysis.channels_to_use" in refused.stderr.strip().splitlines()[-1]
    s = _run_example(tmp_path, "keras_spot_worker", "KerasSpotWorker", "--model", model,
                     "--set", "analysis.channels_to_use=[1]")
    assert s["stacks_failed"] == 0 and s["worker_restarts"] == 0


def test_rt_eda_workers_lists_the_examples(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "workers", "--module", "spot_worker",
         "--module", "keras_spot_worker"], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, **_env()}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert rows["SpotWorker"].split(None, 1)[1].startswith("Brightest marker spot")
    assert rows["KerasSpotWorker"].split(None, 1)[1].startswith("(model) Each frame in units")
    assert "DemoModelWorker" in rows  # the built-ins beside them
