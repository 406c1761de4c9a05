"""Acquisition plans: stage positions x channels x z from a useq-schema ``MDASequence``.

``rt-eda run --plan FILE`` (the key ``camera.plan``) names a ``useq.MDASequence`` written as
YAML or JSON, the way pymmcore-plus users already describe their experiments::

    stage_positions:            # each an independent field of view (x, y in um; z optional)
      - {x: 0, y: 0, name: A}
      - {x: 200, y: 0, name: B}
    channels: [structure, marker]          # presets (Micro-Manager: group "Channel")
    z_plan: {range: 4, step: 2}            # relative to each position's z (or absolute)

What a plan may hold, and what it may not (each refused with one line naming the file and
the key, before anything starts):

* ``stage_positions``: one entry per field of view; a position's ``sequence`` may hold a
  ``grid_plan`` (its tiles become positions of their own, in useq's order) and nothing else.
  A top-level ``grid_plan`` tiles every position the same way. No positions: one position,
  wherever the stage is. At most :data:`MAX_PLAN_POSITIONS` positions.
* ``channels``: names (Micro-Manager presets of one group, or the synthetic source's
  ``structure`` and ``marker``); ``exposure``, ``z_offset``, ``acquire_every`` and
  ``do_stack: false`` are not supported (every channel is acquired at every timepoint with
  ``camera.exposure_ms``).
* ``z_plan``: any of useq's z plans; relative plans are offsets from each position's z.
* ``time_plan``: refused. The interpreter owns the time plan: each position is imaged at the
  slow interval until its network sees an event, then at the fast one.
* ``autofocus_plan``: refused (not supported); ``metadata``, ``axis_order`` and ``setup``
  are accepted and ignored (the scheduler orders positions; channel-major frames).

:func:`load_plan` reads and checks a file; :func:`plan_positions` tells how many positions
a configuration's plan has (1 without a plan). Whether a plan fits the *source* (channels the
synthetic source has, presets a Micro-Manager configuration defines, an XY stage) is checked
where the source is known: the configuration (synthetic, replay) and the source's ``open``
(Micro-Manager).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rt_eda.core.errors import ConfigError

__all__ = [
    "MAX_PLAN_POSITIONS",
    "SYNTHETIC_CHANNELS",
    "AcquisitionPlan",
    "PlanChannel",
    "PlanPosition",
    "load_plan",
    "plan_positions",
]

MAX_PLAN_POSITIONS: Final = 4096
"""The most positions a plan may have (the ring's per-position table holds as many)."""

SYNTHETIC_CHANNELS: Final = ("structure", "marker", "marker2", "dark")
"""The synthetic source's channels, by the names a plan gives them (channel 0 and 1)."""

_REFUSED: Final = {
    "time_plan": "the interpreter owns the time plan (interpreter.slow_interval and "
                 "fast_interval per position): remove time_plan",
    "autofocus_plan": "autofocus plans are not supported: remove autofocus_plan",
}


@dataclass(frozen=True, slots=True)
class PlanPosition:
    """One field of view: ``x``, ``y``, ``z`` in micrometres (None: where the stage is)."""

    index: int
    name: str
    x: float | None
    y: float | None
    z: float | None


@dataclass(frozen=True, slots=True)
class PlanChannel:
    """One channel: a preset ``config`` of ``group`` ("" when the plan names none)."""

    config: str
    group: str


@dataclass(frozen=True, slots=True)
class AcquisitionPlan:
    """A checked plan (primitives only: it pickles to every process).

    Attributes
    ----------
    path
        The file it was read from.
    positions
        The fields of view, grid tiles expanded, in the plan's order (index 0, 1, ...).
    channels
        The channels of every stack, in acquisition order; empty: the source's own.
    z
        The z positions of every stack, in acquisition order: offsets from each position's z
        when ``z_relative``, absolute otherwise; empty: no z plan (one slice, as the source
        has it).
    z_relative
        Whether ``z`` are offsets.
    text
        The plan as useq writes it (JSON), to be saved with a recording.
    """

    path: str
    positions: tuple[PlanPosition, ...]
    channels: tuple[PlanChannel, ...]
    z: tuple[float, ...]
    z_relative: bool
    text: str

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The channels' preset names."""
        return tuple(c.config for c in self.channels)

    @property
    def has_xy(self) -> bool:
        """True when any position gives x and y (the stage moves)."""
        return any(p.x is not None and p.y is not None for p in self.positions)


def _bad(path: str, what: str) -> ConfigError:
    return ConfigError(f"camera.plan: {path}: {what}")


def _parse(path: Path, shown: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"camera.plan: {shown} does not exist; expected a useq-schema "
                          "MDASequence as YAML or JSON") from None
    except IsADirectoryError:
        raise ConfigError(f"camera.plan: {shown} is a folder; expected a YAML or JSON file"
                          ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"camera.plan: {shown} cannot be read ({exc})") from None
    if not text.strip():
        raise _bad(shown, "the file is empty; expected a useq-schema MDASequence")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad(shown, f"not JSON (line {exc.lineno}: {exc.msg})") from None
    import yaml  # JSON is YAML too: any other suffix is read as YAML

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _bad(shown, f"not YAML or JSON ({where}{problem})") from None


def _first_error(exc: Any) -> str:
    """A pydantic ValidationError's first problem, on one line."""
    errors = exc.errors()
    if not errors:
        return " ".join(str(exc).split())
    e = errors[0]
    loc = ".".join(str(x) for x in e.get("loc", ())) or "(top level)"
    msg = " ".join(str(e.get("msg", "")).split())
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}"


