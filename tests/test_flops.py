"""The FLOP counter of the physical anchor (``rt_eda.workers._flops``).

Each formula is checked against the layer itself: with an input of ones, weights of ones, no
bias, no activation and ``valid`` padding, every multiply-accumulate a layer performs adds
exactly 1 to the sum of its output, so ``sum(output)`` is an independent count of its MACs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rt_eda.workers._flops import count_flops
from rt_eda.workers._models import load_model

pytestmark = pytest.mark.tf


def _ones_model(input_shape: tuple[int, ...], layer: Any) -> Any:
    import keras

    inp = keras.Input(input_shape[1:])
    model = keras.Model(inp, layer(inp))
    model.set_weights([np.ones_like(w) for w in model.get_weights()])
    return model


def _summed_macs(model: Any, input_shape: tuple[int, ...]) -> int:
    out = np.asarray(model(np.ones(input_shape, np.float32), training=False), np.float64)
    return round(float(out.sum()))


def _layers() -> list[tuple[str, tuple[int, ...], Any]]:
    from keras import layers as kl

    plain = {"use_bias": False, "padding": "valid"}
    return [
        ("conv2d", (1, 17, 13, 3), kl.Conv2D(5, 3, **plain)),
        ("conv2d strided", (2, 17, 13, 3), kl.Conv2D(4, 4, strides=4, **plain)),
        ("conv2d dilated", (1, 20, 20, 2), kl.Conv2D(3, 3, dilation_rate=2, **plain)),
        ("conv2d groups", (1, 9, 9, 4), kl.Conv2D(6, 3, groups=2, **plain)),
        ("conv1d", (1, 31, 3), kl.Conv1D(2, 5, **plain)),
        ("conv3d", (1, 6, 7, 8, 2), kl.Conv3D(3, (2, 3, 3), **plain)),
        ("transposed", (1, 5, 6, 3), kl.Conv2DTranspose(2, 4, strides=4, **plain)),
        ("transposed overlap", (1, 5, 6, 3), kl.Conv2DTranspose(2, 3, strides=2, **plain)),
        ("depthwise", (1, 11, 12, 3), kl.DepthwiseConv2D(3, depth_multiplier=2, **plain)),
        ("dense", (3, 7), kl.Dense(5, use_bias=False)),
        ("dense on images", (1, 4, 5, 6), kl.Dense(2, use_bias=False)),
    ]


@pytest.mark.parametrize("index", range(11), ids=[c[0] for c in _layers()])
def test_each_formula_equals_the_multiply_accumulates_the_layer_performs(index: int) -> None:
    _, shape, layer = _layers()[index]
    model = _ones_model(shape, layer)
    counted = count_flops(model, shape)
    assert len(counted.layers) == 1
    assert counted.macs == _summed_macs(model, shape) > 0
    assert counted.flops == 2 * counted.macs


def test_separable_is_its_depthwise_plus_its_pointwise_part() -> None:
    from keras import layers as kl

    shape = (1, 14, 10, 3)
    sep = count_flops(_ones_model(shape, kl.SeparableConv2D(4, 3, depth_multiplier=2,
                                                            use_bias=False)), shape)
    dw_model = _ones_model(shape, kl.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False))
    dw = count_flops(dw_model, shape)
    dw_out = tuple(int(d) for d in np.shape(dw_model(np.ones(shape, np.float32))))
    pw = count_flops(_ones_model(dw_out, kl.Conv2D(4, 1, use_bias=False)), dw_out)
    assert sep.macs == dw.macs + pw.macs == dw.macs + _summed_macs(
        _ones_model(dw_out, kl.Conv2D(4, 1, use_bias=False)), dw_out)


def test_same_padding_counts_the_padded_taps() -> None:
    """Convention: a 'same' convolution does every tap, padded ones included."""
    from keras import layers as kl

    shape = (1, 16, 16, 2)
    counted = count_flops(_ones_model(shape, kl.Conv2D(8, 3, padding="same")), shape)
    assert counted.macs == 16 * 16 * 9 * 2 * 8


def test_nested_models_and_layers_without_macs() -> None:
    import keras
    from keras import layers as kl

    inner_in = keras.Input((None, None, 4))
    inner = keras.Model(inner_in, kl.Conv2D(2, 1, use_bias=False, name="pw")(inner_in),
                        name="inner")
    inp = keras.Input((None, None, 3))
    a = kl.Conv2D(4, 3, padding="same", name="a")(inp)
    b = kl.MaxPooling2D(name="pool")(a)
    c = inner(kl.UpSampling2D(name="up")(b))
    out = kl.Concatenate(name="cat")([c, a])
    counted = count_flops(keras.Model(inp, out), (1, 8, 8, 3))
    assert [(r.name, r.input_shape, r.output_shape) for r in counted.layers] == [
        ("a", (1, 8, 8, 3), (1, 8, 8, 4)), ("inner/pw", (1, 8, 8, 4), (1, 8, 8, 2))]
    assert counted.macs == 8 * 8 * 9 * 3 * 4 + 8 * 8 * 4 * 2
    assert counted.not_counted == ("Concatenate", "MaxPooling2D", "UpSampling2D")


def test_a_shared_layer_is_refused() -> None:
    import keras
    from keras import layers as kl

    inp = keras.Input((None, None, 2))
    conv = kl.Conv2D(2, 1, name="shared")
    model = keras.Model(inp, conv(conv(inp)))
    with pytest.raises(ValueError, match="shared"):
        count_flops(model, (1, 4, 4, 2))


def test_demo_v1_by_hand() -> None:
    """demo_v1.keras at 512 x 512: the heaviest layer, counted by hand, and the total."""
    from rt_eda.workers._models import demo_model_path

    v1 = load_model(demo_model_path().with_name("demo_v1.keras"))
    counted = count_flops(v1, (1, 512, 512, 2))
    up1 = next(r for r in counted.layers if r.name == "up1_conv1")
    # 3x3 convolution at 512 x 512: 24 channels in (16 upsampled from up2 + 8 from the skip),
    # 8 out
    assert up1.input_shape == (1, 512, 512, 24) and up1.output_shape == (1, 512, 512, 8)
    assert up1.macs == 512 * 512 * 3 * 3 * 24 * 8 == 452_984_832
    assert counted.flops == 3_703_570_432
