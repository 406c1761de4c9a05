"""Settings of the replay source, derived from the validated configuration.

The configuration checks every value once, when it loads (:mod:`rt_eda.core.config`); the
settings never check those values again. Three ways to build them:

* :meth:`ReplaySettings.from_config`: the engine's way. ``camera.source`` (``replay:PATH``,
  a path that existed and could be read at load) and ``camera.exposure_ms`` of a loaded
  configuration, as they are.
* :meth:`ReplaySettings.create`: for Python callers (tests). The path and the exposure go
  through the configuration's own checks (``camera.source``, ``camera.exposure_ms``), so a
  value not allowed is refused with the line a configuration file would get.
* The plain constructor checks nothing: it is for values already valid. What a recording
  holds is checked when the source opens, whichever way the settings were made.

One setting has no configuration key, because only Python callers set it: ``timing``.
``from_config`` and ``create`` check it, once, naming the argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from rt_eda.core.config import Config, SourceKind
from rt_eda.core.errors import ConfigError

from ._replay_timing import ReplayTiming

__all__ = ["ReplaySettings", "ReplayTiming"]


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Settings of :class:`~rt_eda.sources.replay.ReplaySource` (primitives only: it pickles
    to any process). Build them with :meth:`from_config` or :meth:`create` (see the module
    docstring); the constructor checks nothing.

    Attributes
    ----------
    path
        The recording (``camera.source``'s path; see :mod:`rt_eda.sources.replay` for the
        forms accepted).
    timing
        ``"auto"`` (recorded timing when the recording has it, else commanded),
        ``"recorded"`` (an error at open if the recording has none) or ``"commanded"`` (no
        configuration key).
    exposure_s
        ``camera.exposure_ms`` in seconds: the offset between consecutive frames of a
        timepoint when the recording does not give per-frame times (labels time only); 0 in
        the plain constructor: the frames share their timepoint's time.
    """

    path: str
    timing: str = ReplayTiming.AUTO.value
    exposure_s: float = 0.0

    @classmethod
    def from_config(cls, config: Config, *, timing: str = ReplayTiming.AUTO.value,
                    ) -> ReplaySettings:
        """The settings a validated configuration gives (nothing of it is checked again).

        Raises
        ------
        ConfigError
            ``camera.source`` is not a replay; ``timing`` is not one of the timings (the
            value and the choices are named).
        """
        spec = config.camera.source_spec
        if spec.kind is not SourceKind.REPLAY or spec.path is None:
            raise ConfigError(
                f"camera.source: {config.camera.source!r} is not a replay (expected "
                "'replay:PATH')"
            )
        allowed = [t.value for t in ReplayTiming]
        if timing not in allowed:
            raise ConfigError(
                f"replay source settings: timing must be one of {allowed}, got {timing!r}"
            )
        return cls(path=str(spec.path), timing=ReplayTiming(timing).value,
                   exposure_s=config.camera.exposure_ms / 1000.0)

    @classmethod
    def create(cls, path: str, *, timing: str = ReplayTiming.AUTO.value,
               exposure_ms: float | None = None) -> ReplaySettings:
        """Settings from arguments, checked as a configuration would be.

        Parameters
        ----------
        path
            The recording (``camera.source = "replay:PATH"``: it must exist and be readable;
            a relative path is taken from the current folder and stored absolute).
        timing
            As for :meth:`from_config`.
        exposure_ms
            ``camera.exposure_ms`` (None: the configuration's default).

        Raises
        ------
        ConfigError
            The path or the exposure is not allowed (named ``camera.source``,
            ``camera.exposure_ms`` as in a configuration file), or ``timing`` is not.
        """
        overrides: dict[str, object] = {"camera.source": f"replay:{path}"}
        if exposure_ms is not None:
            overrides["camera.exposure_ms"] = exposure_ms
        config = Config().with_overrides(overrides, source="replay source settings")
        return cls.from_config(config, timing=timing)
