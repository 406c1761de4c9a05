"""Keras workers: preprocessing, layouts, tiling and stitching, inference, the demo model."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rt_eda.core.errors import ConfigError, ModelError
from rt_eda.shm import StackSpec
from rt_eda.workers._base import WorkerSettings
from rt_eda.workers._keras import KerasWorker, to_model_layout
from rt_eda.workers._keras_builtin import (
    DemoModelWorker,
    KerasRescaleWorker,
    KerasTilingWorker,
    gaussian_blur,
    normalise_frame,
    resample,
    stitch_tiles,
    tile_positions,
)
from rt_eda.workers._models import demo_model_path, inspect_model

pytestmark = pytest.mark.tf


# -- filters (no TensorFlow) --------------------------------------------------------------------
def _reference_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Direct separable convolution in float64 with symmetric ('reflect') padding."""
    r = int(4 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="symmetric")
        while padded.shape[axis] < out.shape[axis] + 2 * r:  # kernel longer than the image
            padded = np.pad(out, pad, mode="symmetric")
        out = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, padded)
    return out


@pytest.mark.parametrize(("shape", "sigma"), [((40, 57), 1.5), ((64, 64), 7.5), ((33, 70), 3.0)])
def test_gaussian_blur_matches_direct_convolution(shape: tuple[int, int], sigma: float) -> None:
    img = np.random.default_rng(1).random(shape).astype(np.float32) * 1000
    out = gaussian_blur(img, sigma)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, _reference_blur(img, sigma), rtol=1e-5, atol=2e-3)


def test_normalise_frame() -> None:
    rng = np.random.default_rng(2)
    frame = rng.normal(100, 5, (64, 64)).astype(np.float32)
    frame[30:34, 30:34] += 400
    structure = normalise_frame(frame, marker=False)
    assert structure.min() == 0.0 and structure.max() == pytest.approx(1.0)
    blurred = gaussian_blur(frame, 1.5)
    assert np.all(structure[blurred <= blurred.mean()] == 0.0)  # below the mean clips to 0
    marker = normalise_frame(frame, marker=True)
    assert marker.min() == pytest.approx(0.0) and marker.max() == pytest.approx(1.0)
    dog = blurred - gaussian_blur(frame, 7.5)
    assert np.unravel_index(np.argmax(marker), marker.shape) == np.unravel_index(
        np.argmax(dog), dog.shape
    )
    flat = np.full((16, 16), 7.0, np.float32)
    assert not normalise_frame(flat, True).any() and not normalise_frame(flat, False).any()


def test_resample_56_to_81_nm() -> None:
    y, x = np.mgrid[0:512, 0:512].astype(np.float32)
    ramp = 2 * x + 3 * y  # linear: bilinear resampling reproduces it at the new centres
    out = resample(ramp, (354, 354))
    scale = 512 / 354
    cy, cx = (np.mgrid[0:354, 0:354] + 0.5) * scale - 0.5
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(out[inner], (2 * cx + 3 * cy)[inner], rtol=1e-4)


@pytest.mark.parametrize("length", [128, 129, 200, 354, 512, 700, 1000])
def test_tile_positions(length: int) -> None:
    size, min_overlap = 128, 35
    pos = tile_positions(length, size, min_overlap)
    assert pos[0] == 0 and pos[-1] == length - size
    assert pos == sorted(set(pos))
    for a, b in itertools.pairwise(pos):
        assert a + size - b >= min_overlap
    if length > size:  # the original's count: floor(L/S)+1 tiles, more until overlap >= 35
        assert len(pos) >= length // size + 1


def test_tile_positions_example_and_errors() -> None:
    # 354 px (512 px at 56 nm -> 81 nm), 128 px tiles: 3 tiles overlap 15 px -> 4 tiles, 53 px
    assert tile_positions(354, 128) == [0, 75, 150, 226]
    with pytest.raises(ValueError, match="cannot hold"):
        tile_positions(100, 128)
    with pytest.raises(ValueError, match="overlap"):
        tile_positions(300, 32, 35)


def test_stitch_tiles_covers_each_pixel_once() -> None:
    img = np.random.default_rng(4).random((300, 260)).astype(np.float32)
    ys, xs = tile_positions(300, 64), tile_positions(260, 64)
    tiles = np.stack([img[y : y + 64, x : x + 64] for y in ys for x in xs])
    np.testing.assert_array_equal(stitch_tiles(tiles, ys, xs, (300, 260)), img)


