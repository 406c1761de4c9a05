"""Packaging: what a fresh machine gets from ``pyproject.toml`` is what the code needs.

The checks themselves are ``tools/check_packaging.sh`` (deptry for undeclared imports,
``tools/check_wheel.py`` and check-wheel-contents for the wheel). These tests run them on the
checkout, show that each one fails when its fault is put back (a dependency taken out of
``pyproject.toml``; a module, a subpackage or a model file taken out of the wheel), and that a
new subpackage or model file reaches the wheel with no configuration. Everything builds
offline (``python -m build --no-isolation`` with the test extras' setuptools).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("rt_eda", "shm", "workers", "viewer")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "*.egg-info", ".*")


def _env() -> dict[str, str]:
    """This interpreter's scripts first on PATH (``deptry``, ``check-wheel-contents``)."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])}


def _run(*cmd: str | Path, cwd: Path = ROOT, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env(), check=False)


def _copy_project(dest: Path) -> Path:
    """The files a build reads, copied (no caches, no egg-info, no build folder)."""
    dest.mkdir()
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / folder, dest / folder, ignore=IGNORE)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def _build_wheel(project: Path, out: Path) -> Path:
    proc = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, project,
                cwd=project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _check_wheel(wheel: Path, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, ROOT / "tools" / "check_wheel.py", wheel, "--root", root)


