"""Session files: how ``rt-eda view`` finds a running engine's shared memory by name.

A running engine writes one small JSON file per run (:func:`write_session`) and removes it
at the end (:func:`remove_session`); a viewer started later lists the live ones
(:func:`find_sessions`) and attaches read-only to the rings and the decision trace they name.

Where: ``$XDG_RUNTIME_DIR/rt-eda/`` when ``XDG_RUNTIME_DIR`` names a folder (per user, on a
tmpfs, emptied at logout), else ``/tmp/rt-eda-<uid>/``; the folder is made ``0700`` and must
belong to this user (a folder someone else made there is refused: another user could
otherwise point a viewer at their own blocks). Files are named ``<engine pid>.json`` and
written atomically (a temporary file, then a rename), so a reader never sees half a file.

A session is *stale* when its engine process is gone (a SIGKILLed engine cannot remove its
file) or its stack ring no longer exists; :func:`find_sessions` skips stale sessions and
deletes their files. :func:`sweep_sessions` (run by every engine at start and by
``rt-eda view``) removes every file an engine leaves here, by its creator's pid in the name:
``<pid>.json``, the control socket ``<pid>.sock`` and a half-written ``.<pid>-*.tmp``, once
that pid is dead (or now names a process started after the file was made: a reused pid).

File format (version 1)::

    {"version": 1, "pid": 1234, "created": 1718000000.0,   # time.time() of writing
     "ring": "rt_eda_1234_ring_ab12cd34", "output_ring": "...", "trace": "...",
     "control": "/run/user/1000/rt-eda/1234.sock",        # "" = read-only
     "config": {...}}                                      # Config.to_dict()

Imports no Qt: the engine writes sessions without loading the GUI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError

__all__ = [
    "SESSION_VERSION",
    "Session",
    "find_sessions",
    "read_session",
    "remove_session",
    "session_dir",
    "sweep_sessions",
    "write_session",
]

log = logging.getLogger(__name__)

SESSION_VERSION = 1
_SHM_DIR = Path("/dev/shm")
_LEFT_BY_PID = re.compile(r"^(?:(\d+)\.(?:json|sock)|\.(\d+)-.*\.tmp)$")
"""Names of the files an engine makes here; the group holds its pid."""


@dataclass(frozen=True, slots=True)
class Session:
    """One running engine, as its session file describes it.

    Attributes
    ----------
    path
        The session file.
    pid
        The engine's process id.
    created
        When the file was written (``time.time()`` seconds).
    ring, output_ring, trace
        Shared-memory names of the stack ring, the network-image ring ("" when the run makes
        no network images) and the decision trace.
    control
        Path of the engine's control socket (:class:`~rt_eda.live.controls.ControlRelay`), or ""
        when the run takes no controls from an attached viewer (the viewer is then read-only).
    config
        The run's effective configuration.
    """

    path: Path
    pid: int
    created: float
    ring: str
    output_ring: str
    trace: str
    control: str
    config: Config

    def alive(self) -> bool:
        """True while the engine process lives and its stack ring exists."""
        return _pid_alive(self.pid) and _block_exists(self.ring)


def session_dir(*, create: bool = False) -> Path:
    """The folder where session files live (see the module docstring).

    Parameters
    ----------
    create
        Make the folder (mode ``0700``) if it does not exist.

    Raises
    ------
    PermissionError
        The folder exists but belongs to another user or is open to others.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        folder = Path(runtime) / "rt-eda"
    else:
        folder = Path(tempfile.gettempdir()) / f"rt-eda-{os.getuid()}"
    if create:
        folder.mkdir(mode=0o700, exist_ok=True)
    if folder.exists():
        _check_private(folder)
    return folder


def _check_private(folder: Path) -> None:
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(
            f"session folder {folder} is not a folder owned by uid {os.getuid()} "
            f"(owner uid {info.st_uid}); refusing to use it"
        )
    if info.st_mode & 0o077:
        raise PermissionError(
            f"session folder {folder} has mode {stat.S_IMODE(info.st_mode):o}; "
            "expected 700 (readable by this user only)"
        )


