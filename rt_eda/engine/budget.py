"""What a run will allocate, checked against what the machine has, before it is allocated.

::

    stack ring        slots x stack (page-aligned) in /dev/shm     ring.slots / ring.buffer_s,
                      never more than ring.max_bytes               ring.max_bytes
    output ring       slots x network image (float32) in /dev/shm  ring.max_bytes
    workers           each: two float32 copies of its analysis     analysis.workers,
                      window (+ the window itself when T > 1)      analysis.n_timepoints
    renderer          the synthetic source's base images and       camera.synthetic.height,
                      noise bank (camera process, at open)         width, z_slices
    processes         each role's own memory (measured: about      analysis.workers
                      64 MiB, a TensorFlow worker about 256 MiB)

Guarantees
----------
- :func:`ring_slots` and :func:`output_ring_slots` size the rings; a ring that cannot hold
  its minimum number of slots within ``ring.max_bytes`` is a
  :class:`~rt_eda.core.errors.ConfigError`, never a ring larger than the limit.
- :func:`check_fits` compares the total with the memory available (``MemAvailable``, and the
  cgroup's limit when there is one) and the rings with the free space of ``/dev/shm``; a
  process whose share cannot fit ``ulimit -v`` is refused too. Every refusal is one line
  naming what was asked (bytes), what is available (bytes) and the settings to change.
- Nothing is allocated here; the estimate is a lower bound of what the run uses (a model's
  own memory is not known before it is loaded).
"""

from __future__ import annotations

import logging
import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from rt_eda.core.config import Config, SourceKind
from rt_eda.core.errors import ConfigError
from rt_eda.shm import StackRing, StackSpec

__all__ = ["WORKER_CPU_S", "Allocation", "Available", "available", "check_fits", "cores",
           "fastest_interval", "output_ring_slots", "plan", "ring_slots", "stack_keys"]

log = logging.getLogger(__name__)

MIN_OUTPUT_SLOTS = 2
"""The fewest slots an output ring may have (the viewer and writer read the newest)."""

ROLE_BYTES = 64 * 2**20
"""A role process's own memory (Python, numpy, numba), measured: 64 MiB anonymous."""

KERAS_WORKER_BYTES = 256 * 2**20
"""A TensorFlow worker's own memory with the demo model, measured: 160-200 MiB anonymous."""


def _size(n: float) -> str:
    """Bytes, in the unit that reads best, with the exact count."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({int(n)} bytes)"
    return f"{int(n)} bytes"


def stack_keys(config: Config) -> str:
    """The settings that make a stack smaller, for the source in use."""
    kind = config.camera.source_spec.kind
    if kind is SourceKind.SYNTHETIC:
        return ("camera.synthetic.height, camera.synthetic.width, camera.synthetic.z_slices "
                "or camera.synthetic.dtype")
    if kind is SourceKind.REPLAY:
        return "the recording replayed (its stacks are this size)"
    return "the camera's ROI or binning, camera.channels or camera.z_positions"


def _positions(config: Config) -> int:
    """The plan's positions (1 without a plan)."""
    from rt_eda.core.plan import plan_positions

    return plan_positions(config.camera.plan)


def _minimum_slots(config: Config) -> int:
    """A claim per worker (and per bridge lane: a stack in flight to a cluster's actor holds
    its claim), a time window (and a newest stack waiting) per position, room to publish."""
    a = config.analysis
    lanes = 0
    if config.cluster.enabled:
        from rt_eda.cluster import cluster_layout

        lanes = cluster_layout(config).lanes
    return a.workers + lanes + _positions(config) * a.n_timepoints + 3


def fastest_interval(config: Config) -> tuple[float, str]:
    """The shortest interval the run may use (0.0: free-run) and the key that sets it: the
    manual interpreter's held interval, the binary one's fast and slow intervals, and the
    starting interval ``camera.interval`` (the first such key on a tie)."""
    i = config.interpreter
    candidates = [("interpreter.manual_interval", i.manual_interval),
                  ("interpreter.fast_interval", i.fast_interval),
                  ("interpreter.slow_interval", i.slow_interval),
                  ("camera.interval", config.camera.interval)]
    key, value = min(((k, v) for k, v in candidates if v is not None), key=lambda kv: kv[1])
    return float(value), key


