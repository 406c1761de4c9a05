"""The worker process: claim the newest stack, run the worker's hooks, send a Result.

Entry point :func:`run`, started by the engine (spawn) once per worker, ``index`` 1..N.
The loop::

    claim newest stack (or time window)  -- sleeps on the ring's doorbell when idle
      [--verify] check every frame's stamp; a torn stack is counted, never analysed
      prepare_images -> run_model -> extract_decision_parameter / post_process_output
    release the claim -> Result on the results queue

A hook that raises ends the process (FAILED, exit 1); the engine recovers the claim and
restarts the worker, a bounded number of times.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from rt_eda.config import Config
from rt_eda.errors import ClaimRecoveredError, RingClosedError
from rt_eda.messages import Result, Role, RoleEventKind
from rt_eda.process import RoleChannels, enter_role, report
from rt_eda.shm import StackRing, check_stack

from ._base import Worker, WorkerSettings

__all__ = ["run", "worker_settings"]

log = logging.getLogger(__name__)


def worker_settings(config: Config) -> WorkerSettings:
    """The :class:`WorkerSettings` of ``config.analysis``."""
    a = config.analysis
    return WorkerSettings(
        model=a.model,
        threads=a.threads_per_worker,
        n_timepoints=a.n_timepoints,
        channels_to_use=tuple(a.channels_to_use),
        options=tuple(sorted(a.options.items())),
    )


def _intact(pixels: np.ndarray, seq: int, n_timepoints: int) -> bool:
    if n_timepoints == 1:
        return check_stack(pixels, seq)
    return all(
        check_stack(pixels[k], seq - (n_timepoints - 1 - k)) for k in range(n_timepoints)
    )


WORKER_NICENESS = 5
"""Workers run at a lower CPU priority than the camera: when the machine is short of cores,
acquisition keeps its rate and analysis (which skips stale stacks anyway) gives way."""


def run(config: Config, channels: RoleChannels, index: int) -> None:
    """Entry point of worker process ``index`` (its ring reader id is ``index`` too)."""
    enter_role(f"{Role.WORKER.value}-{index}", channels)
    os.nice(WORKER_NICENESS)
    from ._discovery import discover_workers
    from ._keras import KerasWorker, configure_threads

    worker: Worker | None = None
    ring: StackRing | None = None
    counts = {"analysed": 0, "torn": 0, "recovered": 0}
    times = {"wait_s": 0.0, "prepare_s": 0.0, "infer_s": 0.0, "post_s": 0.0, "queue_s": 0.0}
    try:
        cls = discover_workers(config.analysis.worker_modules)[config.analysis.worker]
        configure_threads(config.analysis.threads_per_worker,
                          tensorflow=issubclass(cls, KerasWorker))
        ring = StackRing.attach(channels.ring)
        worker = cls(worker_settings(config))
        worker.setup(ring.spec)
        worker.warm_up()
        report(channels, "worker", index, RoleEventKind.READY)
        _loop(worker, ring, channels, config, index, counts, times)
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        log.exception("worker %d failed", index)
        report(channels, "worker", index, RoleEventKind.FAILED, f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
    finally:
        if worker is not None:
            worker.teardown()
        if ring is not None:
            ring.close()
        report(channels, "worker", index, RoleEventKind.STATS, json.dumps({**counts, **times}))
    report(channels, "worker", index, RoleEventKind.STOPPED)


def _loop(worker: Worker, ring: StackRing, channels: RoleChannels, config: Config,
          index: int, counts: dict[str, int], times: dict[str, float]) -> None:
    verify = config.run.verify or config.camera.synthetic.verify
    n_t = config.analysis.n_timepoints
    results = channels.results
    while True:
        t0 = time.perf_counter()
        try:
            claim = ring.claim(index, timeout=0.5, n_timepoints=n_t)
        except RingClosedError:
            return
        if claim is None:
            continue
        times["wait_s"] += time.perf_counter() - t0
        try:
            with claim:
                if verify and not _intact(claim.pixels, claim.seq, n_t):
                    counts["torn"] += 1
                    claim.count_torn()
                    log.error("worker %d: stack %d is torn (stamps do not match)", index,
                              claim.seq)
                    claim.release(analysed=False)
                    continue
                analysis = worker.analyse(claim.pixels)
        except ClaimRecoveredError:
            counts["recovered"] += 1  # declared dead while analysing: drop the result
            continue
        t_done = time.monotonic()
        counts["analysed"] += 1
        times["prepare_s"] += analysis.t_prepare_s
        times["infer_s"] += analysis.t_infer_s
        times["post_s"] += analysis.t_post_s
        tq = time.perf_counter()
        results.put(Result(
            seq=claim.seq, worker=index, decision=analysis.decision,
            t_exposure=claim.t_exposure, t_published=claim.t_published,
            t_claimed=claim.t_claimed, t_done=t_done, n_timepoints=n_t,
            t_prepare_s=analysis.t_prepare_s, t_infer_s=analysis.t_infer_s,
            t_post_s=analysis.t_post_s,
        ))
        times["queue_s"] += time.perf_counter() - tq
