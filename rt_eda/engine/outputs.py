"""The run's outputs: checked before anything starts, each written after the run on its own.

A run writes up to five outputs::

    --save DIR       run.save     <DIR>/summary.json, <DIR>/report.png + report.json
                                  (the writer role writes the frames while the run goes)
    --summary PATH   run.summary  the summary as JSON
    --profile DIR    run.profile  <DIR>/profile.json, <DIR>/profile.txt

Guarantees
----------
- :func:`check_output_paths` runs before any process starts: a path that can never be
  written (a parent that is a file or a device, a folder where a file is expected, a folder
  the process cannot create files in, a read-only file system) is a
  :class:`~rt_eda.core.errors.ConfigError` whose lines each name the flag, the key, the path and
  why. Nothing is created by the check (a probe file is created and removed at once).
- :func:`write_outputs` attempts every output, whatever happened to the others: a failure is
  one line in :attr:`WrittenOutputs.failures` (and in the summary's ``errors``), never an
  exception. The report and the profile are written first, so that both summaries list their
  failures; the run folder's ``summary.json`` is written again if writing ``--summary``
  failed after it, so that it lists that failure too.
- A summary file is written atomically (temporary file + rename in the same folder): a
  reader never sees half a summary.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError, RtEdaError
from rt_eda.core.files import write_json_atomic
from rt_eda.core.runfolder import REPORT_JSON, REPORT_PNG, SUMMARY_JSON
from rt_eda.engine.summary import RunSummary

__all__ = ["WrittenOutputs", "check_output_paths", "write_outputs", "write_json_atomic"]

log = logging.getLogger(__name__)

_PROFILE_FILES = ("profile.json", "profile.txt")
_RUN_FILES = (SUMMARY_JSON, REPORT_PNG, REPORT_JSON)


def _kind(mode: int) -> str:
    """What a non-folder, non-file filesystem entry is, in words."""
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _entry(path: Path) -> tuple[str, int] | None:
    """``("exists", mode)`` following links, ``("dangling", 0)`` for a link to nothing, or
    ``("loop", 0)`` for a link loop; None when nothing is there. Never raises."""
    try:
        return "exists", path.stat().st_mode
    except FileNotFoundError:
        return ("dangling", 0) if path.is_symlink() else None
    except NotADirectoryError:
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return "loop", 0
        return "error", exc.errno or 0


def _nearest_existing(path: Path) -> tuple[Path, tuple[str, int]]:
    """The path itself or its nearest ancestor that is there (``/`` always is)."""
    p = path
    while True:
        entry = _entry(p)
        if entry is not None or p.parent == p:
            return p, entry or ("exists", stat.S_IFDIR)
        p = p.parent


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or the folder it would be made in)."""
    at, (state, mode) = _nearest_existing(folder)
    if state == "dangling":
        return f"{at} is a symbolic link to nothing"
    if state == "loop":
        return f"{at} is a symbolic link loop"
    if state == "error":
        return f"{at} cannot be looked at: {os.strerror(mode)}"
    if not stat.S_ISDIR(mode):
        return f"{at} is {_kind(mode)}, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".rt-eda-probe-", dir=at)
    except OSError as exc:
        return f"cannot create files in {at}: {exc.strerror or exc}"
    os.close(fd)
    Path(probe).unlink()
    return None


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file (created, or replaced atomically)."""
    entry = _entry(path)
    if entry is not None:
        state, mode = entry
        if state == "loop":
            return f"{path} is a symbolic link loop"
        if state == "exists" and stat.S_ISDIR(mode):
            return f"{path} is a folder; expected a file name"
        if state == "exists" and not stat.S_ISREG(mode):
            return f"{path} is {_kind(mode)}, not a regular file"
    return _folder_problem(path.parent)


def _dir_problem(path: Path, inside: tuple[str, ...]) -> str | None:
    """Why ``path`` cannot be used as a folder to write the files ``inside`` into."""
    entry = _entry(path)
    if entry is not None and entry[0] == "exists" and stat.S_ISDIR(entry[1]):
        for name in inside:
            problem = _file_problem(path / name)
            if problem is not None:
                return problem
        return _folder_problem(path)
    if entry is not None and entry[0] == "exists":
        return f"{path} is {_kind(entry[1])}; expected a folder"
    return _folder_problem(path)


def check_output_paths(config: Config) -> None:
    """Refuse output paths that cannot be written, before anything starts.

    Checks ``run.summary`` (a file), ``run.profile`` and ``run.save`` (folders); see the
    module docstring for what is refused. Whether a run folder is empty is checked by
    :func:`rt_eda.storage.recording.prepare_save_dir`.

    Raises
    ------
    ConfigError
        One line per unwritable output: ``--summary (run.summary) PATH: why``.
    """
    run = config.run
    problems = []
    checks: list[tuple[str, str, str | None, Callable[[Path], str | None]]] = [
        ("--save", "run.save", run.save, lambda p: _dir_problem(p, ())),
        ("--summary", "run.summary", run.summary, _file_problem),
        ("--profile", "run.profile", run.profile, lambda p: _dir_problem(p, _PROFILE_FILES)),
    ]
    for flag, key, value, check in checks:
        if value is None:
            continue
        problem = check(Path(value))
        if problem is not None:
            problems.append(f"{flag} ({key}) {value}: cannot write there: {problem}")
    if run.save and run.summary and Path(run.summary) == Path(run.save):
        problems.append(f"--summary (run.summary) {run.summary}: it is the run folder "
                        "(--save); the run folder gets its own summary.json")
    elif run.save and run.summary and Path(run.summary).parent == Path(run.save) \
            and Path(run.summary).name in _RUN_FILES[1:]:
        problems.append(f"--summary (run.summary) {run.summary}: the run folder's own "
                        f"{Path(run.summary).name} would overwrite it; choose another name")
    if problems:
        raise ConfigError("\n".join(problems))


@dataclass
class WrittenOutputs:
    """What :func:`write_outputs` wrote (by name: ``run_summary``, ``report``, ``summary``,
    ``profile``), what it could not (one line each) and what it left out on purpose."""

    paths: dict[str, Path] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, RtEdaError) else str(exc)


def _report_events(config: Config, summary: RunSummary) -> list[tuple[float, float]] | None:
    """Ground-truth events of the synthetic source within the acquisition, for the report."""
    from rt_eda.sources import make_source

    schedule = getattr(make_source(config), "events", None)
    if schedule is None:
        return None
    span = summary["acquisition_s"]
    return [(e.start_s, min(e.duration_s, span - e.start_s)) for e in schedule
            if e.start_s <= span]


def write_outputs(config: Config, summary: RunSummary,
                  write_profile: Callable[[Path], Path], *, full: bool = True
                  ) -> WrittenOutputs:
    """Write every output of a run that ended (see the module docstring).

    Parameters
    ----------
    config
        The run's configuration (which outputs, where).
    summary
        The run summary; each failure is appended to its ``errors`` before the summaries
        are written.
    write_profile
        Writes the profile into a folder, returns the path of its text file.
    full
        False for a run cut short (a second Ctrl-C): only the summaries are written, the
        report and profile are left out (listed in :attr:`WrittenOutputs.skipped`).

    Returns
    -------
    WrittenOutputs
        Never raises for an output that cannot be written.
    """
    from rt_eda.storage.recording import write_summary

    out = WrittenOutputs()
    run = config.run
    errors = summary["errors"]

    def failed(what: str, exc: BaseException) -> None:
        line = f"{what} not written: {_why(exc)}"
        out.failures.append(line)
        errors.append(line)

    folder = Path(run.save) if run.save else None
    has_frames = bool(summary["started"] and summary["frames_written"])
    if folder is not None and full and has_frames:
        from rt_eda.storage.report import write_report

        try:
            out.paths["report"] = write_report(folder, summary, _report_events(config, summary))
        except (OSError, ValueError, RtEdaError) as exc:
            failed(f"run report in {folder}", exc)
    elif folder is not None:
        out.skipped.append("report" if has_frames else "report (no frames were acquired)")
    if run.profile and full:
        try:
            out.paths["profile"] = write_profile(Path(run.profile))
        except OSError as exc:
            failed(f"profile in {run.profile}", exc)
    elif run.profile:
        out.skipped.append("profile")

    def run_summary() -> bool:
        assert folder is not None
        try:
            out.paths["run_summary"] = write_summary(folder, summary)
        except (OSError, RtEdaError) as exc:
            failed(f"summary in {folder}", exc)
            return False
        return True

    in_folder = folder is not None and run_summary()
    if run.summary:
        try:
            out.paths["summary"] = write_json_atomic(run.summary, summary)
        except OSError as exc:
            failed(f"--summary {run.summary}", exc)
            if in_folder:
                run_summary()  # again, so that it lists this failure
    return out
