"""The files a user names in a configuration: looked at without blocking, read as text, or
refused with one line that says what is wrong.

:func:`path_problem` says why a path cannot be read as an input (missing, a folder, a FIFO,
empty, unreadable ...) without ever opening a FIFO or a device; :func:`read_text_input`
reads a configuration-like file as UTF-8 text within :data:`MAX_CONFIG_BYTES`,
and :func:`resolved_path` makes a path absolute with links resolved, naming a link loop.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from rt_eda.core.errors import ConfigError

__all__ = ["GIB", "MAX_CONFIG_BYTES", "MIB", "path_problem", "read_text_input",
           "resolved_path"]

GIB = 1024**3
MIB = 1024**2

MAX_CONFIG_BYTES = 16 * MIB
"""The largest configuration file read (anything larger is not a configuration)."""

_ELOOP = errno.ELOOP


def resolved_path(path: Path) -> Path:
    """``path`` made absolute with symbolic links resolved; ConfigError for a link loop."""
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise ConfigError(f"{path} is a symbolic link loop") from None
    except OSError as exc:
        if exc.errno == _ELOOP:
            raise ConfigError(f"{path} is a symbolic link loop") from None
        raise ConfigError(f"{path} cannot be looked at: {exc.strerror or exc}") from None


def _node_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def path_problem(path: Path, *, folder_ok: bool = False, empty_ok: bool = False) -> str | None:
    """Why ``path`` cannot be read as an input (None when it can).

    Parameters
    ----------
    path
        An absolute path (symbolic links are followed).
    folder_ok
        A folder is acceptable (a run folder, an OME-Zarr); otherwise only a regular file.
    empty_ok
        A file of 0 bytes is acceptable.

    Returns
    -------
    str | None
        "does not exist", "is a folder, not a file", "is a FIFO ...", "is empty (0 bytes)",
        "cannot be read: Permission denied", ...: the words after the path in a message.
        Never blocks (a FIFO or device is never opened) and never raises.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return "is a symbolic link to nothing" if path.is_symlink() else "does not exist"
    except NotADirectoryError:
        return "does not exist (a folder on its way is a file)"
    except OSError as exc:
        if exc.errno == _ELOOP:
            return "is a symbolic link loop"
        return f"cannot be looked at: {exc.strerror or exc}"
    try:
        if stat.S_ISDIR(st.st_mode):
            if not folder_ok:
                return "is a folder: it is not a file"
            with os.scandir(path) as entries:
                next(entries, None)
            return None
        if not stat.S_ISREG(st.st_mode):
            kind = _node_kind(st.st_mode)
            return f"is {kind}, not a {'file or folder' if folder_ok else 'regular file'}"
        if st.st_size == 0 and not empty_ok:
            return "is empty (0 bytes)"
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def read_text_input(path: str | Path, what: str) -> tuple[Path, str]:
    """Read a configuration-like file the user named, as UTF-8 text.

    Parameters
    ----------
    path
        The file (``~`` expanded, relative to the current folder).
    what
        How messages name it, e.g. ``"configuration file"``.

    Returns
    -------
    tuple[Path, str]
        The absolute path (links resolved) and the text.

    Raises
    ------
    ConfigError
        One line naming the file and what is wrong: a link loop, missing, a folder, a FIFO or
        device (never opened, so never waited on), empty, larger than
        :data:`MAX_CONFIG_BYTES`, unreadable, or not UTF-8 text.
    """
    raw = Path(path).expanduser().absolute()
    try:
        resolved = resolved_path(raw)
    except ConfigError as exc:
        raise ConfigError(f"{what} {exc}") from None
    problem = path_problem(resolved)
    if problem is not None:
        named = f"{raw} (a link to {resolved})" if raw != resolved else str(raw)
        raise ConfigError(f"{what} {named} {problem}")
    size = resolved.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {resolved} is {size / MIB:.0f} MiB; a configuration is at "
                          f"most {MAX_CONFIG_BYTES // MIB} MiB (is it the right file?)")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {resolved} cannot be read: {exc.strerror or exc}") from None
    try:
        return resolved, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {resolved} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}): is it a binary file?"
        ) from None