def ring_slots(config: Config, spec: StackSpec) -> int:
    """How many slots the stack ring gets.

    ``ring.slots`` when set. Otherwise enough for every worker to hold a claim (and a time
    window) with room to publish; with a recording (``--save``) also ``ring.buffer_s``
    seconds of stacks at the fastest interval the run may use (1 ms for free-run), so the
    writer can fall that far behind without loss; never more than ``ring.max_bytes``.

    Raises
    ------
    ConfigError
        The slots the run needs do not fit in ``ring.max_bytes`` (the message names the
        sizes and the settings to change).
    """
    ring = config.ring
    per_slot = StackRing.layout_size(spec, 2)[2]
    if ring.slots:
        if ring.slots * per_slot > ring.max_bytes:
            raise ConfigError(
                f"ring.slots: {ring.slots} slots of {_size(per_slot)} need "
                f"{_size(ring.slots * per_slot)}, over ring.max_bytes {_size(ring.max_bytes)};"
                f" lower ring.slots, raise ring.max_bytes, or make stacks smaller "
                f"({stack_keys(config)})")
        return ring.slots
    minimum = _minimum_slots(config)
    if minimum * per_slot > ring.max_bytes:
        raise ConfigError(
            f"ring.max_bytes: the stack ring needs at least {minimum} slots (analysis.workers "
            f"+ positions x analysis.n_timepoints + 3) of {_size(per_slot)}, "
            f"{_size(minimum * per_slot)}; "
            f"ring.max_bytes is {_size(ring.max_bytes)}: raise ring.max_bytes, lower "
            f"analysis.workers, or make stacks smaller ({stack_keys(config)})")
    slots = minimum
    if config.run.save:
        fastest = fastest_interval(config)[0]
        fastest = fastest if fastest > 0 else 1e-3
        rate = 1.0 / fastest
        positions = _positions(config)
        if positions > 1:  # every position at the fastest interval, as the stage allows
            stack_s = spec.frames * config.camera.exposure_ms / 1000.0
            rate = min(positions * rate, 1.0 / stack_s) if stack_s > 0 else positions * rate
        slots = max(minimum, math.ceil(ring.buffer_s * rate))
    cap = ring.max_bytes // per_slot
    return int(min(slots, cap, 4096))


def output_ring_slots(config: Config, spec: StackSpec, image: StackSpec) -> int:
    """How many slots the network-image ring gets: as many as the stack ring (at least 8),
    within ``ring.max_bytes`` (at least :data:`MIN_OUTPUT_SLOTS`).

    Raises
    ------
    ConfigError
        Not even :data:`MIN_OUTPUT_SLOTS` network images fit in ``ring.max_bytes``.
    """
    per_slot = StackRing.layout_size(image, 2)[2]
    fit = config.ring.max_bytes // per_slot
    if fit < MIN_OUTPUT_SLOTS:
        raise ConfigError(
            f"ring.max_bytes: the worker's network images ({image.height}x{image.width} "
            f"float32, {_size(per_slot)} each) need at least {MIN_OUTPUT_SLOTS} slots, "
            f"{_size(MIN_OUTPUT_SLOTS * per_slot)}; ring.max_bytes is "
            f"{_size(config.ring.max_bytes)}: raise ring.max_bytes, use a worker with smaller "
            "network images, or keep none (writer.save_network_images = false and "
            "viewer.enabled = false)")
    return int(min(max(8, ring_slots(config, spec)), fit, 4096))


@dataclass(frozen=True, slots=True)
class Allocation:
    """One thing the run will allocate: what, how many bytes, whether in ``/dev/shm``, the
    bytes one process holds of it at most, and the settings that change it."""

    what: str
    nbytes: int
    keys: str
    shm: bool = False
    per_process: int = 0


