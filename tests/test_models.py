"""Model files: inspection without TensorFlow, fit checks, legacy Keras 2 HDF5, broken files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from rt_eda.core.errors import ModelError
from rt_eda.shm import StackSpec
from rt_eda.workers import check_fit
from rt_eda.workers._models import inspect_loaded, inspect_model, load_model

pytestmark = pytest.mark.tf

keras = pytest.importorskip("keras")


def _dynamic_model() -> Any:
    inp = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inp, out)


def _five_d_model() -> Any:
    """(batch, y, x, channels=2, slices=3), as the original's 5-D models."""
    inp = keras.Input((None, None, 2, 3))
    x = keras.layers.Conv3D(4, (3, 3, 1), padding="same", activation="relu")(inp)
    out = keras.layers.Conv3D(1, (1, 1, 2), padding="valid", activation="sigmoid")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    paths: dict[str, Path] = {}
    dyn = _dynamic_model()
    paths["dynamic.keras"] = d / "dynamic.keras"
    dyn.save(paths["dynamic.keras"])
    paths["dynamic.h5"] = d / "dynamic.h5"
    dyn.save(paths["dynamic.h5"])
    fixed = keras.Sequential([keras.Input((64, 48, 1)), keras.layers.Conv2D(1, 3, padding="same")])
    paths["fixed.h5"] = d / "fixed.h5"
    fixed.save(paths["fixed.h5"])
    paths["fixed.keras"] = d / "fixed.keras"
    fixed.save(paths["fixed.keras"])
    paths["five.h5"] = d / "five.h5"
    _five_d_model().save(paths["five.h5"])
    window = keras.Sequential([keras.Input((None, None, 6)), keras.layers.Conv2D(1, 1)])
    paths["mito_n3_f.keras"] = d / "mito_n3_f.keras"
    window.save(paths["mito_n3_f.keras"])
    two = keras.Input((None, None, 1)), keras.Input((None, None, 1))
    paths["two_inputs.keras"] = d / "two_inputs.keras"
    keras.Model(list(two), keras.layers.Add()(list(two))).save(paths["two_inputs.keras"])
    return paths


# -- a 2020-era tf.keras 2.3 HDF5 file, written field by field -----------------------------------
def _conv_layer(name: str, filters: int, kernel: int, act: str, inbound: str) -> dict[str, object]:
    return {
        "name": name,
        "class_name": "Conv2D",
        "config": {
            "name": name, "trainable": True, "dtype": "float32", "filters": filters,
            "kernel_size": [kernel, kernel], "strides": [1, 1], "padding": "same",
            "data_format": "channels_last", "dilation_rate": [1, 1], "activation": act,
            "use_bias": True,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
        },
        "inbound_nodes": [[[inbound, 0, 0, {}]]],
    }


