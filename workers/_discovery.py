"""Find the workers users can select by name: the built-in ones and those of ``worker_modules``.

As in the original plugin's ``settings.json`` (``"worker_modules": [...]``), any importable
module can contribute workers: every public subclass of
:class:`~rt_eda.workers._base.Worker` *defined* in it (``cls.__module__`` is the module: a
module that imports a built-in worker to subclass it does not register the built-in a second
time) is selectable by its :attr:`~rt_eda.workers._base.Worker.name`. Classes whose name
starts with ``_`` are skipped (private helpers, abstract bases).

A class written for the original plugin's API is refused, not ignored: one that defines a
method the original called and rt-eda never calls (``run``, the QRunnable body that called
``model.predict_on_batch``; the ``_Signals`` class; ``predict`` without ``run_model``) or an
``__init__`` that cannot take a :class:`~rt_eda.workers._base.WorkerSettings`
(:func:`~rt_eda.workers._base.original_api_problem`): the message names the method and the
hook to use instead, and the run exits 2 before anything starts.

Importing a module runs its top level; the built-in modules import neither TensorFlow nor
Keras, so discovery in the engine process stays light as long as the user's modules do the
same (import TensorFlow inside ``setup``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import traceback
from collections.abc import Sequence
from types import ModuleType

from rt_eda.core.errors import ConfigError

from ._base import Worker, original_api_problem

__all__ = ["BUILTIN_WORKER_MODULES", "describe_workers", "discover_workers"]

log = logging.getLogger(__name__)

#: Searched on every call; a module among these that does not exist (yet) is skipped.
BUILTIN_WORKER_MODULES: tuple[str, ...] = (
    "rt_eda.workers._image",
    "rt_eda.workers._keras",
    "rt_eda.workers._keras_builtin",
)


def _import(name: str, *, builtin: bool) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if builtin and exc.name == name:
            log.debug("built-in worker module %s is not present", name)
            return None
        raise ConfigError(
            f"analysis.worker_modules: cannot import {name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    except ImportError as exc:
        raise ConfigError(
            f"analysis.worker_modules: cannot import {name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    except SyntaxError as exc:  # IndentationError and TabError included
        raise ConfigError(
            f"analysis.worker_modules: {name!r} has a syntax error: {exc.filename}:{exc.lineno}: "
            f"{exc.msg}"
        ) from exc
    # Importing runs the module's own code, which may raise anything (a ZeroDivisionError,
    # a NameError, sys.exit()): the user's module is broken, which is bad input, not a fault
    # of rt-eda. KeyboardInterrupt still propagates.
    except (Exception, SystemExit) as exc:
        raise ConfigError(
            f"analysis.worker_modules: importing {name!r} raised {_where(exc)}"
        ) from exc


def _where(exc: BaseException) -> str:
    """``Type: message (file:line)``: the exception and the deepest line of the module (or of
    the code it imported) that raised it, in one line."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SystemExit):
        text = f"exit code {exc.code!r}" if not isinstance(exc.code, str) else text
    # skip importlib's own frames: the last frame outside the import machinery raised
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def _workers_of(module: ModuleType) -> list[type[Worker]]:
    found: list[type[Worker]] = []
    for attr, obj in vars(module).items():
        if (
            inspect.isclass(obj)
            and issubclass(obj, Worker)
            and obj is not Worker
            and obj.__module__ == module.__name__
            and not attr.startswith("_")
            and not obj.__name__.startswith("_")
        ):
            found.append(obj)
    return found


def discover_workers(extra_modules: Sequence[str] = ()) -> dict[str, type[Worker]]:
    """Every selectable worker: name -> class, built-ins first, then ``extra_modules``.

    Parameters
    ----------
    extra_modules
        ``analysis.worker_modules``: dotted module names, imported with
        :func:`importlib.import_module` (so they must be on ``sys.path``).

    Returns
    -------
    dict
        Sorted by name.

    Raises
    ------
    ConfigError
        A module of ``extra_modules`` cannot be imported (the message names it and carries
        the ImportError), two different classes claim the same name (both named, with their
        modules), or a class is written for the original plugin's API: it defines a method
        rt-eda never calls, such as ``run()`` (:func:`~rt_eda.workers._base.original_api_problem`
        names the method and the hook to use instead).
    """
    found: dict[str, type[Worker]] = {}
    modules = [(m, True) for m in BUILTIN_WORKER_MODULES]
    modules += [(m, False) for m in extra_modules if m not in BUILTIN_WORKER_MODULES]
    for module_name, builtin in modules:
        if not isinstance(module_name, str) or not module_name:
            raise ConfigError(
                f"analysis.worker_modules entries must be module names, got {module_name!r}"
            )
        module = _import(module_name, builtin=builtin)
        if module is None:
            continue
        for cls in _workers_of(module):
            other = found.get(cls.name)
            if other is not None and other is not cls:
                raise ConfigError(
                    f"two workers are named {cls.name!r}: {other.__module__}.{other.__qualname__}"
                    f" and {cls.__module__}.{cls.__qualname__}; give one a distinct `name` "
                    "class attribute"
                )
            problem = original_api_problem(cls)
            if problem is not None:
                raise ConfigError(problem)
            found[cls.name] = cls
    return dict(sorted(found.items()))


def first_line(cls: type) -> str:
    """The first line of a class's own docstring (``""`` when it has none)."""
    doc = cls.__dict__.get("__doc__") or ""
    return inspect.cleandoc(doc).split("\n", 1)[0].strip() if doc else ""


def describe_workers(extra_modules: Sequence[str] = ()) -> list[tuple[str, str, bool]]:
    """``(name, first docstring line, needs_model)`` of every worker, sorted by name.

    For ``rt-eda workers``. Raises as :func:`discover_workers`.
    """
    return [
        (name, first_line(cls), bool(cls.needs_model))
        for name, cls in discover_workers(extra_modules).items()
    ]
