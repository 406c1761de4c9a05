"""Image sources driven by the camera role (see :class:`Source` for the protocol)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._protocol import Source, StopFlag

if TYPE_CHECKING:
    from rt_eda.config import Config

__all__ = ["Source", "StopFlag", "make_source"]


def make_source(config: Config) -> Source:
    """The source named by ``camera.source``, built from the configuration (not opened).

    Raises
    ------
    ConfigError
        The source kind is not available in this version.
    """
    from rt_eda.config import SourceKind
    from rt_eda.errors import ConfigError

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
    raise ConfigError(
        f"camera.source: {config.camera.source!r} is not available in this version of rt-eda "
        "(available: 'synthetic')"
    )
