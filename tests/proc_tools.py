"""What a process holds and which processes are left: /proc readers shared by the tests."""

from __future__ import annotations

import os
import time
from pathlib import Path


def shm_mapped(pid: int | str = "self") -> set[str]:
    """The /dev/shm files a process maps or holds open.

    A named semaphore is mapped too; glibc makes it as a temporary ``sem.XXXXXX`` that it
    renames, so the maps may show that name (marked deleted): look for ``/dev/shm/sem.``.
    """
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/dev/shm/"):
            found.add(parts[5].removesuffix(" (deleted)").strip())
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("/dev/shm/"):
            found.add(target.removesuffix(" (deleted)"))
    return found


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return sorted(pids)


def wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait until no live process is left in process group ``pgid``."""
    deadline = time.monotonic() + timeout
    while left := group_pids(pgid):
        assert time.monotonic() < deadline, f"processes {left} of group {pgid} still alive"
        time.sleep(0.05)


def comm(pid: int) -> str:
    """The kernel's name of a process ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
