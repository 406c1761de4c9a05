"""A matrix-product server for the peak-FLOP benchmark (run as a script, in a fresh process).

    python flops_procs.py LIBRARY THREADS N

``LIBRARY`` is ``numpy`` or ``tensorflow``; the thread count is set in the environment (and
for TensorFlow through ``tf.config.threading``) before the library loads, so each process
computes with exactly ``THREADS`` threads, which a library cannot change once it has started.
Two float32 ``N x N`` matrices of uniform random values are made once; after two warm-up
products the server prints ``ready <json>`` (library, the threads in force as the library
reports them, N) and then, for each
line ``go`` on stdin, computes one product (into the same output for numpy; a compiled
``tf.linalg.matmul`` for TensorFlow) and prints ``done <seconds>`` (its own timing of that
product). An empty line or end of input ends it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable


def _numpy(n: int) -> tuple[Callable[[], object], int]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return (lambda: np.matmul(a, b, out=c)), _openblas_threads()


def _openblas_threads() -> int:
    """The thread count numpy's OpenBLAS runs with (asked of the library itself), or -1."""
    import ctypes

    with open("/proc/self/maps") as maps:
        libs = sorted({w for w in maps.read().split() if "openblas" in w and ".so" in w})
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                     "openblas_get_num_threads"):
            getter = getattr(lib, name, None)
            if getter is not None:
                return int(getter())
    return -1


def _tensorflow(n: int, threads: int) -> tuple[Callable[[], object], int]:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    a = tf.constant(rng.random((n, n), dtype=np.float32))
    b = tf.constant(rng.random((n, n), dtype=np.float32))
    product = tf.function(lambda: tf.linalg.matmul(a, b))

    def run() -> object:
        return product().shape  # eager CPU execution: the product is done when it returns

    return run, int(tf.config.threading.get_intra_op_parallelism_threads())


def main(argv: list[str]) -> int:
    library, threads, n = argv[0], int(argv[1]), int(argv[2])
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS"):
        os.environ[key] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run, in_force = _numpy(n) if library == "numpy" else _tensorflow(n, threads)
    run()
    run()
    print("ready " + json.dumps({"library": library, "threads": in_force, "n": n}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        t0 = time.perf_counter()
        run()
        print(f"done {time.perf_counter() - t0!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
