"""The whole configuration: :class:`Config`, the root that holds every section, with its
round trips (a dict, TOML) and command-line overrides; :func:`all_keys` lists every key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import tomli_w
from pydantic import model_validator

from rt_eda.core.errors import ConfigError

from ._cluster import ClusterConfig
from ._sections import (
    ActuationConfig,
    AnalysisConfig,
    CameraConfig,
    InterpreterConfig,
    RingConfig,
    RunConfig,
    ViewerConfig,
    WriterConfig,
)
from ._validation import (
    Section,
    apply_dotted,
    cross_error,
    drop_none,
    error_header,
    is_utf8,
    key_field,
    section_type,
    show_value,
    validate,
)

__all__ = ["Config", "all_keys"]


class Config(Section):
    """The whole configuration (immutable; see the module docstring for the guarantees)."""

    camera: CameraConfig = key_field(CameraConfig(), "a table of [camera] keys")
    ring: RingConfig = key_field(RingConfig(), "a table of [ring] keys")
    analysis: AnalysisConfig = key_field(AnalysisConfig(), "a table of [analysis] keys")
    interpreter: InterpreterConfig = key_field(InterpreterConfig(), "a table of [interpreter] keys")
    actuation: ActuationConfig = key_field(ActuationConfig(), "a table of [actuation] keys")
    writer: WriterConfig = key_field(WriterConfig(), "a table of [writer] keys")
    viewer: ViewerConfig = key_field(ViewerConfig(), "a table of [viewer] keys")
    run: RunConfig = key_field(RunConfig(), "a table of [run] keys")

    cluster: ClusterConfig = key_field(ClusterConfig(), "a table of [cluster] keys")

    def to_dict(self) -> dict[str, Any]:
        """The full configuration as plain JSON-compatible values (lists, not tuples).

        Unset values are ``None``. ``Config.model_validate(c.to_dict())`` gives back ``c``.
        """
        return self.model_dump(mode="json")

    def to_toml(self) -> str:
        """The full effective configuration as TOML, for saving with a run.

        TOML has no null: keys whose value is unset (``None``) are left out, which loads back
        as unset. ``load_config`` of the text gives back an equal ``Config``.
        """
        header = (
            "# rt-eda effective configuration: every key, defaults included.\n"
            "# Keys not listed are unset.\n\n"
        )
        return header + tomli_w.dumps(drop_none(self.to_dict()))

    def with_overrides(
        self, overrides: Mapping[str, object], *, source: str = "overrides"
    ) -> Config:
        """A validated copy with dotted keys changed (how command-line flags apply).

        Parameters
        ----------
        overrides
            ``{"analysis.workers": 2, "camera.source": "replay:run.tif"}``. Relative paths are
            relative to the current folder. A value of ``None`` unsets an optional key.
        source
            Where the changes come from, for the error header (``invalid configuration
            (<source>): ...``).

        Returns
        -------
        Config
            A new configuration; this one is unchanged.

        Raises
        ------
        ConfigError
            Every problem at once, as for a file: unknown keys (with the nearest valid key),
            values not allowed.
        """
        if not overrides:
            return self
        data = self.model_dump(mode="python")
        problems = [f"{key}: {show_value(value)} is not valid UTF-8 text (rt-eda writes every "
                    "value into its TOML and JSON records)"
                    for key, value in overrides.items() if not is_utf8(value)]
        problems += apply_dotted(data, overrides)
        if problems:
            raise ConfigError(error_header(source, len(problems)) + "\n".join(problems))
        return validate(Config, data, source=source, base_dir=None)

    @model_validator(mode="after")
    def _check_plan_recording(self) -> Self:
        if self.camera.plan and self.writer.format == "tiff":
            from rt_eda.core.plan import load_plan

            n = len(load_plan(self.camera.plan).positions)
            if n > 1:
                raise cross_error(
                    f"writer.format 'tiff' records one position; camera.plan has {n}: "
                    "multi-position runs are recorded as OME-Zarr (writer.format = 'zarr')")
        return self


def all_keys(model: type[Section] = Config) -> list[str]:
    """Every dotted key of the configuration (``analysis.options`` as one key), sorted."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        sub = section_type(info.annotation)
        if sub is None:
            keys.append(name)
        else:
            keys.extend(f"{name}.{k}" for k in all_keys(sub))
    return sorted(keys)
