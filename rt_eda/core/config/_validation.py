"""The section base of the configuration, and how validation errors become one line each.

Every section is a frozen, strict pydantic model (:class:`Section`) whose fields carry the
"what is allowed" text of their messages (:func:`key_field`). Validators of this package
raise :func:`value_error` (one key: the line is ``<key>: <message>``) or :func:`cross_error`
(several keys: the message names them itself). :func:`validate` runs a model and turns every
problem into one line naming the full dotted key, the value given and what is allowed (an
unknown key names the nearest valid key); no pydantic text reaches the user.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from rt_eda.core.errors import ConfigError

from ._files import resolved_path

__all__ = [
    "Section",
    "apply_dotted",
    "cross_error",
    "drop_none",
    "error_header",
    "is_utf8",
    "key_field",
    "resolve_path",
    "section_type",
    "show_value",
    "validate",
    "value_error",
]

# Error types raised by this package's own validators; their message is already user-facing.
_VALUE_ERROR = "rt_eda_value"  # one key's value: the line is "<key>: <message>"
_CROSS_ERROR = "rt_eda_cross"  # several keys: the message names them itself


def key_field(default: Any, allowed: str, **constraints: Any) -> Any:
    """A field whose description is the "what is allowed" text of its error messages."""
    return Field(default, description=allowed, **constraints)


def value_error(detail: str) -> PydanticCustomError:
    """The error of one key's value (``detail``: what is wrong and what is allowed)."""
    return PydanticCustomError(_VALUE_ERROR, "{detail}", {"detail": detail})


def cross_error(detail: str) -> PydanticCustomError:
    """The error of a check between keys; ``detail`` names them (one line per problem)."""
    return PydanticCustomError(_CROSS_ERROR, "{detail}", {"detail": detail})


def resolve_path(text: str, info: ValidationInfo) -> Path:
    """A path a key names, absolute: relative to the configuration file's folder (the
    validation context's ``base_dir``), or to the current folder without one."""
    path = Path(text).expanduser()
    if not path.is_absolute():
        context = info.context if isinstance(info.context, Mapping) else {}
        base = context.get("base_dir")
        path = (Path(base) if base is not None else Path.cwd()) / path
    try:
        return resolved_path(path)
    except ConfigError as exc:
        raise value_error(f"{text!r}: {exc}") from None


class Section(BaseModel):
    """Base of every section: strict, frozen, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    #: The dotted path of this section in the configuration ("" for the root).
    section: ClassVar[str] = ""

    def with_changes(self, changes: Mapping[str, object], *, source: str = "") -> Self:
        """A validated copy of this section with some keys changed.

        Parameters
        ----------
        changes
            Keys of this section (not dotted) and their new values.
        source
            Where the change comes from, for the error header (e.g. ``"run-time control"``).

        Returns
        -------
        Self
            A new section; this one is unchanged (it is frozen).

        Raises
        ------
        ConfigError
            A value is not allowed or a key is unknown; nothing is changed.
        """
        data = self.model_dump(mode="python")
        data.update(changes)
        return validate(type(self), data, source=source or "change", base_dir=None)


def is_utf8(value: object) -> bool:
    """False for a string (or a string in a list or table) that cannot be UTF-8 encoded: a
    command-line byte that was not UTF-8 arrives as a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list | tuple):
        return all(is_utf8(v) for v in value)
    if isinstance(value, dict):
        return all(is_utf8(k) and is_utf8(v) for k, v in value.items())
    return True


_M = TypeVar("_M", bound=Section)


def drop_none(value: Any) -> Any:
    """``value`` without the keys whose value is None, at every depth (TOML has no null)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    return value


def section_type(annotation: Any) -> type[Section] | None:
    """The section class a field holds, or None for a value field."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    return None


def _suggest(name: str, parent: str, candidates: list[str]) -> str:
    """The nearest valid key (full dotted name), or the list of valid keys at that level."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if close:
        return f"did you mean {(parent + '.' if parent else '') + close[0]!r}?"
    return "valid keys here: " + ", ".join(repr(c) for c in sorted(candidates))


def show_value(value: object) -> str:
    """A value as a message shows it: its repr (at most 80 characters) and its type."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def error_header(source: str, n: int) -> str:
    """The first line of a ConfigError: where the problems come from and how many."""
    return f"invalid configuration ({source}): {n} problem{'s' if n != 1 else ''}\n"


def _locate(
    root: type[Section], prefix: str, loc: tuple[int | str, ...]
) -> tuple[str, str | None, type[Section], str]:
    """Map an error location onto (dotted key, allowed text, owning section, last name)."""
    model = root
    parts = [prefix] if prefix else []
    allowed: str | None = None
    last = ""
    items = list(loc)
    while items:
        name = items.pop(0)
        last = str(name)
        if not isinstance(name, str) or name not in model.model_fields:
            parts.append(last)
            break
        parts.append(name)
        info = model.model_fields[name]
        allowed = info.description
        sub = section_type(info.annotation)
        if sub is None:
            if items:
                nxt = items[0]
                if isinstance(nxt, int):
                    parts[-1] += f"[{nxt}]"
                elif typing.get_origin(info.annotation) is dict:
                    parts.append(str(nxt))
            break
        model = sub
    return ".".join(parts), allowed, model, last


def _translate(
    exc: ValidationError,
    root: type[Section],
    origins: Mapping[str, str] | None,
) -> list[str]:
    """One line per problem, in the order pydantic found them; a key is reported once."""
    lines: list[str] = []
    seen: set[str] = set()
    for error in exc.errors(include_url=False):
        key, allowed, owner, last = _locate(root, root.section, tuple(error["loc"]))
        kind = error["type"]
        if kind == _CROSS_ERROR:
            new = str(error["msg"]).split("\n")
        elif kind == _VALUE_ERROR:
            new = [f"{key}: {error['msg']}"]
        elif kind == "extra_forbidden":
            suggestion = _suggest(last, key.rpartition(".")[0], list(owner.model_fields))
            new = [f"{key}: unknown key; {suggestion}"]
        else:
            expected = allowed or "a valid value"
            new = [f"{key}: {show_value(error['input'])} is not allowed; expected {expected}"]
        for line in new:
            dedupe = line if kind == _CROSS_ERROR else key
            if dedupe in seen:
                continue
            seen.add(dedupe)
            origin = (origins or {}).get(key)
            lines.append(f"{line} (from {origin})" if origin else line)
    return lines


def validate(
    model: type[_M],
    data: Mapping[str, Any],
    *,
    source: str,
    base_dir: Path | None,
    origins: Mapping[str, str] | None = None,
) -> _M:
    """Validate ``data`` as ``model``; every problem becomes one line of a ConfigError."""
    try:
        return model.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = _translate(exc, model, origins)
    raise ConfigError(error_header(source, len(lines)) + "\n".join(lines))


def apply_dotted(data: dict[str, Any], overrides: Mapping[str, object]) -> list[str]:
    """Set dotted keys in the nested ``data``; problems that stop a key being placed."""
    problems = []
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict) and part not in node:
                # An unknown section: let validation name the nearest key.
                node = node.setdefault(part, {})
                continue
            if not isinstance(child, dict):
                problems.append(f"{dotted}: {'.'.join(parts[: i + 1])} is a value, not a table")
                break
            node = child
        else:
            node[parts[-1]] = value
    return problems
