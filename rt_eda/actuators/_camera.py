"""The camera process's side of actuation: apply every action at the right moment, time it,
record it (``actions.csv``), and measure the acquisition against the source's ground truth.

The camera role calls, on its one thread::

    act = CameraActuation(actuators, source, positions, save_folder)
    act.open()                                  # before READY: refusals exit 2
    loop:
        act.receive(action)                     # an Action from the interpreter
        act.prepare(position)                   # right before a timepoint of ``position``
        ... read the frames, publish with act.frame() ...
        act.published(seq, position, t_exp, frame, results)
        act.interval(command, t_exp, faster)    # an interval command's first exposure
    act.close(); act.statistics()

An action that acts on frames (a sensor region, channel presets) is applied by
:meth:`prepare` before the first timepoint of its position after it arrived, and its
decision -> actuation latency ends at that timepoint's first exposure. With several
positions each keeps its own last action: coming back to a position re-applies it when the
device holds another's (``reapplied``; not a new decision, so not timed again). An
:attr:`~rt_eda.actuators.Actuator.immediate` action (an SLM) is applied on arrival and timed
to the moment the device took it.

A device that refuses an action (a :class:`~rt_eda.core.errors.SourceError`) does not stop
the acquisition: the action is counted as failed, written to ``actions.csv`` with the
error, and logged (the first in full, then a count).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from rt_eda.core.errors import ConfigError, RtEdaError
from rt_eda.core.location_truth import LocationScore, TrueEvent
from rt_eda.core.messages import (
    ALL_POSITIONS,
    Action,
    ActionStatistics,
    Command,
    ResultsMessage,
    TrueEvents,
)
from rt_eda.core.queues import Channel
from rt_eda.core.regions import FrameRegion, bounding_box
from rt_eda.core.runfolder import ACTION_COLUMNS, ACTIONS_CSV
from rt_eda.core.stats import Reservoir

from ._base import Actuator

__all__ = ["ACTIONS_COLUMNS", "ACTIONS_CSV", "CameraActuation"]

log = logging.getLogger(__name__)

ACTIONS_COLUMNS: Final = ACTION_COLUMNS
_SLOW_APPLY_MS: Final = 50.0  # an apply this long holds the camera back: a warning, once


class _Kind:
    """One actuator's counts and latencies."""

    def __init__(self, actuator: Actuator | None) -> None:
        self.actuator = actuator
        self.count = 0
        self.applied = 0
        self.reapplied = 0
        self.failed = 0
        self.latency = Reservoir()  # actions on an event (decided while fast)
        self.release = Reservoir()  # back to rest (decided when the position went slow)
        self.apply_ms = Reservoir()
        self.desired: dict[int, Action] = {}
        self.fresh: set[int] = set()  # positions whose desired action was never applied
        self.held: Action | None = None