def write_keras2_h5(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    """A functional model as tf.keras 2.3 saved it: 'Model', batch_input_shape, ':0' names."""
    layers: list[dict[str, Any]] = [
        {"name": "input_1", "class_name": "InputLayer", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, None, None, 2], "dtype": "float32",
                    "sparse": False, "ragged": False, "name": "input_1"}},
        _conv_layer("conv2d", 4, 3, "relu", "input_1"),
        {"name": "max_pooling2d", "class_name": "MaxPooling2D",
         "config": {"name": "max_pooling2d", "trainable": True, "dtype": "float32",
                    "pool_size": [2, 2], "padding": "valid", "strides": [2, 2],
                    "data_format": "channels_last"},
         "inbound_nodes": [[["conv2d", 0, 0, {}]]]},
        {"name": "up_sampling2d", "class_name": "UpSampling2D",
         "config": {"name": "up_sampling2d", "trainable": True, "dtype": "float32",
                    "size": [2, 2], "data_format": "channels_last", "interpolation": "nearest"},
         "inbound_nodes": [[["max_pooling2d", 0, 0, {}]]]},
        {"name": "concatenate", "class_name": "Concatenate",
         "config": {"name": "concatenate", "trainable": True, "dtype": "float32", "axis": -1},
         "inbound_nodes": [[["up_sampling2d", 0, 0, {}], ["conv2d", 0, 0, {}]]]},
        _conv_layer("conv2d_1", 1, 1, "sigmoid", "concatenate"),
    ]
    config = {"class_name": "Model", "config": {
        "name": "model", "layers": layers,
        "input_layers": [["input_1", 0, 0]], "output_layers": [["conv2d_1", 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.3.0-tf"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        names = [layer["name"] for layer in layers]
        g.attrs["layer_names"] = [str(n).encode() for n in names]
        g.attrs["backend"] = b"tensorflow"
        g.attrs["keras_version"] = b"2.3.0-tf"
        for name in names:
            group = g.create_group(str(name))
            arrays = weights.get(str(name), [])
            wnames = [f"{name}/kernel:0", f"{name}/bias:0"][: len(arrays)]
            group.attrs["weight_names"] = [n.encode() for n in wnames]
            for wname, arr in zip(wnames, arrays, strict=True):
                group.create_dataset(wname, data=arr)


def _reference_unet(weights: dict[str, list[np.ndarray]]) -> Any:
    inp = keras.Input((None, None, 2))
    c = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    x = c(inp)
    u = keras.layers.UpSampling2D()(keras.layers.MaxPooling2D()(x))
    o = keras.layers.Conv2D(1, 1, activation="sigmoid")
    out = o(keras.layers.Concatenate()([u, x]))
    model = keras.Model(inp, out)
    c.set_weights(weights["conv2d"])
    o.set_weights(weights["conv2d_1"])
    return model


# -- inspection ---------------------------------------------------------------------------------
def test_inspect_dynamic_keras_and_h5(models: dict[str, Path]) -> None:
    for key, fmt in (("dynamic.keras", "keras"), ("dynamic.h5", "h5")):
        info = inspect_model(models[key])
        assert info.format == fmt
        assert info.input_shape == (None, None, None, 2)
        assert info.dynamic and info.spatial_size is None
        assert (info.channels, info.z_slices, info.time_window) == (2, 1, 1)
        assert info.output_shape is None  # not known without building the model
        assert info.keras_version == keras.__version__


def test_inspect_fixed_sequential(models: dict[str, Path]) -> None:
    for key in ("fixed.h5", "fixed.keras"):
        info = inspect_model(models[key])
        assert info.input_shape == (None, 64, 48, 1)
        assert info.spatial_size == (64, 48) and not info.dynamic


def test_inspect_five_d(models: dict[str, Path]) -> None:
    info = inspect_model(models["five.h5"])
    assert info.input_shape == (None, None, None, 2, 3)
    assert (info.ndim, info.channels, info.z_slices) == (5, 2, 3)


def test_time_window_from_file_name(models: dict[str, Path]) -> None:
    info = inspect_model(models["mito_n3_f.keras"])
    assert info.time_window == 3 and info.time_window_from_name
    assert info.channels == 2  # 6 channel values = 2 channels x 3 timepoints
    spec = StackSpec(2, 1, 64, 64)
    check_fit(info, spec, n_timepoints=3)
    with pytest.raises(ModelError, match=r"analysis.n_timepoints = 3") as err:
        check_fit(info, spec, n_timepoints=1)
    assert "(None, None, None, 6)" in str(err.value)


def test_inspect_loaded_fills_output_shape(models: dict[str, Path]) -> None:
    model = load_model(models["five.h5"])
    info = inspect_loaded(model, models["five.h5"])
    assert info.input_shape == (None, None, None, 2, 3)
    assert info.output_shape == (None, None, None, 1, 1)  # (1, 1, 2) valid over C


def test_two_inputs_refused(models: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="2 inputs"):
        inspect_model(models["two_inputs.keras"])


def test_inspection_does_not_import_tensorflow(models: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "import rt_eda.workers\n"
        "from rt_eda.workers._models import inspect_model\n"
        "from rt_eda.workers._fit import check_fit\n"
        "from rt_eda.shm import StackSpec\n"
        f"for p in {[str(models[k]) for k in ('dynamic.keras', 'five.h5', 'fixed.h5')]!r}:\n"
        "    inspect_model(p)\n"
        f"check_fit(inspect_model({str(models['dynamic.keras'])!r}), StackSpec(2, 1, 32, 32))\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- fit checks ---------------------------------------------------------------------------------
def test_channel_mismatch_names_both_shapes_and_setting(models: dict[str, Path]) -> None:
    info = inspect_model(models["dynamic.keras"])
    with pytest.raises(ModelError) as err:
        check_fit(info, StackSpec(1, 1, 512, 512))
    msg = str(err.value)
    assert "expects 2 channel(s) (input (None, None, None, 2))" in msg
    assert "acquisition gives 1 (all 1 acquisition channel(s)" in msg
    assert "the synthetic source makes 1 channel(s)" in msg
    with pytest.raises(ModelError, match=r"acquire 2 channels \(camera\.channels"):
        check_fit(info, StackSpec(1, 1, 512, 512), source="mmconfig")
    with pytest.raises(ModelError, match=r"analysis.channels_to_use = \[1\]"):
        check_fit(info, StackSpec(3, 1, 64, 64), channels_to_use=(1,))
    check_fit(info, StackSpec(3, 1, 64, 64), channels_to_use=(2, 0))
    with pytest.raises(ModelError, match=r"names channel\(s\) \[3\]"):
        check_fit(info, StackSpec(3, 1, 64, 64), channels_to_use=(0, 3))


def test_z_and_window_mismatch(models: dict[str, Path]) -> None:
    info = inspect_model(models["dynamic.keras"])
    with pytest.raises(ModelError,
                       match=r"takes a single z-slice.*has 4 z-slices.*camera\.synthetic\."
                             r"z_slices = 1"):
        check_fit(info, StackSpec(2, 4, 64, 64))
    with pytest.raises(ModelError, match=r"give camera\.z_positions 1 position"):
        check_fit(info, StackSpec(2, 4, 64, 64), source="mm-demo")
    # no _n<N>_f in the name: a window of 2 must come on the channel axis (2 x 2 = 4 != 2)
    with pytest.raises(ModelError, match=r"2 channel\(s\) x 2 timepoints = 4"):
        check_fit(info, StackSpec(2, 1, 64, 64), n_timepoints=2)
    five = inspect_model(models["five.h5"])
    check_fit(five, StackSpec(2, 3, 64, 64))
    with pytest.raises(ModelError,
                       match=r"expects 3 slice\(s\).*gives 5.*camera\.synthetic\.z_slices = 3"):
        check_fit(five, StackSpec(2, 5, 64, 64))


def test_spatial_mismatch_and_tiling(models: dict[str, Path]) -> None:
    info = inspect_model(models["fixed.h5"])
    spec = StackSpec(1, 1, 512, 512)
    with pytest.raises(ModelError) as err:
        check_fit(info, spec)
    assert "64x48 px" in str(err.value) and "512x512" in str(err.value)
    assert "KerasTilingWorker" in str(err.value)
    assert "camera.synthetic.height = 64 and camera.synthetic.width = 48" in str(err.value)
    check_fit(info, spec, tiled=True)
    check_fit(info, StackSpec(1, 1, 64, 48))
    with pytest.raises(ModelError, match=r"only 40x40 px"):
        check_fit(info, StackSpec(1, 1, 40, 40), tiled=True)


# -- legacy HDF5 ------------------------------------------------------------------------------
def test_keras2_hdf5_loads_with_its_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    weights = {
        "conv2d": [rng.normal(size=(3, 3, 2, 4)).astype("f4"), rng.normal(size=4).astype("f4")],
        "conv2d_1": [rng.normal(size=(1, 1, 8, 1)).astype("f4"), rng.normal(size=1).astype("f4")],
    }
    path = tmp_path / "unet_2020.h5"
    write_keras2_h5(path, weights)
    info = inspect_model(path)
    assert info.input_shape == (None, None, None, 2)
    assert info.keras_version == "2.3.0-tf" and info.format == "h5"
    model = load_model(path)
    x = rng.random((1, 16, 20, 2)).astype("f4")
    expected = _reference_unet(weights).predict_on_batch(x)
    np.testing.assert_allclose(model.predict_on_batch(x), expected, rtol=1e-5, atol=1e-6)


def test_keras3_roundtrip_predictions(models: dict[str, Path]) -> None:
    a = load_model(models["dynamic.keras"])
    b = load_model(models["dynamic.h5"])
    x = np.random.default_rng(0).random((1, 24, 32, 2)).astype("f4")
    np.testing.assert_allclose(a.predict_on_batch(x), b.predict_on_batch(x), rtol=1e-6)


# -- broken files ---------------------------------------------------------------------------
def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        inspect_model(tmp_path / "nope.keras")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        inspect_model(tmp_path / "empty.h5")
    with pytest.raises(ModelError, match="directory"):
        inspect_model(tmp_path)


def test_not_a_model(tmp_path: Path) -> None:
    text = tmp_path / "notes.keras"
    text.write_text("hello, I am not a model\n")
    with pytest.raises(ModelError, match="neither a Keras 3 archive"):
        inspect_model(text)
    with pytest.raises(ModelError, match="neither a Keras 3 archive"):
        load_model(text)
    zipped = tmp_path / "other.keras"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(ModelError, match=r"no config\.json"):
        inspect_model(zipped)
    weights_only = tmp_path / "w.weights.h5"
    _dynamic_model().save_weights(weights_only)
    with pytest.raises(ModelError, match="no 'model_config'"):
        inspect_model(weights_only)


@pytest.mark.parametrize("key", ["dynamic.keras", "dynamic.h5"])
def test_truncated(models: dict[str, Path], tmp_path: Path, key: str) -> None:
    data = models[key].read_bytes()
    cut = tmp_path / key
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt or truncated") as err:
        inspect_model(cut)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained trace
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(cut)


def test_corrupt_member_fails_crc(models: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(models["dynamic.keras"].read_bytes())
    start = data.index(b'"class_name"')  # inside config.json, stored uncompressed or not
    data[start + 2] ^= 0xFF
    bad = tmp_path / "bad.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"(CRC|corrupt)"):
        inspect_model(bad)