def test_to_model_layout() -> None:
    t, c, z, h, w = 3, 2, 4, 5, 6
    window = np.arange(t * c * z * h * w, dtype=np.float32).reshape(t, c, z, h, w)
    five = to_model_layout(window, 5)
    assert five.shape == (h, w, c, t * z)
    assert five[1, 2, 1, 2 * z + 3] == window[2, 1, 3, 1, 2]  # index t*Z + z
    four = to_model_layout(window[:, :, :1], 4)
    assert four.shape == (h, w, t * c)
    assert four[4, 5, 2 * c + 1] == window[2, 1, 0, 4, 5]  # index t*C + c
    with pytest.raises(ModelError, match="one z-slice"):
        to_model_layout(window, 4)


# -- with Keras -------------------------------------------------------------------------------
keras = pytest.importorskip("keras")


def _select_model(in_channels: int, pick: int, kernel: int = 1, name: str = "m") -> Any:
    """Dynamic-size model: output = mean filter (kernel x kernel) of input channel ``pick``."""
    inp = keras.Input((None, None, in_channels))
    conv = keras.layers.Conv2D(1, kernel, padding="same", use_bias=False)
    model = keras.Model(inp, conv(inp), name=name)
    w = np.zeros((kernel, kernel, in_channels, 1), np.float32)
    w[:, :, pick, 0] = 1.0 / kernel**2
    conv.set_weights([w])
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("worker_models")
    _select_model(2, 0).save(d / "identity0.keras")
    _select_model(2, 0, kernel=5).save(d / "box5.keras")
    _select_model(4, 3).save(d / "pick_n2_f.keras")  # time window 2 x 2 channels, picks t=1 c=1
    fixed = keras.Sequential([keras.Input((64, 64, 2)), keras.layers.Conv2D(1, 1)])
    fixed.save(d / "fixed64.keras")
    valid = keras.Sequential([keras.Input((64, 64, 2)), keras.layers.Conv2D(1, 3)])
    valid.save(d / "valid64.keras")
    return d


def _settings(path: Path, **options: object) -> WorkerSettings:
    return WorkerSettings(model=str(path), options=tuple(options.items()))


