"""The one part of the build that cannot be static: the list of packages.

Everything else is in ``pyproject.toml``. Its ``[tool.setuptools.package-dir]`` maps each
installed package to a source folder (``rt_eda.shm`` to ``shm/``...), and setuptools' own
discovery cannot follow such a mapping. So every directory under one of those folders that
holds files (``.py`` files, or data such as ``workers/models/``) is listed here, with its
installed name: a subpackage added later is in the next wheel without anyone having to
remember it. ``tools/check_packaging.sh`` checks the
built wheel against the source tree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
SKIP = {"__pycache__", "build", "dist"}


def package_dirs() -> dict[str, str]:
    """``[tool.setuptools.package-dir]``: installed package name -> source folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return mapping


def packages(mapping: dict[str, str]) -> list[str]:
    """Every directory holding files under a mapped folder, by its installed name.

    Directories of ``.py`` files are packages; the others (``workers/models/``) are listed
    too, as namespace packages, so that their files ship as package data (the
    ``[tool.setuptools.package-data]`` patterns take every file but caches) instead of being
    an "importable package absent from packages" that setuptools warns about. A folder that
    is itself mapped to another package (none is today) is left to that mapping, so nothing
    is listed twice.
    """
    folders = {(ROOT / folder).resolve(): name for name, folder in mapping.items()}
    found: set[str] = set()
    for base, name in folders.items():
        for path in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            rel = path.relative_to(base).parts
            if any(part in SKIP or part.startswith(".") or part.endswith(".egg-info")
                   for part in rel):
                continue
            if any(other != base and other.is_relative_to(base) and path.is_relative_to(other)
                   for other in folders):
                continue
            if any(p.is_file() for p in path.iterdir()):
                found.add(".".join((name, *rel)))
    return sorted(found)


setup(packages=packages(package_dirs()))
