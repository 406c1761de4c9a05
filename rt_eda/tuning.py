"""``rt-eda bench``: measure this machine with the user's own configuration and recommend
``workers x threads_per_worker``.

Each grid point is a real run of the engine (the user's source, worker, model and frame
size) with the manual interpreter at an interval faster than the analysis can follow, so the
figure is the analysis throughput the machine sustains while the camera keeps its rate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError

__all__ = ["GridPoint", "format_table", "parse_grid", "recommend", "run_grid"]

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


def parse_grid(text: str) -> list[tuple[int, int]]:
    """``"1x2,2x1"`` -> ``[(1, 2), (2, 1)]``."""
    grid = []
    for item in text.split(","):
        w, sep, t = item.strip().partition("x")
        if not sep or not w.isdigit() or not t.isdigit() or int(w) < 1 or int(t) < 1:
            raise ConfigError(f"--grid: {item!r} is not WORKERSxTHREADS (e.g. 2x1)")
        grid.append((int(w), int(t)))
    return grid


def default_grid() -> list[tuple[int, int]]:
    """Every split of up to this machine's cores into processes x threads (at most 8)."""
    cores = os.cpu_count() or 1
    points = [(w, t) for w in range(1, cores + 1) for t in range(1, cores + 1) if w * t <= cores]
    return points[:8] if cores > 1 else [(1, 1)]


def run_grid(config: Config, grid: Sequence[tuple[int, int]], duration: float,
             interval: float, on_point: Callable[[GridPoint], None] | None = None
             ) -> list[GridPoint]:
    """One engine run per grid point; returns what each measured."""
    from rt_eda.engine import Engine

    points = []
    for workers, threads in grid:
        cfg = config.with_overrides({
            "analysis.workers": workers, "analysis.threads_per_worker": threads,
            "interpreter.kind": "manual", "camera.interval": interval,
            "interpreter.manual_interval": interval, "run.duration": duration,
            "viewer.enabled": False, "run.save": None, "run.summary": None,
        })
        engine = Engine(cfg)
        code = engine.run()
        s: dict[str, Any] = engine.summary
        if not s:
            raise ConfigError("; ".join(engine.errors) or f"run failed with exit code {code}")
        p2d = s["latency_ms"]["publish_to_decision"]
        gap = s.get("publish_interval_ms", {"p50": 0.0, "p99": 0.0})
        point = GridPoint(workers, threads, s["analysed_per_s"], s["acquired_fps"],
                          1 / interval if interval > 0 else float("nan"), p2d["p50"],
                          p2d["p99"], gap["p99"] - gap["p50"], code)
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
    head = (f"{'workers x threads':>17} {'analysed/s':>10} {'acquired/s':>10} "
            f"{'p2d p50 ms':>10} {'p2d p99 ms':>10} {'cam jitter ms':>13}")
    rows = [head]
    for p in points:
        mark = "  <- recommended" if p is best else ""
        rows.append(f"{f'{p.workers}x{p.threads}':>17} {p.analysed_per_s:10.1f} "
                    f"{p.acquired_per_s:10.1f} {p.p2d_p50_ms:10.2f} {p.p2d_p99_ms:10.2f} "
                    f"{p.camera_jitter_ms:13.2f}{mark}")
    return "\n".join(rows)
