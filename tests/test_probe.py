"""Bad models are refused before anything starts, and no model that fits is refused.

Through ``rt-eda run`` as a user meets it: a model the static reading can refuse (several
outputs, the wrong channel count, a fixed size that does not match, a corrupt file, an HDF5
file that is not a model) exits 2 at once; one that only fails when it runs on the real input
is caught by the preflight probe (:mod:`rt_eda.workers._probe`), also exit 2, in one line,
with nothing started. Models whose shapes only a real forward pass fixes (dynamic size, an
output smaller than the input, a 5-D legacy HDF5 input) run.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    role_processes,
    rt_eda,
    start_rt_eda,
    summary,
    wait_for_role,
)

from rt_eda.shm import list_blocks

pytestmark = pytest.mark.tf

keras = pytest.importorskip("keras")

SMALL = ["--no-viewer", "--set", "camera.synthetic.height=64", "--set",
         "camera.synthetic.width=64"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe_models")
    paths: dict[str, Path] = {}

    def save(name: str, model: object) -> None:
        paths[name] = d / name
        model.save(paths[name])  # type: ignore[attr-defined]

    inp = keras.Input((None, None, 2))
    heads = [keras.layers.Conv2D(1, 1, name=f"head{i}")(inp) for i in range(3)]
    save("three_outputs.keras", keras.Model(inp, heads))
    save("three_outputs.h5", keras.Model(inp, heads))
    # fits every static check (dynamic size, 2 channels) but cannot take a 64x64 image
    reshape_in = keras.Input((None, None, 2))
    reshaped = keras.layers.Reshape((100, 100, 1))(keras.layers.Conv2D(1, 1)(reshape_in))
    save("reshape.keras", keras.Model(reshape_in, reshaped))
    save("three_channels.keras", keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(1, 1, activation="sigmoid")]))
    save("fixed64.keras", keras.Sequential(
        [keras.Input((64, 64, 2)), keras.layers.Conv2D(1, 3, padding="same",
                                                       activation="sigmoid")]))
    save("stride2.keras", keras.Sequential(
        [keras.Input((None, None, 2)), keras.layers.Conv2D(1, 3, strides=2, padding="same",
                                                           activation="sigmoid")]))
    five_in = keras.Input((None, None, 2, 1))
    five = keras.layers.Conv3D(4, (3, 3, 1), padding="same", activation="relu")(five_in)
    five = keras.layers.Conv3D(1, (1, 1, 2), padding="valid", activation="sigmoid")(five)
    save("five_d_legacy.h5", keras.Model(five_in, five))
    corrupt = d / "corrupt.keras"
    corrupt.write_bytes(paths["fixed64.keras"].read_bytes()[:300])
    paths["corrupt.keras"] = corrupt
    not_model = d / "weights_only.h5"
    with h5py.File(not_model, "w") as f:
        f.create_dataset("layer0/kernel", data=np.zeros((3, 3), "f4"))
    paths["weights_only.h5"] = not_model
    return paths


def problem_lines(stderr: str) -> list[str]:
    """What the command said, without its INFO log lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("INFO")]


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line holding every word, no traceback, nothing started."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = problem_lines(proc.stderr)
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "source open" not in proc.stderr  # the camera never started
    assert role_processes() == []
    return lines[0]


