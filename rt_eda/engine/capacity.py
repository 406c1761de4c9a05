"""What a run will ask of the machine each second, against what the machine can do, checked
before the run starts.

::

    demand (configuration and stack)           supply (measured here, about a second)
    stacks/s  1 / the fastest interval the run may use (camera.interval, the interpreter's)
    ring      stack bytes x stacks/s           one core's memory copy rate (32 MiB copied)
    disk      the same, with --save            an fsync'd write probe of the --save target
              x --duration: bytes              the target's free space
    cores     workers x threads, + the camera  the cores this process may use
              and writer's copying (ring B/s
              / memory copy rate, each)
    ring      slots x stack bytes (ring.max_bytes); seconds of stacks it holds at that rate

A run that clearly exceeds what was measured is told before it starts: one WARNING line per
problem, with both figures and the settings to change; with ``run.strict`` (``--strict``) it is
refused instead (:class:`~rt_eda.core.errors.ConfigError`: exit 2, nothing acquired). The
figures and the verdict are the summary's ``capacity`` section (:class:`CapacitySummary`).

Guarantees
----------
- The disk probe writes at most about a second (and never more than a quarter of the free
  space) into one temporary file in the ``--save`` folder (or its nearest existing parent),
  fsync'd after every block so the page cache cannot hide a slow disk, and removes it. It
  stops as soon as the disk has taken four times what the run needs, so a run that needs
  little pays a few milliseconds.
- A free-running run (an interval of 0) has no rate before it runs: its rates are not checked
  (said so in ``notes``); the cores are.
- Figures are lower bounds of the demand: the source's own work (rendering, a camera's driver)
  and the network images saved beside the frames come on top.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError
from rt_eda.engine.budget import WORKER_CPU_S, cores, fastest_interval, ring_slots, stack_keys
from rt_eda.shm import StackRing, StackSpec

__all__ = ["CapacitySummary", "DiskProbe", "check_capacity", "describe", "memory_copy_rate",
           "not_checked", "probe_disk"]

log = logging.getLogger(__name__)

PROBE_S = 1.0
"""How long the disk probe writes at most."""
ENOUGH = 4.0
"""The disk probe stops once the target has taken this many times what the run needs."""
SIGNIFICANT_CORES = 0.1
"""The camera's and writer's copying counts against the cores from this share of a core on."""

_BLOCK = 8 * 2**20
_MAX_BATCH = 8
_COPY = 32 * 2**20


class CapacitySummary(TypedDict):
    """The summary's ``capacity`` section: what the run asked for, what was measured.

    ``verdict`` is ``"fits"``, ``"exceeds"`` (``problems`` says how, one line each) or ``"not
    checked"`` (the run stopped before the check). Rates are in bytes per second,
    ``fastest_interval_s`` is 0 for a free-running run (no rate known: ``notes`` says so).
    Without ``--save`` the disk figures are 0 and ``save_target`` is None.
    """

    verdict: str
    problems: list[str]
    notes: list[str]
    stack_bytes: int
    fastest_interval_s: float
    fastest_interval_key: str
    stacks_per_s: float
    ring_bytes_per_s: float
    ring_slots: int
    ring_bytes: int
    ring_seconds: float
    memory_copy_bytes_per_s: float
    save_target: str | None
    disk_bytes_per_s: float
    disk_write_bytes_per_s: float
    disk_probe_bytes: int
    disk_probe_s: float
    disk_free_bytes: int
    run_bytes: int
    compute_threads: int
    acquisition_cores: float
    cores: int


def not_checked() -> CapacitySummary:
    """The section of a run that stopped before its capacity was checked."""
    return CapacitySummary(
        verdict="not checked", problems=[], notes=[], stack_bytes=0, fastest_interval_s=0.0,
        fastest_interval_key="", stacks_per_s=0.0, ring_bytes_per_s=0.0, ring_slots=0,
        ring_bytes=0, ring_seconds=0.0, memory_copy_bytes_per_s=0.0, save_target=None,
        disk_bytes_per_s=0.0, disk_write_bytes_per_s=0.0, disk_probe_bytes=0,
        disk_probe_s=0.0, disk_free_bytes=0, run_bytes=0, compute_threads=0,
        acquisition_cores=0.0, cores=0)


def _mb(rate: float) -> str:
    return f"{rate / 1e6:,.0f} MB/s" if rate >= 10e6 else f"{rate / 1e6:.1f} MB/s"


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


# -- supply ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DiskProbe:
    """What a write probe of a folder measured.

    Attributes
    ----------
    folder
        Where the temporary file was written.
    bytes_written, seconds
        What was written and fsync'd, and how long it took (fsync included).
    free_bytes
        Free space for this user in that folder's file system, before the probe.
    error
        Why the probe stopped early ("" when it did not), e.g. the file system was full.
    """

    folder: str
    bytes_written: int
    seconds: float
    free_bytes: int
    error: str = ""

    @property
    def rate(self) -> float:
        """Bytes per second the folder took (0.0 when nothing was written)."""
        return self.bytes_written / self.seconds if self.seconds > 0 else 0.0


def _existing_folder(path: Path) -> Path:
    p = path.expanduser().absolute()
    while not p.is_dir() and p != p.parent:
        p = p.parent
    return p


def probe_disk(target: str | os.PathLike[str], need: float = 0.0, *,
               budget_s: float = PROBE_S) -> DiskProbe:
    """Write to ``target`` (or its nearest existing parent) for at most ``budget_s``.

    Blocks of 8 MiB, fsync'd after 1, 2, 4 and then every 8 blocks, into one temporary
    file removed afterwards; stops early once the folder has taken :data:`ENOUGH` x ``need``
    bytes per second, or before a quarter of the free space is written. An OSError (the file
    system full, read-only, an I/O error) ends the probe with what was measured and the
    error; nothing is raised.
    """
    folder = _existing_folder(Path(target))
    try:
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
    except OSError as exc:
        return DiskProbe(str(folder), 0, 0.0, 0, os.strerror(exc.errno or 0))
    cap = free // 4
    block = np.random.default_rng(0).integers(0, 256, _BLOCK, dtype=np.uint8).tobytes()
    written, error = 0, ""
    t0 = time.perf_counter()
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rt-eda-disk-probe-") as fh:
            fd = fh.fileno()
            t0 = time.perf_counter()
            elapsed, batch = 0.0, 1
            while elapsed < budget_s and written + _BLOCK <= cap:  # budget 0: no writes
                for _ in range(batch):
                    if written + _BLOCK > cap:
                        break
                    written += os.write(fd, block)
                os.fsync(fd)
                elapsed = time.perf_counter() - t0
                if need > 0 and written / elapsed >= ENOUGH * need:
                    break
                batch = min(2 * batch, _MAX_BATCH)  # 64 MiB steps: about a second in all
    except OSError as exc:
        error = os.strerror(exc.errno) if exc.errno else str(exc)
        log.debug("disk probe of %s: %s", folder, exc)
    return DiskProbe(str(folder), written, time.perf_counter() - t0, free, error)


def memory_copy_rate(nbytes: int = _COPY) -> float:
    """Bytes per second one core copies (the best of three copies of ``nbytes``)."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return nbytes / max(best, 1e-9)


