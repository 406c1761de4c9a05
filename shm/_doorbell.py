"""Sleeping on a shared-memory word, and the clock, from compiled code.

A reader with nothing to do sleeps in the kernel on the ring's doorbell word instead of
spinning (on a 2-core machine a spinning reader steals the camera's core). The producer bumps
the word on every publish and wakes sleepers only when some are registered, so a publish with
nobody asleep costs no system call.

Everything here is called from the ring's numba kernels (:mod:`._kernels`), so a publish (its
timestamps, the state change and the wake-up) and a claim (the wait, the claim and its
timestamps) are each one compiled call from Python; no ``ctypes`` call sits on the hot path.
These are numba intrinsics that emit the C calls directly (the symbols resolve in the running
process, as numba's own runtime calls do):

- :func:`futex_wait` / :func:`futex_wake`: ``syscall(SYS_futex, ...)`` on the low 32 bits of
  an int64 element of a shared array. The futex is the process-shared kind (no
  ``FUTEX_PRIVATE_FLAG``): waiter and waker are different processes mapping the same page.
  A kernel that sleeps is compiled with ``nogil=True``, so other threads of the sleeping
  process run meanwhile.
- :func:`monotonic`: ``clock_gettime(CLOCK_MONOTONIC)`` as float seconds, computed exactly as
  Python's ``time.monotonic()`` (so stamps taken in a kernel and in Python compare).

numba caches each kernel against its own source file only: after changing an intrinsic here,
touch ``_kernels.py`` so that the kernels are compiled again.

Linux only (glibc or musl: ``syscall``, ``__errno_location``, ``clock_gettime``), as the rest
of rt-eda's process plumbing is. On a Linux architecture missing from the table of system
call numbers :data:`FUTEX_NR` is -1: the kernels never sleep and the ring's Python side waits
by short sleeps instead, which is correct but slower to wake.
"""

from __future__ import annotations

import errno
import platform
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic

__all__ = [
    "EAGAIN",
    "EINTR",
    "ETIMEDOUT",
    "FUTEX_NR",
    "HAVE_FUTEX",
    "futex_wait",
    "futex_wake",
    "monotonic",
]

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98, "i686": 240, "ppc64le": 221}
_nr = _SYS_FUTEX.get(platform.machine()) if sys.platform == "linux" else None
FUTEX_NR: int = -1 if _nr is None else _nr
"""The futex system call's number on this machine; -1 where there is none."""
HAVE_FUTEX = FUTEX_NR >= 0

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_INT_MAX = 0x7FFFFFFF
_CLOCK_MONOTONIC = 1  # Linux; the clock time.monotonic() reads

EAGAIN = errno.EAGAIN
EINTR = errno.EINTR
ETIMEDOUT = errno.ETIMEDOUT

cgutils: Any = _cgutils  # numba's code-generation helpers (untyped)

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.IntType(8).as_pointer()


def _word_pointer(context: Any, builder: Any, arrty: Any, arr: Any, idx: Any) -> Any:
    """``&arr[idx]`` as an ``i8*`` (the futex word is the element's first 4 bytes, its low
    half on a little-endian machine)."""
    ary = context.make_array(arrty)(context, builder, arr)
    ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)
    return builder.bitcast(ptr, _PTR)


def _syscall(builder: Any, args: list[Any]) -> Any:
    """``syscall(args...)`` (variadic, every argument an i64 or a pointer); the errno when it
    returns -1, else 0."""
    fnty = ir.FunctionType(_I64, [_I64], var_arg=True)
    fn = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
    res = builder.call(fn, args)
    errno_fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32.as_pointer(), []), "__errno_location")
    failed = builder.icmp_signed("<", res, ir.Constant(_I64, 0))
    out = cgutils.alloca_once_value(builder, ir.Constant(_I64, 0))
    with builder.if_then(failed):
        err = builder.load(builder.call(errno_fn, []))
        builder.store(builder.sext(err, _I64), out)
    return builder.load(out)


@intrinsic
def _futex_wait(typingctx: Any, arr: Any, idx: Any, expected: Any, timeout_ns: Any,
                nr: Any) -> Any:
    """Sleep while the futex word of ``arr[idx]`` equals ``expected`` (its low 32 bits), at
    most ``timeout_ns`` (< 0: no limit). 0 when woken, else the errno (EAGAIN: the word had
    already changed; ETIMEDOUT; EINTR: a signal)."""
    sig = types.int64(arr, idx, expected, timeout_ns, nr)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i, e, t, n = args
        ptr = _word_pointer(context, builder, signature.args[0], a, i)
        e = builder.and_(context.cast(builder, e, signature.args[2], types.int64),
                         ir.Constant(_I64, 0xFFFFFFFF))
        t = context.cast(builder, t, signature.args[3], types.int64)
        n = context.cast(builder, n, signature.args[4], types.int64)
        ts_t = ir.LiteralStructType([_I64, _I64])
        ts = cgutils.alloca_once(builder, ts_t)
        billion = ir.Constant(_I64, 1_000_000_000)
        builder.store(builder.sdiv(t, billion), cgutils.gep_inbounds(builder, ts, 0, 0))
        builder.store(builder.srem(t, billion), cgutils.gep_inbounds(builder, ts, 0, 1))
        forever = builder.icmp_signed("<", t, ir.Constant(_I64, 0))
        ts_ptr = builder.select(forever, ir.Constant(_PTR, None), builder.bitcast(ts, _PTR))
        return _syscall(builder, [n, ptr, ir.Constant(_I64, _FUTEX_WAIT), e, ts_ptr,
                                  ir.Constant(_PTR, None), ir.Constant(_I64, 0)])

    return sig, codegen


@intrinsic
def _futex_wake(typingctx: Any, arr: Any, idx: Any, nr: Any) -> Any:
    """Wake every process sleeping on the futex word of ``arr[idx]``; 0, or the errno."""
    sig = types.int64(arr, idx, nr)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i, n = args
        ptr = _word_pointer(context, builder, signature.args[0], a, i)
        n = context.cast(builder, n, signature.args[2], types.int64)
        return _syscall(builder, [n, ptr, ir.Constant(_I64, _FUTEX_WAKE),
                                  ir.Constant(_I64, _INT_MAX), ir.Constant(_PTR, None),
                                  ir.Constant(_PTR, None), ir.Constant(_I64, 0)])

    return sig, codegen


@intrinsic
def _monotonic(typingctx: Any) -> Any:
    """``time.monotonic()``: CLOCK_MONOTONIC in float seconds (nanoseconds / 1e9, as CPython
    computes it)."""
    sig = types.float64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ts_t = ir.LiteralStructType([_I64, _I64])
        fnty = ir.FunctionType(_I32, [_I32, ts_t.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_t)
        builder.call(fn, [ir.Constant(_I32, _CLOCK_MONOTONIC), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        ns = builder.add(builder.mul(sec, ir.Constant(_I64, 1_000_000_000)), nsec)
        return builder.fdiv(builder.sitofp(ns, ir.DoubleType()), ir.Constant(ir.DoubleType(),
                                                                             1e9))

    return sig, codegen


if TYPE_CHECKING:
    # What compiled code sees (numba's intrinsics take the typing context first).

    def futex_wait(arr: np.ndarray, idx: int, expected: int, timeout_ns: int,
                   nr: int) -> int: ...
    def futex_wake(arr: np.ndarray, idx: int, nr: int) -> int: ...
    def monotonic() -> float: ...

else:
    futex_wait = _futex_wait
    futex_wake = _futex_wake
    monotonic = _monotonic