def _rewritten(wheel: Path, dest: Path, drop: str = "", add: str = "") -> Path:
    """A copy of ``wheel`` as if built without the files under ``drop`` / with ``add``.

    The ``RECORD`` is rewritten to match (check-wheel-contents reads it), as a build that
    left the files out (or put one in) would have written it.
    """
    dest.mkdir(exist_ok=True)
    out = dest / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if drop and item.filename.startswith(drop):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = [ln for ln in data.decode().splitlines()
                         if not (drop and ln.startswith(drop))]
                if add:
                    lines.append(f"{add},,")
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(item, data)
        if add:
            dst.writestr(add, f'"""stray module {add}"""\n')
    return out


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel of a copy of this checkout, built offline through its sdist."""
    tmp = tmp_path_factory.mktemp("wheel")
    yield _build_wheel(_copy_project(tmp / "project"), tmp / "dist")


def test_packaging_checks_pass_on_the_checkout() -> None:
    proc = _run("bash", ROOT / "tools" / "check_packaging.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "holds all" in proc.stdout


@pytest.mark.parametrize(("requirement", "module"), [
    ("tomli-w", "tomli_w"),            # imported by rt_eda/config.py, depended on by nothing
    ("pydantic-core", "pydantic_core"),  # installed only because pydantic needs it
    ("pymmcore", "pymmcore"),          # installed only because pymmcore-plus needs it
    ("numpy", "numpy"),
    ("keras", "keras"),                # imported only in workers/
])
def test_deptry_names_a_dependency_taken_out(tmp_path: Path, requirement: str,
                                             module: str) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    line = re.compile(rf'^\s*"{re.escape(requirement)}[<>=!~;\s"].*\n', re.MULTILINE)
    assert line.search(text), f"{requirement} is not declared in pyproject.toml"
    broken = tmp_path / "pyproject.toml"
    broken.write_text(line.sub("", text))
    proc = _run(sys.executable, "-m", "deptry", "--no-ansi", "--config", broken,
                *PACKAGE_FOLDERS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert re.search(rf"DEP00[13] '{module}' imported but", out), out


def test_deptry_accepts_the_declared_dependencies() -> None:
    proc = _run(sys.executable, "-m", "deptry", "--no-ansi", *PACKAGE_FOLDERS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_built_wheel_holds_every_source_file(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for folder, package in [("rt_eda", "rt_eda"), ("shm", "rt_eda/shm"),
                            ("workers", "rt_eda/workers"), ("viewer", "rt_eda/viewer")]:
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"{package}/{path.relative_to(ROOT / folder).as_posix()}" in names
    assert "rt_eda/workers/models/demo.keras" in names
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rt_eda"}
    proc = _check_wheel(built_wheel)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("drop", [
    "rt_eda/roles/",                     # a whole subpackage (issue 12: no camera role)
    "rt_eda/roles/camera.py",            # one module of it
    "rt_eda/shm/_ring.py",               # a module of a mapped folder
    "rt_eda/viewer/__init__.py",
    "rt_eda/workers/models/demo.keras",  # the bundled model
])
def test_check_wheel_names_what_the_wheel_lacks(built_wheel: Path, tmp_path: Path,
                                                drop: str) -> None:
    proc = _check_wheel(_rewritten(built_wheel, tmp_path, drop=drop))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"the wheel lacks {drop}" in proc.stdout
    assert "W101" in proc.stdout  # check-wheel-contents sees it too


def test_check_wheel_names_a_stray_top_level_package(built_wheel: Path, tmp_path: Path) -> None:
    proc = _check_wheel(_rewritten(built_wheel, tmp_path, add="shm/__init__.py"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the wheel holds shm/__init__.py" in proc.stdout
    assert "W202" in proc.stdout  # check-wheel-contents: an undeclared toplevel entry


def test_a_package_left_out_of_the_build_fails_the_check(tmp_path: Path) -> None:
    """The fault of issue 12 put back: a hand-written package list without rt_eda.roles.

    A stale ``rt_eda.egg-info`` that still lists the roles (as an earlier editable install
    leaves behind) must not put them back into the wheel and hide the fault.
    """
    project = _copy_project(tmp_path / "project")
    (project / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(packages=['rt_eda', 'rt_eda.sources', 'rt_eda.shm', 'rt_eda.workers',\n"
        "                'rt_eda.workers.models', 'rt_eda.viewer'])\n")
    stale = project / "rt_eda.egg-info"
    stale.mkdir()
    (stale / "SOURCES.txt").write_text("\n".join(
        p.relative_to(project).as_posix() for p in (project / "rt_eda").rglob("*.py")) + "\n")
    wheel = _build_wheel(project, tmp_path / "dist")
    proc = _check_wheel(wheel, root=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for module in ("__init__", "camera", "interpreter", "writer"):
        assert f"the wheel lacks rt_eda/roles/{module}.py" in proc.stdout


def test_a_new_subpackage_and_model_file_reach_the_wheel(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    for rel in ("rt_eda/newpkg/__init__.py", "rt_eda/newpkg/deeper/mod.py",
                "rt_eda/nsonly/mod.py", "shm/sub/__init__.py", "viewer/sub/mod.py"):
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""{rel}: a module added by a packaging test."""\n')
    (project / "workers" / "models" / "extra.onnx").write_bytes(b"\x08\x01")
    wheel = _build_wheel(project, tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"rt_eda/newpkg/__init__.py", "rt_eda/newpkg/deeper/mod.py", "rt_eda/nsonly/mod.py",
            "rt_eda/shm/sub/__init__.py", "rt_eda/viewer/sub/mod.py",
            "rt_eda/workers/models/extra.onnx"} <= names
    proc = _check_wheel(wheel, root=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _installed() -> tuple[str, Path]:
    dist = metadata.distribution("rt-eda")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        return "editable", Path(unquote(urlparse(direct["url"]).path)).resolve()
    return "wheel", Path(str(dist.locate_file("rt_eda"))).resolve()


def test_the_tests_import_the_installed_package() -> None:
    """``rt_eda`` and its subpackages come from the installation, here and in a child.

    With a wheel, every module is in the wheel's folder (the checkout's ``rt_eda/`` does not
    shadow it); with an editable install, each comes from its source folder of this checkout.
    A ``python -c`` child started in the checkout (as several tests do) agrees.
    """
    kind, where = _installed()
    wanted = os.environ.get("RT_EDA_TEST_INSTALL")
    if wanted:
        assert kind == wanted
    subpackages = ["rt_eda", "rt_eda.shm", "rt_eda.workers", "rt_eda.viewer", "rt_eda.roles",
                   "rt_eda.sources"]
    if kind == "wheel":
        expected = {m: where / Path(*m.split(".")[1:]) for m in subpackages}
    else:
        assert where == ROOT, f"the editable install is of {where}, not of this checkout"
        expected = {"rt_eda": ROOT / "rt_eda", "rt_eda.shm": ROOT / "shm",
                    "rt_eda.workers": ROOT / "workers", "rt_eda.viewer": ROOT / "viewer",
                    "rt_eda.roles": ROOT / "rt_eda" / "roles",
                    "rt_eda.sources": ROOT / "rt_eda" / "sources"}
    code = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m).origin"
            f" for m in {subpackages!r}}}))")
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=True)
    here = {m: str(getattr(importlib.util.find_spec(m), "origin", None)) for m in subpackages}
    children: dict[str, str] = json.loads(child.stdout)
    for origins in (here, children):
        for module, folder in expected.items():
            assert Path(origins[module]).resolve().parent == folder, (module, origins[module])