class CameraActuation:
    """See the module docstring. Not thread-safe: the camera's thread only."""

    def __init__(self, actuators: Sequence[Actuator], source: object, positions: int,
                 save: str | None) -> None:
        self._source = source
        self._positions = max(1, positions)
        self._kinds: dict[str, _Kind] = {"interval": _Kind(None)}
        for a in actuators:
            if a.name != "interval":
                self._kinds[a.name] = _Kind(a)
        self._pending: dict[int, list[tuple[Action, float, float]]] = {}
        self._path = Path(save) / ACTIONS_CSV if save else None
        self._file: io.TextIOWrapper | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._failures_logged = 0
        self._truth = getattr(source, "true_events", None)
        shape = getattr(source, "sensor_shape", None)
        self._full = FrameRegion.full(*shape) if shape is not None else None
        self._score = LocationScore()
        self._has_frame = hasattr(source, "frame_region")
        self._current: int | None = None  # the position of the timepoint being prepared
        self._slow_logged: set[str] = set()

    @property
    def active(self) -> bool:
        """Whether any actuator besides ``interval`` runs."""
        return len(self._kinds) > 1

    def open(self) -> None:
        """Open every actuator on the source (a refusal raises ConfigError: exit 2, as does
        any other exception, in one line: nothing has been acquired yet), and start
        ``actions.csv`` (its header, even for a run that never acts)."""
        for kind in self._kinds.values():
            if kind.actuator is None:
                continue
            try:
                kind.actuator.open(self._source)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"actuator {kind.actuator.name!r} could not open: "
                                  f"{_error_text(exc)}") from exc
        self._start_record()

    # -- the loop -------------------------------------------------------------------------
    def receive(self, action: Action) -> None:
        """An action from the interpreter."""
        kind = self._kinds.get(action.kind)
        if kind is None or kind.actuator is None:
            log.warning("camera: action of unknown kind %r ignored", action.kind)
            return
        kind.count += 1
        targets = (range(self._positions) if action.position == ALL_POSITIONS
                   else (action.position,))
        for p in targets:
            kind.desired[p] = action
            kind.fresh.add(p)
        here = 0 if self._positions == 1 else self._current
        if kind.actuator.immediate and here is not None and here in targets:
            # a device on its own clock, at the position under the objective: now, not at
            # the next timepoint (another position's waits for the stage to get there)
            self.prepare_kind(kind, here)

    def prepare(self, position: int) -> None:
        """Before a timepoint of ``position`` starts (before the stage moves there): apply
        what acts on its frames (a sensor region, presets); with a plan, each position's own
        last action (the device may hold another position's)."""
        for kind in self._kinds.values():
            if kind.actuator is not None and not kind.actuator.immediate:
                self.prepare_kind(kind, position)

    def arrived(self, position: int) -> None:
        """The stage is at ``position`` (its timepoint is due): apply what acts on the sample
        there (an SLM's mask), each position's own."""
        self._current = position
        for kind in self._kinds.values():
            if kind.actuator is not None and kind.actuator.immediate:
                self.prepare_kind(kind, position)

    def prepare_kind(self, kind: _Kind, position: int) -> None:
        """Apply ``kind``'s action for ``position`` unless the device already holds it."""
        if kind.actuator is None:
            return
        want = kind.desired.get(position)
        if want is None:
            if kind.held is None or kind.held.position in (ALL_POSITIONS, position):
                return
            # another position's action is on the device: back to this one's rest state
            want = Action(kind.actuator.name, -1, 0.0, position=position)
            kind.desired[position] = want
        if want is kind.held:
            return
        first = position in kind.fresh
        kind.fresh.discard(position)
        self._apply(kind, want, position, first=first)

    def frame(self) -> FrameRegion | None:
        """The sensor region the next timepoint is read from (None: the full frame)."""
        if not self._has_frame:
            return None
        region: FrameRegion = self._source.frame_region  # type: ignore[attr-defined]
        return None if region == self._full else region

    def published(self, seq: int, position: int, t_exposure: float,
                  frame: FrameRegion | None, results: Channel[ResultsMessage]) -> None:
        """A stack was published: close the latencies of what was applied before it, send
        its ground truth to the interpreter, score the region it was read from."""
        pending = self._pending.pop(position, None)
        if pending:
            for action, t_applied, apply_ms in pending:
                self._done(action, t_applied, t_exposure, apply_ms)
        if self._truth is None:
            return
        events = [TrueEvent(*e) for e in self._truth(t_exposure)]
        visible = [e for e in events if e.visible]
        if not visible:
            return
        results.put(TrueEvents(seq, position, tuple((e.y, e.x, e.sigma_px, e.intensity)
                                                    for e in visible)))
        if frame is not None and self._full is not None:
            self._score.add_roi(frame, visible, self._full)

    def interval(self, command: Command, t_exposure: float) -> None:
        """An interval command (the ``interval`` actuator) took effect at ``t_exposure``."""
        if command.after_seq < 0:
            return
        kind = self._kinds["interval"]
        kind.count += 1
        kind.applied += 1
        ms = (t_exposure - command.t_decided) * 1e3
        (kind.latency if command.fast else kind.release).add(ms)
        self._row(kind="interval", position=command.position, after_seq=command.after_seq,
                  fast=int(command.fast), t_decided=repr(command.t_decided), t_applied="",
                  t_actuated=repr(t_exposure), decision_to_actuation_ms=f"{ms:.3f}",
                  note=f"{command.interval_s:g} s: {command.reason}")

    # -- the end ---------------------------------------------------------------------------
    def close(self) -> None:
        """Put every device back at rest (no mask left shining on the sample, the full frame,
        the original presets), then close every actuator (each once, whatever the others do)
        and the record."""
        errors = []
        rested = []
        for kind in self._kinds.values():
            actuator = kind.actuator
            if actuator is None or kind.held is None or kind.held.after_seq < 0:
                continue
            try:
                actuator.apply(Action(actuator.name, -1, 0.0, position=kind.held.position),
                               self._source)
                rested.append(actuator.name)
            except Exception as exc:  # noqa: BLE001 - rest the others, then say what failed
                errors.append(f"{actuator.name} (back to rest): {_error_text(exc)}")
        if rested:
            log.info("camera: %s back to rest at the end", ", ".join(rested))
        for kind in self._kinds.values():
            if kind.actuator is not None:
                try:
                    kind.actuator.close()
                except Exception as exc:  # noqa: BLE001 - close the others, then say what failed
                    errors.append(f"{kind.actuator.name}: {exc}")
        if self._file is not None:
            self._file.close()
            self._file = None
        if errors:
            log.warning("camera: closing actuators: %s", "; ".join(errors))

    def statistics(self) -> tuple[ActionStatistics, ...]:
        """Each actuator's counts, latencies and measures."""
        return tuple(
            ActionStatistics(
                kind=name, count=k.count, applied=k.applied, reapplied=k.reapplied,
                failed=k.failed, decision_to_actuation_ms=k.latency.percentiles(),
                release_ms=k.release.percentiles(), apply_ms=k.apply_ms.percentiles(),
                measures=dict(k.actuator.measures()) if k.actuator is not None else {})
            for name, k in self._kinds.items())

    def roi_coverage(self) -> tuple[int, int, int]:
        """``(inside, total, stacks)`` of the event pixels of stacks read from a region."""
        return (self._score.roi_inside, self._score.roi_total, self._score.roi_stacks)

    # -- internals -------------------------------------------------------------------------
    def _apply(self, kind: _Kind, action: Action, position: int, *, first: bool) -> None:
        actuator = kind.actuator
        assert actuator is not None
        t0 = time.monotonic()
        try:
            t_effective = actuator.apply(action, self._source)
        except Exception as exc:  # noqa: BLE001 - a device's refusal or a plug-in's bug:
            # either way the acquisition goes on (counted, recorded, logged once)
            kind.failed += 1
            kind.held = None
            kind.desired.pop(position, None)
            self._failure(actuator.name, action, exc)
            return
        t1 = time.monotonic()
        apply_ms = (t1 - t0) * 1e3
        kind.apply_ms.add(apply_ms)
        kind.held = action
        if apply_ms > _SLOW_APPLY_MS and actuator.name not in self._slow_logged:
            self._slow_logged.add(actuator.name)  # the camera waited for it: say so, once
            log.warning("camera: actuator %r took %.0f ms to apply; the camera waits for it "
                        "between timepoints (the summary's actions.%s.apply_ms)",
                        actuator.name, apply_ms, actuator.name)
        if not first:
            kind.reapplied += 1
            return
        kind.applied += 1
        if t_effective is not None:
            self._done(action, t0, t_effective, apply_ms)
        else:
            self._pending.setdefault(position, []).append((action, t0, apply_ms))

    def _done(self, action: Action, t_applied: float, t_effective: float,
              apply_ms: float) -> None:
        kind = self._kinds[action.kind]
        if action.after_seq >= 0:
            ms = (t_effective - action.t_decided) * 1e3
            (kind.latency if action.fast else kind.release).add(ms)
        row = _action_row(action, t_applied, t_effective, apply_ms)
        actuator = kind.actuator
        if actuator is not None:  # what the device was given, in the actuator's words
            row["presets"] = " ".join(actuator.presets_of(action))
        self._row(**row)

    def _failure(self, name: str, action: Action, exc: BaseException) -> None:
        self._failures_logged += 1
        what = _error_text(exc)
        if self._failures_logged == 1:
            log.warning("camera: actuator %r failed (%s); the acquisition goes on, later "
                        "failures are counted", name, what)
            log.debug("actuator %r failed", name, exc_info=exc)
        row = _action_row(action, time.monotonic(), None, None)
        row["error"] = what
        self._row(**row)

    def _start_record(self) -> None:
        """Open ``actions.csv`` and write its header (without ``--save``: nothing)."""
        if self._path is None or self._csv is not None:
            return
        try:
            self._file = self._path.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            log.warning("camera: %s cannot be written (%s); actions are only counted",
                        self._path, exc)
            self._path = None
            return
        self._csv = csv.DictWriter(self._file, ACTIONS_COLUMNS, restval="")
        self._csv.writeheader()
        self._file.flush()

    def _row(self, **row: object) -> None:
        self._start_record()
        if self._csv is None or self._file is None:
            return
        try:
            self._csv.writerow(row)
            self._file.flush()
        except OSError as exc:  # the disk filled, the folder went: the counts still hold
            log.warning("camera: %s could not be written any more (%s); actions are only "
                        "counted", self._path, exc)
            self._path, self._csv = None, None


