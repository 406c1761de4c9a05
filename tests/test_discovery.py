"""Worker discovery: built-ins, user modules from worker_modules, import errors, name clashes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rt_eda.core.errors import ConfigError
from rt_eda.shm import StackSpec
from rt_eda.workers._base import Worker, WorkerSettings
from rt_eda.workers._discovery import describe_workers, discover_workers


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for test modules; they are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("rt_eda_test_"):
            del sys.modules[name]


def _write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def test_builtins_are_discovered() -> None:
    workers = discover_workers()
    for name in ("KerasWorker", "KerasRescaleWorker", "KerasTilingWorker", "DemoModelWorker"):
        assert name in workers
        assert issubclass(workers[name], Worker)
    assert workers["KerasRescaleWorker"].needs_model
    assert not workers["DemoModelWorker"].needs_model
    assert list(workers) == sorted(workers)
    rows = {name: (line, needs) for name, line, needs in describe_workers()}
    assert rows["KerasTilingWorker"][0].startswith("Resample to the model's pixel size")
    assert rows["KerasTilingWorker"][1] is True


def test_worker_from_an_extra_module(plugin_dir: Path) -> None:
    _write(plugin_dir, "rt_eda_test_plugin", '''
        """A user's worker module."""
        import numpy as np

        from rt_eda.workers._base import Worker
        from rt_eda.workers._keras_builtin import KerasRescaleWorker


        class MeanMarker(Worker):
            """Mean of the marker channel, no model.

            More text here.
            """

            name = "mean-marker"

            def prepare_images(self, stack):
                return {"pixels": np.asarray(stack[1], dtype=np.float64)}

            def extract_decision_parameter(self, output):
                return float(output.mean())


        class MyRescale(KerasRescaleWorker):
            """A subclass of a built-in."""


        class _Helper(Worker):
            """Private: not selectable."""
    ''')
    workers = discover_workers(["rt_eda_test_plugin"])
    assert "mean-marker" in workers and "MyRescale" in workers
    assert "_Helper" not in workers
    assert workers["KerasRescaleWorker"].__module__ == "rt_eda.workers._keras_builtin"
    worker = workers["mean-marker"](WorkerSettings())
    spec = StackSpec(2, 1, 8, 8, "float32")
    worker.setup(spec)
    stack = np.zeros(spec.shape, np.float32)
    stack[1] = 3.0
    assert worker.analyse(stack).decision == 3.0
    rows = {name: (line, needs) for name, line, needs in describe_workers(["rt_eda_test_plugin"])}
    assert rows["mean-marker"] == ("Mean of the marker channel, no model.", False)
    assert rows["MyRescale"] == ("A subclass of a built-in.", True)


def test_missing_module_is_a_config_error(plugin_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot import 'rt_eda_test_absent'"):
        discover_workers(["rt_eda_test_absent"])


def test_module_with_a_broken_import(plugin_dir: Path) -> None:
    _write(plugin_dir, "rt_eda_test_broken", "import rt_eda_test_no_such_dependency\n")
    with pytest.raises(ConfigError) as err:
        discover_workers(["rt_eda_test_broken"])
    msg = str(err.value)
    assert "rt_eda_test_broken" in msg and "rt_eda_test_no_such_dependency" in msg
    assert isinstance(err.value.__cause__, ImportError)


def test_module_with_a_syntax_error(plugin_dir: Path) -> None:
    _write(plugin_dir, "rt_eda_test_syntax", "def broken(:\n")
    with pytest.raises(ConfigError, match=r"rt_eda_test_syntax.*syntax error"):
        discover_workers(["rt_eda_test_syntax"])


def test_name_clash_names_both(plugin_dir: Path) -> None:
    for module in ("rt_eda_test_a", "rt_eda_test_b"):
        _write(plugin_dir, module, '''
            from rt_eda.workers._base import Worker

            class Peak(Worker):
                """Same name twice."""
        ''')
    with pytest.raises(ConfigError) as err:
        discover_workers(["rt_eda_test_a", "rt_eda_test_b"])
    assert "rt_eda_test_a.Peak" in str(err.value) and "rt_eda_test_b.Peak" in str(err.value)
    _write(plugin_dir, "rt_eda_test_c", '''
        from rt_eda.workers._base import Worker

        class Other(Worker):
            name = "KerasTilingWorker"
    ''')
    with pytest.raises(ConfigError, match="two workers are named 'KerasTilingWorker'"):
        discover_workers(["rt_eda_test_c"])


def test_discovery_stays_light() -> None:
    code = (
        "import sys\n"
        "from rt_eda.workers._discovery import describe_workers\n"
        "assert describe_workers()\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
