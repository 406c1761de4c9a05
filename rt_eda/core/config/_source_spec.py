"""``camera.source`` specs: ``synthetic``, ``mm-demo``, ``mmconfig:PATH`` or ``replay:PATH``,
parsed without touching the disk (the configuration checks the path when it loads)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rt_eda.core.errors import ConfigError

__all__ = ["SOURCE_FORMS", "SourceKind", "SourceSpec", "parse_source", "parse_source_spec"]


class SourceKind(StrEnum):
    """The kinds of image source a ``camera.source`` spec can name."""

    SYNTHETIC = "synthetic"
    MM_DEMO = "mm-demo"
    MMCONFIG = "mmconfig"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed ``camera.source`` spec: its kind and, for ``mmconfig``/``replay``, its path."""

    kind: SourceKind
    path: Path | None = None


SOURCE_FORMS = "'synthetic', 'mm-demo', 'mmconfig:PATH' or 'replay:PATH'"


def parse_source(spec: str) -> tuple[SourceSpec | None, str]:
    """Parse without touching the disk; ``(None, why)`` when the form is wrong."""
    if spec in (SourceKind.SYNTHETIC, SourceKind.MM_DEMO):
        return SourceSpec(SourceKind(spec)), ""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in (SourceKind.MMCONFIG, SourceKind.REPLAY):
        if not rest.strip():
            return None, f"{spec!r} names no path after '{prefix}:'"
        return SourceSpec(SourceKind(prefix), Path(rest)), ""
    return None, f"{spec!r} is not a source spec; expected {SOURCE_FORMS}"


def parse_source_spec(spec: str) -> SourceSpec:
    """Parse a ``camera.source`` spec.

    Parameters
    ----------
    spec
        ``synthetic``, ``mm-demo``, ``mmconfig:PATH`` or ``replay:PATH``.

    Returns
    -------
    SourceSpec
        The kind, and the path as written (not resolved, not checked).

    Raises
    ------
    ConfigError
        The spec has none of the four forms (the message quotes it).
    """
    parsed, why = parse_source(spec)
    if parsed is None:
        raise ConfigError(f"camera.source: {why}")
    return parsed
