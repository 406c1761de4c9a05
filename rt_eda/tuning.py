"""``rt-eda bench``: measure this machine with the user's own configuration and recommend
``workers x threads_per_worker`` and the inference backend.

Each grid point is a real run of the engine (the user's source, worker, model and frame
size) with the manual interpreter at an interval faster than the analysis can follow, so the
figure is the analysis throughput the machine sustains while the camera keeps its rate.

For a Keras worker the grid is backend x workers x threads: every inference backend
installed here (``call``, ``xla``, ``onnx``, ``openvino``: :data:`rt_eda.workers.BACKENDS`)
at every split, each checked against the call when its workers set up; an item of ``--grid``
may pin one (``onnx:2x1``). A model-free worker has no backend (``-``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError

__all__ = ["GridItem", "GridPoint", "bench_backends", "format_table", "parse_grid", "recommend",
           "run_grid"]

#: ``(workers, threads)``, or ``(workers, threads, backend)`` pinning the backend.
GridItem = tuple[int, int] | tuple[int, int, str]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GridPoint:
    """What one run measured."""

    workers: int
    threads: int
    analysed_per_s: float
    acquired_per_s: float
    requested_per_s: float
    p2d_p50_ms: float
    p2d_p99_ms: float
    camera_jitter_ms: float
    exit_code: int
    #: ``analysis.options.inference`` of the run (``"-"``: a worker without a model).
    backend: str = "call"

    def flags(self) -> str:
        """The ``rt-eda run`` options that reproduce this point."""
        flags = f"--workers {self.workers} --threads-per-worker {self.threads}"
        if self.backend not in ("-", "call"):
            flags += f" --set analysis.options.inference={self.backend}"
        return flags


def parse_grid(text: str) -> list[GridItem]:
    """``"1x2,onnx:2x1"`` -> ``[(1, 2), (2, 1, "onnx")]``."""
    from rt_eda.workers._backends import BACKENDS

    grid: list[GridItem] = []
    for item in text.split(","):
        backend, colon, split = item.strip().rpartition(":")
        w, sep, t = split.partition("x")
        if not sep or not w.isdigit() or not t.isdigit() or int(w) < 1 or int(t) < 1:
            raise ConfigError(f"--grid: {item!r} is not [BACKEND:]WORKERSxTHREADS (e.g. 2x1 or "
                              "onnx:2x1)")
        if colon and backend not in BACKENDS:
            raise ConfigError(f"--grid: {item!r}: backend {backend!r} is not one of "
                              f"{list(BACKENDS)}")
        grid.append((int(w), int(t), backend) if colon else (int(w), int(t)))
    return grid


def bench_backends(config: Config) -> list[str]:
    """The backends ``rt-eda bench`` searches for ``config``'s worker: every one installed
    here for a Keras worker (on a GPU device only ``call`` and ``xla``; with a reduced
    precision only those that run it), ``["-"]`` for a worker without a model."""
    from rt_eda.workers import KerasWorker
    from rt_eda.workers._backends import BACKENDS, backend_unavailable
    from rt_eda.workers._discovery import discover_workers

    cls = discover_workers(config.analysis.worker_modules).get(config.analysis.worker)
    if cls is None or not issubclass(cls, KerasWorker):
        return ["-"]
    names = [b for b in BACKENDS if backend_unavailable(b) is None]
    if config.analysis.device != "cpu":
        names = [b for b in names if b in ("call", "xla")]
    if config.analysis.options.get("precision", "float32") != "float32":
        names = [b for b in names if b in ("onnx", "openvino")]
    return names


def default_grid() -> list[tuple[int, int]]:
    """Every split of up to this machine's cores into processes x threads (at most 8)."""
    cores = os.cpu_count() or 1
    points = [(w, t) for w in range(1, cores + 1) for t in range(1, cores + 1) if w * t <= cores]
    return points[:8] if cores > 1 else [(1, 1)]


def run_grid(config: Config, grid: Sequence[GridItem], duration: float,
             interval: float, on_point: Callable[[GridPoint], None] | None = None,
             backends: Sequence[str] | None = None) -> list[GridPoint]:
    """One engine run per grid point and backend; returns what each measured.

    An item without a backend runs once per backend of ``backends`` (default
    :func:`bench_backends`), an item with one once.
    """
    from rt_eda.engine import Engine

    names = list(backends) if backends is not None else bench_backends(config)
    runs: list[tuple[int, int, str]] = []
    for item in grid:
        if len(item) == 3:
            runs.append((item[0], item[1], str(item[2])))
        else:
            runs += [(item[0], item[1], b) for b in names]
    points = []
    for workers, threads, backend in runs:
        options = dict(config.analysis.options)
        if backend != "-":
            options["inference"] = backend
        cfg = config.with_overrides({
            "analysis.options": options,
            "analysis.workers": workers, "analysis.threads_per_worker": threads,
            "interpreter.kind": "manual", "camera.interval": interval,
            "interpreter.manual_interval": interval, "run.duration": duration,
            "viewer.enabled": False, "run.save": None, "run.summary": None,
        })
        engine = Engine(cfg)
        code = engine.run()
        s = engine.summary
        if not s:
            raise ConfigError("; ".join(engine.errors) or f"run failed with exit code {code}")
        p2d = s["latency_ms"]["publish_to_decision"]
        point = GridPoint(workers, threads, s["analysed_per_s"], s["acquired_fps"],
                          1 / interval if interval > 0 else float("nan"), p2d["p50"],
                          p2d["p99"], s["camera_jitter_ms"], code)
        point = dataclasses.replace(point, backend=backend)
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def recommend(points: Sequence[GridPoint]) -> GridPoint:
    """The point with the highest analysis rate among those that kept the camera's rate
    (>= 95 % of requested); within 5 % of the best rate, the lowest p99 latency wins."""
    kept = [p for p in points if p.exit_code == 0 and
            (p.requested_per_s != p.requested_per_s or
             p.acquired_per_s >= 0.95 * p.requested_per_s)] or list(points)
    top = max(p.analysed_per_s for p in kept)
    close = [p for p in kept if p.analysed_per_s >= 0.95 * top]
    return min(close, key=lambda p: p.p2d_p99_ms)


def format_table(points: Sequence[GridPoint], best: GridPoint | None = None) -> str:
    """The grid as a text table, the recommended row marked."""
    head = (f"{'backend':>8} {'workers x threads':>17} {'analysed/s':>10} {'acquired/s':>10} "
            f"{'p2d p50 ms':>10} {'p2d p99 ms':>10} {'cam jitter ms':>13}")
    rows = [head]
    for p in points:
        mark = "  <- recommended" if p is best else ""
        rows.append(f"{p.backend:>8} {f'{p.workers}x{p.threads}':>17} {p.analysed_per_s:10.1f} "
                    f"{p.acquired_per_s:10.1f} {p.p2d_p50_ms:10.2f} {p.p2d_p99_ms:10.2f} "
                    f"{p.camera_jitter_ms:13.2f}{mark}")
    return "\n".join(rows)
