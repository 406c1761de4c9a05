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

        return SyntheticSource(SyntheticSettings.from_config(config))
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
