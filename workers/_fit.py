"""Does a model fit the acquisition? :func:`check_fit`, with advice naming the setting to change.

Compares what :func:`~rt_eda.workers._models.inspect_model` read from a model file (a
:class:`~rt_eda.workers._models.ModelInfo`, no TensorFlow) with the acquisition's stack shape,
the time window and the channels the worker feeds: the engine runs it before anything starts
(through :meth:`~rt_eda.workers.KerasWorker.check_model`), so a misfit exits 2 naming both
shapes. The advice depends on the source (``synthetic``, ``replay``, a Micro-Manager camera):
every configuration key it names is a valid key for that source.
"""

from __future__ import annotations

import math
from pathlib import Path

from rt_eda.core.errors import ModelError
from rt_eda.shm import StackSpec

from ._models import ModelInfo, _fmt

__all__ = ["check_fit"]


def _more_channels(source: str, spec: StackSpec, k: int) -> str:
    """Advice when the model wants ``k`` channels and the acquisition has fewer."""
    if source == "synthetic":
        return (f"the synthetic source makes {spec.channels} channel(s): use a model that "
                f"takes at most {spec.channels}")
    if source == "replay":
        return (f"the recording has {spec.channels} channel(s): use a model that takes at "
                f"most {spec.channels}")
    return (f"acquire {k} channels (camera.channels: one Micro-Manager preset each) or use "
            "another model")


def _z_advice(source: str, spec: StackSpec, per: int | str) -> str:
    """Advice to acquire ``per`` z-slices per timepoint."""
    if source == "synthetic":
        return f"set camera.synthetic.z_slices = {per}"
    if source == "replay":
        return (f"the recording has {spec.z_slices} z-slice(s) per timepoint: use a model "
                f"that takes {spec.z_slices}")
    return f"give camera.z_positions {per} position(s)"


def _size_advice(source: str, spec: StackSpec, h: int, w: int) -> str:
    """Advice to acquire ``h`` x ``w`` px frames."""
    if source == "synthetic":
        return f"set camera.synthetic.height = {h} and camera.synthetic.width = {w}"
    if source == "replay":
        return (f"the recording's frames are {spec.height}x{spec.width} px and cannot be "
                "changed")
    return (f"set the camera's region of interest to {h}x{w} px (in its Micro-Manager "
            "configuration)")


