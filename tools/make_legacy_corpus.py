"""Write the legacy model corpus: small models saved by Keras 2 (tf-keras) as HDF5 files.

    pip install --no-deps tf-keras        # beside tensorflow-cpu (or: pip install "rt-eda[legacy]")
    python tools/make_legacy_corpus.py [--out tests/legacy_models]

The lab's models were saved by Keras 2 as ``.h5`` files; Keras 3 loads them through its
legacy HDF5 reader, whose symbolic shapes can say ``None`` where a forward pass does not
(issue 17). This corpus holds the shapes such models take, each a few kB, with seeded weights
(the same architecture and weights on every run; the HDF5 bytes may differ):

- ``dyn_unet.h5``: dynamic size, 2 channels, a two-level U-Net (pooling, upsampling,
  concatenation), one sigmoid map;
- ``lab5d_tiles.h5``: the lab's layout, a 5-D input of 128x128 tiles x 2 channels x 1 slice,
  reshaped to 4-D and permuted (channels first and back) inside the model;
- ``dyn5d.h5``: 5-D input of any size (Conv3D over y, x and the channel axis), a 5-D output;
- ``nested.h5``: a functional model holding a Sequential encoder and a functional decoder;
- ``fixed64_reshape.h5``: fixed 64x64 input, flattened with Reshape, a Dense per pixel and
  reshaped back to an image;
- ``classifier.h5``: dynamic size, global pooling to one probability (no image);
- ``two_outputs.h5``: a map and a probability (rt-eda workers read one output: refused).

Keras 2 is reached the way TensorFlow 2.16+ documents: ``TF_USE_LEGACY_KERAS=1`` makes
``tf.keras`` the tf-keras package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

SEED = 17


def _keras() -> Any:
    keras = tf.keras
    if "tf_keras" not in keras.__name__:
        sys.exit(f"tf.keras is {keras.__name__}, not tf-keras: pip install --no-deps tf-keras")
    return keras


def reference_input(shape: Any) -> np.ndarray:
    """The input a model's reference output is computed on: batch 1, 32 px for a dynamic
    size, seeded uniform values in 0..1 (tests/test_legacy_corpus.py makes the same)."""
    dims = [1] + [32 if d is None else int(d) for d in list(shape)[1:]]
    return np.random.default_rng(SEED).random(dims, dtype=np.float32)


def dyn_unet(keras: Any) -> Any:
    layers = keras.layers
    inp = keras.Input((None, None, 2), name="image")
    c1 = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    c2 = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.MaxPooling2D()(c1))
    u1 = layers.Concatenate()([layers.UpSampling2D()(c2), c1])
    out = layers.Conv2D(1, 1, activation="sigmoid", name="event_map")(u1)
    return keras.Model(inp, out, name="dyn_unet")


def lab5d_tiles(keras: Any) -> Any:
    layers = keras.layers
    inp = keras.Input((128, 128, 2, 1), name="tiles")
    x = layers.Reshape((128, 128, 2))(inp)
    x = layers.Permute((3, 1, 2))(x)  # channels first
    x = layers.Permute((2, 3, 1))(x)  # and back
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inp, x, name="lab5d_tiles")


def dyn5d(keras: Any) -> Any:
    layers = keras.layers
    inp = keras.Input((None, None, 2, 1), name="stack")
    x = layers.Conv3D(4, (3, 3, 2), padding="same", activation="relu")(inp)
    x = layers.Conv3D(1, (1, 1, 2), padding="valid", activation="sigmoid")(x)
    return keras.Model(inp, x, name="dyn5d")


def nested(keras: Any) -> Any:
    layers = keras.layers
    encoder = keras.Sequential([
        layers.Conv2D(4, 3, padding="same", activation="relu", input_shape=(None, None, 2)),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
    ], name="encoder")
    dec_in = keras.Input((None, None, 4))
    decoder = keras.Model(dec_in, layers.Conv2D(1, 1, activation="sigmoid")(dec_in),
                          name="decoder")
    inp = keras.Input((None, None, 2))
    return keras.Model(inp, decoder(encoder(inp)), name="nested")


def fixed64_reshape(keras: Any) -> Any:
    layers = keras.layers
    inp = keras.Input((64, 64, 2))
    x = layers.Reshape((64 * 64, 2))(inp)
    x = layers.Dense(3, activation="relu")(x)
    x = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, layers.Reshape((64, 64, 1))(x), name="fixed64_reshape")


def classifier(keras: Any) -> Any:
    layers = keras.layers
    inp = keras.Input((None, None, 2))
    x = layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inp, layers.Dense(1, activation="sigmoid")(x), name="classifier")


def two_outputs(keras: Any) -> Any:
    layers = keras.layers
    inp = keras.Input((None, None, 2))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    seg = layers.Conv2D(1, 1, activation="sigmoid", name="map")(x)
    cls = layers.Dense(1, activation="sigmoid", name="p")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, [seg, cls], name="two_outputs")


MODELS = {
    "dyn_unet.h5": dyn_unet, "lab5d_tiles.h5": lab5d_tiles, "dyn5d.h5": dyn5d,
    "nested.h5": nested, "fixed64_reshape.h5": fixed64_reshape,
    "classifier.h5": classifier, "two_outputs.h5": two_outputs,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "tests" / "legacy_models")
    args = parser.parse_args()
    keras = _keras()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    for name, build in MODELS.items():
        keras.utils.set_random_seed(SEED)
        model = build(keras)
        path = args.out / name
        model.save(path, save_format="h5")
        x = reference_input(model.inputs[0].shape)
        outputs = model(x, training=False)
        first = np.asarray(outputs[0] if isinstance(outputs, list) else outputs, np.float64)
        manifest[name] = {
            # Keras 2's own output on reference_input(): a Keras 3 load must reproduce it
            "reference_output": {"shape": list(first.shape), "sum": float(first.sum()),
                                 "max": float(first.max()),
                                 "first": [float(v) for v in first.reshape(-1)[:8]]},
            "parameters": int(model.count_params()),
            "inputs": [list(t.shape) for t in model.inputs],
            "outputs": [list(t.shape) for t in model.outputs],
            "bytes": path.stat().st_size,
        }
        print(f"{path}: {manifest[name]}")
    manifest_path = args.out / "manifest.json"
    manifest_path.write_text(json.dumps({"keras": tf.keras.__name__, "tensorflow":
                                         tf.__version__, "seed": SEED, "models": manifest},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
