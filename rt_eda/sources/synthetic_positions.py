"""The synthetic source over the positions of an acquisition plan: one field per position.

Each position of the plan is an independent synthetic field (:class:`SyntheticSource`):
its own filaments, noise and event schedule, seeded from ``camera.synthetic.seed`` and the
position (position 0 uses the seed itself, so it shows the field a run without a plan
shows), hence its own ground truth. Every field runs on one acquisition clock (started
together), so an event scheduled at 12 s at position 2 happens 12 s into the run whether or
not the stage is there to see it, as on a microscope.

The stage is simulated: a move between two positions takes ``camera.synthetic.stage_move_ms``
(a real wait of the camera process, interruptible by the stop), and a stack holds the stage
for its frames' exposures (``camera.exposure_ms`` each). The plan's channels choose which of
the synthetic channel presets (``structure``, ``marker``, ``marker2``) a stack holds; its z
plan, how many z-slices.

Actuation is the camera's, so it is the same at every position: an ROI
(:meth:`~SyntheticPositions.set_roi`) and channel presets
(:meth:`~SyntheticPositions.set_channel_presets`) go to every field, each from its own next
timepoint; :meth:`~SyntheticPositions.true_events` answers for the field under the stage.

Satisfies :class:`~rt_eda.sources.PositionedSource`; the camera's scheduler
(:mod:`rt_eda.sources.scheduler`) drives it. One thread only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import SourceError
from rt_eda.core.location_truth import TrueEvent
from rt_eda.core.plan import AcquisitionPlan, load_plan
from rt_eda.core.regions import FrameRegion
from rt_eda.shm import StackSpec

from ._pacing import wait_until
from ._protocol import StopFlag
from ._synthetic_settings import CHANNEL_PRESETS
from .synthetic import SyntheticSettings, SyntheticSource

__all__ = ["SyntheticPositions", "field_seed"]

log = logging.getLogger(__name__)


def field_seed(seed: int, position: int) -> int:
    """The seed of ``position``'s field: ``seed`` itself for position 0, else one drawn
    from ``(seed, position)`` (independent fields, the same for the same plan and seed)."""
    if position == 0:
        return seed
    return int(np.random.SeedSequence([seed, position]).generate_state(1, np.uint64)[0] >> 1)


class SyntheticPositions:
    """One :class:`SyntheticSource` per plan position behind a simulated stage.

    Parameters
    ----------
    settings
        The fields' settings (each field gets its own seed, :func:`field_seed`).
    names
        One name per position.
    move_s
        Seconds a simulated move between two positions takes.
    """

    def __init__(self, settings: SyntheticSettings, names: tuple[str, ...], move_s: float
                 ) -> None:
        if not names:
            raise ValueError("a plan has at least one position")
        self._settings = settings
        self._names = names
        self._move_s = max(0.0, move_s)
        self._fields = [SyntheticSource(dataclasses.replace(settings,
                                                            seed=field_seed(settings.seed, p)))
                        for p in range(len(names))]
        self._current = 0
        self._moves = 0

    def __reduce__(self) -> tuple[object, tuple[SyntheticSettings, tuple[str, ...], float]]:
        return (type(self), (self._settings, self._names, self._move_s))

    @classmethod
    def from_config(cls, config: Config, plan: AcquisitionPlan | None = None
                    ) -> SyntheticPositions:
        """The source a configuration with ``camera.plan`` gives (the plan is checked
        against the synthetic source when the configuration loads)."""
        plan = plan if plan is not None else load_plan(config.camera.plan)
        settings = SyntheticSettings.from_config(config)
        changes: dict[str, object] = {}
        if plan.channels:
            changes["channels"] = tuple(CHANNEL_PRESETS.index(c) for c in plan.channel_names)
        if plan.z:
            changes["z_slices"] = len(plan.z)
        if changes:
            settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
        names = tuple(p.name for p in plan.positions)
        return cls(settings, names, config.camera.synthetic.stage_move_ms / 1000.0)

    # -- the plan ------------------------------------------------------------------------
    @property
    def position_names(self) -> tuple[str, ...]:
        """One name per position."""
        return self._names

    @property
    def fields(self) -> tuple[SyntheticSource, ...]:
        """The positions' fields (for tests and ground truth)."""
        return tuple(self._fields)

    @property
    def spec(self) -> StackSpec:
        """The shape of one stack (every position's)."""
        return self._settings.spec

    @property
    def stack_s(self) -> float:
        """One stack's exposures: frames x ``exposure_s``."""
        return self._settings.spec.frames * self._settings.exposure_s

    def move_to(self, position: int, stop: StopFlag) -> float:
        """Simulate the move (a wait of ``stage_move_ms``, ended early by ``stop``); the
        seconds it took.

        Raises
        ------
        SourceError
            ``position`` is not one of the plan's.
        """
        if not 0 <= position < len(self._fields):
            raise SourceError(f"synthetic source: position {position} is not one of the "
                              f"plan's {len(self._fields)}")
        t = time.monotonic()
        if position != self._current and self._move_s > 0:
            wait_until(t + self._move_s, stop)
        if position != self._current:
            self._moves += 1
        self._current = position
        return time.monotonic() - t

    def move_estimate(self, src: int | None, dst: int) -> float:
        """``stage_move_ms`` (0 when the stage is there already)."""
        return 0.0 if src == dst else self._move_s

    def event_windows(self, position: int, t_end: float,
                      min_intensity: float = 0.0) -> list[tuple[float, float]]:
        """Position ``position``'s ground truth (see :meth:`SyntheticSource.event_windows`)."""
        return self._fields[position].event_windows(t_end, min_intensity)

    # -- actuation: the camera's, the same at every position ---------------------------
    @property
    def sensor_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the full frame (every position's)."""
        return self._fields[0].sensor_shape

    @property
    def frame_region(self) -> FrameRegion:
        """The region the current position's next timepoint is read from (see
        :attr:`SyntheticSource.frame_region`)."""
        return self._fields[self._current].frame_region

    @property
    def channel_presets(self) -> tuple[str, ...]:
        """The preset each channel images at the current position's next timepoint."""
        return self._fields[self._current].channel_presets

    @property
    def available_channel_presets(self) -> tuple[str, ...]:
        """Every preset a channel can image."""
        return self._fields[0].available_channel_presets

    def set_roi(self, region: FrameRegion | None) -> None:
        """Read only ``region`` of the sensor at every position, each from its next timepoint
        (see :meth:`SyntheticSource.set_roi`).

        Raises
        ------
        SourceError
            ``region`` is not inside the sensor (no field is changed).
        """
        for f in self._fields:  # the fields share the sensor: the first refuses for all
            f.set_roi(region)

    def set_channel_presets(self, presets: Sequence[str]) -> None:
        """Image the channels with ``presets`` at every position, each from its next
        timepoint (see :meth:`SyntheticSource.set_channel_presets`).

        Raises
        ------
        SourceError
            Wrong count or unknown preset (no field is changed).
        """
        names = tuple(presets)
        for f in self._fields:
            f.set_channel_presets(names)

    def true_events(self, t_exposure: float, position: int | None = None
                    ) -> tuple[TrueEvent, ...]:
        """The events of ``position``'s field (None: the current position's) active at
        ``t_exposure`` (monotonic; see :meth:`SyntheticSource.true_events`).

        Raises
        ------
        SourceError
            The acquisition was never started, or ``position`` is not one of the plan's.
        """
        p = self._current if position is None else position
        if not 0 <= p < len(self._fields):
            raise SourceError(f"synthetic source: position {p} is not one of the "
                              f"plan's {len(self._fields)}")
        return self._fields[p].true_events(t_exposure)

    # -- the Source protocol, for the current position ---------------------------------
    def open(self) -> StackSpec:
        """Open every field (renders each one's images: about 0.1 s per 512 x 512 field)."""
        t = time.perf_counter()
        for f in self._fields:
            f.open()
        log.info("synthetic source: %d positions (fields seeded from %d), stage move %.4g "
                 "ms, %.2f s to prepare", len(self._fields), self._settings.seed,
                 self._move_s * 1e3, time.perf_counter() - t)
        return self.spec

    def start(self, interval_s: float) -> None:
        """Start every field's clock at one moment (``interval_s`` is the current field's;
        the scheduler starts a plan free-running, 0)."""
        t0 = time.monotonic()
        for f in self._fields:
            f.start(interval_s, t0=t0)

    def set_interval(self, interval_s: float) -> None:
        """The current field's interval (the scheduler keeps it 0: its own timing)."""
        self._fields[self._current].set_interval(interval_s)

    def next_timepoint(self, stop: StopFlag) -> float | None:
        """The current position's next timepoint (free-run: now)."""
        return self._fields[self._current].next_timepoint(stop)

    def set_sequence(self, seq: int) -> None:
        """The stack's sequence number, stamped with ``verify``."""
        self._fields[self._current].set_sequence(seq)

    def frame_order(self) -> Iterator[tuple[int, int]]:
        """Channel-major, as every field's."""
        return self._fields[0].frame_order()

    def read_frame(self, c: int, z: int, out: np.ndarray) -> float:
        """Frame (c, z) of the current position's timepoint (see
        :meth:`SyntheticSource.read_frame`)."""
        return self._fields[self._current].read_frame(c, z, out)

    def stop(self) -> None:
        """Stop every field."""
        for f in self._fields:
            f.stop()

    def close(self) -> None:
        """Close every field."""
        for f in self._fields:
            f.close()

    def statistics(self) -> dict[str, float]:
        """Every field's counters added up, and the simulated moves."""
        out: dict[str, float] = {}
        for f in self._fields:
            for key, value in f.statistics().items():
                if key.endswith("_max"):
                    out[key] = max(out.get(key, 0.0), value)
                elif key.endswith("_mean"):
                    continue
                else:
                    out[key] = out.get(key, 0.0) + value
        out["positions"] = len(self._fields)
        out["stage_moves"] = self._moves
        return out