@pytest.fixture
def cache(tmp_path: Path) -> dict[str, str]:
    """A probe cache of the test's own."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.mark.parametrize(("name", "words"), [
    ("three_outputs.keras", ["has 3 outputs", "exactly one"]),
    ("three_outputs.h5", ["has 3 outputs"]),
    ("three_channels.keras", ["expects 3 channel(s)", "(None, None, None, 3)",
                              "synthetic source makes 2 channel(s)"]),
    ("fixed64.keras", ["64x64 px", "128x128", "camera.synthetic.height = 64 and "
                       "camera.synthetic.width = 64"]),
    ("corrupt.keras", ["corrupt.keras", "corrupt or truncated"]),
    ("weights_only.h5", ["weights_only.h5", "not a whole Keras model"]),
])
def test_models_the_static_reading_refuses_exit_2_at_once(
        tmp_path: Path, models: dict[str, Path], cache: dict[str, str], name: str,
        words: list[str]) -> None:
    before = {n for n, _ in list_blocks()}
    proc = rt_eda("--model", str(models[name]), "--duration", "2", *SMALL, "--set",
                  "camera.synthetic.height=128", "--set", "camera.synthetic.width=128",
                  cwd=tmp_path, env=cache)
    refused(proc, *words)
    assert "probe:" not in proc.stderr  # refused before the probe was needed
    assert_clean(before)


def test_a_model_that_fails_on_the_real_input_is_caught_by_the_probe(
        tmp_path: Path, models: dict[str, Path], cache: dict[str, str]) -> None:
    before = {n for n, _ in list_blocks()}
    proc = rt_eda("--model", str(models["reshape.keras"]), "--duration", "2", *SMALL,
                  "--summary", str(tmp_path / "s.json"), cwd=tmp_path, env=cache)
    line = refused(proc, "reshape.keras", "fails on the input DemoModelWorker feeds it",
                   "(1, 64, 64, 2)", "(None, None, None, 2)")
    assert len(line) < 700
    assert not (tmp_path / "s.json").exists()  # bad input writes nothing
    assert not (tmp_path / "cache" / "rt-eda" / "probes").exists() or not any(
        (tmp_path / "cache" / "rt-eda" / "probes").iterdir())  # failures are not cached
    assert_clean(before)


def test_an_output_that_cannot_be_stitched_names_both_shapes(
        tmp_path: Path, models: dict[str, Path], cache: dict[str, str]) -> None:
    before = {n for n, _ in list_blocks()}
    proc = rt_eda("--model", str(models["stride2.keras"]), "--worker", "KerasTilingWorker",
                  "--duration", "2", "--no-viewer", "--set", "camera.synthetic.height=256",
                  "--set", "camera.synthetic.width=256", cwd=tmp_path, env=cache)
    refused(proc, "maps a (128, 128) tile to an output of spatial size (64, 64)")
    assert_clean(before)


def test_the_advice_of_a_refusal_makes_the_run_start_and_the_probe_is_cached(
        tmp_path: Path, models: dict[str, Path], cache: dict[str, str]) -> None:
    """fixed64.keras at 128x128 is refused naming camera.synthetic.height/width = 64; with
    that set it runs; the second run finds the probe in the cache."""
    before = {n for n, _ in list_blocks()}
    for attempt in ("probed", "cached"):
        out = tmp_path / f"{attempt}.json"
        proc = rt_eda("--model", str(models["fixed64.keras"]), "--duration", "2", *SMALL,
                      "--summary", str(out), cwd=tmp_path, env=cache, timeout=300)
        assert proc.returncode == 0, proc.stderr
        probe = [line for line in proc.stderr.splitlines() if "probe: " in line]
        assert len(probe) == 1, proc.stderr
        assert "output (1, 64, 64, 1), network image (64, 64)" in probe[0]
        assert ("from the probe cache" in probe[0]) == (attempt == "cached")
        assert_counts_add_up(summary(out))
    assert_clean(before)


@pytest.mark.parametrize(("name", "worker", "size", "image"), [
    ("stride2.keras", "DemoModelWorker", 64, (32, 32)),  # output smaller than the input
    ("five_d_legacy.h5", "KerasTilingWorker", 256, (177, 177)),  # 5-D, dynamic, legacy HDF5
])
def test_models_whose_shapes_only_a_real_pass_fixes_run(
        tmp_path: Path, models: dict[str, Path], cache: dict[str, str], name: str,
        worker: str, size: int, image: tuple[int, int]) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = rt_eda("--model", str(models[name]), "--worker", worker, "--duration", "3",
                  "--interpreter", "manual", "--interval", "0.2", "--no-viewer",
                  "--set", f"camera.synthetic.height={size}",
                  "--set", f"camera.synthetic.width={size}", "--save", str(tmp_path / "run"),
                  "--summary", str(out), cwd=tmp_path, env=cache, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"network image {image}" in proc.stderr
    s = summary(out)
    assert s["network_images"] > 0 and s["network_images_refused"] == 0
    assert s["writer"]["network_images_written"] == s["network_images"]
    assert_counts_add_up(s)
    assert_clean(before)


def test_ctrl_c_during_the_probe_ends_cleanly(tmp_path: Path, models: dict[str, Path],
                                              cache: dict[str, str]) -> None:
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = start_rt_eda("--model", str(models["stride2.keras"]), "--duration", "30", *SMALL,
                        "--summary", str(out), cwd=tmp_path, env=cache)
    try:
        wait_for_role("probe", timeout=60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    s = summary(out)
    assert s["started"] is False and s["stop_reason"] == "SIGINT"
    assert "source open" not in err
    assert_clean(before)
