"""Helpers for the end-to-end tests: run ``rt-eda``, read its summary, prove cleanup."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rt_eda.shm import list_blocks

# Only this test session's processes count (other runs may share the machine): this process
# becomes a subreaper, so a role orphaned by its engine is re-parented here, not to init,
# and "ours" means "a descendant of this process".
_PR_SET_CHILD_SUBREAPER = 36
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _descends_from_us(pid: int) -> bool:
    me = os.getpid()
    for _ in range(64):
        try:
            _, pid = _stat(pid)
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
        if pid <= 1:
            return False
    return False


def role_processes() -> list[str]:
    """Kernel names of live rt-eda role processes (named rt-eda-*) of this test session.

    Roles orphaned here that have exited are reaped (they are never a test's own child)."""
    names = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            comm = (entry / "comm").read_text().strip()
            if not comm.startswith("rt-eda-"):
                continue
            state, ppid = _stat(pid)
        except (OSError, ValueError, IndexError):
            continue
        if state == "Z":
            if ppid == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            continue
        if _descends_from_us(pid):
            names.append(f"{pid}:{comm}")
    return names


def rt_eda(*args: str, cwd: Path, timeout: float = 180,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "run", *args], cwd=cwd, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def assert_clean(before: set[str]) -> None:
    deadline = time.monotonic() + 5
    while role_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert role_processes() == []
    # A leak is a block whose creator has exited (blocks of other live processes on this
    # machine are none of this test's business).
    leaked = {n for n, pid in list_blocks() if not Path(f"/proc/{pid}").exists()}
    assert leaked - before == set()


def assert_counts_add_up(s: dict[str, Any]) -> None:
    """The summary's identities: every published stack was analysed, skipped (recovered
    claims included) or failed (its analysis raised); every acquired frame reached the ring
    or was lost; and every analysed stack's result reached the interpreter and landed in
    exactly one bucket (acted on, out of order, paused, non-finite), unless a worker died
    between handing its claim back and sending its result, or the interpreter died."""
    assert s["stacks_published"] == (s["stacks_analysed"] + s["stacks_skipped"]
                                     + s["stacks_failed"]), s
    assert s["stacks_published"] > 0
    assert min(s["stacks_analysed"], s["stacks_skipped"], s["stacks_failed"]) >= 0
    results = (s["decisions"] + s["results_dropped_out_of_order"]
               + s["results_ignored_paused"] + s["nonfinite_decisions"])
    assert results <= s["stacks_analysed"], s
    if s["worker_restarts"] == 0 and not any(
            "interpreter" in e or "terminated" in e for e in s["errors"]):
        assert results == s["stacks_analysed"], s
    assert s["frames_acquired"] == s["stacks_published"] * s["stack_shape"][0] * \
        s["stack_shape"][1] + s["frames_lost"]
    for key in ("publish_to_claim", "publish_to_decision", "decision_to_actuation"):
        assert set(s["latency_ms"][key]) == {"p50", "p99", "max"}
    # Per position as for the run (issue 15): the positions' stacks are the run's, each
    # position's add up, and so do their decisions and switches.
    positions = s["positions"]
    assert [p["index"] for p in positions] == list(range(len(positions)))
    for p in positions:
        assert p["stacks_published"] == (p["stacks_analysed"] + p["stacks_skipped"]
                                         + p["stacks_failed"]), p
    for key in ("stacks_published", "stacks_analysed", "stacks_skipped", "stacks_failed"):
        assert sum(p[key] for p in positions) == s[key], (key, positions)
    if s["missing_reports"] == []:
        assert sum(p["decisions"] for p in positions) == s["decisions"]
        assert sum(p["interval_switches"] for p in positions) == s["interval_switches"]
    # Every action decided was applied, refused by its device, or still on its way when the
    # acquisition stopped (issue 16); interval is always one of the actuators.
    assert "interval" in s["actions"], s["actions"]
    for kind, a in s["actions"].items():
        assert a["count"] == a["applied"] + a["failed"] + a["unapplied"], (kind, a)
        assert min(a["applied"], a["failed"], a["unapplied"], a["reapplied"]) >= 0, (kind, a)
    assert_summary_schema(s)


def assert_summary_schema(s: Mapping[str, Any]) -> None:
    """The summary has exactly the keys ``rt_eda.engine.summary.RunSummary`` documents, each
    of the documented type (nested records too), as built or as read back from JSON."""
    from rt_eda.engine.summary import RunSummary

    problems = _schema_problems(s, RunSummary, "summary")
    assert not problems, "\n".join(problems)


def _schema_problems(value: Any, tp: Any, where: str) -> list[str]:
    if typing.is_typeddict(tp):
        if not isinstance(value, Mapping):
            return [f"{where}: {value!r} is not a mapping"]
        hints = typing.get_type_hints(tp)
        out = [f"{where}.{k}: documented, missing" for k in hints if k not in value]
        out += [f"{where}.{k}: not documented" for k in value if k not in hints]
        for k, t in hints.items():
            if k in value:
                out += _schema_problems(value[k], t, f"{where}.{k}")
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return []
    if origin in (types.UnionType, typing.Union):
        tried = [_schema_problems(value, a, where) for a in args]
        return [] if any(not p for p in tried) else [f"{where}: {value!r} is not {tp}"]
    if tp is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a bool"]
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not an int"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a number"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a str"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [p for i, v in enumerate(value) for p in _schema_problems(v, args[0],
                                                                         f"{where}[{i}]")]
    if origin is tuple:  # JSON reads a tuple back as a list
        if not isinstance(value, tuple | list) or len(value) != len(args):
            return [f"{where}: {value!r} is not a {len(args)}-tuple"]
        return [p for i, (v, a) in enumerate(zip(value, args, strict=True))
                for p in _schema_problems(v, a, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a dict"]
        return [p for k, v in value.items() for p in
                _schema_problems(k, args[0], f"{where} key") +
                _schema_problems(v, args[1], f"{where}[{k!r}]")]
    return [f"{where}: no rule for the documented type {tp}"]


def start_rt_eda(*args: str, cwd: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    """``rt-eda run ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "rt_eda.cli", "run", *args], cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_role(fragment: str, timeout: float = 120.0) -> int:
    """Pid of the first live rt-eda role whose name contains ``fragment``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in role_processes():
            pid, name = p.split(":", 1)
            if fragment in name:
                return int(pid)
        time.sleep(0.1)
    raise TimeoutError(f"no rt-eda role named *{fragment}* within {timeout} s")