def _number(value: object) -> float | None:
    if value is None:
        return None
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> AcquisitionPlan:
    shown = path
    data = _parse(Path(path), shown)
    if not isinstance(data, dict):
        raise _bad(shown, f"not an MDASequence: the file holds a {type(data).__name__}, "
                   "expected a mapping with stage_positions, channels, z_plan")
    import pydantic
    import useq

    known = set(useq.MDASequence.model_fields)
    for key in data:
        if not isinstance(key, str) or key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _bad(shown, f"{key!r} is not a key of an MDASequence{hint}; allowed: "
                       "stage_positions, grid_plan, channels, z_plan")
    for key, why in _REFUSED.items():
        if data.get(key) is not None:
            raise _bad(shown, f"{key}: {why}")
    try:
        seq = useq.MDASequence.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _bad(shown, f"not a useq MDASequence: {_first_error(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise _bad(shown, f"not a useq MDASequence: {' '.join(str(exc).split())}") from None

    channels = []
    for i, ch in enumerate(seq.channels):
        unsupported = []
        if ch.exposure is not None:
            unsupported.append(f"exposure {ch.exposure:g} (use camera.exposure_ms)")
        if ch.z_offset:
            unsupported.append(f"z_offset {ch.z_offset:g}")
        if ch.acquire_every != 1:
            unsupported.append(f"acquire_every {ch.acquire_every}")
        if not ch.do_stack:
            unsupported.append("do_stack false")
        if unsupported:
            raise _bad(shown, f"channels[{i}] ({ch.config!r}): {', '.join(unsupported)} not "
                       "supported; every channel is acquired in every stack")
        channels.append(PlanChannel(ch.config, ch.group or ""))
    names = [c.config for c in channels]
    if len(set(names)) != len(names):
        raise _bad(shown, f"channels {names} name a channel twice")
    groups = {c.group for c in channels}
    if len(groups) > 1:
        raise _bad(shown, f"channels belong to several groups {sorted(groups)}; a stack's "
                   "channels are presets of one group")

    z: tuple[float, ...] = ()
    z_relative = True
    if seq.z_plan is not None:
        z = tuple(float(v) for v in seq.z_plan)
        z_relative = bool(seq.z_plan.is_relative)
        if not z:
            raise _bad(shown, "z_plan gives no z position")

    positions = _positions(seq, shown)
    if len(positions) > MAX_PLAN_POSITIONS:
        raise _bad(shown, f"{len(positions)} positions; at most {MAX_PLAN_POSITIONS}")
    return AcquisitionPlan(path=path, positions=positions, channels=tuple(channels), z=z,
                           z_relative=z_relative, text=seq.model_dump_json(exclude_unset=True))


def _positions(seq: Any, shown: str) -> tuple[PlanPosition, ...]:
    """Every field of view: each stage position, its grid tiles expanded (useq's order)."""
    if not seq.stage_positions:
        if seq.grid_plan is not None:
            raise _bad(shown, "grid_plan without stage_positions: give the positions to tile")
        return (PlanPosition(0, "", None, None, None),)
    for i, pos in enumerate(seq.stage_positions):
        sub = pos.sequence
        if sub is None:
            continue
        extra = [k for k in sub.model_fields_set if k not in ("grid_plan",)
                 and getattr(sub, k) not in (None, (), [])]
        if extra:
            raise _bad(shown, f"stage_positions[{i}].sequence: {', '.join(sorted(extra))} not "
                       "supported; every position shares the plan's channels and z (a "
                       "position's sequence may hold a grid_plan only)")
    tiles: dict[tuple[int, int], PlanPosition] = {}
    bare = seq.replace(channels=(), z_plan=None)
    for event in bare.iter_events():
        p = int(event.index.get("p", 0))
        g = int(event.index.get("g", 0))
        if (p, g) in tiles:
            continue
        base = seq.stage_positions[p]
        name = base.name or f"p{p}"
        if "g" in event.index:
            name = f"{name}-g{g}"
        tiles[(p, g)] = PlanPosition(len(tiles), name, _number(event.x_pos),
                                     _number(event.y_pos), _number(base.z))
    return tuple(tiles.values())


def load_plan(path: str | Path) -> AcquisitionPlan:
    """Read and check the plan at ``path`` (cached per file and modification time).

    Raises
    ------
    ConfigError
        One line naming the file and what is wrong: missing, not YAML or JSON, not an
        MDASequence, a key that is not one, or what rt-eda does not support (a time plan,
        per-channel exposures, ...; see the module docstring).
    """
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"camera.plan: {path} does not exist; expected a useq-schema "
                          "MDASequence as YAML or JSON") from None
    except OSError as exc:
        raise ConfigError(f"camera.plan: {path} cannot be read ({exc})") from None
    return _load(str(p), mtime)


def plan_positions(plan_path: str) -> int:
    """The positions of the plan at ``plan_path`` ("" : no plan, one position)."""
    return len(load_plan(plan_path).positions) if plan_path else 1
