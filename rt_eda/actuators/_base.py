"""The actuator plug-in: what a decision does to the microscope besides the interval.

An actuator is one class with two halves, each instantiated in its own process::

    interpreter process                         camera process (it owns the devices)
    -------------------                         ------------------------------------
    act = Roi(settings)                         act = Roi(settings)
                                                act.open(source)      # refuse what cannot work
    for each DecisionRecord:                    for each Action received:
        action = act.decide(record)  --Action-->    t = act.apply(action, source)
                                                act.measures()        # against ground truth
                                                act.close()

:meth:`Actuator.decide` sees every decision (the worker's result with its event regions, the
interpreter's fast/slow state at that position) and returns an
:class:`~rt_eda.core.messages.Action` or None; it keeps whatever state it needs, per position.
:meth:`Actuator.apply` does it, between timepoints, on the camera's thread. An actuator that
acts on the next frames (a sensor region, a channel preset) returns None: its action takes
effect at the next exposure of its position, and the camera applies it right before that
timepoint (with a plan, again whenever the stage comes back to a position whose last action
differs from what the device holds). An actuator whose device runs on its own clock (an SLM)
sets :attr:`Actuator.immediate`, is applied as soon as the action arrives, and returns the
moment the device took it.

Every action is recorded (``actions.csv``), and its decision -> actuation latency is
reported per kind in the summary (``actions``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rt_eda.core.errors import ConfigError
from rt_eda.core.messages import Action, DecisionRecord

__all__ = ["Actuator", "ActuatorSettings"]


@dataclass(frozen=True, slots=True)
class ActuatorSettings:
    """What an actuator is made with: its name, its options (``[actuation.options.<name>]``),
    the sensor's ``(height, width)`` and the number of stage positions."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    sensor_shape: tuple[int, int] = (0, 0)
    positions: int = 1

    def option(self, key: str, default: Any) -> Any:
        """The option ``key``, or ``default`` when it is not set."""
        return self.options.get(key, default)

    def number(self, key: str, default: float, *, low: float = 0.0,
               integer: bool = False) -> float:
        """A numeric option ``>= low``; a ConfigError naming the key otherwise."""
        value = self.options.get(key, default)
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or not float(value) >= low:
            what = "an integer" if integer else "a number"
            raise ConfigError(f"actuation.options.{self.name}.{key} must be {what} >= "
                              f"{low:g}, got {value!r}")
        return float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        """A list-of-strings option (empty when unset)."""
        value = self.options.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"actuation.options.{self.name}.{key} must be a list of "
                              f"strings, got {value!r}")
        return tuple(value)


class Actuator:
    """Base of every actuator (see the module docstring).

    Subclasses set :attr:`name` (what ``--actuator`` and ``actuation.actuators`` select),
    override :meth:`decide` and :meth:`apply`, and may override :meth:`open`,
    :meth:`measures` and :meth:`close`. The first line of the class docstring is what
    ``rt-eda actuators`` prints.
    """

    name: ClassVar[str] = ""
    immediate: ClassVar[bool] = False
    """True: applied as soon as the action arrives (a device on its own clock); False:
    right before its position's next timepoint."""
    options_help: ClassVar[Mapping[str, str]] = {}
    """Each option the actuator reads, with what it means (``rt-eda actuators`` prints them;
    an option not named here is refused: a misspelt one must not be silently ignored)."""
    needs_locations: ClassVar[bool] = False
    """True: it acts on the workers' event regions (``analysis.options.locations = false``
    is then refused)."""

    def __init__(self, settings: ActuatorSettings) -> None:
        self.settings = settings

    # -- the interpreter process ---------------------------------------------------------
    def decide(self, record: DecisionRecord) -> Action | None:
        """What to do after this decision, or None (the default: nothing)."""
        return None

    # -- the camera process --------------------------------------------------------------
    def open(self, source: object) -> None:
        """Check that ``source`` can do what this actuator asks, and prepare its devices;
        raise :class:`~rt_eda.core.errors.ConfigError` (the run exits 2 before it starts)
        when it cannot."""

    def apply(self, action: Action, source: object) -> float | None:
        """Do ``action``. Return the monotonic time it took effect on its device, or None
        when it takes effect at the next exposure (the camera measures that).

        An action with ``after_seq < 0`` is this actuator's *rest* state (what a position
        that never acted on has: no mask, the full frame, the original presets): the camera
        sends it when another position's action is on the device, and at the end."""
        return None

    def measures(self) -> Mapping[str, float]:
        """What the actuator measured over the run (e.g. against ground truth); {}."""
        return {}

    def presets_of(self, action: Action) -> tuple[str, ...]:
        """The presets ``action`` gave the device, for ``actions.csv`` (``action.presets``)."""
        return action.presets

    def close(self) -> None:
        """Release the devices :meth:`open` took. Called once, also after a failure."""

    # -- helpers ---------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> str:
        """The first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def action(self, record: DecisionRecord, **what: Any) -> Action:
        """An :class:`Action` of this actuator after ``record``, at its position."""
        r = record.result
        return Action(kind=self.name, after_seq=r.seq, t_decided=record.t_decided,
                      position=r.position, fast=record.fast, **what)


#: What a source's optional method lets an actuator do, in a user's words.
ABILITIES: Mapping[str, str] = {
    "set_roi": "read a region of its sensor", "frame_region": "read a region of its sensor",
    "set_channel_presets": "change its channel presets",
    "channel_presets": "change its channel presets",
    "available_channel_presets": "change its channel presets",
    "sensor_shape": "say its sensor's size",
}


def require(source: object, actuator: str, *methods: str) -> None:
    """Refuse a source that lacks one of ``methods`` (a ConfigError naming the source and,
    in words, what it cannot do)."""
    missing = [m for m in methods if not hasattr(source, m)]
    if missing:
        kind = type(source).__name__
        cannot = list(dict.fromkeys(ABILITIES.get(m, m) for m in missing))
        raise ConfigError(f"actuator {actuator!r} needs a source that can "
                          f"{' and '.join(cannot)}; {kind} cannot (use the synthetic source, "
                          "mm-demo or a Micro-Manager camera)")
