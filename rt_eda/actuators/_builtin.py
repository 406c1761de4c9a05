"""The built-in actuators: ``interval``, ``roi``, ``channel`` and ``stimulate``.

Each keys on the interpreter's fast/slow state at the decision's position (an event is
being imaged fast, or not) and on the worker's event regions (sensor pixels):

- ``interval``: the interpreter's own interval change (always on; its actions are the
  interpreter's commands, applied by the camera's timing, and recorded like the others);
- ``roi``: while fast, the sensor reads only a region around the events, with a margin;
  the full frame again when slow;
- ``channel``: while fast, other channel presets (a second marker during events); the
  original ones when slow;
- ``stimulate``: while fast, a binary mask of the event regions on an SLM/DMD, through
  pymmcore-plus (rt-eda's pure-Python DMD when the microscope names none); a blank mask
  when slow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from rt_eda.core.errors import ConfigError, SourceError
from rt_eda.core.location_truth import LocationScore, TrueEvent
from rt_eda.core.messages import Action, DecisionRecord
from rt_eda.core.regions import FrameRegion, bounding_box, paint_discs, paint_regions

from ._base import Actuator, ActuatorSettings, require

__all__ = ["ChannelActuator", "IntervalActuator", "RoiActuator", "StimulateActuator"]

log = logging.getLogger(__name__)


class IntervalActuator(Actuator):
    """Image fast while an event lasts, slowly otherwise (the interpreter's interval; always on).

    Its actions are the interpreter's own commands, applied by the camera's timing.
    """

    name: ClassVar[str] = "interval"  # no options: interpreter.fast_interval, slow_interval


class RoiActuator(Actuator):
    """While fast, read only a sensor region around the events (with a margin); full frame slow."""

    name: ClassVar[str] = "roi"
    needs_locations: ClassVar[bool] = True
    options_help: ClassVar[Mapping[str, str]] = {
        "margin_px": "pixels added around the events' bounding box on every side (32)",
        "min_size_px": "the smallest region side (96)",
        "align_px": "region edges on multiples of this (16; cameras round ROIs)",
    }

    def __init__(self, settings: ActuatorSettings) -> None:
        super().__init__(settings)
        self.margin = int(settings.number("margin_px", 32, integer=True))
        self.min_size = int(settings.number("min_size_px", 96, low=1, integer=True))
        self.align = int(settings.number("align_px", 16, low=1, integer=True))
        self._frames: dict[int, FrameRegion] = {}

    def region_for(self, box: tuple[int, int, int, int]) -> FrameRegion:
        """The sensor region read for events inside ``box`` ``(y0, x0, y1, x1)``: grown by
        the margin, to at least the minimum size, aligned, inside the sensor."""
        h, w = self.settings.sensor_shape
        y0, y1 = self._axis(box[0], box[2], h)
        x0, x1 = self._axis(box[1], box[3], w)
        return FrameRegion(y0, x0, y1 - y0, x1 - x0)

    def _axis(self, lo: int, hi: int, size: int) -> tuple[int, int]:
        lo, hi = lo - self.margin, hi + self.margin
        if hi - lo < self.min_size:
            centre = (lo + hi) / 2
            lo, hi = math.floor(centre - self.min_size / 2), math.ceil(centre + self.min_size / 2)
        a = self.align
        lo, hi = (lo // a) * a, -(-hi // a) * a
        if hi - lo >= size:
            return 0, size
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > size:
            lo, hi = lo - (hi - size), size
        return max(0, lo), min(size, hi)

    def decide(self, record: DecisionRecord) -> Action | None:
        p = record.result.position
        current = self._frames.get(p)
        if not record.fast:
            if current is None:
                return None
            del self._frames[p]
            return self.action(record, note="full frame")
        box = bounding_box(record.result.regions)
        if box is None:
            return None  # fast, nothing located (yet): keep what is read now
        if current is not None and current.contains(*box) and _inner_margin(current, box) >= (
                self.margin // 2):
            return None  # the events are still well inside: no change (no ROI churn)
        want = self.region_for(box)
        if want == current:
            return None
        self._frames[p] = want
        return self.action(record, frame=want, regions=record.result.regions,
                           note=want.describe())

    def open(self, source: object) -> None:
        require(source, self.name, "set_roi", "frame_region")

    def apply(self, action: Action, source: object) -> float | None:
        source.set_roi(action.frame)  # type: ignore[attr-defined]
        return None


def _inner_margin(frame: FrameRegion, box: tuple[int, int, int, int]) -> int:
    """The smallest distance from ``box`` to the edge of ``frame`` (the sensor's own edges
    count as far: a region cannot grow past them)."""
    y0, x0, y1, x1 = box
    return min(y0 - frame.y, x0 - frame.x, frame.y1 - y1, frame.x1 - x1)


class ChannelActuator(Actuator):
    """While fast, image other channel presets (a second marker during events); original slow."""

    name: ClassVar[str] = "channel"
    options_help: ClassVar[Mapping[str, str]] = {
        "fast_presets": "the preset of each acquisition channel while fast, '' keeps it "
                        "(required; examples/second_marker.yaml)",
    }

    def __init__(self, settings: ActuatorSettings) -> None:
        super().__init__(settings)
        self.fast_presets = settings.strings("fast_presets")
        self._fast: dict[int, bool] = {}
        self._original: tuple[str, ...] = ()
        self._fast_full: tuple[str, ...] = ()

    def decide(self, record: DecisionRecord) -> Action | None:
        p = record.result.position
        if self._fast.get(p, False) == record.fast:
            return None
        self._fast[p] = record.fast
        return self.action(record, presets=("fast",) if record.fast else ("slow",),
                           note="fast presets" if record.fast else "original presets")

    def open(self, source: object) -> None:
        require(source, self.name, "set_channel_presets", "channel_presets",
                "available_channel_presets")
        original = tuple(source.channel_presets)  # type: ignore[attr-defined]
        available = tuple(source.available_channel_presets)  # type: ignore[attr-defined]
        wanted = self.fast_presets
        if not wanted:
            example = ["" for _ in original]
            example[-1] = next((a for a in available if a not in original), available[0])
            raise ConfigError(
                "actuator 'channel' needs actuation.options.channel.fast_presets: the preset "
                f"of each of the {len(original)} channel(s) while fast, '' to keep one, e.g. "
                f"{example!r} (this source has {', '.join(map(repr, available))}; "
                "examples/second_marker.yaml)")
        if len(wanted) != len(original):
            raise ConfigError(
                f"actuation.options.channel.fast_presets names {len(wanted)} preset(s); the "
                f"acquisition has {len(original)} channel(s) ({', '.join(original)})")
        unknown = [w for w in wanted if w and w not in available]
        if unknown:
            raise ConfigError(
                f"actuation.options.channel.fast_presets: {', '.join(map(repr, unknown))} "
                f"is not a preset of this source; it has {', '.join(map(repr, available))}")
        self._original = original
        self._fast_full = tuple(w or o for w, o in zip(wanted, original, strict=True))

    def apply(self, action: Action, source: object) -> float | None:
        source.set_channel_presets(self.presets_of(action))  # type: ignore[attr-defined]
        return None

    def presets_of(self, action: Action) -> tuple[str, ...]:
        return self._fast_full if action.presets == ("fast",) else self._original


class StimulateActuator(Actuator):
    """While fast, show a mask of the event regions on an SLM/DMD; a blank mask when slow."""

    name: ClassVar[str] = "stimulate"
    immediate: ClassVar[bool] = True
    needs_locations: ClassVar[bool] = True
    options_help: ClassVar[Mapping[str, str]] = {
        "device": "the SLM device label in the Micro-Manager configuration ('' = rt-eda's "
                  "pure-Python DMD, loaded through pymmcore-plus's device layer)",
        "shape": "'disc' (default): each region as the disc of its area around its centre; "
                 "'mask': the region's own pixels",
        "dilate_px": "pixels added around every event region in the mask (0)",
        "min_period_s": "at most one new mask per position per this many seconds (0)",
    }

    def __init__(self, settings: ActuatorSettings) -> None:
        super().__init__(settings)
        self.dilate = int(settings.number("dilate_px", 0, integer=True))
        shape = settings.option("shape", "disc")
        if shape not in ("disc", "mask"):
            raise ConfigError(f"actuation.options.stimulate.shape must be 'disc' or 'mask', "
                              f"got {shape!r}")
        self.shape = shape
        self.min_period_s = settings.number("min_period_s", 0.0)
        device = settings.option("device", "")
        if not isinstance(device, str):
            raise ConfigError(f"actuation.options.stimulate.device must be a device label, "
                              f"got {device!r}")
        self.device = device
        self._last: dict[int, float] = {}
        self._on: dict[int, bool] = {}
        self._slm: Any = None
        self._full: FrameRegion | None = None
        self._score = LocationScore()
        self._shown = 0
        self._shown_blank = 0

    def decide(self, record: DecisionRecord) -> Action | None:
        p = record.result.position
        if not record.fast:
            if not self._on.get(p, False):
                return None
            self._on[p] = False
            return self.action(record, note="blank")
        regions = record.result.regions
        if not regions:
            return None
        last = self._last.get(p, -math.inf)
        if record.t_decided - last < self.min_period_s:
            return None
        self._last[p] = record.t_decided
        self._on[p] = True
        return self.action(record, regions=regions, note=f"{len(regions)} region(s)")

    def open(self, source: object) -> None:
        from rt_eda.sources._slm import open_slm

        shape = getattr(source, "sensor_shape", None)
        if shape is None:  # a source that cannot read regions: its stacks' size is the sensor
            spec = getattr(source, "spec", None)
            shape = (spec.height, spec.width) if spec is not None else None
        if shape is None:
            require(source, self.name, "sensor_shape")
            raise ConfigError(f"actuator {self.name!r}: the source's sensor size is unknown")
        h, w = shape
        self._full = FrameRegion.full(h, w)
        core = None
        if self.device:  # an SLM of the microscope's own configuration: the camera's core
            core = getattr(source, "core", None) if hasattr(source, "slm_core") else None
            if core is None:
                raise ConfigError(
                    f"actuation.options.stimulate.device {self.device!r}: "
                    f"{type(source).__name__} has no Micro-Manager configuration to hold an "
                    "SLM; leave it '' for rt-eda's own DMD, or use mmconfig:PATH")
            slms = _loaded_slms(core)
            if self.device not in slms:
                raise ConfigError(
                    f"actuation.options.stimulate.device {self.device!r} is not an SLM of this "
                    f"Micro-Manager configuration (its SLMs: {', '.join(slms) or 'none'}); "
                    "leave it '' for rt-eda's own DMD")
        elif hasattr(source, "slm_core"):
            core = source.slm_core()  # rt-eda's DMD in the camera's own core
        try:
            self._slm = open_slm((h, w), core, device=self.device)
        except SourceError as exc:
            raise ConfigError(f"actuator 'stimulate': {exc}") from exc

    def apply(self, action: Action, source: object) -> float | None:
        full = self._full
        if full is None or self._slm is None:
            raise SourceError("actuator 'stimulate' applied before open()")
        if self.shape == "disc":
            mask = paint_discs(action.regions, full, grow=self.dilate)
        else:
            mask = paint_regions(action.regions, full, dilate=self.dilate)
        t_shown = float(self._slm.show(mask))
        self._shown += 1
        if not action.regions:
            self._shown_blank += 1
            return t_shown
        truth = getattr(source, "true_events", None)
        if callable(truth):  # the truth where the mask is shown: its position's
            events = [TrueEvent(*e) for e in truth(t_shown)]
            self._score.add_mask(mask, full, events)
        return t_shown

    def measures(self) -> Mapping[str, float]:
        s = self._score.summary()
        out: dict[str, float] = {"masks_shown": self._shown, "blank_masks": self._shown_blank,
                                 "masks_scored": s["masks_scored"]}
        if s["mask_precision"] is not None:
            out["mask_precision"] = s["mask_precision"]
        if s["mask_recall"] is not None:
            out["mask_recall"] = s["mask_recall"]
        return out

    def close(self) -> None:  # the camera has shown the blank mask before (its rest state)
        if self._slm is not None:
            try:
                self._slm.close()
            finally:
                self._slm = None


def _loaded_slms(core: object) -> list[str]:
    """Labels of the SLM devices a pymmcore-plus core has loaded."""
    try:
        from pymmcore_plus import DeviceType

        return list(core.getLoadedDevicesOfType(DeviceType.SLM))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a core that cannot say has none to offer
        return []
