"""Named POSIX shared-memory blocks that are always cleaned up.

:class:`SharedBlock` is a small replacement for :class:`multiprocessing.shared_memory.
SharedMemory` with the semantics rt-eda needs:

- only the creator registers the block with the multiprocessing resource tracker (so a
  SIGKILLed creator's block is still unlinked by the tracker); attaching never registers it
  (on Python < 3.13 ``SharedMemory`` registers every attach, and the first attaching process
  to exit unlinks the block under everybody's feet);
- names carry the creator's pid (``rt_eda_<pid>_<tag>_<token>``), so
  :func:`sweep_stale_blocks` can remove the blocks of creators that died without cleanup,
  and never touches a live run's blocks.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import logging
import mmap
import os
import re
import secrets
from multiprocessing import resource_tracker
from pathlib import Path

__all__ = ["NAME_PREFIX", "SharedBlock", "list_blocks", "sweep_stale_blocks"]

log = logging.getLogger(__name__)

NAME_PREFIX = "rt_eda_"
_NAME_RE = re.compile(r"^rt_eda_(\d+)_([A-Za-z0-9]+)_([0-9a-f]+)$")
_SHM_DIR = Path("/dev/shm")


def _tracker_name(name: str) -> str:
    return "/" + name


class SharedBlock:
    """One named shared-memory block, mapped into this process.

    Use :meth:`create` (the owner, who must :meth:`unlink`) or :meth:`attach`. ``buf`` is a
    writable memoryview of the whole block. :meth:`close` unmaps it; views still alive keep
    the mapping until they are gone (closing never invalidates memory under a live numpy view).
    """

    def __init__(self, name: str, fd: int, size: int, *, owner: bool) -> None:
        self.name = name
        self.size = size
        self.owner = owner
        self._mmap: mmap.mmap | None = mmap.mmap(fd, size)
        os.close(fd)
        self.buf = memoryview(self._mmap)
        self._unlinked = False

    @classmethod
    def create(cls, size: int, tag: str = "ring") -> SharedBlock:
        """Create a new block of ``size`` bytes (zero-filled), registered for cleanup."""
        if size <= 0:
            raise ValueError(f"a shared block needs a positive size, got {size} bytes")
        if not tag.isalnum():
            raise ValueError(f"block tag must be alphanumeric, got {tag!r}")
        while True:
            name = f"{NAME_PREFIX}{os.getpid()}_{tag}_{secrets.token_hex(4)}"
            try:
                fd = _posixshmem.shm_open(
                    _tracker_name(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600
                )
            except FileExistsError:
                continue
            break
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            _posixshmem.shm_unlink(_tracker_name(name))
            raise
        resource_tracker.register(_tracker_name(name), "shared_memory")
        return cls(name, fd, size, owner=True)

    @classmethod
    def attach(cls, name: str) -> SharedBlock:
        """Map an existing block by name (not registered: the creator owns its lifetime)."""
        fd = _posixshmem.shm_open(_tracker_name(name), os.O_RDWR, mode=0o600)
        size = os.fstat(fd).st_size
        return cls(name, fd, size, owner=False)

    def close(self) -> None:
        """Unmap (deferred while numpy views of the block are alive). Safe to call twice."""
        if self._mmap is None:
            return
        self.buf.release()
        try:
            self._mmap.close()
        except BufferError:
            # numpy views still export the buffer; the mapping goes when they are collected.
            log.debug("block %s: views still alive, unmapping deferred", self.name)
        self._mmap = None

    def unlink(self) -> None:
        """Remove the name (creator only); the memory goes when the last process unmaps."""
        if self._unlinked:
            return
        self._unlinked = True
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink(_tracker_name(self.name))
        if self.owner:
            resource_tracker.unregister(_tracker_name(self.name), "shared_memory")

    def __repr__(self) -> str:
        return f"SharedBlock({self.name!r}, size={self.size}, owner={self.owner})"


def list_blocks() -> list[tuple[str, int]]:
    """``(name, creator pid)`` of every rt-eda block present on this machine."""
    if not _SHM_DIR.is_dir():
        return []
    found = []
    for entry in _SHM_DIR.iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append((entry.name, int(match.group(1))))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_blocks() -> list[str]:
    """Unlink the blocks whose creator process is gone (an engine that was SIGKILLed).

    Blocks of live processes are never touched. Returns the names removed.
    """
    removed = []
    for name, pid in list_blocks():
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(FileNotFoundError):
                _posixshmem.shm_unlink(_tracker_name(name))
                removed.append(name)
    if removed:
        log.warning("removed %d shared-memory block(s) left by dead runs: %s", len(removed),
                    ", ".join(removed))
    return removed