def plan(config: Config, spec: StackSpec, *, keras: bool = False,
         network_image: StackSpec | None = None) -> list[Allocation]:
    """Every allocation of a run with stacks of ``spec`` (see the module docstring).

    Raises
    ------
    ConfigError
        A ring cannot fit ``ring.max_bytes`` (see :func:`ring_slots`).
    """
    a = config.analysis
    slots = ring_slots(config, spec)
    ring_bytes = StackRing.layout_size(spec, slots)[0]
    allocs = [Allocation(f"stack ring ({slots} slots of {spec.shape} {spec.dtype})",
                         ring_bytes, "ring.max_bytes, ring.buffer_s or ring.slots",
                         shm=True, per_process=ring_bytes)]
    if network_image is not None:
        out_slots = output_ring_slots(config, spec, network_image)
        out_bytes = StackRing.layout_size(network_image, out_slots)[0]
        allocs.append(Allocation(
            f"output ring ({out_slots} network images of {network_image.height}x"
            f"{network_image.width})", out_bytes, "ring.max_bytes", shm=True,
            per_process=out_bytes))
    channels = len(a.channels_to_use) or spec.channels
    window = a.n_timepoints * channels * spec.z_slices * spec.height * spec.width
    per_worker = 2 * 4 * window + (a.n_timepoints * spec.nbytes if a.n_timepoints > 1 else 0)
    allocs.append(Allocation(
        f"workers' float32 copies ({a.workers} x {_size(per_worker)})", a.workers * per_worker,
        f"analysis.workers, analysis.n_timepoints or smaller stacks ({stack_keys(config)})",
        per_process=per_worker))
    if config.camera.source_spec.kind is SourceKind.SYNTHETIC:
        from rt_eda.sources import make_source
        from rt_eda.sources.synthetic import SyntheticSource, open_peak_bytes

        source = make_source(config)
        fields = [source] if isinstance(source, SyntheticSource) else list(
            getattr(source, "fields", ()))
        # One renderer per plan position, made one after the other: each keeps less than
        # its peak, so the sum of the peaks bounds them.
        peak = sum(open_peak_bytes(f.settings) for f in fields)
        what = "synthetic renderer" if len(fields) == 1 else (
            f"synthetic renderers ({len(fields)} plan positions)")
        allocs.append(Allocation(f"{what} (base images and noise bank)", peak,
                                 stack_keys(config), per_process=peak))
    roles = 2 + (1 if config.run.save else 0)  # camera, interpreter, writer
    own = roles * ROLE_BYTES + a.workers * (KERAS_WORKER_BYTES if keras else ROLE_BYTES)
    allocs.append(Allocation(f"processes ({roles + a.workers} roles' own memory)", own,
                             "analysis.workers"))
    return allocs


@dataclass(frozen=True, slots=True)
class Available:
    """Memory and ``/dev/shm`` space available now, and the per-process address-space limit
    (None when unlimited)."""

    memory: int
    memory_source: str
    shm: int
    address_space: int | None


def _cgroup_headroom() -> int | None:
    """Bytes the cgroup (v2) still allows, or None without a limit."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        folder = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, IndexError, ValueError):
        return None


def available() -> Available:
    """What the machine has now (Linux: ``/proc/meminfo``, the cgroup, ``statvfs``)."""
    memory, source = 0, "MemAvailable"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                memory = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        source = "free pages"
    headroom = _cgroup_headroom()
    if headroom is not None and headroom < memory:
        memory, source = headroom, "the cgroup's memory.max"
    try:
        st = os.statvfs("/dev/shm")
        shm = st.f_bavail * st.f_frsize
    except OSError:
        shm = memory
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return Available(memory, source, shm,
                     None if soft == resource.RLIM_INFINITY else int(soft))


def check_fits(allocs: list[Allocation], have: Available | None = None) -> None:
    """Refuse a run whose allocations cannot fit (see the module docstring).

    Raises
    ------
    ConfigError
        One line per limit exceeded, with the bytes asked and available and the settings
        to change (the biggest allocation first).
    """
    have = have or available()
    problems = []
    total = sum(x.nbytes for x in allocs)
    biggest = sorted(allocs, key=lambda x: -x.nbytes)
    if total > have.memory:
        parts = ", ".join(f"{x.what} {_size(x.nbytes)}" for x in biggest[:3])
        problems.append(
            f"not enough memory: the run needs at least {_size(total)} ({parts}), "
            f"{_size(have.memory)} available ({have.memory_source}); change "
            f"{biggest[0].keys}")
    shm = sum(x.nbytes for x in allocs if x.shm)
    if shm > have.shm:
        problems.append(
            f"not enough space in /dev/shm: the rings need {_size(shm)}, {_size(have.shm)} "
            f"free; change ring.max_bytes or make stacks smaller")
    if have.address_space is not None:
        rings = sum(x.per_process for x in allocs if x.shm)  # every process maps them
        for x in biggest:
            if not x.shm and x.per_process and rings + x.per_process > have.address_space:
                problems.append(
                    f"{x.what}: one process needs at least {_size(rings + x.per_process)} "
                    f"of address space (with the rings it maps), over `ulimit -v` "
                    f"{_size(have.address_space)}; change {x.keys}")
                break
    if problems:
        raise ConfigError("\n".join(problems))


WORKER_CPU_S = 1.2
"""CPU seconds one worker process costs to start (spawn, imports, warm-up of the ring
kernels) and stop (interpreter exit), model aside: measured with ImageWorker on this 2-core
machine, 5.5 CPU-s for a whole run with 1 worker, 13.6 with 8."""


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
