"""Import of the original eda_plugin's ``settings.json``.

The original plugin (LEB-EPFL/eda_plugin) keeps its settings in one JSON file, nested by the
Python module that reads them. Two layouts exist: the packaged one, under a top-level
``"eda_plugin"`` key, and an older one without it::

    {"eda_plugin": {
        "actuators":    {"micro_manager": {"channel_switch_time_ms": 50, "calibration": ...}},
        "analysers":    {"keras": {"worker_modules": ["eda_plugin.examples.analysers"],
                                   "model": "../models/model1_rescale.h5"},
                         "image": {"channels": 2, "z_slices": 1}},
        "interpreters": {"frame_rate": {"slow_interval": 3, "fast_interval": 0,
                                        "lower_threshold": 0.3, "upper_threshold": 0.48}}}}

(The structure was read from the original repository's ``settings.json`` and the module
that loads it; nothing of its code is used here.)

What maps onto rt-eda
---------------------
============================================  ================================
settings.json key (under ``eda_plugin``)      rt-eda key
============================================  ================================
``analysers.keras.model``                     ``analysis.model``
``analysers.keras.worker_modules``            ``analysis.worker_modules``
``interpreters.frame_rate.slow_interval``     ``interpreter.slow_interval``
``interpreters.frame_rate.fast_interval``     ``interpreter.fast_interval``
``interpreters.frame_rate.lower_threshold``   ``interpreter.lower_threshold``
``interpreters.frame_rate.upper_threshold``   ``interpreter.upper_threshold``
``interpreters.frame_rate.min_fast_frames``   ``interpreter.min_fast_frames``
============================================  ================================

- A model path is relative to the ``settings.json``'s folder (the original resolved it
  against whatever folder it ran in). A model file that does not exist (typically a Windows
  path of the original lab) is *not taken*, with a note, so the rest of the import still
  works and the model can be given on the command line.
- The original's own example modules (``eda_plugin.*``, ``examples.*``) are dropped from
  ``worker_modules``: their workers are rt-eda built-ins. Other modules are kept; they must
  implement rt-eda's worker API.
- Every other key has no counterpart and is listed by its full key in the notes, with the
  reason where one is known (e.g. ``actuators.micro_manager.channel_switch_time_ms``: rt-eda
  sources handle channel switching themselves).

Values are not checked here: :func:`rt_eda.core.config.load_config_with_notes` validates the
mapped keys like any configuration, and its error lines name the ``settings.json`` key each
value came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rt_eda.core.errors import ConfigError

__all__ = ["LegacyImport", "map_legacy_settings", "read_legacy_settings"]

log = logging.getLogger(__name__)

_ROOT_KEY = "eda_plugin"
_SECTIONS = ("actuators", "analysers", "interpreters")

# settings.json key (below the root) -> rt-eda key, for plain values.
_DIRECT: dict[str, str] = {
    "interpreters.frame_rate.slow_interval": "interpreter.slow_interval",
    "interpreters.frame_rate.fast_interval": "interpreter.fast_interval",
    "interpreters.frame_rate.lower_threshold": "interpreter.lower_threshold",
    "interpreters.frame_rate.upper_threshold": "interpreter.upper_threshold",
    "interpreters.frame_rate.min_fast_frames": "interpreter.min_fast_frames",
}
_MODEL_KEY = "analysers.keras.model"
_MODULES_KEY = "analysers.keras.worker_modules"

# Why a key without counterpart has none (by key, or by the prefix of a group of keys).
_WHY_NOT: dict[str, str] = {
    "actuators.micro_manager.channel_switch_time_ms": (
        "the rt-eda camera sources time channel switching themselves"
    ),
    "actuators.micro_manager.calibration": "rt-eda has no DAQ/galvo actuator",
    "actuators.daq": "rt-eda has no DAQ actuator",
    "actuators": "rt-eda's camera role is the only actuator",
    "analysers.image.channels": (
        "rt-eda takes the channels from the acquisition (camera.channels or the source) "
        "and checks the model against them"
    ),
    "analysers.image.z_slices": (
        "rt-eda takes the z-slices from the acquisition (camera.z_positions or the source) "
        "and checks the model against them"
    ),
}

# Modules of the original plugin's own example workers; rt-eda has these workers built in.
_ORIGINAL_MODULE_PREFIXES = ("eda_plugin", "examples")


@dataclass(frozen=True, slots=True)
class LegacyImport:
    """What a ``settings.json`` maps onto.

    Attributes
    ----------
    values
        Dotted rt-eda keys and their values, unvalidated (e.g.
        ``{"interpreter.slow_interval": 3}``); apply them to the defaults.
    origins
        For each key in ``values``, the full ``settings.json`` key it came from.
    notes
        Human-readable lines: what was taken, what was not and why, what has no counterpart.
    """

    values: Mapping[str, object] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _flatten(node: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    """Leaves of nested tables as dotted keys (lists and scalars are leaves)."""
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            _flatten(value, dotted, out)
        else:
            out[dotted] = value


def _why_not(key: str) -> str:
    """The reason for the longest known prefix of ``key``, if any."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        reason = _WHY_NOT.get(".".join(parts[:n]))
        if reason:
            return f": {reason}"
    return ""