def _stack(spec: StackSpec, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stack: np.ndarray = rng.integers(100, 4000, spec.shape).astype(spec.np_dtype)
    return stack


def test_tiling_round_trip_identity(model_dir: Path) -> None:
    spec = StackSpec(2, 1, 300, 260)
    worker = KerasTilingWorker(_settings(model_dir / "identity0.keras", tile_size=64))
    worker.setup(spec)
    expected_shape = (round(300 * 56 / 81), round(260 * 56 / 81))
    assert worker.network_image_shape() == expected_shape
    stack = _stack(spec)
    result = worker.analyse(stack)
    pre = worker.preprocess_window(stack[np.newaxis].astype(np.float32))[0, 0, 0]
    assert result.network_image is not None and result.network_image.shape == expected_shape
    np.testing.assert_allclose(result.network_image, pre, atol=1e-6)
    assert result.decision == pytest.approx(float(pre.max()), abs=1e-6)
    data = worker.prepare_images(stack)
    ys, xs = data["tiles"]
    assert data["pixels"].shape == (len(ys) * len(xs), 64, 64, 2)


def test_tiling_hides_tile_borders(model_dir: Path) -> None:
    """A 5x5 mean filter sees zero padding at every tile edge; the stitched image must not."""
    spec = StackSpec(2, 1, 300, 260)
    worker = KerasTilingWorker(_settings(model_dir / "box5.keras", tile_size=64, min_overlap=20))
    worker.setup(spec)
    stack = _stack(spec, 1)
    stitched = worker.analyse(stack).network_image
    assert stitched is not None
    whole = worker.preprocess_window(stack[np.newaxis].astype(np.float32))
    assert worker.model is not None
    full = worker.model.predict_on_batch(to_model_layout(whole, 4)[np.newaxis])[0, :, :, 0]
    inner = (slice(2, -2), slice(2, -2))  # the image border itself is zero-padded in both
    np.testing.assert_allclose(stitched[inner], full[inner], atol=1e-5)
    # without trimming, tile edges would show: check the comparison can fail
    tiles = worker.run_model(worker.prepare_images(stack))[:, :, :, 0]
    ys, xs = worker.prepare_images(stack)["tiles"]
    naive = np.zeros_like(full)
    i = 0
    for y in ys:
        for x in xs:
            naive[y : y + 64, x : x + 64] = tiles[i]
            i += 1
    assert np.abs(naive[inner] - full[inner]).max() > 1e-3


def test_tiling_refuses_bad_models(model_dir: Path) -> None:
    spec = StackSpec(2, 1, 512, 512)
    KerasTilingWorker(_settings(model_dir / "fixed64.keras")).check(spec)
    small = StackSpec(2, 1, 80, 80)  # 55 px after resampling < 64 px tiles
    with pytest.raises(ModelError, match="tiles of 64x64 px"):
        KerasTilingWorker(_settings(model_dir / "fixed64.keras")).check(small)
    with pytest.raises(ModelError, match="needs an output of the input's size"):
        KerasTilingWorker(_settings(model_dir / "valid64.keras")).setup(spec)


def test_rescale_worker_crops_and_normalises(model_dir: Path) -> None:
    spec = StackSpec(2, 1, 130, 250)
    worker = KerasRescaleWorker(_settings(model_dir / "identity0.keras"))
    worker.setup(spec)
    assert worker.network_image_shape() == (128, 248)
    stack = _stack(spec, 2)
    result = worker.analyse(stack)
    expected = normalise_frame(stack[0, 0, :128, :248].astype(np.float32), marker=False)
    assert result.network_image is not None
    np.testing.assert_allclose(result.network_image, expected, atol=1e-6)
    assert result.decision == pytest.approx(float(expected.max()), abs=1e-6)
    pixels = worker.prepare_images(stack)["pixels"]
    assert pixels.shape == (1, 128, 248, 2)
    marker = normalise_frame(stack[1, 0, :128, :248].astype(np.float32), marker=True)
    np.testing.assert_allclose(pixels[0, :, :, 1], marker, atol=1e-6)


def test_rescale_refuses_fixed_size_misfit(model_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"64x64 px images.*feeds 128x248"):
        KerasRescaleWorker(_settings(model_dir / "fixed64.keras")).check(StackSpec(2, 1, 130, 250))
    KerasRescaleWorker(_settings(model_dir / "fixed64.keras")).check(StackSpec(2, 1, 66, 67))


def test_time_window_reaches_the_model_time_major(model_dir: Path) -> None:
    spec = StackSpec(2, 1, 16, 24, "float32")
    settings = WorkerSettings(model=str(model_dir / "pick_n2_f.keras"), n_timepoints=2)
    worker = KerasWorker(settings)
    worker.check(spec)
    worker.setup(spec)
    window = np.random.default_rng(5).random((2, *spec.shape)).astype(np.float32)
    result = worker.analyse(window)
    assert result.network_image is not None
    np.testing.assert_allclose(result.network_image, window[1, 1, 0], rtol=1e-6)
    with pytest.raises(ModelError, match="n_timepoints = 2"):
        KerasWorker(WorkerSettings(model=settings.model)).check(spec)


@pytest.mark.parametrize("mode", ["predict_on_batch", "call"])
def test_inference_modes_agree_and_never_call_predict(model_dir: Path, mode: str) -> None:
    spec = StackSpec(2, 1, 32, 40)
    worker = KerasWorker(_settings(model_dir / "box5.keras", inference=mode))
    worker.setup(spec)
    assert worker.model is not None

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("model.predict must not be used in the loop")

    worker.model.predict = forbidden
    worker.warm_up()
    stack = _stack(spec, 3).astype(np.float32)
    out = worker.run_model(worker.prepare_images(stack))
    ref = worker.model.predict_on_batch(worker.prepare_images(stack)["pixels"])
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_worker_options_and_channels_validated(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="inference"):
        KerasWorker(_settings(model_dir / "box5.keras", inference="predict"))
    with pytest.raises(ConfigError, match="channels_to_use"):
        KerasWorker(
            WorkerSettings(model=str(model_dir / "box5.keras"), channels_to_use=(0, 2))
        ).check(StackSpec(2, 1, 32, 32))
    with pytest.raises(ModelError, match="needs a model file"):
        KerasRescaleWorker(WorkerSettings()).check(StackSpec(2, 1, 32, 32))


def test_configure_threads_in_a_fresh_process() -> None:
    code = (
        "from rt_eda.workers._keras import configure_threads\n"
        "configure_threads(2)\n"
        "import tensorflow as tf\n"
        "th = tf.config.threading\n"
        "assert th.get_intra_op_parallelism_threads() == 2\n"
        "assert th.get_inter_op_parallelism_threads() == 1\n"
        "tf.ones((4, 4)) @ tf.ones((4, 4))\n"
        "configure_threads(2)  # same values again: fine\n"
        "try:\n"
        "    configure_threads(1)\n"
        "except RuntimeError as exc:\n"
        "    assert 'intra-op 2' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('configure_threads after TF initialised must fail')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)


# -- the bundled demo model ---------------------------------------------------------------------
def test_demo_model_is_in_the_installed_package() -> None:
    packaged = resources.files("rt_eda.workers").joinpath("models", "demo.keras")
    assert packaged.is_file()
    assert Path(str(packaged)).resolve() == demo_model_path()
    info = inspect_model(demo_model_path())
    assert info.input_shape == (None, None, None, 2)
    record = json.loads(demo_model_path().with_suffix(".json").read_text())
    assert record["evaluation"]["upper_0.48"]["f1"] > 0
    assert record["training"]["parameters"] > 0
    assert demo_model_path().stat().st_size < 5_000_000


def test_demo_model_detects_a_synthetic_event() -> None:
    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    source = SyntheticSource(SyntheticSettings(seed=77, event_every_s=8.0))  # unseen seed
    times = np.arange(0.0, 80.0, 0.25)
    truth = np.array([source.ground_truth(t + source.settings.exposure_s) for t in times])
    t_event = float(times[np.argmax(truth)])
    t_quiet = float(times[np.flatnonzero(truth == 0.0)[5]])
    assert truth.max() > 0.9

    worker = DemoModelWorker(WorkerSettings())
    worker.setup(source.spec)
    worker.warm_up()
    stack = np.empty(source.spec.shape, source.spec.np_dtype)
    source.render_stack(t_event, stack)
    with_event = worker.analyse(stack)
    source.render_stack(t_quiet, stack)
    without = worker.analyse(stack)
    assert with_event.decision > 0.48, with_event.decision
    assert without.decision < 0.3, without.decision
    assert with_event.network_image is not None
    assert with_event.network_image.shape == (512, 512)
    # the peak is where the event is
    mask = source.event_mask(t_event + source.settings.exposure_s)
    peak = np.unravel_index(np.argmax(with_event.network_image), (512, 512))
    assert mask[peak] > 0.1


def test_training_is_reproducible(tmp_path: Path) -> None:
    """Two tiny runs of the demo trainer with one seed give the same weights and a record."""
    code = f"""
import json, sys
import numpy as np
from rt_eda.training.demo_model import main
from rt_eda.workers._models import load_model
args = ["--train-seeds", "1", "--frames-per-seed", "4", "--crop", "32", "--epochs", "1",
        "--eval-seeds", "101", "--eval-frames-per-seed", "3", "--image-size", "128",
        "--no-timing"]
for name in ("a", "b"):
    assert main([*args, "--output", {str(tmp_path)!r} + f"/{{name}}.keras"]) == 0
wa = load_model({str(tmp_path)!r} + "/a.keras").get_weights()
wb = load_model({str(tmp_path)!r} + "/b.keras").get_weights()
assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
record = json.load(open({str(tmp_path)!r} + "/a.json"))
assert record["evaluation"]["frames"] == 3 and record["training"]["epochs"] == 1
assert record["training"]["parameters"] == sum(w.size for w in wa)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=240)


@pytest.mark.parametrize(
    ("value", "expected"), [(1, {1}), ([0, 2], {0, 2}), ("0, 1", {0, 1}), ((), set())]
)
def test_marker_channels_option(value: object, expected: set[int]) -> None:
    worker = KerasRescaleWorker(WorkerSettings(options=(("marker_channels", value),)))
    assert worker.markers == expected


def test_marker_channels_option_rejects_junk() -> None:
    with pytest.raises(ConfigError, match="marker_channels"):
        KerasRescaleWorker(WorkerSettings(options=(("marker_channels", "a,b"),)))


def test_five_d_model_gets_channels_and_slices(tmp_path: Path) -> None:
    """(batch, y, x, channels, slices): slice axis = z; the model picks channel 1, slice 2."""
    inp = keras.Input((None, None, 2, 3))
    conv = keras.layers.Conv3D(1, (1, 1, 2), padding="valid", use_bias=False)
    path = tmp_path / "five.h5"
    model = keras.Model(inp, conv(inp))
    w = np.zeros((1, 1, 2, 3, 1), np.float32)
    w[0, 0, 1, 2, 0] = 1.0  # over the channel axis (size 2) the kernel sees c=0 then c=1
    conv.set_weights([w])
    model.save(path)
    spec = StackSpec(2, 3, 12, 20, "float32")
    worker = KerasWorker(WorkerSettings(model=str(path)))
    worker.check(spec)
    worker.setup(spec)
    assert worker.network_image_shape() == (12, 20)
    stack = np.random.default_rng(6).random(spec.shape).astype(np.float32)
    image = worker.analyse(stack).network_image
    assert image is not None
    np.testing.assert_allclose(image, stack[1, 2], rtol=1e-6)
    with pytest.raises(ModelError, match=r"expects 3 slice"):
        KerasWorker(WorkerSettings(model=str(path))).check(StackSpec(2, 1, 12, 20))
