"""Image sources driven by the camera role (see :class:`Source` for the protocol)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._protocol import Source, StopFlag

if TYPE_CHECKING:
    from rt_eda.core.config import Config

__all__ = ["Source", "StopFlag", "make_source"]


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

        syn = config.camera.synthetic
        settings = SyntheticSettings(
            height=syn.height,
            width=syn.width,
            z_slices=syn.z_slices,
            dtype=syn.dtype,
            seed=syn.seed,
            event_every_s=syn.event_every_s,
            event_duration_s=syn.event_duration_s,
            exposure_s=config.camera.exposure_ms / 1000.0,
            verify=syn.verify or config.run.verify,
        )
        return SyntheticSource(settings)
    if spec.kind in (SourceKind.MM_DEMO, SourceKind.MMCONFIG):
        from .micromanager import make_micromanager_source

        return make_micromanager_source(config)
    if spec.kind is SourceKind.REPLAY:
        from .replay import make_replay_source

        return make_replay_source(config)
    raise ConfigError(
        f"camera.source: {config.camera.source!r} is not a known source "
        "(synthetic, mm-demo, mmconfig:PATH, replay:PATH)"
    )
