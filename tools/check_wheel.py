#!/usr/bin/env python3
"""Check a built wheel against the source tree: nothing left out, nothing stray.

Usage: ``python tools/check_wheel.py WHEEL`` (run from anywhere; the project root is this
file's parent's parent, or ``--root``).

The expected contents come from ``[tool.setuptools.package-dir]`` in ``pyproject.toml``
(``rt_eda`` from ``rt_eda/``, ``rt_eda.shm`` from ``shm/``...), not from the build
configuration under test: every file under those folders, caches excepted, must be in the
wheel at its installed path, and the wheel may hold nothing else outside its ``.dist-info``
(a stale build folder or a top-level ``shm``/``workers``/``viewer`` shows up here). Then
``check-wheel-contents`` inspects the wheel against the same tree, laid out as installed
(symlinks in a scratch folder), with its settings from ``[tool.check-wheel-contents]``.

Exit status: 0 when the wheel is complete, 1 with one line per problem when it is not,
2 when the wheel or the project cannot be read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

CACHE_DIRS = {"__pycache__"}
CACHE_SUFFIXES = {".pyc", ".pyo", ".nbi", ".nbc"}


def is_cache(rel: PurePosixPath) -> bool:
    """True for files the wheel must not hold: bytecode, numba caches, hidden files."""
    return (any(part in CACHE_DIRS or part.startswith(".") or part.endswith(".egg-info")
                for part in rel.parts)
            or rel.suffix in CACHE_SUFFIXES)


def package_dirs(root: Path) -> dict[str, Path]:
    """Installed package name -> source folder, from ``[tool.setuptools.package-dir]``."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if not mapping:
        raise SystemExit("check_wheel: pyproject.toml has no [tool.setuptools.package-dir]")
    return {name: (root / folder).resolve() for name, folder in mapping.items()}


def expected_files(root: Path) -> dict[str, str]:
    """Path inside the wheel -> source file, for every non-cache file of every package."""
    dirs = package_dirs(root)
    out: dict[str, str] = {}
    for name, base in dirs.items():
        if not base.is_dir():
            raise SystemExit(f"check_wheel: package folder {base} of {name} does not exist")
        nested = [d for d in dirs.values() if d != base and d.is_relative_to(base)]
        for path in sorted(base.rglob("*")):
            rel = PurePosixPath(path.relative_to(base).as_posix())
            if not path.is_file() or is_cache(rel) or any(path.is_relative_to(d) for d in nested):
                continue
            out[str(PurePosixPath(*name.split("."), rel))] = str(path.relative_to(root))
    return out


def wheel_files(wheel: Path) -> set[str]:
    """Every file in the wheel but its ``.dist-info`` folder."""
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
    return {n for n in names if not n.split("/", 1)[0].endswith(".dist-info")}


def installed_tree(root: Path, scratch: Path) -> list[Path]:
    """Symlink the source folders into ``scratch`` as they are laid out once installed.

    Returns the top-level package folders (for ``check-wheel-contents --package``).
    """
    dirs = package_dirs(root)
    for name in sorted(dirs, key=lambda n: n.count(".")):
        target = scratch.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in dirs[name].iterdir():
            link = target / entry.name
            if not link.exists():
                link.symlink_to(entry)
    return sorted(scratch.joinpath(n) for n in dirs if "." not in n)


def check_wheel_contents(root: Path, wheel: Path) -> list[str]:
    """Run ``check-wheel-contents`` on the wheel against the installed-layout tree."""
    exe = shutil.which("check-wheel-contents", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        return ["check-wheel-contents is not installed (pip install -e '.[test]')"]
    with tempfile.TemporaryDirectory() as tmp:
        packages = installed_tree(root, Path(tmp))
        cmd = [exe, "--config", str(root / "pyproject.toml"), str(wheel)]
        for pkg in packages:
            cmd += ["--package", str(pkg)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, check=False)
    if proc.returncode == 0:
        return []
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return [f"check-wheel-contents: {line}" for line in lines] or [
        f"check-wheel-contents exited {proc.returncode}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        have = wheel_files(args.wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        print(f"check_wheel: cannot read {args.wheel}: {exc}")
        return 2
    expected = expected_files(root)
    problems = [f"the wheel lacks {path} (from {src})"
                for path, src in sorted(expected.items()) if path not in have]
    problems += [f"the wheel holds {path}, which is no file of the source packages"
                 for path in sorted(have - expected.keys())]
    problems += check_wheel_contents(root, args.wheel)
    for line in problems:
        print(f"check_wheel: {line}")
    if not problems:
        n_py = sum(p.endswith(".py") for p in expected)
        print(f"check_wheel: {args.wheel.name} holds all {n_py} modules and "
              f"{len(expected) - n_py} data files of {len(package_dirs(root))} source folders")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
