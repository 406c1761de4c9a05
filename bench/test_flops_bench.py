"""The physical anchor: each model's FLOPs per stack and the FLOP rate its inference call
achieves, beside the machine's peak FLOP rate measured in the same run.

    pytest bench/test_flops_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

``test_peak_matmul[library-threads]`` times one float32 ``N x N`` matrix product
(``2 N^3`` FLOPs, N = 2048: compute-bound) in a fresh server process (``flops_procs.py``) that
computes with that library (numpy's BLAS, TensorFlow) and that many threads (1, 2), a count a
library fixes when it loads; the benchmark's round is ``go`` on a pipe and the answer, and the
server's own timing of the product is kept beside it (the pipe costs well under 1 %).

``test_inference_flops[model]`` times the worker's inference call (``run_model``: the compiled
``model(x, training=False)``) on a prepared synthetic 2x512x512 ``uint16`` stack, in this
process with one compute thread (the worker of the default ``2 x 1`` run), for the bundled demo
model, ``demo_v1.keras`` (the demo model until issue 17) and the 0.5 M-parameter U-Net of
``test_keras_bench.py``. Its FLOPs per stack are counted from the model's layers
(:func:`rt_eda.workers._flops.count_flops`: 2 x the convolutions' multiply-accumulates at the
shapes of a real forward pass); achieved FLOP/s = FLOPs / median call time, set beside the
one-thread peak measured in the same run (``peak_1t``: the best round of a float32 matrix
product in a one-thread numpy server and a one-thread TensorFlow server). Baseline in the same
test: one whole analysis (``worker.analyse``: preprocessing, inference, decision, network
image), per the same rounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_timing import figures, median, per_op, times
from test_keras_bench import heavy_model, one_thread

from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource
from rt_eda.workers import DemoModelWorker, KerasRescaleWorker, WorkerSettings, demo_model_path
from rt_eda.workers._flops import count_flops

__all__ = ["one_thread"]  # the fixture, shared with test_keras_bench

BENCH = Path(__file__).parent
MATMUL_N = 2048
PEAKS = ["numpy-1", "numpy-2", "tensorflow-1", "tensorflow-2"]
MODELS = ["demo", "demo-v1", "heavy-0.5M"]


def matmul_flops(n: int) -> int:
    """FLOPs of one ``n x n`` by ``n x n`` product: ``n^2`` outputs of ``n`` MACs, 2 each."""
    return 2 * n**3


class MatmulServer:
    """``flops_procs.py`` in a fresh process: :meth:`go` runs one product there."""

    def __init__(self, library: str, threads: int, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "flops_procs.py"), library, str(threads), str(n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.server_s: list[float] = []
        self.info: dict[str, Any] = json.loads(self._line("ready"))
        if self.info["threads"] != threads:
            self.close()
            raise RuntimeError(f"matmul server: {library} runs with {self.info['threads']} "
                               f"threads, {threads} asked")

    def _line(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(prefix + " "):
            raise RuntimeError(f"matmul server: expected {prefix!r}, got {line!r} "
                               f"(exit code {self.proc.poll()})")
        return line[len(prefix) + 1:]

    def go(self) -> None:
        """One product in the server; its own timing of it goes to :attr:`server_s`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.server_s.append(float(self._line("done")))

    def close(self) -> None:
        """End the server (an empty line), then wait for it; kill it if it does not end."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def matmul_server(request: pytest.FixtureRequest) -> Iterator[MatmulServer]:
    library, threads = str(request.param).split("-")
    server = MatmulServer(library, int(threads), MATMUL_N)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("matmul_server", PEAKS, indirect=True)
def test_peak_matmul(benchmark: Any, quick: bool, report: Any,
                     matmul_server: MatmulServer) -> None:
    """Timed: one float32 2048 x 2048 matrix product in a server process with the library and
    thread count of the parameter; one product per round (rounds x 1 iteration), one warm-up
    round. ``extra_info``: FLOPs per product, GFLOP/s at the median and the best round, the
    server's own median (the pipe's share), the threads in force."""
    rounds = 3 if quick else 10
    benchmark.pedantic(matmul_server.go, rounds=rounds, warmup_rounds=1)
    t = times(benchmark)
    server = np.asarray(matmul_server.server_s[1:], np.float64)  # the warm-up round dropped
    flops = matmul_flops(MATMUL_N)
    result = {
        **matmul_server.info, "flops": flops, **figures(t, "product", "ms"),
        "gflops_median": flops / median(t) / 1e9, "gflops_best": flops / float(t.min()) / 1e9,
        "server_median_ms": 1e3 * median(server),
        "pipe_share": 1.0 - median(server) / median(t),
    }
    benchmark.extra_info.update(result)
    report(f"peak: float32 {MATMUL_N}x{MATMUL_N} matrix product (GFLOP/s = 2 N^3 / time)", {
        "library": result["library"], "threads": result["threads"],
        "product p50 ms": result["product_median_ms"], "GFLOP/s p50": result["gflops_median"],
        "GFLOP/s best": result["gflops_best"], "pipe share": result["pipe_share"],
    })


@pytest.fixture(scope="module")
def peak_1t(quick: bool) -> dict[str, float]:
    """The machine's one-thread peak in this run: the float32 2048 x 2048 product in a
    one-thread numpy server and a one-thread TensorFlow server, per round as the benchmark
    times it; the reference is the best round of either (load only ever slows a round, so the
    best is the closest to the machine's limit), the medians are kept beside it."""
    flops = matmul_flops(MATMUL_N)
    out: dict[str, float] = {}
    for library in ("numpy", "tensorflow"):
        server = MatmulServer(library, 1, MATMUL_N)
        try:
            t = per_op(server.go, rounds=3 if quick else 10, warmup_rounds=1)
        finally:
            server.close()
        out[f"peak_{library}_1t_gflops_median"] = flops / median(t) / 1e9
        out[f"peak_{library}_1t_gflops_best"] = flops / float(t.min()) / 1e9
    out["peak_1t_gflops"] = max(out["peak_numpy_1t_gflops_best"],
                                out["peak_tensorflow_1t_gflops_best"])
    return out


@pytest.fixture(scope="module")
def heavy_path(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """The 0.5 M-parameter U-Net of test_keras_bench.py."""
    return heavy_model(tmp_path_factory.mktemp("heavy") / "heavy.keras")


def _worker(model: str, request: pytest.FixtureRequest) -> DemoModelWorker | KerasRescaleWorker:
    if model == "heavy-0.5M":
        return KerasRescaleWorker(WorkerSettings(model=str(request.getfixturevalue("heavy_path"))))
    if model == "demo-v1":
        return DemoModelWorker(WorkerSettings(
            model=str(demo_model_path().with_name("demo_v1.keras"))))
    return DemoModelWorker(WorkerSettings())


def _stacks() -> tuple[Any, list[np.ndarray]]:
    source = SyntheticSource(SyntheticSettings(height=512, width=512))
    spec = source.open()
    stacks = [np.empty(spec.shape, spec.np_dtype) for _ in range(8)]
    for i, stack in enumerate(stacks):
        source.render_stack(0.5 * i, stack)
    source.close()
    return spec, stacks


@pytest.mark.parametrize("model", MODELS)
def test_inference_flops(benchmark: Any, quick: bool, report: Any, one_thread: None,
                         peak_1t: dict[str, float], request: pytest.FixtureRequest,
                         model: str) -> None:
    """Timed: the worker's inference call (``run_model``) on a prepared synthetic 2x512x512
    stack, one thread, this process; one call per round (rounds x 1 iteration).

    Baseline, same rounds: one whole ``worker.analyse`` (8 timepoints in turn).
    ``extra_info``: parameters, FLOPs and MACs per stack (counted), the per-layer FLOPs, the
    achieved GFLOP/s of the call (median and best round) and of the whole analysis, the
    one-thread peak of this run (``peak_1t``) and the median's share of it.
    """
    heavy = model == "heavy-0.5M"
    rounds = (2 if heavy else 5) if quick else (5 if heavy else 30)
    spec, stacks = _stacks()
    worker = _worker(model, request)
    worker.setup(spec)
    worker.warm_up()
    try:
        data = worker.prepare_images(stacks[0])
        keras_model = worker.model
        assert keras_model is not None
        counted = count_flops(keras_model, tuple(data["pixels"].shape))
        benchmark.pedantic(lambda: worker.run_model(data), rounds=rounds, warmup_rounds=1)
        call_t = times(benchmark)
        step = iter(range(1 << 62))
        analyse_t = per_op(lambda: worker.analyse(stacks[next(step) % len(stacks)]),
                           rounds=rounds, warmup_rounds=1)
    finally:
        worker.teardown()
    flops = counted.flops
    achieved = flops / median(call_t) / 1e9
    peak = peak_1t["peak_1t_gflops"]
    result: dict[str, Any] = {
        "parameters": int(keras_model.count_params()),
        "input_shape": list(counted.input_shape),
        "flops_per_stack": flops, "macs_per_stack": counted.macs,
        "flops_per_layer": {r.name: r.flops for r in counted.layers},
        "not_counted": list(counted.not_counted),
        **figures(call_t, "inference_call", "ms"), **figures(analyse_t, "analyse", "ms"),
        "gflops_inference_call": achieved,
        "gflops_inference_call_best": flops / float(call_t.min()) / 1e9,
        "gflops_analyse": flops / median(analyse_t) / 1e9,
        **peak_1t,
        "share_of_peak_1t": achieved / peak,
        "analyse_vs_inference_call": median(analyse_t) / median(call_t),
    }
    benchmark.extra_info.update(result)
    report("FLOPs per 2x512x512 stack and achieved FLOP/s, one thread (peak: the best float32 "
           "matrix product round, numpy or TensorFlow, one thread, this run)", {
               "model": model, "parameters": result["parameters"],
               "GFLOP/stack": flops / 1e9,
               "call p50 ms": result["inference_call_median_ms"],
               "analyse p50 ms": result["analyse_median_ms"],
               "GFLOP/s call p50": achieved,
               "GFLOP/s call best": result["gflops_inference_call_best"],
               "peak GFLOP/s": peak, "p50 share of peak": result["share_of_peak_1t"],
           })