def _is_original_module(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _ORIGINAL_MODULE_PREFIXES)


def map_legacy_settings(data: Mapping[str, Any], base_dir: Path) -> LegacyImport:
    """Map the parsed content of a ``settings.json`` onto rt-eda keys.

    Parameters
    ----------
    data
        The JSON object, in either layout (with or without the top-level ``eda_plugin``).
    base_dir
        The folder relative model paths are resolved against (the file's folder).

    Returns
    -------
    LegacyImport
        The mapped values with their origins, and the notes (see the module docstring).

    Raises
    ------
    ConfigError
        ``data`` has neither layout (the message lists the top-level keys found).
    """
    if isinstance(data.get(_ROOT_KEY), Mapping):
        root: Mapping[str, Any] = data[_ROOT_KEY]
        prefix = _ROOT_KEY + "."
        others = {k: v for k, v in data.items() if k != _ROOT_KEY}
    elif any(k in data for k in _SECTIONS):
        root, prefix, others = data, "", {}
    else:
        raise ConfigError(
            f"not an eda_plugin settings.json: expected a top-level {_ROOT_KEY!r} table "
            f"(or {', '.join(repr(s) for s in _SECTIONS)}); found keys {sorted(data)!r}"
        )

    leaves: dict[str, Any] = {}
    _flatten(root, "", leaves)
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    notes: list[str] = []

    def take(legacy: str, key: str, value: object) -> None:
        values[key] = value
        origins[key] = f"settings.json key {prefix + legacy!r}"
        notes.append(f"taken: {prefix}{legacy} = {value!r} -> {key}")

    for legacy, key in _DIRECT.items():
        if legacy in leaves:
            take(legacy, key, leaves.pop(legacy))
    if any(k.startswith("interpreter.") for k in values):
        values["interpreter.kind"] = "binary"
        origins["interpreter.kind"] = f"settings.json table '{prefix}interpreters.frame_rate'"
        notes.append(
            f"taken: {prefix}interpreters.frame_rate -> interpreter.kind = 'binary' "
            "(the binary frame-rate interpreter)"
        )

    if _MODEL_KEY in leaves:
        model = leaves.pop(_MODEL_KEY)
        if isinstance(model, str) and model:
            path = Path(model).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if path.is_file():
                take(_MODEL_KEY, "analysis.model", str(path.resolve()))
                notes.append(
                    "note: settings.json does not name the worker; analysis.worker stays "
                    "at its default, choose one with --worker (e.g. KerasRescaleWorker)"
                )
            else:
                notes.append(
                    f"NOT taken: {prefix}{_MODEL_KEY} = {model!r}: no such file "
                    f"(looked for {path}); give the model with --model or analysis.model"
                )
        elif isinstance(model, str):
            notes.append(f"not taken: {prefix}{_MODEL_KEY} is empty")
        else:
            take(_MODEL_KEY, "analysis.model", model)  # validation names the bad value

    if _MODULES_KEY in leaves:
        modules = leaves.pop(_MODULES_KEY)
        if isinstance(modules, list) and all(isinstance(m, str) for m in modules):
            original = [m for m in modules if _is_original_module(m)]
            kept = [m for m in modules if not _is_original_module(m)]
            if original:
                notes.append(
                    f"dropped from {prefix}{_MODULES_KEY}: {original!r} (the original's "
                    "example workers; rt-eda has them built in)"
                )
            if kept:
                take(_MODULES_KEY, "analysis.worker_modules", kept)
                notes.append(
                    f"note: modules {kept!r} must define workers with rt-eda's worker API "
                    "(rt_eda.workers)"
                )
        else:
            take(_MODULES_KEY, "analysis.worker_modules", modules)

    for legacy, value in sorted(leaves.items()):
        notes.append(f"no counterpart: {prefix}{legacy} = {value!r}{_why_not(legacy)}")
    for key in sorted(others):
        notes.append(f"no counterpart: top-level key {key!r} (outside {_ROOT_KEY!r})")
    return LegacyImport(values=values, origins=origins, notes=tuple(notes))


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def read_legacy_settings(path: str | Path) -> LegacyImport:
    """Read an original eda_plugin ``settings.json`` and map it (see the module docstring).

    Raises
    ------
    ConfigError
        One line naming the file and what is wrong: it cannot be read (see
        :func:`rt_eda.core.config.read_text_input`), is not JSON, nests too deeply, is not an
        object, or is not a ``settings.json`` of the plugin.
    """
    from rt_eda.core.config import read_text_input

    path, text = read_text_input(path, "settings file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"settings file {path} is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ConfigError(f"settings file {path} nests objects or arrays too deeply to be "
                          "read") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} holds a JSON {_json_kind(data)}, not an object")
    try:
        imported = map_legacy_settings(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"settings file {path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"settings file {path} nests objects too deeply to be read") from None
    log.debug("read %s: %d keys mapped", path, len(imported.values))
    return imported
