"""The original plugin's concurrency pattern, rebuilt faithfully as a baseline.

One process. A camera thread produces a stack every interval and "emits" it; the analyser
hands it to a pool of 5 threads with ``tryStart`` semantics (no free thread: the stack is
dropped, silently in the original, counted here); each thread prepares the images, calls
``model.predict`` (as the original does) and emits the decision to the interpreter, which
acts on it whatever its order (the original does not check). The same synthetic source,
preprocessing and model as rt-eda's DemoModelWorker, so only the architecture differs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

POOL_THREADS = 5  # the original's QThreadPool size


def run_original_pattern(size: int, interval: float, duration: float) -> dict[str, Any]:
    """Run the pattern for ``duration`` s; return throughput, freshness and camera jitter."""
    from rt_eda.shm import StackSpec
    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource
    from rt_eda.workers import DemoModelWorker, WorkerSettings

    source = SyntheticSource(SyntheticSettings(height=size, width=size))
    spec: StackSpec = source.open()
    worker = DemoModelWorker(WorkerSettings())
    worker.setup(spec)
    model = worker.model
    assert model is not None
    x = worker.prepare_images(np.zeros(spec.shape, spec.np_dtype))["pixels"]
    model.predict(x, verbose=0)  # the original's warm-up

    free = threading.Semaphore(POOL_THREADS)
    lock = threading.Lock()
    latencies: list[float] = []
    out_of_order = 0
    newest = -1
    dropped = 0
    analysed = 0

    def analyse(stack: np.ndarray, seq: int, t_pub: float) -> None:
        nonlocal out_of_order, newest, analysed
        try:
            data = worker.prepare_images(stack)
            output = model.predict(data["pixels"], verbose=0)
            decision = worker.extract_decision_parameter(output)
            with lock:  # the interpreter's slot, via the signal hub
                latencies.append(time.monotonic() - t_pub)
                analysed += 1
                if seq < newest:
                    out_of_order += 1  # acted on anyway, as in the original
                newest = max(newest, seq)
                _ = decision
        finally:
            free.release()

    pool = ThreadPoolExecutor(max_workers=POOL_THREADS)
    publish_times: list[float] = []
    buf = np.empty(spec.shape, spec.np_dtype)
    t0 = time.monotonic()
    seq = 0
    t_next = t0
    try:
        while time.monotonic() - t0 < duration:
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t_next += interval
            source.render_stack(seq * interval, buf)
            t_pub = time.monotonic()
            publish_times.append(t_pub)
            if free.acquire(blocking=False):  # QThreadPool.tryStart
                pool.submit(analyse, buf.copy(), seq, t_pub)
            else:
                dropped += 1
            seq += 1
    finally:
        pool.shutdown(wait=True)
        worker.teardown()
    span = publish_times[-1] - publish_times[0]
    gaps = np.diff(publish_times) * 1e3
    lat = np.asarray(latencies) * 1e3
    return {
        "stacks": seq,
        "acquired_per_s": (seq - 1) / span,
        "analysed_per_s": analysed / span,
        "dropped": dropped,
        "out_of_order_acted_on": out_of_order,
        "p2d_p50_ms": float(np.percentile(lat, 50)),
        "p2d_p99_ms": float(np.percentile(lat, 99)),
        "camera_gap_p50_ms": float(np.percentile(gaps, 50)),
        "camera_gap_p99_ms": float(np.percentile(gaps, 99)),
        "camera_jitter_ms": float(np.percentile(gaps, 99) - np.percentile(gaps, 50)),
    }


def main() -> None:
    """Run it alone (in a fresh process, so TensorFlow's threads are its own)."""
    import json
    import sys

    size, interval, duration = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    sys.stdout.write(json.dumps(run_original_pattern(size, interval, duration)) + "\n")


if __name__ == "__main__":
    main()
