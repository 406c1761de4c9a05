"""Atomic operations on shared memory, as numba intrinsics that emit LLVM atomics.

numba has no CPU atomics API, so this module emits the LLVM instructions directly
(``cmpxchg``, ``atomicrmw add``, ``load atomic``/``store atomic`` and ``fence``) on an
element of a numpy integer array. Used on an array that views a shared-memory block, they are
atomic across processes (the hardware's cache coherence does the rest: x86-64 ``lock
cmpxchg``/``lock xadd``, AArch64 LSE or LL/SC).

Orderings: compare-and-swap and fetch-add are ``seq_cst`` (a full barrier: the slot state
machine relies on a store-load order between the producer and the readers in the doorbell
handshake); loads are ``acquire``; stores are ``release``.

These functions can only be called from numba-compiled code (``@njit``); :mod:`._kernels`
is the one user. The tests hammer them from several processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["atomic_add", "atomic_cas", "atomic_load", "atomic_store", "fence_acquire"]


def _element_pointer(context: Any, builder: Any, arrty: Any, arr: Any, idx: Any) -> Any:
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
        context, builder, arrty, ary, [idx], wraparound=False
    )


def _check_array(arr: Any) -> None:
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Integer)):
        raise TypeError(f"atomic operations need an integer array, got {arr}")


@intrinsic
def _atomic_cas(typingctx: Any, arr: Any, idx: Any, expected: Any, desired: Any) -> Any:
    """``old = arr[idx]; if old == expected: arr[idx] = desired; return old`` atomically."""
    _check_array(arr)
    elem = arr.dtype
    sig = elem(arr, idx, expected, desired)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i, e, d = args
        ptr = _element_pointer(context, builder, signature.args[0], a, i)
        e = context.cast(builder, e, signature.args[2], elem)
        d = context.cast(builder, d, signature.args[3], elem)
        pair = builder.cmpxchg(ptr, e, d, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


@intrinsic
def _atomic_add(typingctx: Any, arr: Any, idx: Any, delta: Any) -> Any:
    """``old = arr[idx]; arr[idx] = old + delta; return old`` atomically."""
    _check_array(arr)
    elem = arr.dtype
    sig = elem(arr, idx, delta)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i, v = args
        ptr = _element_pointer(context, builder, signature.args[0], a, i)
        v = context.cast(builder, v, signature.args[2], elem)
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return sig, codegen


@intrinsic
def _atomic_load(typingctx: Any, arr: Any, idx: Any) -> Any:
    """``arr[idx]`` with acquire ordering."""
    _check_array(arr)
    elem = arr.dtype
    sig = elem(arr, idx)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i = args
        ptr = _element_pointer(context, builder, signature.args[0], a, i)
        return builder.load_atomic(ptr, "acquire", elem.bitwidth // 8)

    return sig, codegen


@intrinsic
def _atomic_store(typingctx: Any, arr: Any, idx: Any, value: Any) -> Any:
    """``arr[idx] = value`` with release ordering."""
    _check_array(arr)
    elem = arr.dtype
    sig = types.void(arr, idx, value)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        a, i, v = args
        ptr = _element_pointer(context, builder, signature.args[0], a, i)
        v = context.cast(builder, v, signature.args[2], elem)
        builder.store_atomic(v, ptr, "release", elem.bitwidth // 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _fence_acquire(typingctx: Any) -> Any:
    """An acquire fence: loads before it are not reordered after loads that follow it."""
    sig = types.void()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        builder.fence("acquire")
        return context.get_dummy_value()

    return sig, codegen


if TYPE_CHECKING:
    # What compiled code sees (numba's intrinsics take the typing context first).

    def atomic_cas(arr: np.ndarray, idx: int, expected: int, desired: int) -> int: ...
    def atomic_add(arr: np.ndarray, idx: int, delta: int) -> int: ...
    def atomic_load(arr: np.ndarray, idx: int) -> int: ...
    def atomic_store(arr: np.ndarray, idx: int, value: int) -> None: ...
    def fence_acquire() -> None: ...

else:
    atomic_cas = _atomic_cas
    atomic_add = _atomic_add
    atomic_load = _atomic_load
    atomic_store = _atomic_store
    fence_acquire = _fence_acquire