def check_fit(
    info: ModelInfo,
    spec: StackSpec,
    n_timepoints: int = 1,
    channels_to_use: tuple[int, ...] | list[int] = (),
    *,
    image_shape: tuple[int, int] | None = None,
    tiled: bool = False,
    source: str = "synthetic",
) -> None:
    """Refuse a model that does not fit the acquisition, naming both shapes and the setting.

    Parameters
    ----------
    info
        From :func:`inspect_model`.
    spec
        The acquisition's stack shape.
    n_timepoints
        ``analysis.n_timepoints``: timepoints per analysis (the time window).
    channels_to_use
        ``analysis.channels_to_use``: the acquisition channels fed to the model, in model
        order; empty means all of them, in order.
    image_shape
        ``(height, width)`` the worker feeds the network after its preprocessing (e.g. cropped
        to multiples of 4); default ``(spec.height, spec.width)``.
    tiled
        The worker cuts tiles of the model's fixed size, so the image need only be at least
        that size.
    source
        The kind of ``camera.source`` (``synthetic``, ``mm-demo``, ``mmconfig``,
        ``replay``): the advice names the settings that change that source's acquisition.
        Every configuration key a message names is a valid key.

    Raises
    ------
    ModelError
        Channels, z-slices, time window or spatial size do not fit. Checks run in that order
        and the first misfit is reported. A dimension the model leaves dynamic (None) never
        counts as a misfit.
    """
    name = Path(info.path).name
    shape = _fmt(info.input_shape)
    acq = (
        f"acquisition stack (C={spec.channels}, Z={spec.z_slices}, H={spec.height}, "
        f"W={spec.width}) x {n_timepoints} timepoint(s)"
    )
    channels = tuple(channels_to_use)
    bad = [c for c in channels if not 0 <= c < spec.channels]
    if bad:
        raise ModelError(
            f"analysis.channels_to_use = {list(channels)} names channel(s) {bad}, but the "
            f"acquisition has {spec.channels} channel(s) (0..{spec.channels - 1})"
        )
    if n_timepoints < 1:
        raise ModelError(f"analysis.n_timepoints must be >= 1, got {n_timepoints}")
    used = len(channels) if channels else spec.channels
    where = (
        f"analysis.channels_to_use = {list(channels)}"
        if channels
        else f"all {spec.channels} acquisition channel(s), analysis.channels_to_use = []"
    )
    # time window named by the file
    if info.time_window_from_name and info.time_window != n_timepoints:
        raise ModelError(
            f"model {name} expects a time window of {info.time_window} timepoints (its name "
            f"has _n{info.time_window}_f; input {shape}), the analysis gives {n_timepoints} "
            f"(analysis.n_timepoints = {n_timepoints}): set analysis.n_timepoints = "
            f"{info.time_window}"
        )
    window = info.time_window if info.time_window_from_name else n_timepoints
    k = info.input_shape[3]
    if info.ndim == 4:
        if spec.z_slices != 1:
            raise ModelError(
                f"model {name} takes a single z-slice (input {shape} has no slice axis), the "
                f"{acq} has {spec.z_slices} z-slices: {_z_advice(source, spec, 1)}, or use a "
                "model with a 5-D (batch, y, x, channels, slices) input"
            )
        if k is not None and k != used * window:
            if window > 1:
                given = f"{used} channel(s) x {window} timepoints = {used * window}"
                fix = (
                    f"a 4-D model takes a time window on its channel axis ({k} values): set "
                    f"analysis.n_timepoints or analysis.channels_to_use so that channels x "
                    f"timepoints = {k}"
                )
            else:
                given = str(used)
                fix = (
                    f"set analysis.channels_to_use to {k} acquisition channel(s)"
                    if k <= spec.channels
                    else _more_channels(source, spec, k)
                )
            raise ModelError(
                f"model {name} expects {k} channel(s) (input {shape}), the acquisition gives "
                f"{given} ({where}): {fix}"
            )
    else:
        s = info.input_shape[4]
        if k is not None and k != used:
            fix = (
                f"set analysis.channels_to_use to {k} acquisition channel(s)"
                if k <= spec.channels
                else _more_channels(source, spec, k)
            )
            raise ModelError(
                f"model {name} expects {k} channel(s) (input {shape}), the acquisition gives "
                f"{used} ({where}): {fix}"
            )
        if s is not None and s != spec.z_slices * window:
            per = s // window if s % window == 0 else f"{s}/{window}"
            raise ModelError(
                f"model {name} expects {s} slice(s) on its last axis (input {shape}: "
                f"{per} z-slice(s) x {window} timepoint(s)), the {acq} gives "
                f"{spec.z_slices * window}: {_z_advice(source, spec, per)}"
                + (" or change analysis.n_timepoints" if window > 1 else "")
            )
    # spatial size
    h, w = image_shape if image_shape is not None else (spec.height, spec.width)
    size = info.spatial_size
    if size is None:
        return
    if tiled:
        if h < size[0] or w < size[1]:
            # the camera size whose preprocessed image holds one tile
            need_h = max(spec.height, math.ceil(size[0] * spec.height / h))
            need_w = max(spec.width, math.ceil(size[1] * spec.width / w))
            raise ModelError(
                f"model {name} takes tiles of {size[0]}x{size[1]} px (input {shape}), the "
                f"preprocessed image is only {h}x{w} px (from camera {spec.height}x"
                f"{spec.width}): acquire a larger image "
                f"({_size_advice(source, spec, need_h, need_w)}) or use a model with a "
                "smaller or dynamic input"
            )
    elif (h, w) != size:
        raise ModelError(
            f"model {name} takes {size[0]}x{size[1]} px images (input {shape}), the worker "
            f"feeds {h}x{w} px (camera {spec.height}x{spec.width}): "
            f"{_size_advice(source, spec, size[0], size[1])}, or use KerasTilingWorker "
            "(analysis.worker) which cuts tiles of the model's size"
        )
