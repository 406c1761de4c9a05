"""Process bodies for the writer benchmark (importable by spawned children)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rt_eda.core.errors import RingClosedError, RingOverrunError
from rt_eda.shm import StackRing


def camera(name: str, rate: float, seconds: float, backpressure: bool, go: Any,
           out: Any) -> None:
    """Publish synthetic-like stacks like the camera role: paced at ``rate`` stacks/s
    (a full ring = the stack is lost, counted), or as fast as the ring frees slots
    (``backpressure``: wait for the writer, nothing lost; measures the writer's rate)."""
    ring = StackRing.attach(name)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4000, ring.spec.shape, dtype=np.uint16).astype(ring.spec.np_dtype)
              for _ in range(4)]
    go.wait()
    published = lost = waits = 0
    t0 = time.monotonic()
    t_next = t0
    deadline = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if rate > 0:
            t_next += 1.0 / rate
            if t_next > now:
                time.sleep(t_next - now)
        try:
            slot = ring.write_slot()
        except RingOverrunError:
            if backpressure:
                waits += 1
                time.sleep(0.0005)
                continue
            lost += 1
            continue
        except RingClosedError:
            break
        with slot:
            np.copyto(slot.pixels, frames[published % 4])
            slot.frame_times[:] = time.monotonic()
            slot.publish(interval_s=1.0 / rate if rate > 0 else 0.0)
        published += 1
    out.put({"published": published, "lost": lost, "waits": waits,
             "elapsed_s": time.monotonic() - t0})
    ring.close()