def write_session(
    path_or_dir: str | Path | None,
    ring: str,
    output_ring: str,
    trace: str,
    config: Config,
    pid: int | None = None,
    *,
    control: str = "",
) -> Path:
    """Write the session file of a running engine (the engine calls this once its shared
    memory exists) and return its path.

    Parameters
    ----------
    path_or_dir
        A file path, or a folder (then ``<folder>/<pid>.json``); ``None`` for
        :func:`session_dir`.
    ring, output_ring, trace
        Shared-memory names (``output_ring`` "" when there is none).
    config
        The run's configuration (thresholds, intervals and ``viewer.max_fps`` for the viewer).
    pid
        The engine's pid (default: this process).
    control
        Path of a :class:`~rt_eda.live.controls.ControlRelay` socket, or "" (attached viewers are
        read-only).

    Notes
    -----
    Atomic: written to a temporary file in the same folder, then renamed. Call
    :func:`remove_session` at the end of the run.
    """
    pid = os.getpid() if pid is None else pid
    if path_or_dir is None:
        path = session_dir(create=True) / f"{pid}.json"
    else:
        given = Path(path_or_dir)
        path = given / f"{pid}.json" if given.is_dir() else given
    data = {
        "version": SESSION_VERSION,
        "pid": pid,
        "created": time.time(),
        "ring": ring,
        "output_ring": output_ring,
        "trace": trace,
        "control": control,
        "config": config.to_dict(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("session file %s written (ring %s)", path, ring)
    return path


def remove_session(path: str | Path) -> None:
    """Remove a session file (the engine, at the end of the run); a missing file is fine."""
    Path(path).unlink(missing_ok=True)


def read_session(path: str | Path) -> Session:
    """Read one session file.

    Raises
    ------
    ValueError
        The file is not a version-1 session file (the message names the file and the problem).
    OSError
        The file cannot be read.
    """
    p = Path(path)
    try:
        data: dict[str, Any] = json.loads(p.read_text())
        version = data.get("version")
        if version != SESSION_VERSION:
            raise ValueError(f"version {version!r}, this rt-eda reads {SESSION_VERSION}")
        return Session(
            path=p,
            pid=int(data["pid"]),
            created=float(data["created"]),
            ring=str(data["ring"]),
            output_ring=str(data["output_ring"]),
            trace=str(data["trace"]),
            control=str(data.get("control", "")),
            config=Config.model_validate(data["config"]),
        )
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as exc:
        raise ValueError(f"{p}: not an rt-eda session file ({type(exc).__name__}: {exc})") from exc
    except ValueError as exc:
        raise ValueError(f"{p}: not an rt-eda session file ({exc})") from exc


def find_sessions(directory: str | Path | None = None, *, prune: bool = True) -> list[Session]:
    """The live sessions, newest first.

    Parameters
    ----------
    directory
        Where to look (default :func:`session_dir`).
    prune
        Delete the files of stale sessions (dead engine or missing ring) and unreadable ones.

    Returns
    -------
    list of Session
        Sessions whose engine is alive and whose ring exists; empty when none (or when the
        folder does not exist).
    """
    folder = session_dir() if directory is None else Path(directory)
    if not folder.is_dir():
        return []
    if prune:
        sweep_sessions(folder)
    found: list[Session] = []
    for path in sorted(folder.glob("*.json")):
        try:
            session = read_session(path)
        except (ValueError, OSError) as exc:
            log.warning("ignoring %s", exc)
            continue
        if session.alive():
            found.append(session)
        else:
            log.info("session %s is stale (engine %d gone or ring %s missing)", path,
                     session.pid, session.ring)
            if prune:
                with contextlib.suppress(OSError):
                    path.unlink()
    found.sort(key=lambda s: s.created, reverse=True)
    return found


def sweep_sessions(directory: str | Path | None = None) -> list[Path]:
    """Remove what dead engines left in the session folder; returns the paths removed.

    Parameters
    ----------
    directory
        Where to look (default :func:`session_dir`; nothing happens if it does not exist).

    Notes
    -----
    Only files named by an engine's pid are touched (``<pid>.json``, ``<pid>.sock``,
    ``.<pid>-*.tmp``), and only when that pid is dead or belongs to a process that started
    after the file was last modified (the pid was reused). A live engine's files are never
    removed; a file that vanishes meanwhile (another sweep) is fine.
    """
    folder = session_dir() if directory is None else Path(directory)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in entries:
        match = _LEFT_BY_PID.match(path.name)
        if match is None:
            continue
        pid = int(match.group(1) or match.group(2))
        try:
            modified = path.lstat().st_mtime
        except FileNotFoundError:
            continue
        if _pid_alive(pid) and not _started_after(pid, modified):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove %s, left by the dead engine %d: %s", path, pid, exc)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d file(s) left by dead engines in %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed))
    return removed


def _started_after(pid: int, when: float) -> bool:
    """True when process ``pid`` started after ``when`` (a ``time.time()``), so it cannot
    have written a file modified then. False when that cannot be told (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    return started > when + 1.0  # btime is whole seconds


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _block_exists(name: str) -> bool:
    if not name:
        return False
    if not _SHM_DIR.is_dir():  # not Linux: trust the pid
        return True
    return (_SHM_DIR / name).exists()
