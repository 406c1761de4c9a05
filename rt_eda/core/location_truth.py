"""Event locations and actions measured against ground truth: the ``locations`` section of
the run summary.

Where the source knows where each event is (the synthetic source's schedule: a focus of
``focus_sigma_px`` at ``(y, x)`` whose intensity rises and falls), three questions:

* **Location error**: how far is each detected region's centre from the event it found?
  Regions are matched to the events visible at the stack's exposure, nearest first, one
  region per event, within ``gate_px``; a region with no event within the gate is a
  *false region*, an event with no region a *missed event*. ``error_px`` is the distance
  of each match (p50, p99).
* **ROI coverage**: of the true event pixels of every stack read from a region of the
  sensor (not the full frame), the fraction inside that region.
* **Stimulation mask**: of every mask shown on the SLM, its pixels that are true event
  pixels at that moment (*precision*) and the true event pixels it covers (*recall*), added
  up over every mask shown while an event was visible.

The *true region* of an event is its core, the pixels where its focus is at least half its
peak (:data:`TRUE_CORE_FRACTION`: ``r <= sigma sqrt(2 ln 2)``, 3.5 px for the default
sigma of 3 px), while its intensity is at least
:data:`~rt_eda.core.outcome.VISIBLE_INTENSITY`: exactly what the demo model is trained to
mark (``rt_eda.training.demo_model``), so a perfect detector scores 1.0. Coordinates are
sensor pixels (:mod:`rt_eda.core.regions`). numpy only; :class:`LocationScore` keeps
constant memory (percentiles through :class:`~rt_eda.core.stats.Reservoir`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, NamedTuple, TypedDict

import numpy as np

from rt_eda.core.outcome import VISIBLE_INTENSITY
from rt_eda.core.regions import EventRegion, FrameRegion, paint_disc
from rt_eda.core.stats import Reservoir

__all__ = [
    "DEFAULT_GATE_PX",
    "TRUE_CORE_FRACTION",
    "LocationScore",
    "LocationsSummary",
    "Overlap",
    "TrueEvent",
    "match_locations",
    "mask_overlap",
    "roi_coverage",
    "true_region",
]

TRUE_CORE_FRACTION: Final = 0.5
"""A pixel belongs to an event's true region where its focus is at least this fraction of
the focus' peak."""

DEFAULT_GATE_PX: Final = 20.0
"""A region further than this from every visible event is a false region."""


class TrueEvent(NamedTuple):
    """One event as the source knows it at a moment: centre (sensor pixels), focus sigma
    (px) and intensity (0..1 of its peak)."""

    y: float
    x: float
    sigma_px: float
    intensity: float

    @property
    def visible(self) -> bool:
        """Whether it counts (intensity at least VISIBLE_INTENSITY)."""
        return self.intensity >= VISIBLE_INTENSITY

    @property
    def core_radius_px(self) -> float:
        """Radius of its true region: ``sigma sqrt(-2 ln TRUE_CORE_FRACTION)``."""
        return self.sigma_px * math.sqrt(-2.0 * math.log(TRUE_CORE_FRACTION))


def true_region(events: Sequence[TrueEvent], window: FrameRegion) -> np.ndarray:
    """The true event pixels of ``window`` of the sensor: a new boolean image of
    ``window.shape`` (pixel ``(0, 0)`` is sensor pixel ``(window.y, window.x)``); the union
    of every visible event's core."""
    out = np.zeros(window.shape, bool)
    for e in events:
        if e.visible:
            paint_disc(out, window, e.y, e.x, e.core_radius_px)
    return out


class Match(NamedTuple):
    """The regions of one stack matched to its visible events."""

    errors_px: tuple[float, ...]
    false_regions: int
    missed_events: int


def match_locations(regions: Sequence[EventRegion], events: Sequence[TrueEvent], *,
                    gate_px: float = DEFAULT_GATE_PX) -> Match:
    """Match regions to the visible events, nearest pairs first, one to one, within
    ``gate_px``; the distances of the matches and what is left on either side."""
    visible = [e for e in events if e.visible]
    pairs = sorted(
        (math.hypot(r.y - e.y, r.x - e.x), i, j)
        for i, r in enumerate(regions) for j, e in enumerate(visible))
    used_r: set[int] = set()
    used_e: set[int] = set()
    errors = []
    for d, i, j in pairs:
        if d > gate_px:
            break
        if i in used_r or j in used_e:
            continue
        used_r.add(i)
        used_e.add(j)
        errors.append(d)
    return Match(tuple(errors), len(regions) - len(used_r), len(visible) - len(used_e))


