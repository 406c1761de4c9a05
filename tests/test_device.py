"""``analysis.device``: the CPU hides every GPU, a GPU is used alone with memory growth (or a cap)
so several workers share it, and a GPU that is not there is exit 2 naming the problem.

What needs no GPU runs everywhere: the decision (:func:`plan_device`, with the GPU lists a
machine could have), the real set-up on the CPU, the refusal through ``rt-eda run``. What
needs one is skipped here with the reason TensorFlow gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import assert_clean, role_processes, rt_eda

from rt_eda.core.config import load_config
from rt_eda.core.errors import ConfigError
from rt_eda.shm import list_blocks
from rt_eda.workers._device import DevicePlan, parse_device, plan_device

pytestmark = pytest.mark.tf

GPUS = ["/physical_device:GPU:0", "/physical_device:GPU:1"]


def test_device_names() -> None:
    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("gpu") == ("gpu", 0)
    assert parse_device("gpu:3") == ("gpu", 3)
    for bad in ("cpu:1", "GPU", "gpu:", "gpu:-1", "tpu", ""):
        with pytest.raises(ConfigError, match="is not 'cpu', 'gpu' or 'gpu:N'"):
            parse_device(bad)
    config = load_config(None)
    assert config.analysis.device == "cpu"
    with pytest.raises(ConfigError, match=r"analysis.device: 'gpu:x' is not 'cpu', 'gpu' or"):
        config.with_overrides({"analysis.device": "gpu:x"})


def test_the_plan_for_each_machine() -> None:
    assert plan_device("cpu", GPUS, built_with_cuda=True) == DevicePlan("cpu")
    assert plan_device("gpu", GPUS, built_with_cuda=True) == DevicePlan("gpu", 0, None)
    assert plan_device("gpu:1", GPUS, built_with_cuda=True,
                       memory_mb=2048) == DevicePlan("gpu", 1, 2048)
    assert "memory growth on" in plan_device("gpu", GPUS, built_with_cuda=True).describe()
    cases: list[tuple[str, list[str], bool, object, str]] = [
        ("gpu:2", GPUS, True, None, "TensorFlow sees 2 GPU(s) (/physical_device:GPU:0, "
                                    "/physical_device:GPU:1): use gpu:0 .. gpu:1"),
        ("gpu", [], False, None, "TensorFlow sees no GPU here: this TensorFlow is built "
                                 "without CUDA (tensorflow-cpu)"),
        ("gpu", [], True, None, "built with CUDA but finds no GPU"),
        ("gpu", GPUS, True, 0, "analysis.options.gpu_memory_mb must be an integer >= 1"),
        ("gpu", GPUS, True, "4G", "got '4G'"),
    ]
    for device, gpus, cuda, memory, words in cases:
        with pytest.raises(ConfigError) as info:
            plan_device(device, gpus, built_with_cuda=cuda, memory_mb=memory)
        assert words in str(info.value), (device, str(info.value))


def test_cpu_hides_every_gpu_in_a_real_process() -> None:
    """configure_device("cpu") in a fresh interpreter: no GPU visible afterwards, and a second
    call (TensorFlow initialised by then) agrees."""
    code = (
        "import json, tensorflow as tf\n"
        "from rt_eda.workers._device import configure_device\n"
        "plan = configure_device('cpu')\n"
        "tf.constant(1.0) + 1.0\n"
        "again = configure_device('cpu')\n"
        "print(json.dumps([plan.kind, again.kind, "
        "[d.name for d in tf.config.get_visible_devices('GPU')]]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["cpu", "cpu", []]


def _gpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def test_gpu_without_one_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    if _gpus():
        pytest.skip("this machine has a GPU: the refusal of a missing one cannot be seen here")
    before = {n for n, _ in list_blocks()}
    for device in ("gpu", "gpu:1"):
        proc = rt_eda("--duration", "3", "--no-viewer", "--set", f"analysis.device={device}",
                      "--set", "camera.synthetic.height=64", "--set",
                      "camera.synthetic.width=64", cwd=tmp_path,
                      env={"XDG_CACHE_HOME": str(tmp_path)}, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("INFO")]
        assert len(lines) == 1, lines
        assert f"analysis.device = '{device}', but TensorFlow sees no GPU here" in lines[0]
        assert "Traceback" not in proc.stderr and "source open" not in proc.stderr
        assert role_processes() == []
    assert_clean(before)


def test_onnx_and_openvino_are_refused_on_a_gpu() -> None:
    from rt_eda.workers import DemoModelWorker, WorkerSettings

    for backend in ("onnx", "openvino"):
        with pytest.raises(ConfigError, match=f"inference = '{backend}' runs on the CPU"):
            DemoModelWorker(WorkerSettings(device="gpu", options=(("inference", backend),)))


def test_two_workers_share_one_gpu(tmp_path: Path) -> None:
    """Two worker processes on GPU 0 with memory growth, a real run (needs a GPU)."""
    if not _gpus():
        pytest.skip("no GPU here: TensorFlow sees none (tensorflow-cpu, or no CUDA device); "
                    "the device plan and the CPU path are tested above")
    out = tmp_path / "s.json"
    proc = rt_eda("--duration", "8", "--no-viewer", "--workers", "2", "--interpreter",
                  "manual", "--interval", "0", "--set", "analysis.device=gpu", "--summary",
                  str(out), cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    assert s["stacks_analysed"] > 0 and s["worker_restarts"] == 0
