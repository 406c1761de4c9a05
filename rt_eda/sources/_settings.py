"""What every source built from a settings dataclass shares."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["SettingsSource"]

S = TypeVar("S")


class SettingsSource(Generic[S]):
    """Base of a source built from one frozen settings dataclass of primitives.

    The source pickles as its settings only, so a copy sent to the camera process is always
    unopened (devices, rendered images and clocks are never pickled); ``repr`` and the
    ``settings`` property come with it. Subclasses set ``self._settings`` in ``__init__``.
    """

    _settings: S

    def __reduce__(self) -> tuple[Any, tuple[S]]:
        return (type(self), (self._settings,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._settings!r})"

    @property
    def settings(self) -> S:
        """The settings this source was built from."""
        return self._settings
