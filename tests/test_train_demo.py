"""``rt-eda train-demo-model``: its options reach the trainer, bad ones exit 2 with one line,
and the bundled demo model keeps the input's size at every size the rescale worker feeds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rt_eda.workers._models import demo_model_path, load_model

pytestmark = pytest.mark.tf

TINY = ["--train-seeds", "1", "--frames-per-seed", "4", "--crop", "32", "--epochs", "1",
        "--eval-seeds", "101", "--eval-frames-per-seed", "3", "--image-size", "128",
        "--no-timing"]


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "rt_eda.cli", "train-demo-model", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize(("args", "named"), [
    (["--epochs", "0"], "--epochs"),
    (["--base-filters", "0"], "--base-filters"),
    (["--dilations", "0"], "--dilations"),
    (["--dilations", "2", "65"], "--dilations"),
    (["--crop", "30"], "--crop"),
    (["--crop", "1024"], "--crop"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--arch", "resnet"], "--arch"),
    (["--downsample", "3"], "--downsample"),
    (["--epochs", "ten"], "--epochs"),
])
def test_bad_options_exit_2_naming_the_option(args: list[str], named: str) -> None:
    """Checked before any data is made or TensorFlow loads; a leading option is the trainer's."""
    proc = _cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert named in last, proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_architecture_option_reaches_the_model_and_its_record(tmp_path: Path) -> None:
    """A tiny lowres training through the CLI: the saved network is the one the options
    describe, keeps the input's size, and its record holds the options and its FLOPs."""
    from rt_eda.workers._flops import count_flops

    out = tmp_path / "tiny.keras"
    proc = _cli("--arch", "lowres", "--downsample", "2", "--dilations", "1", "3",
                "--base-filters", "4", "--separable", "--learning-rate", "0.001", *TINY,
                "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    cfg = record["config"]
    assert (cfg["arch"], cfg["downsample"], cfg["dilations"], cfg["base_filters"],
            cfg["separable"], cfg["learning_rate"]) == ("lowres", 2, [1, 3], 4, True, 0.001)
    assert "--separable" in record["command"] and "separable" in record["description"]
    model = load_model(out)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("SeparableConv2D") == 2, kinds
    rates = [tuple(layer.dilation_rate) for layer in model.layers
             if type(layer).__name__ == "SeparableConv2D"]
    assert rates == [(1, 1), (3, 3)]
    assert record["training"]["parameters"] == model.count_params()
    assert record["flops_per_stack"]["flops"] == count_flops(model, (1, 128, 128, 2)).flops
    assert record["evaluation"]["frames"] == 3
    y = np.asarray(model([np.zeros((1, 26, 18, 2), np.float32)]))
    assert y.shape == (1, 26, 18, 1)


@pytest.mark.parametrize("shape", [(4, 4), (36, 44), (128, 68), (260, 500)])
def test_the_bundled_model_keeps_every_multiple_of_4(shape: tuple[int, int]) -> None:
    """The rescale worker crops to multiples of 4 only; the network image has the fed size."""
    model = load_model(demo_model_path())
    y = np.asarray(model([np.zeros((1, *shape, 2), np.float32)], training=False))
    assert y.shape == (1, *shape, 1)
    assert np.all((y >= 0) & (y <= 1))


def test_the_bundled_record_describes_the_bundled_model() -> None:
    """demo.json is the record of demo.keras: parameters, FLOPs and quality at or above
    demo_v1's (the targets of issue 17), and demo_v1.json the record of demo_v1.keras."""
    from rt_eda.workers._flops import count_flops

    path = demo_model_path()
    record = json.loads(path.with_suffix(".json").read_text())
    v1_path = path.with_name("demo_v1.keras")
    v1 = json.loads(v1_path.with_suffix(".json").read_text())
    model = load_model(path)
    assert record["model"] == path.name and v1["model"] == v1_path.name
    assert record["training"]["parameters"] == model.count_params()
    assert record["flops_per_stack"]["flops"] == count_flops(model, (1, 512, 512, 2)).flops
    assert load_model(v1_path).count_params() == v1["training"]["parameters"]
    new, old = record["evaluation"]["upper_0.48"], v1["evaluation"]["upper_0.48"]
    assert new["recall"] >= old["recall"] and new["precision"] >= old["precision"], (new, old)
    assert record["evaluation"]["frames"] == v1["evaluation"]["frames"]