def roi_coverage(roi: FrameRegion, truth: np.ndarray, truth_window: FrameRegion
                 ) -> tuple[int, int]:
    """``(inside, total)``: true event pixels of ``truth`` (an image of ``truth_window`` of
    the sensor, normally the full frame) that lie inside ``roi``, and all of them."""
    total = int(np.count_nonzero(truth))
    if total == 0:
        return 0, 0
    y0, y1 = max(roi.y, truth_window.y), min(roi.y1, truth_window.y1)
    x0, x1 = max(roi.x, truth_window.x), min(roi.x1, truth_window.x1)
    if y1 <= y0 or x1 <= x0:
        return 0, total
    inside = truth[y0 - truth_window.y : y1 - truth_window.y,
                   x0 - truth_window.x : x1 - truth_window.x]
    return int(np.count_nonzero(inside)), total


class Overlap(NamedTuple):
    """Pixels of a mask against the truth: true positives, false positives, false
    negatives."""

    tp: int
    fp: int
    fn: int


def mask_overlap(mask: np.ndarray, truth: np.ndarray) -> Overlap:
    """Compare a boolean ``mask`` with the boolean ``truth`` of the same shape."""
    if mask.shape != truth.shape:
        raise ValueError(f"mask {mask.shape} and truth {truth.shape} differ in shape")
    m = np.asarray(mask, bool)
    t = np.asarray(truth, bool)
    tp = int(np.count_nonzero(m & t))
    return Overlap(tp, int(np.count_nonzero(m)) - tp, int(np.count_nonzero(t)) - tp)


class ErrorSummary(TypedDict):
    """Location error (px)."""

    p50: float
    p99: float


class LocationsSummary(TypedDict):
    """The ``locations`` section of the run summary (None: not measured in this run)."""

    error_px: ErrorSummary
    located: int
    false_regions: int
    missed_events: int
    roi_coverage: float | None
    roi_stacks: int
    mask_precision: float | None
    mask_recall: float | None
    masks_scored: int


class LocationScore:
    """Adds up the three measures of a run (see the module docstring); not thread-safe."""

    def __init__(self, gate_px: float = DEFAULT_GATE_PX) -> None:
        self.gate_px = gate_px
        self._errors = Reservoir()
        self.false_regions = 0
        self.missed_events = 0
        self.roi_inside = 0
        self.roi_total = 0
        self.roi_stacks = 0
        self.mask = Overlap(0, 0, 0)
        self.masks = 0

    def add_locations(self, regions: Sequence[EventRegion], events: Sequence[TrueEvent]
                      ) -> Match:
        """Score one analysed stack's regions against the events visible at its exposure."""
        m = match_locations(regions, events, gate_px=self.gate_px)
        for d in m.errors_px:
            self._errors.add(d)
        self.false_regions += m.false_regions
        self.missed_events += m.missed_events
        return m

    def add_roi(self, roi: FrameRegion, events: Sequence[TrueEvent], full: FrameRegion
                ) -> tuple[int, int]:
        """Score one stack read from ``roi`` (skipped when it is the ``full`` frame)."""
        if roi == full:
            return 0, 0
        inside, total = roi_coverage(roi, true_region(events, full), full)
        self.roi_stacks += 1
        self.roi_inside += inside
        self.roi_total += total
        return inside, total

    def add_mask(self, mask: np.ndarray, window: FrameRegion, events: Sequence[TrueEvent]
                 ) -> Overlap | None:
        """Score one mask shown on the SLM (an image of ``window`` of the sensor) against
        the events visible then; None (not scored) when none is."""
        if not any(e.visible for e in events):
            return None
        o = mask_overlap(mask, true_region(events, window))
        self.mask = Overlap(self.mask.tp + o.tp, self.mask.fp + o.fp, self.mask.fn + o.fn)
        self.masks += 1
        return o

    def summary(self) -> LocationsSummary:
        """The ``locations`` section (fractions over every pixel scored)."""
        p = self._errors.percentiles()
        tp, fp, fn = self.mask
        return LocationsSummary(
            error_px=ErrorSummary(p50=p.p50, p99=p.p99),
            located=p.count,
            false_regions=self.false_regions,
            missed_events=self.missed_events,
            roi_coverage=self.roi_inside / self.roi_total if self.roi_total else None,
            roi_stacks=self.roi_stacks,
            mask_precision=tp / (tp + fp) if self.masks and tp + fp else None,
            mask_recall=tp / (tp + fn) if self.masks and tp + fn else None,
            masks_scored=self.masks,
        )
