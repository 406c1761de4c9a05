"""Floating-point operations of a Keras model's forward pass, counted from its layers.

The physical anchor of the benchmarks (``bench/test_flops_bench.py``): a model's FLOPs per
stack divided by the time of one inference call is the FLOP rate it achieves, which is then set
beside the machine's own peak (a float32 matrix product measured in the same run).

What is counted: the multiply-accumulates (MACs) of every layer that has weights multiplying
its inputs, at the real shapes of one forward pass, and FLOPs = 2 x MACs (a multiply and an
add), the usual convention. Per layer, with ``S_out`` the number of output positions (batch
included), ``K`` the kernel's number of taps, ``C_in``/``C_out`` the channels:

- convolution (1-D, 2-D, 3-D, any stride, dilation or padding): ``S_out * K * C_in/groups * C_out``
- transposed convolution: ``S_in * K * C_in * C_out`` (each input position scatters the kernel)
- depthwise convolution: ``S_out * K * C_in * depth_multiplier``
- separable convolution: the depthwise part plus the pointwise part ``S_out * C_in * dm * C_out``
- dense: ``S_out * C_in * units`` (``S_out``: every position but the feature axis)

Biases, activations, pooling, resampling, concatenation and normalisation are not counted:
they are one operation or a few per value (memory-bound, not multiply-accumulates); their
layer types are listed in :attr:`ModelFlops.not_counted` so a reader sees what is left out.
Nested models are counted layer by layer at the shapes they receive.

Shapes come from one real forward pass of zeros of the given input shape (never from a
symbolic reading, which can leave dimensions ``None``), so a dynamic-size model is counted at
the size it runs at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = ["LayerFlops", "ModelFlops", "count_flops"]


@dataclass(frozen=True, slots=True)
class LayerFlops:
    """The multiply-accumulates of one layer at one input shape."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int

    @property
    def flops(self) -> int:
        """``2 * macs``."""
        return 2 * self.macs


@dataclass(frozen=True, slots=True)
class ModelFlops:
    """Per-layer multiply-accumulates of one forward pass of ``input_shape`` (batch included)."""

    input_shape: tuple[int, ...]
    layers: tuple[LayerFlops, ...]
    not_counted: tuple[str, ...]

    @property
    def macs(self) -> int:
        """Sum of the counted layers' multiply-accumulates."""
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        """``2 * macs``: FLOPs of one forward pass of :attr:`input_shape`."""
        return 2 * self.macs

    def table(self) -> list[dict[str, Any]]:
        """One row per counted layer: name, type, shapes, MACs, FLOPs and share of the total."""
        total = max(1, self.macs)
        return [
            {"layer": r.name, "type": r.kind, "input": list(r.input_shape),
             "output": list(r.output_shape), "macs": r.macs, "flops": r.flops,
             "share": round(r.macs / total, 4)}
            for r in self.layers
        ]


def _channels_last(layer: Any) -> bool:
    return str(layer.get_config().get("data_format", "channels_last")) != "channels_first"


def _split(shape: tuple[int, ...], channels_last: bool) -> tuple[int, int]:
    """``(positions, channels)`` of an activation shape (positions: batch x spatial)."""
    if channels_last:
        return math.prod(shape[:-1]), shape[-1]
    return shape[0] * math.prod(shape[2:]), shape[1]


def _layer_macs(layer: Any, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> int | None:
    """The layer's multiply-accumulates, or ``None`` for a layer type that has none counted."""
    from keras import layers as kl

    if isinstance(layer, kl.Dense):
        return math.prod(shape_out[:-1]) * shape_in[-1] * shape_out[-1]
    if not isinstance(layer, kl.Conv1D | kl.Conv2D | kl.Conv3D | kl.Conv1DTranspose
                      | kl.Conv2DTranspose | kl.Conv3DTranspose | kl.DepthwiseConv1D
                      | kl.DepthwiseConv2D | kl.SeparableConv1D | kl.SeparableConv2D):
        return None
    cl = _channels_last(layer)
    s_in, c_in = _split(shape_in, cl)
    s_out, c_out = _split(shape_out, cl)
    cfg = layer.get_config()
    taps = math.prod(int(k) for k in cfg["kernel_size"])
    if isinstance(layer, kl.DepthwiseConv1D | kl.DepthwiseConv2D):
        return s_out * taps * c_in * int(cfg["depth_multiplier"])
    if isinstance(layer, kl.SeparableConv1D | kl.SeparableConv2D):
        dm = int(cfg["depth_multiplier"])
        return s_out * taps * c_in * dm + s_out * c_in * dm * c_out
    if isinstance(layer, kl.Conv1DTranspose | kl.Conv2DTranspose | kl.Conv3DTranspose):
        return s_in * taps * c_in * c_out
    return s_out * taps * (c_in // int(cfg.get("groups", 1))) * c_out


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(x))


def count_flops(model: keras.Model, input_shape: tuple[int, ...]) -> ModelFlops:
    """Count the multiply-accumulates of one forward pass of ``model`` on ``input_shape``.

    Parameters
    ----------
    model
        A functional or sequential Keras model with one input (a loaded ``.keras``/``.h5``).
    input_shape
        The full input shape, batch included, e.g. ``(1, 512, 512, 2)``.

    Returns
    -------
    ModelFlops
        Every weighted layer with its real input and output shapes and MACs, in the model's
        layer order (nested models expanded).

    Raises
    ------
    ValueError
        A layer with weights is used more than once (its shapes are not one pair), or the
        model has several inputs.
    """
    import keras

    if len(model.inputs) != 1:
        raise ValueError(f"count_flops counts single-input models; {model.name} has "
                         f"{len(model.inputs)} inputs")
    inner: list[Any] = []
    tensors: list[Any] = []
    skipped: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # the calls of this layer in the graph (a nested model's own construction is not one)
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            if layer.weights:
                raise ValueError(f"layer {layer.name} of {model.name} is used {len(nodes)} "
                                 "times: its MACs have no single shape")
            skipped.append(type(layer).__name__)
            continue
        ins = nodes[0].input_tensors
        inner.append(layer)
        tensors += [ins[0] if len(ins) == 1 else list(ins), nodes[0].outputs]
    probe = keras.Model(model.inputs, tensors)
    values = probe([np.zeros(input_shape, np.float32)], training=False)
    rows: list[LayerFlops] = []
    for i, layer in enumerate(inner):
        x_in, x_out = values[2 * i], values[2 * i + 1]
        if isinstance(x_out, list | tuple) and len(x_out) == 1:
            x_out = x_out[0]
        if isinstance(layer, keras.Model):
            nested = count_flops(layer, _shape(x_in))
            rows += [LayerFlops(f"{layer.name}/{r.name}", r.kind, r.input_shape, r.output_shape,
                                r.macs) for r in nested.layers]
            skipped += nested.not_counted
            continue
        if isinstance(x_in, list | tuple) or isinstance(x_out, list | tuple):
            skipped.append(type(layer).__name__)  # concatenation, add, ...: no MACs
            continue
        shape_in, shape_out = _shape(x_in), _shape(x_out)
        macs = _layer_macs(layer, shape_in, shape_out)
        if macs is None:
            skipped.append(type(layer).__name__)
        else:
            rows.append(LayerFlops(layer.name, type(layer).__name__, shape_in, shape_out, macs))
    return ModelFlops(tuple(input_shape), tuple(rows), tuple(sorted(set(skipped))))
