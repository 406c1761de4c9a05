"""Loading a configuration: a TOML file, an original eda_plugin ``settings.json`` (mapped
through :mod:`rt_eda.core.legacy_settings`), or the embedded default."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

from rt_eda.core.errors import ConfigError

from ._files import read_text_input, resolved_path
from ._root import Config
from ._validation import apply_dotted, error_header, validate

__all__ = ["load_config", "load_config_with_notes"]

log = logging.getLogger("rt_eda.core.config")


def _read_toml(path: Path) -> tuple[Path, dict[str, Any]]:
    path, text = read_text_input(path, "configuration file")
    try:
        return path, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"configuration file {path} nests tables or arrays too deeply to "
                          "be read") from None


def load_config_with_notes(path: str | Path | None) -> tuple[Config, list[str]]:
    """Load and validate a configuration file, with notes about how it was read.

    Parameters
    ----------
    path
        A TOML file; a path ending in ``.json`` is read as an original eda_plugin
        ``settings.json`` and mapped onto rt-eda's keys; ``None`` gives the embedded default.

    Returns
    -------
    tuple[Config, list[str]]
        The configuration and human-readable notes (empty for TOML and for the default; for a
        ``settings.json``, what was taken and which keys have no counterpart).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, or any value is not allowed (all problems at once).
    """
    if path is None:
        return Config(), []
    path = Path(path).expanduser()
    if path.suffix.lower() == ".json":
        from rt_eda.core.legacy_settings import read_legacy_settings

        imported = read_legacy_settings(path)  # ConfigError: one line for an unreadable file
        path = resolved_path(path)
        data: dict[str, Any] = {}
        problems = apply_dotted(data, imported.values)
        if problems:  # pragma: no cover - the mapping only produces known keys
            raise ConfigError(error_header(str(path), len(problems)) + "\n".join(problems))
        config = validate(
            Config,
            data,
            source=f"{path}, an original eda_plugin settings.json",
            base_dir=path.parent,
            origins=imported.origins,
        )
        for note in imported.notes:
            log.info("settings.json import: %s", note)
        return config, list(imported.notes)
    path, data = _read_toml(path)
    return validate(Config, data, source=str(path), base_dir=path.parent), []


def load_config(path: str | Path | None) -> Config:
    """Load and validate a configuration; see :func:`load_config_with_notes`.

    The notes of a ``settings.json`` import are logged (INFO) rather than returned.
    """
    config, _ = load_config_with_notes(path)
    return config
