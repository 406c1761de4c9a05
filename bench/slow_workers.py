"""Workers for the benchmarks (importable by spawned worker processes)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rt_eda.workers import Worker


class BusyWorker(Worker):
    """Holds the GIL for ``options.work_ms`` ms per stack (pure Python), decision 0."""

    def run_model(self, data: dict[str, Any]) -> np.ndarray:
        end = time.perf_counter() + float(self.settings.option("work_ms", 10.0)) / 1e3
        n = 0
        while time.perf_counter() < end:
            n += 1
        return np.zeros(1)

    def extract_decision_parameter(self, output: np.ndarray) -> float:
        return 0.0
