"""Every test session imports the installed rt-eda, never the checkout's bare ``rt_eda/``.

``python -m pytest`` puts the current directory first on ``sys.path``, and pytest puts this
file's directory there to import it. The checkout's ``rt_eda/`` folder is not the package:
``shm/``, ``workers/`` and ``viewer/`` become ``rt_eda.shm``... only once installed. With a
wheel installed, the folder would shadow it, and the tests would run the checkout's files
half-imported instead of what was installed. So this file, loaded before any test module,
takes the checkout's root off ``sys.path`` (an editable install still finds it through its
own finder) and sets ``PYTHONSAFEPATH=1`` for every child process (``python -c``/``-m`` in
the checkout would put it back). It then checks where ``rt_eda`` comes from: the installed
wheel's files, or, for an editable install, this very checkout; a session on anything else
stops before collecting a test. ``RT_EDA_TEST_INSTALL=wheel`` (set by ``.ci/run``) or
``=editable`` also demands that kind of installation.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata, util
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent
DIST = "rt-eda"


def _drop_checkout_from_path() -> None:
    sys.path[:] = [p for p in sys.path if Path(p or Path.cwd()).resolve() != ROOT]
    os.environ["PYTHONSAFEPATH"] = "1"


def installation() -> tuple[str, Path]:
    """How rt-eda is installed (``"wheel"`` or ``"editable"``) and the folder it is in.

    Raises
    ------
    pytest.UsageError
        rt-eda is not installed in this interpreter.
    """
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise pytest.UsageError(
            f"{DIST} is not installed in {sys.executable}: run `pip install -e \".[test]\"` "
            "(or install a built wheel with the test extras) before `python -m pytest`"
        ) from None
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        return "editable", Path(unquote(urlparse(direct["url"]).path)).resolve() / "rt_eda"
    return "wheel", Path(str(dist.locate_file("rt_eda"))).resolve()


def check_installation() -> str:
    """Where ``rt_eda`` is imported from, checked against how it is installed.

    Raises
    ------
    pytest.UsageError
        ``rt_eda`` would be imported from elsewhere than the installation, or the
        installation is not the kind ``RT_EDA_TEST_INSTALL`` asks for.
    """
    kind, folder = installation()
    wanted = os.environ.get("RT_EDA_TEST_INSTALL", "")
    if wanted and wanted != kind:
        raise pytest.UsageError(
            f"RT_EDA_TEST_INSTALL={wanted} but {DIST} is installed as {kind} ({folder})")
    spec = util.find_spec("rt_eda")
    origin = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if origin != folder:
        raise pytest.UsageError(
            f"rt_eda would be imported from {origin}, but {DIST} is installed ({kind}) in "
            f"{folder}: the tests would not test the installation")
    return f"{DIST}: {kind} install, rt_eda from {folder}"


_drop_checkout_from_path()
_REPORT = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORT] = check_installation()


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[_REPORT]
