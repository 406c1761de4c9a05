"""An actuator of your own: a bookmark line per event, for the lab notebook or another device.

Run it (from the checkout; any folder on ``PYTHONPATH`` works the same)::

    PYTHONPATH=examples rt-eda run --set "actuation.actuator_modules=['bookmark_actuator']" \\
        --actuator bookmark --set "actuation.options.bookmark.path='events.tsv'" --duration 60

    PYTHONPATH=examples rt-eda actuators --module bookmark_actuator     # lists it

Every part an actuator has is here (``docs/actuators.md``). ``decide`` runs in the
interpreter process for every decision: it returns an :class:`~rt_eda.actuators.Action` when
an event starts at a position (the interpreter's state turned fast) and where it is (the
strongest region). ``apply`` runs in the camera process, which owns the devices: it appends
one line per event to ``path`` (tab-separated: the monotonic time it was written, the stage
position, the stack, the event's centre in sensor pixels, the score) and returns that time,
so rt-eda records it in ``actions.csv`` and reports its decision -> actuation latency. An
action of ``after_seq`` < 0 asks for the actuator's rest state (the camera sends it when the
stage reaches a position this actuator has not acted on, and at the end, so that no mask is
left shining and no ROI set): a bookmark has none, and writes nothing. Swap
the file for a trigger line (a DAQ output, a TTL to a stimulator) and the structure stays.

Options (``[actuation.options.bookmark]``):

path
    The file the lines go to (required), relative to the folder ``rt-eda`` runs in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from rt_eda.actuators import Action, Actuator, ActuatorSettings, DecisionRecord
from rt_eda.core.errors import ConfigError

__all__ = ["Bookmark"]


class Bookmark(Actuator):
    """A line per event (time, position, stack, centre, score) in a file of your choice."""

    name: ClassVar[str] = "bookmark"
    immediate: ClassVar[bool] = True  # no camera frame involved: done as soon as it arrives
    options_help: ClassVar[Mapping[str, str]] = {"path": "the file the lines go to (required)"}

    def __init__(self, settings: ActuatorSettings) -> None:
        super().__init__(settings)
        path = settings.option("path", "")
        if not isinstance(path, str) or not path:
            raise ConfigError("actuation.options.bookmark.path must name the file the "
                              "bookmarks go to, e.g. 'events.tsv'")
        self.path = Path(path)
        self._fast: dict[int, bool] = {}
        self.lines = 0

    def decide(self, record: DecisionRecord) -> Action | None:
        p = record.result.position
        started = record.fast and not self._fast.get(p, False)
        self._fast[p] = record.fast
        if not started:
            return None
        regions = record.result.regions[:1]  # the strongest (workers sort them)
        return self.action(record, regions=regions, note="event started")

    def open(self, source: object) -> None:
        try:
            with self.path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigError(f"actuation.options.bookmark.path: {self.path} cannot be "
                              f"written: {exc.strerror or exc}") from exc

    def apply(self, action: Action, source: object) -> float | None:
        if action.after_seq < 0:
            return None  # the rest state (another position's turn, the end): no line
        where = (f"{action.regions[0].y:.1f}\t{action.regions[0].x:.1f}\t"
                 f"{action.regions[0].score:.3f}" if action.regions else "\t\t")
        with self.path.open("a", encoding="utf-8") as f:
            t = time.monotonic()
            f.write(f"{t:.6f}\t{action.position}\t{action.after_seq}\t{where}\n")
        self.lines += 1
        return t

    def measures(self) -> Mapping[str, float]:
        return {"lines": self.lines}
