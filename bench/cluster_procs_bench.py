"""What the Ray benchmarks (``test_cluster_bench.py``) run outside the test process.

- :class:`SleepWorker`: a worker whose inference is a wait (``options.wait_ms``, 50 ms by
  default): a remote GPU whose compute does not load this machine. Shipped to the actors as a
  Ray ``py_module`` (``analysis.worker_modules = ["cluster_procs_bench"]``), as a user's own
  worker module is.
- :func:`actor_call_floor`: Ray's bare actor-call round trip with a stack as its argument (the
  floor of what analysis on an actor can add), in a process of its own that starts and stops
  its own local Ray instance. The test process never joins Ray (Ray ends a driver whose
  cluster is gone; ``tests/cluster_procs.py`` keeps the same rule).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.workers import Worker


class SleepWorker(Worker):
    """Waits ``options.wait_ms`` ms per stack (``time.sleep``, no CPU), decision 0."""

    def run_model(self, data: dict[str, Any]) -> np.ndarray:
        time.sleep(float(self.settings.option("wait_ms", 50.0)) / 1e3)
        return np.zeros(1)

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        return 0.0


class FloorActor:
    """The bare actor: takes a stack and answers its sequence number (no hooks, no copy).

    ``niceness``: lowered priority, as rt-eda's actors on the microscope PC lower theirs
    (``rt_eda.cluster._pool.ACTOR_NICENESS``), so the floor and the actors it is compared
    with compete for the CPU alike.
    """

    def __init__(self, niceness: int) -> None:
        if niceness:
            os.nice(niceness)

    def ping(self) -> int:
        return os.getpid()

    def take(self, stack: np.ndarray, seq: int) -> int:
        return seq


def actor_call_floor(shape: tuple[int, ...], rounds: int, warmup_rounds: int, niceness: int,
                     object_store_bytes: int, out: Any) -> None:
    """Put on ``out``: ``("ok", payload_s, trivial_s)``, the seconds of each synchronous call
    ``ray.get(actor.take.remote(stack, seq))`` with a uint16 stack of ``shape`` (``rounds``
    rounds after ``warmup_rounds``; 4 different stacks in turn, so no call reuses an object),
    and of a call without argument; or ``("error", text)``.

    Starts its own local Ray instance (``address="local"``: never an instance another
    process started; ``RAY_TMPDIR`` as the caller's environment says) and stops it.
    """
    from bench_timing import per_op

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    try:
        # from a neutral folder, as rt_eda.cluster connects: Ray puts the driver's working
        # folder first on its workers' sys.path, and from a checkout with a wheel installed
        # the actor imported the checkout's bare rt_eda/ (no rt_eda.workers)
        with contextlib.chdir(tempfile.gettempdir()):
            ray.init(address="local", num_cpus=1, object_store_memory=object_store_bytes,
                     include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"py_modules": [str(Path(__file__).resolve())]})
    except (OSError, RuntimeError, ValueError) as exc:
        out.put(("error", f"ray.init: {type(exc).__name__}: {exc}"))
        return
    try:
        remote: Any = ray.remote(FloorActor)
        actor = remote.options(num_cpus=1, max_concurrency=1).remote(niceness)
        ray.get(actor.ping.remote(), timeout=300)
        rng = np.random.default_rng(0)
        stacks = [rng.integers(0, 4096, size=shape, dtype=np.uint16) for _ in range(4)]
        seqs = itertools.count()

        def call() -> None:
            seq = next(seqs)
            assert ray.get(actor.take.remote(stacks[seq % 4], seq)) == seq

        payload = per_op(call, rounds=rounds, warmup_rounds=warmup_rounds)
        trivial = per_op(lambda: ray.get(actor.ping.remote()), rounds=rounds,
                         warmup_rounds=warmup_rounds)
        out.put(("ok", payload.tolist(), trivial.tolist()))
    except (OSError, RuntimeError, ValueError, AssertionError, ray.exceptions.RayError) as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        ray.shutdown()
