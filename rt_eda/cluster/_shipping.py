"""What travels to the cluster with the actors: the model's bytes and the worker's code.

No shared filesystem is assumed between this machine and the cluster's nodes:

- the **model** file is read here, put once in Ray's object store, and handed to every actor
  as a constructor argument; each node writes it to its temporary folder, named by its hash
  (:func:`~rt_eda.cluster._actor.materialize_model`);
- the **worker modules** (``analysis.worker_modules``) that are not installed packages (a
  module or package found outside ``site-packages``: the user's own code) are shipped as
  Ray ``py_modules`` in the actors' runtime environment; installed packages, rt-eda among
  them, must be installed on the nodes (the same versions: the actor refuses another
  rt-eda);
- the **environment**: compute threads (``analysis.threads_per_worker``), TensorFlow's log
  level and rt-eda's debug flag, as ``env_vars`` of the runtime environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError

__all__ = ["ModelPayload", "model_payload", "runtime_env", "shipped_modules"]


@dataclass(frozen=True, slots=True)
class ModelPayload:
    """A model file's name, hash and bytes (``name`` "" and no bytes: no model)."""

    name: str
    sha256: str
    data: bytes


def model_payload(path: str) -> ModelPayload:
    """The bytes of the model at ``path`` ("" for none: an empty payload).

    Raises
    ------
    ConfigError
        The file cannot be read (naming it and the OS's reason).
    """
    if not path:
        return ModelPayload("", "", b"")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"analysis.model: {path} cannot be read to ship it to the cluster: "
                          f"{exc.strerror or exc}") from None
    return ModelPayload(Path(path).name, hashlib.sha256(data).hexdigest(), data)


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib", "platstdlib")
            if k in paths]


def shipped_modules(modules: Sequence[str]) -> list[str]:
    """The local paths Ray ships for ``modules``: for each, its top-level package's folder
    (or its own ``.py`` file), unless it is installed (under ``site-packages`` or the
    standard library) or part of rt-eda. Each path once, in order.

    Raises
    ------
    ConfigError
        A module cannot be found (naming it).
    """
    roots = _installed_roots()
    out: list[str] = []
    for name in modules:
        top = name.split(".", 1)[0]
        if top == "rt_eda":
            continue
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"analysis.worker_modules: {name!r} cannot be found to ship it "
                              f"to the cluster: {exc}") from None
        if spec is None:
            raise ConfigError(f"analysis.worker_modules: {name!r} cannot be found to ship it "
                              "to the cluster")
        if spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))).resolve()
        elif spec.origin and spec.origin.endswith(".py"):
            path = Path(spec.origin).resolve()
        else:  # a built-in or compiled module: it must be installed on the nodes
            continue
        if any(path.is_relative_to(r) for r in roots) or "site-packages" in path.parts:
            continue
        if str(path) not in out:
            out.append(str(path))
    return out


def runtime_env(config: Config) -> dict[str, Any]:
    """The actors' Ray runtime environment (see the module docstring)."""
    threads = str(config.analysis.threads_per_worker)
    env: dict[str, Any] = {
        "env_vars": {
            "NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
            "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "0" if config.run.debug else "2",
            "RT_EDA_DEBUG": "1" if config.run.debug else "0",
        },
    }
    modules = shipped_modules(config.analysis.worker_modules)
    if modules:
        env["py_modules"] = modules
    return env
