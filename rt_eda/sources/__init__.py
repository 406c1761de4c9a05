"""Image sources driven by the camera role (see :class:`Source` for the protocol).

Three sources, each built from a frozen settings dataclass derived from the validated
configuration (``from_config``; ``create`` for Python callers, through the configuration's
own checks) by :func:`make_source`:

* ``synthetic``: :mod:`.synthetic` (the source), ``_synthetic_settings``, ``_synthetic_scene``
  (filaments, images, the event schedule and ground truth), ``_synthetic_kernels`` (numba);
  with an acquisition plan :mod:`.synthetic_positions` (one independent field per position,
  a simulated stage);
* ``mm-demo`` / ``mmconfig:PATH``: :mod:`.micromanager` (the source: modes, snaps),
  ``_mm_settings``, ``_mm_device`` (loading and checking a configuration, presets,
  positions), ``_mm_sequence`` (sequence acquisition);
* ``replay:PATH``: :mod:`.replay` (the source), ``_replay_settings``, ``_replay_timing``
  (recorded times, the replay clock); the files are read by :mod:`rt_eda.core.imagefiles`;
  a run folder recorded at several positions: :mod:`.replay_positions`.

Every source waits for a timepoint on one pacing clock, ``_pacing`` (sleep, then a short spin
to the deadline, interruptible by the stop flag). With an acquisition plan the camera's
:mod:`.scheduler` chooses the position and the time of every stack, and the source
(a :class:`PositionedSource`) moves and acquires. ``_protocol`` holds :class:`Source`;
``_settings`` the pickling base every source shares.

What the actuators (:mod:`rt_eda.actuators`) ask of a source is optional: a sensor region
(``set_roi``, ``frame_region``), channel presets (``set_channel_presets``), the truth of
where the events are (``true_events``, synthetic only); ``_slm`` is rt-eda's pure-Python DMD
for the ``stimulate`` actuator, a pymmcore-plus unicore SLM device (it imports pymmcore-plus:
only the camera process loads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._protocol import PositionedSource, Source, StopFlag

if TYPE_CHECKING:
    from rt_eda.core.config import Config

__all__ = ["PositionedSource", "Source", "StopFlag", "make_source"]


def make_source(config: Config) -> Source:
    """The source named by ``camera.source``, built from the configuration (not opened).

    Raises
    ------
    ConfigError
        The source kind is not available in this version.
    """
    from rt_eda.core.config import SourceKind
    from rt_eda.core.errors import ConfigError

    spec = config.camera.source_spec
    if spec.kind is SourceKind.SYNTHETIC:
        from .synthetic import SyntheticSettings, SyntheticSource

        if config.camera.plan:
            from .synthetic_positions import SyntheticPositions

            return SyntheticPositions.from_config(config)
        return SyntheticSource(SyntheticSettings.from_config(config))
    if spec.kind in (SourceKind.MM_DEMO, SourceKind.MMCONFIG):
        from .micromanager import make_micromanager_source

        return make_micromanager_source(config)
    if spec.kind is SourceKind.REPLAY:
        from ._replay_settings import ReplaySettings
        from .replay import make_replay_source
        from .replay_positions import ReplayPositions, is_multi_position

        if spec.path is not None and is_multi_position(spec.path):
            return ReplayPositions(ReplaySettings.from_config(config))
        return make_replay_source(config)
    raise ConfigError(
        f"camera.source: {config.camera.source!r} is not a known source "
        "(synthetic, mm-demo, mmconfig:PATH, replay:PATH)"
    )
