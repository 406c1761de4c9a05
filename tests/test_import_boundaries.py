"""Import boundaries show the architecture: each package is imported with the others' heavy
dependencies blocked, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not allowed here")
            return None
    sys.meta_path.insert(0, Block())
    import importlib
    for module in {modules!r}:
        importlib.import_module(module)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    """
)

QT = ["PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6"]
TF = ["tensorflow", "keras", "tf_keras"]
MM = ["pymmcore", "pymmcore_plus"]


def check(modules: list[str], blocked: list[str]) -> None:
    code = BLOCKER.format(blocked=set(blocked), modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_shm_needs_only_stdlib_numpy_numba() -> None:
    check(["rt_eda.shm"], [*QT, *TF, *MM, "zarr", "pydantic", "matplotlib", "tifffile"])


@pytest.mark.parametrize("module", [
    "rt_eda", "rt_eda.engine", "rt_eda.cli", "rt_eda.core.config", "rt_eda.roles.camera",
    "rt_eda.roles.interpreter", "rt_eda.sources", "rt_eda.sources.synthetic",
    "rt_eda.interpreters", "rt_eda.core.queues",
])
def test_core_imports_neither_tensorflow_nor_qt(module: str) -> None:
    check([module], [*QT, *TF])


def test_workers_package_and_process_loop_import_no_qt_and_no_tensorflow_up_front() -> None:
    # Only a Keras worker, once used, imports TensorFlow.
    check(["rt_eda.workers", "rt_eda.roles.worker", "rt_eda.workers._image",
           "rt_eda.workers._discovery"], [*QT, *TF])


def test_no_top_level_shm_workers_or_viewer_package_is_installed() -> None:
    code = ("import importlib.util as u; "
            "assert all(u.find_spec(n) is None for n in ('shm', 'workers', 'viewer'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr


def test_listing_and_checking_workers_does_not_import_tensorflow() -> None:
    # The engine discovers workers and inspects the model in its own process before
    # anything starts: that must not cost a TensorFlow import.
    code = BLOCKER.format(blocked={*QT, *TF}, modules=["rt_eda.workers._discovery"]) + \
        textwrap.dedent(
            """
            from rt_eda.workers._discovery import discover_workers
            from rt_eda.workers import worker_settings
            from rt_eda.core.config import load_config
            from rt_eda.shm import StackSpec
            workers = discover_workers([])
            cfg = load_config(None)
            for name in ("DemoModelWorker", "ImageWorker"):
                workers[name](worker_settings(cfg)).check(StackSpec(2, 1, 512, 512))
            """
        )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