# -- the check ---------------------------------------------------------------------------
def check_capacity(config: Config, spec: StackSpec) -> CapacitySummary:
    """Measure, compare, say so (see the module docstring); the summary's section.

    Raises
    ------
    ConfigError
        ``run.strict`` is set and the run exceeds what was measured (one line per problem).
    """
    a = config.analysis
    interval, key = fastest_interval(config)
    rate = 1.0 / interval if interval > 0 else 0.0
    stack = spec.nbytes
    ring_rate = stack * rate
    slots = ring_slots(config, spec)
    ring_bytes = StackRing.layout_size(spec, slots)[0]
    copy = memory_copy_rate()
    save = config.run.save
    disk_rate = ring_rate if save else 0.0
    notes: list[str] = []
    problems: list[str] = []
    smaller = f"smaller stacks ({stack_keys(config)})"
    if interval <= 0:
        notes.append(f"{key} is 0 (free-run): the rate is whatever the source delivers, not "
                     "known before the run; rates not checked")
    probe = None
    if save:  # free-run: no rate to probe for, the free space only
        probe = probe_disk(save, disk_rate, budget_s=PROBE_S if rate > 0 else 0.0)
        if probe.error:
            notes.append(f"the disk probe of {probe.folder} stopped early: {probe.error}")
    run_bytes = 0
    if probe is not None and rate > 0:
        if probe.bytes_written and disk_rate > probe.rate:
            slowest = stack / probe.rate
            problems.append(
                f"disk: the run saves {_mb(disk_rate)} at its fastest interval ({key} = "
                f"{interval:g} s: {spec.shape} {spec.dtype} stacks of {_bytes(stack)}), but "
                f"{probe.folder} took {_mb(probe.rate)} ({_bytes(probe.bytes_written)} "
                f"written and fsync'd in {probe.seconds:.2f} s): frames will be lost once "
                f"the ring's {slots * interval:.1f} s of stacks fill up; set {key} >= "
                f"{slowest:.3g} s, use {smaller}, or save to a faster disk")
        duration = config.run.duration
        if duration is not None:
            run_bytes = int(disk_rate * duration)
            if run_bytes > probe.free_bytes:
                problems.append(
                    f"disk space: {duration:g} s at the fastest interval ({key} = "
                    f"{interval:g} s) saves up to {_bytes(run_bytes)} of frames, but "
                    f"{probe.folder} has {_bytes(probe.free_bytes)} free (full after "
                    f"{probe.free_bytes / disk_rate:.0f} s); shorten run.duration, lengthen "
                    f"{key}, use {smaller}, or save elsewhere")
        elif probe.free_bytes < disk_rate * 60:
            problems.append(
                f"disk space: at the fastest interval ({key} = {interval:g} s) the run "
                f"saves {_mb(disk_rate)}, and {probe.folder} has {_bytes(probe.free_bytes)} "
                f"free: full after {probe.free_bytes / disk_rate:.0f} s; set run.duration, "
                f"lengthen {key}, use {smaller}, or save elsewhere")
    compute = a.workers * a.threads_per_worker
    n = cores()
    passes = 2 if save else 1  # the camera copies each stack in, the writer out
    acquisition = passes * ring_rate / copy
    if compute > n:
        cost = ""
        if a.workers > n:
            cost = (f"; starting and stopping {a.workers} worker processes costs about "
                    f"{WORKER_CPU_S * a.workers:.0f} CPU-s ({WORKER_CPU_S:g} each), about "
                    f"{WORKER_CPU_S * a.workers / n:.0f} s here")
        problems.append(
            f"analysis.workers x analysis.threads_per_worker = {a.workers} x "
            f"{a.threads_per_worker} = {compute} compute threads on {n} core(s): analysis "
            f"cannot go faster than the cores allow{cost} (`rt-eda bench` measures the best "
            "split)")
    elif acquisition >= SIGNIFICANT_CORES and compute + acquisition > n:
        who = "camera and writer" if save else "camera"
        problems.append(
            f"cores: analysis.workers x analysis.threads_per_worker = {a.workers} x "
            f"{a.threads_per_worker} = {compute} compute threads take the {n} core(s) "
            f"whenever analysis is slower than acquisition, and the {who} need at least "
            f"{acquisition:.2f} core to copy {_mb(ring_rate)} (one core copies "
            f"{_mb(copy)} here): lower analysis.workers or analysis.threads_per_worker, "
            f"lengthen {key}, or use {smaller}")
    summary = CapacitySummary(
        verdict="exceeds" if problems else "fits", problems=problems, notes=notes,
        stack_bytes=stack, fastest_interval_s=interval, fastest_interval_key=key,
        stacks_per_s=rate, ring_bytes_per_s=ring_rate, ring_slots=slots,
        ring_bytes=ring_bytes, ring_seconds=slots * interval, memory_copy_bytes_per_s=copy,
        save_target=str(save) if save else None, disk_bytes_per_s=disk_rate,
        disk_write_bytes_per_s=probe.rate if probe is not None else 0.0,
        disk_probe_bytes=probe.bytes_written if probe is not None else 0,
        disk_probe_s=probe.seconds if probe is not None else 0.0,
        disk_free_bytes=probe.free_bytes if probe is not None else 0,
        run_bytes=run_bytes, compute_threads=compute, acquisition_cores=acquisition,
        cores=n)
    log.debug("capacity: %s", describe(summary))
    if problems and config.run.strict:
        raise ConfigError("\n".join(
            f"run.strict: {p} (refused: --strict; without it the run starts anyway)"
            for p in problems))
    for p in problems:
        log.warning("%s", p)
    return summary


def describe(c: CapacitySummary) -> str:
    """The section in one line: demand against supply, then the verdict."""
    if c["verdict"] == "not checked":
        return "not checked (the run stopped before)"
    parts = []
    if c["stacks_per_s"] > 0:
        parts.append(f"{c['stacks_per_s']:.3g} stacks/s of {_bytes(c['stack_bytes'])} at "
                     f"{c['fastest_interval_key']} = {c['fastest_interval_s']:g} s: ring "
                     f"{_mb(c['ring_bytes_per_s'])}")
    else:
        parts.append(f"free-run stacks of {_bytes(c['stack_bytes'])}")
    if c["save_target"] is not None:
        parts.append(f"disk {_mb(c['disk_bytes_per_s'])} of {_mb(c['disk_write_bytes_per_s'])}"
                     f" measured, {_bytes(c['disk_free_bytes'])} free")
    parts.append(f"cores {c['compute_threads']} + {c['acquisition_cores']:.2f} of "
                 f"{c['cores']}")
    return "; ".join(parts) + f": {c['verdict']}"
