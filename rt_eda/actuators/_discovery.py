"""Find the actuators users can select by name: the built-in ones and those of
``actuation.actuator_modules`` (as :mod:`rt_eda.workers._discovery` does for workers).

Every public subclass of :class:`~rt_eda.actuators.Actuator` *defined* in a module (its
``__module__`` is the module) with a non-empty :attr:`~rt_eda.actuators.Actuator.name` is
selectable by that name. A module that cannot be imported, two actuators of one name, or a
name that is not known are refused with one line (the run exits 2 before it starts).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError

from ._base import Actuator, ActuatorSettings

__all__ = ["BUILTIN_ACTUATOR_MODULES", "describe_actuators", "discover_actuators",
           "make_actuators"]

BUILTIN_ACTUATOR_MODULES: tuple[str, ...] = ("rt_eda.actuators._builtin",)


def discover_actuators(extra_modules: Sequence[str] = ()) -> dict[str, type[Actuator]]:
    """Every selectable actuator class by name: the built-in ones, then ``extra_modules``'."""
    found: dict[str, type[Actuator]] = {}
    for name in (*BUILTIN_ACTUATOR_MODULES, *extra_modules):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a user's module: any error in its top level
            raise ConfigError(f"actuation.actuator_modules: cannot import {name!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (not issubclass(cls, Actuator) or cls is Actuator or cls.__module__ != name
                    or cls.__name__.startswith("_") or not cls.name):
                continue
            other = found.get(cls.name)
            if other is not None and other is not cls:
                raise ConfigError(
                    f"actuation.actuator_modules: two actuators are named {cls.name!r}: "
                    f"{other.__module__}.{other.__name__} and {name}.{cls.__name__}")
            found[cls.name] = cls
    return found


def make_actuators(config: Config, sensor_shape: tuple[int, int] = (0, 0),
                   positions: int = 1) -> list[Actuator]:
    """The actuators ``config.actuation.actuators`` selects (``interval`` included, always
    first), made with their options. Raises ConfigError for an unknown name or option."""
    a = config.actuation
    known = discover_actuators(a.actuator_modules)
    names = ["interval", *(n for n in a.actuators if n != "interval")]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"actuation.actuators: unknown actuator {unknown[0]!r}; known: "
                          f"{', '.join(sorted(known))} (`rt-eda actuators` describes them; "
                          "a module of your own goes in actuation.actuator_modules)")
    stray = sorted(set(a.options) - set(names))
    if stray:
        raise ConfigError(f"actuation.options.{stray[0]}: {stray[0]!r} is not one of the "
                          f"actuators of this run ({', '.join(names)})")
    for n in names:
        given = sorted(set(a.options.get(n, {})) - set(known[n].options_help))
        if given:
            allowed = ", ".join(known[n].options_help) or "none"
            raise ConfigError(f"actuation.options.{n}.{given[0]}: {n!r} has no option "
                              f"{given[0]!r}; its options: {allowed}")
        if known[n].needs_locations and config.analysis.options.get("locations") is False:
            raise ConfigError(f"actuator {n!r} acts on the events' locations, which "
                              "analysis.options.locations = false turns off")
    out = []
    for n in names:
        settings = ActuatorSettings(n, dict(a.options.get(n, {})), sensor_shape, positions)
        try:
            out.append(known[n](settings))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"actuator {n!r} could not be made: {type(exc).__name__}: "
                              f"{exc}") from exc
    return out


def describe_actuators(extra_modules: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """``(name, first line of its docstring, module)`` of every selectable actuator."""
    return [(n, cls.describe(), cls.__module__)
            for n, cls in sorted(discover_actuators(extra_modules).items())]
