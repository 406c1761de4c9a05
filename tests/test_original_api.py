"""A worker written for the original plugin's API is refused before anything starts, naming
the method rt-eda never calls and the hook to use instead; never silently left uncalled."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_helpers import assert_clean, rt_eda

from rt_eda.core.errors import ConfigError
from rt_eda.shm import list_blocks
from rt_eda.workers import discover_workers
from rt_eda.workers._base import original_api_problem
from rt_eda.workers._discovery import BUILTIN_WORKER_MODULES

# (class body, the method the message names, the hook it points to)
REFUSED = {
    "run": ('''
        class Ported(KerasWorker):
            def run(self):
                network_input = self.prepare_images(self.local_images)
                network_output = self.model.predict_on_batch(network_input["pixels"])
                self.signals.new_decision_parameter.emit(
                    self.extract_decision_parameter(network_output), 0.0, self.timepoint)
    ''', "defines run()", "run_model(data)"),
    "run-model-free": ('''
        class Ported(Worker):
            def run(self):
                return self.extract_decision_parameter(self.local_images)
    ''', "defines run()", "run_model(data)"),
    "signals": ('''
        class Ported(Worker):
            class _Signals:
                pass
    ''', "defines _Signals,", "extract_decision_parameter"),
    "predict": ('''
        class Ported(KerasWorker):
            def predict(self, x):
                return self.model.predict_on_batch(x)
    ''', "defines predict()", "rename it run_model"),
    "predict_on_batch": ('''
        class Ported(Worker):
            def predict_on_batch(self, x):
                return x
    ''', "defines predict_on_batch()", "rename it run_model"),
    "run-in-private-base": ('''
        class _OldBase(Worker):
            def run(self):
                pass

        class Ported(_OldBase):
            pass
    ''', "defines run()", "run_model(data)"),
    "init-original": ('''
        class Ported(KerasWorker):
            def __init__(self, local_images, timepoint, start_time, model):
                super().__init__(WorkerSettings())
    ''', "__init__(self, local_images, timepoint, start_time, model)",
        "__init__(self, settings)"),
    "init-model-keyword": ('''
        class Ported(KerasWorker):
            def __init__(self, *args, model):
                super().__init__(*args)
    ''', "__init__(self, *args, model)", "WorkerSettings"),
}

ACCEPTED = {
    "predict-helper": '''
        class Fine(Worker):
            def predict(self, x):
                return x * 2

            def run_model(self, data):
                return self.predict(data["pixels"])
    ''',
    "init-args-kwargs": '''
        class Fine(KerasWorker):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
    ''',
    "init-settings": '''
        class Fine(Worker):
            def __init__(self, settings, scale=2.0):
                super().__init__(settings)
                self.scale = scale
    ''',
}

HEADER = "from rt_eda.workers import KerasWorker, Worker, WorkerSettings\n"


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("rt_eda_ported_"):
            del sys.modules[name]


def _module(directory: Path, name: str, body: str) -> str:
    (directory / f"{name}.py").write_text(HEADER + textwrap.dedent(body))
    return name


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_discovery_refuses_the_original_api(module_dir: Path, case: str) -> None:
    body, method, hook = REFUSED[case]
    name = _module(module_dir, f"rt_eda_ported_{case.replace('-', '_')}", body)
    with pytest.raises(ConfigError) as info:
        discover_workers([name])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"worker Ported ({name}.Ported)"), message
    assert method in message and hook in message, message
    assert "docs/workers.md" in message


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_rt_eda_workers_are_not_refused(module_dir: Path, case: str) -> None:
    name = _module(module_dir, f"rt_eda_ported_ok_{case.replace('-', '_')}", ACCEPTED[case])
    assert "Fine" in discover_workers([name])


def test_no_built_in_worker_uses_the_original_api() -> None:
    workers = discover_workers()
    assert {cls.__module__ for cls in workers.values()} <= set(BUILTIN_WORKER_MODULES)
    assert all(original_api_problem(cls) is None for cls in workers.values())


def test_a_ported_run_method_exits_2_before_anything_starts(tmp_path: Path) -> None:
    """Through the command a user runs: one line on stderr, exit 2, nothing started."""
    _module(tmp_path, "old_lab_workers", REFUSED["run-model-free"][0])
    env = {"PYTHONPATH": str(tmp_path)}
    blocks = {n for n, _ in list_blocks()}
    proc = rt_eda("--worker", "Ported", "--set", "analysis.worker_modules=['old_lab_workers']",
                  "--duration", "5", "--no-viewer", "--summary", str(tmp_path / "s.json"),
                  cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "worker Ported (old_lab_workers.Ported) defines run()" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s.json").exists()
    assert_clean(blocks)
    listing = subprocess.run([sys.executable, "-m", "rt_eda.cli", "workers", "--module",
                              "old_lab_workers"], capture_output=True, text=True, cwd=tmp_path,
                             env={**__import__("os").environ, **env}, timeout=120)
    assert listing.returncode == 2
    assert "defines run()" in listing.stderr and listing.stdout == ""
