"""Sleeping on a shared-memory word: Linux futexes through ``syscall(2)``.

A reader with nothing to do sleeps in the kernel on the ring's doorbell word instead of
spinning (on a 2-core machine a spinning reader steals the camera's core). The producer bumps
the word on every publish and wakes sleepers only when some are registered, so a publish with
nobody asleep costs no system call.

The futex is the process-shared kind (no ``FUTEX_PRIVATE_FLAG``): waiter and waker are
different processes mapping the same page. ctypes releases the GIL for the call. On systems
without futexes (not Linux) :func:`wait` falls back to a short sleep, which is correct but
slower to wake.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import time

__all__ = ["HAVE_FUTEX", "wait", "wake"]

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98, "i686": 240, "ppc64le": 221}
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_INT_MAX = 0x7FFFFFFF


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc: ctypes.CDLL | None = None
_nr = _SYS_FUTEX.get(platform.machine())
if sys.platform == "linux" and _nr is not None:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long

HAVE_FUTEX = _libc is not None


def wait(address: int, expected: int, timeout: float) -> None:
    """Sleep while the 32-bit word at ``address`` equals ``expected``, at most ``timeout`` s.

    Returns at once if the word already differs; may return early (a wake-up, a signal):
    callers re-check their condition in a loop.
    """
    if timeout <= 0:
        return
    if not HAVE_FUTEX:
        time.sleep(min(timeout, 0.0005))
        return
    sec = int(timeout)
    ts = _Timespec(sec, int((timeout - sec) * 1e9))
    res = _syscall(
        _nr,
        ctypes.c_void_p(address),
        _FUTEX_WAIT,
        ctypes.c_uint32(expected & 0xFFFFFFFF),
        ctypes.byref(ts),
        None,
        0,
    )
    if res != 0:
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise OSError(err, f"futex wait failed: {os.strerror(err)}")


def wake(address: int) -> None:
    """Wake every process sleeping on the word at ``address``."""
    if HAVE_FUTEX:
        _syscall(_nr, ctypes.c_void_p(address), _FUTEX_WAKE, _INT_MAX, None, None, 0)