def _error_text(exc: BaseException) -> str:
    """One line: the device's own message, or a plug-in's exception with its type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, RtEdaError) else f"{type(exc).__name__}: {text}"


def _action_row(action: Action, t_applied: float, t_effective: float | None,
                apply_ms: float | None) -> dict[str, object]:
    f = action.frame
    box = bounding_box(action.regions)
    latency = ("" if t_effective is None or action.after_seq < 0
               else f"{(t_effective - action.t_decided) * 1e3:.3f}")
    return {
        "kind": action.kind, "position": action.position, "after_seq": action.after_seq,
        "fast": int(action.fast), "t_decided": repr(action.t_decided),
        "t_applied": repr(t_applied),
        "t_actuated": "" if t_effective is None else repr(t_effective),
        "decision_to_actuation_ms": latency,
        "apply_ms": "" if apply_ms is None else f"{apply_ms:.3f}",
        "frame_y": "" if f is None else f.y, "frame_x": "" if f is None else f.x,
        "frame_height": "" if f is None else f.height,
        "frame_width": "" if f is None else f.width,
        "regions": len(action.regions),
        "box_y0": "" if box is None else box[0], "box_x0": "" if box is None else box[1],
        "box_y1": "" if box is None else box[2], "box_x1": "" if box is None else box[3],
        "presets": " ".join(action.presets), "note": action.note,
    }
