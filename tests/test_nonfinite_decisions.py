"""Non-finite decisions (NaN, +inf, -inf) are counted, never acted on, and a streak of them
makes the run a fault: in the interpreters, and end to end through ``rt-eda run``."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.core.config import InterpreterConfig
from rt_eda.core.messages import Result
from rt_eda.interpreters import BinaryFrameRateInterpreter, InterpreterState, ManualInterpreter
from rt_eda.shm import list_blocks

NONFINITE = [math.nan, math.inf, -math.inf]
SMALL = ["--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
         "--no-viewer"]


def result(seq: int, decision: float, t: float = 0.0) -> Result:
    return Result(seq=seq, worker=1, decision=decision, t_exposure=t, t_published=t,
                  t_claimed=t, t_done=t)


def binary(**settings: object) -> BinaryFrameRateInterpreter:
    base = InterpreterConfig(slow_interval=1.0, fast_interval=0.1)
    return BinaryFrameRateInterpreter(base.with_changes(settings), clock=lambda: 0.0)


@pytest.mark.parametrize("value", NONFINITE)
def test_a_nonfinite_decision_is_never_acted_on(value: float) -> None:
    interp = binary()
    assert interp.on_result(result(0, value)) is None
    s = interp.statistics()
    assert s.state is InterpreterState.SLOW and s.interval_switches == 0
    assert (s.decisions, s.nonfinite_decisions, s.nonfinite_in_a_row) == (0, 1, 1)
    # In FAST, a non-finite value cannot switch back either (-inf < lower threshold).
    assert interp.on_result(result(1, 0.9)) is not None
    assert interp.on_result(result(2, value)) is None
    assert interp.statistics().state is InterpreterState.FAST


def test_nonfinite_results_do_not_count_for_ordering() -> None:
    interp = binary()
    interp.on_result(result(5, math.nan))
    # stack 3 is older than the NaN one but newer than anything usable: acted on
    assert interp.on_result(result(3, 0.9)) is not None
    s = interp.statistics()
    assert (s.decisions, s.results_dropped_out_of_order, s.nonfinite_decisions) == (1, 0, 1)


def test_a_streak_reaching_the_limit_is_broken_and_a_finite_value_resets_it() -> None:
    interp = binary(max_nonfinite_in_a_row=3)
    for seq, value in enumerate([math.nan, math.inf]):
        interp.on_result(result(seq, value))
    assert interp.broken() is None
    interp.on_result(result(2, 0.1))  # a finite decision: the streak starts again
    assert interp.statistics().nonfinite_in_a_row == 0
    for seq, value in enumerate(NONFINITE, start=3):
        interp.on_result(result(seq, value))
    why = interp.broken()
    assert why is not None
    assert "3 non-finite decisions in a row" in why
    assert "interpreter.max_nonfinite_in_a_row = 3" in why and "stack 5" in why
    s = interp.statistics()
    assert (s.nonfinite_decisions, s.nonfinite_in_a_row, s.decisions) == (5, 3, 1)


def test_limit_zero_never_breaks_and_manual_counts_too() -> None:
    interp = binary(max_nonfinite_in_a_row=0)
    for seq in range(100):
        interp.on_result(result(seq, math.nan))
    assert interp.broken() is None
    manual = ManualInterpreter(InterpreterConfig(max_nonfinite_in_a_row=2), 0.5)
    manual.on_result(result(0, math.inf))
    manual.on_result(result(1, -math.inf))
    assert manual.statistics().nonfinite_decisions == 2 and manual.broken() is not None


def test_the_limit_is_validated() -> None:
    from rt_eda.core.config import load_config
    from rt_eda.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"interpreter\.max_nonfinite_in_a_row"):
        load_config(None).with_overrides({"interpreter.max_nonfinite_in_a_row": -1})


# -- end to end ----------------------------------------------------------------------------
def nonfinite_module(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "nonfinite_workers.py").write_text(textwrap.dedent("""
        import math
        import numpy as np
        from rt_eda.workers import Worker

        class NanWorker(Worker):
            '''Always NaN.'''
            def extract_decision_parameter(self, output):
                return math.nan

        class PlusInfWorker(Worker):
            '''Always +inf.'''
            def extract_decision_parameter(self, output):
                return math.inf

        class MinusInfWorker(Worker):
            '''Always -inf.'''
            def extract_decision_parameter(self, output):
                return -math.inf

        class SometimesNanWorker(Worker):
            '''NaN for every third stack, else the maximum.'''
            def setup(self, spec):
                super().setup(spec)
                self.n = 0
            def extract_decision_parameter(self, output):
                self.n += 1
                return math.nan if self.n % 3 == 0 else 0.1
    """))
    return {"PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize("worker", ["NanWorker", "PlusInfWorker", "MinusInfWorker"])
def test_a_worker_returning_nonfinite_decisions_ends_the_run_as_a_fault(
        tmp_path: Path, worker: str) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = rt_eda("--worker", worker, "--set", "analysis.worker_modules=['nonfinite_workers']",
                  "--set", "interpreter.max_nonfinite_in_a_row=5", "--interval", "0.02",
                  "--duration", "20", "--summary", str(out), *SMALL, cwd=tmp_path,
                  env=nonfinite_module(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "the detector is broken: 5 non-finite decisions in a row" in proc.stderr
    # logged rate-limited: the first one in full, not one line per decision
    assert proc.stderr.count("returned a non-finite decision") == 1, proc.stderr
    s = summary(out)
    assert s["stop_reason"].startswith("fault") and s["acquisition_s"] < 15
    assert s["nonfinite_decisions"] >= 5 and s["decisions"] == 0
    assert s["interval_switches"] == 0
    assert_counts_add_up(s)
    assert_clean(before)


def test_occasional_nonfinite_decisions_are_counted_and_the_run_goes_on(
        tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = rt_eda("--worker", "SometimesNanWorker", "--set",
                  "analysis.worker_modules=['nonfinite_workers']", "--interpreter", "manual",
                  "--interval", "0.02", "--duration", "3", "--summary", str(out), *SMALL,
                  cwd=tmp_path, env=nonfinite_module(tmp_path))
    assert proc.returncode == 0, proc.stderr
    s = summary(out)
    assert s["nonfinite_decisions"] > 0 and s["decisions"] > s["nonfinite_decisions"]
    assert_counts_add_up(s)
    assert_clean(before)


@pytest.mark.tf
def test_a_model_with_nan_weights_is_a_fault(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    model = tmp_path / "nan.keras"
    code = f"""
import numpy as np, keras
inp = keras.Input((None, None, 2))
out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
m = keras.Model(inp, out)
m.set_weights([np.full(w.shape, np.nan, w.dtype) for w in m.get_weights()])
m.save({str(model)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    out = tmp_path / "s.json"
    proc = rt_eda("--model", str(model), "--set", "interpreter.max_nonfinite_in_a_row=3",
                  "--interval", "0.05", "--duration", "30", "--summary", str(out), *SMALL,
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "the detector is broken" in proc.stderr and "nan" in proc.stderr
    s = summary(out)
    assert s["nonfinite_decisions"] >= 3 and s["decisions"] == 0
    assert_counts_add_up(s)
    assert_clean(before)
