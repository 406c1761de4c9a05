"""Model files: inspect them without TensorFlow, load them (the fit check is :mod:`._fit`).

Two formats are understood, recognised by their first bytes (not their suffix):

- **Keras 3** ``.keras`` archives: a zip holding ``config.json`` (the model's architecture),
  ``metadata.json`` and ``model.weights.h5``;
- **legacy Keras 2** HDF5 files (``.h5``/``.hdf5``, tf.keras 2.x and standalone Keras 2.x, the
  2020-era models of the original plugin included): the architecture is the JSON string in the
  root attribute ``model_config``, the weights are in the group ``model_weights``.

:func:`inspect_model` reads the architecture with :mod:`zipfile`, :mod:`h5py` and :mod:`json`
only, so the engine process can refuse a misfit (:func:`~rt_eda.workers._fit.check_fit`, in
:mod:`._fit`) before any process starts
and without paying for a TensorFlow import. Only when the architecture does not state its input
shape (a subclassed model that was never built) does it fall back to loading the model.
:func:`load_model` is for the worker process: it imports Keras and loads with
``compile=False``.

Input layouts (channels last, as the original plugin's models)
--------------------------------------------------------------
``(batch, y, x, channels)``
    A 2-D model. It takes one z-slice. With a time window of T timepoints the channel axis
    holds T x C values, time-major (index ``t * C + c``, oldest timepoint first).
``(batch, y, x, channels, slices)``
    A 5-D model of the original plugin. The slice axis holds the z-slices; with a time window
    it holds T x Z values, time-major (index ``t * Z + z``, oldest first).

The time window comes from the original's file-name pattern ``_n<N>_f`` (``mito_n5_f...h5``
takes 5 timepoints); without it the window is 1 unless the analysis asks for more, in which
case the shape must carry the extra timepoints as described above.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rt_eda.core.errors import ModelError

if TYPE_CHECKING:
    import keras

__all__ = [
    "ModelInfo",
    "demo_model_path",
    "inspect_loaded",
    "inspect_model",
    "load_model",
]

log = logging.getLogger(__name__)

Shape = tuple[int | None, ...]

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TIME_WINDOW = re.compile(r"_n(\d+)_f")
# Exceptions Keras raises for a model file it cannot rebuild (unknown layer, bad config,
# broken weights); anything else is a bug and propagates.
_LOAD_ERRORS = (ValueError, TypeError, KeyError, OSError, AttributeError, ImportError)


def demo_model_path() -> Path:
    """The bundled demo model (``rt_eda/workers/models/demo.keras`` in the installed package).

    Trained by :mod:`rt_eda.training.demo_model` on the synthetic source with the
    :class:`~rt_eda.workers._keras_builtin.KerasRescaleWorker` preprocessing; its training
    record and measured quality are in ``demo.json`` beside it.
    """
    return Path(__file__).resolve().parent / "models" / "demo.keras"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model file says about its input, read without building the model.

    Attributes
    ----------
    path
        The file, as given.
    format
        ``"keras"`` (Keras 3 archive) or ``"h5"`` (legacy Keras 2 HDF5).
    input_shape
        The model's input shape with the batch axis; ``None`` marks a dynamic axis.
    output_shape
        The output shape with the batch axis, or ``None`` when it is not known without
        building the model (always filled by :func:`inspect_loaded`).
    time_window
        Timepoints per analysis: from the ``_n<N>_f`` file-name pattern, else 1.
    time_window_from_name
        Whether :attr:`time_window` came from the file name (then it is binding).
    keras_version
        The Keras version that saved the file (``""`` when the file does not say).
    """

    path: str
    format: Literal["keras", "h5"]
    input_shape: Shape
    output_shape: Shape | None
    time_window: int = 1
    time_window_from_name: bool = False
    keras_version: str = ""

    @property
    def ndim(self) -> int:
        """Rank of the input, batch axis included (4 or 5)."""
        return len(self.input_shape)

    @property
    def channels(self) -> int | None:
        """Input channels per timepoint (``None`` when the channel axis is dynamic)."""
        k = self.input_shape[3]
        if k is None:
            return None
        return k // self.time_window if self.ndim == 4 else k

    @property
    def z_slices(self) -> int | None:
        """Z-slices per timepoint: 1 for a 4-D input, the slice axis / time window for 5-D."""
        if self.ndim == 4:
            return 1
        s = self.input_shape[4]
        return None if s is None else s // self.time_window

    @property
    def spatial_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the input, or ``None`` when either is dynamic."""
        h, w = self.input_shape[1], self.input_shape[2]
        if h is None or w is None:
            return None
        return (h, w)

    @property
    def dynamic(self) -> bool:
        """Whether the model takes any spatial size (``(None, None, ...)``)."""
        return self.spatial_size is None

    def describe(self) -> str:
        """One line for logs and ``rt-eda`` messages."""
        size = "dynamic size" if self.dynamic else "{}x{}".format(*self.input_shape[1:3])
        window = f", time window {self.time_window}" if self.time_window > 1 else ""
        return (
            f"{Path(self.path).name} ({self.format}, Keras {self.keras_version or '?'}): "
            f"input {_fmt(self.input_shape)}, {size}{window}, output "
            f"{_fmt(self.output_shape) if self.output_shape is not None else 'unknown'}"
        )


def _fmt(shape: Shape | None) -> str:
    if shape is None:
        return "unknown"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


# -- reading the architecture ------------------------------------------------------------------
def _magic(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise ModelError(
            f"model path {str(path)!r} is a directory (a TensorFlow SavedModel?): rt-eda loads "
            "Keras 3 '.keras' archives and Keras 2 '.h5' files; re-save the model with "
            "model.save('model.keras')"
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head:
        raise ModelError(f"model file {str(path)!r} is empty (0 bytes)")
    return head


def _read_keras_archive(path: Path) -> tuple[dict[str, Any], str]:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ModelError(
                    f"model file {str(path)!r} is corrupt: member {bad!r} of the .keras archive "
                    "fails its CRC check"
                )
            names = set(zf.namelist())
            if "config.json" not in names:
                raise ModelError(
                    f"{str(path)!r} is a zip file but not a Keras model archive: it has no "
                    f"config.json (members: {sorted(names)[:5]})"
                )
            config_text = zf.read("config.json")
            metadata = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
    except zipfile.BadZipFile as exc:
        raise ModelError(
            f"model file {str(path)!r} is corrupt or truncated ({path.stat().st_size} bytes): "
            f"the .keras archive cannot be read ({exc})"
        ) from None
    except (OSError, EOFError) as exc:  # zlib/EOF errors of a member cut short
        raise ModelError(
            f"model file {str(path)!r} is corrupt or truncated: {type(exc).__name__}: {exc}"
        ) from None
    try:
        config = json.loads(config_text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"config.json in {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"config.json in {str(path)!r} is not a model configuration")
    version = metadata.get("keras_version", "") if isinstance(metadata, dict) else ""
    return config, str(version)


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _read_hdf5(path: Path) -> tuple[dict[str, Any], str]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                what = "weights only (saved with save_weights?)" if len(f) else "no model"
                raise ModelError(
                    f"{str(path)!r} is an HDF5 file but not a whole Keras model: it has no "
                    f"'model_config' attribute ({what}); save the model with model.save()"
                )
            if "model_weights" not in f:
                raise ModelError(
                    f"{str(path)!r} has a model_config but no 'model_weights' group: the file is "
                    "incomplete"
                )
            text = _attr_text(f.attrs["model_config"])
            version = _attr_text(f.attrs.get("keras_version", ""))
    except OSError as exc:
        raise ModelError(
            f"model file {str(path)!r} is corrupt or truncated ({path.stat().st_size} bytes): "
            f"HDF5 cannot open it ({exc})"
        ) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model_config of {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"model_config of {str(path)!r} is not a model configuration")
    return config, version


def _layer_input_shape(layer_config: dict[str, Any]) -> list[Any] | None:
    for key in ("batch_shape", "batch_input_shape"):
        value = layer_config.get(key)
        if isinstance(value, list):
            return value
    return None


def _find_input_shapes(config: dict[str, Any]) -> list[list[Any]] | None:
    """Input shapes (with batch axis) of a model configuration, or None if it does not say."""
    class_name = config.get("class_name", "")
    body = config.get("config", {})
    if class_name in ("Functional", "Model") and isinstance(body, dict) and "layers" in body:
        refs = body.get("input_layers", [])
        if isinstance(refs, dict):
            refs = list(refs.values())
        if refs and isinstance(refs[0], str):  # Keras 3 writes a single input unnested
            refs = [refs]
        by_name = {
            layer.get("name", layer.get("config", {}).get("name")): layer
            for layer in body["layers"]
        }
        shapes: list[list[Any]] = []
        for ref in refs:
            layer = by_name.get(ref[0])
            if layer is None:
                return None
            shape = _layer_input_shape(layer.get("config", {}))
            if shape is None:
                return None
            shapes.append(shape)
        return shapes or None
    if class_name == "Sequential":
        layers = body if isinstance(body, list) else body.get("layers", [])
        if layers:
            shape = _layer_input_shape(layers[0].get("config", {}))
            if shape is not None:
                return [shape]
        if isinstance(body, dict) and isinstance(body.get("build_input_shape"), list):
            return [body["build_input_shape"]]
    build = config.get("build_config", {})
    if isinstance(build, dict) and isinstance(build.get("input_shape"), list):
        shape = build["input_shape"]
        return [shape] if shape and not isinstance(shape[0], list) else None
    return None


def _count_refs(refs: Any) -> int | None:
    """Leaf layer references (``[name, node, tensor]``) in an output structure, or None."""
    if isinstance(refs, list) and refs and isinstance(refs[0], str):
        return 1
    if isinstance(refs, dict):
        refs = list(refs.values())
    if not isinstance(refs, list):
        return None
    total = 0
    for ref in refs:
        n = _count_refs(ref)
        if n is None:
            return None
        total += n
    return total


def _count_outputs(config: dict[str, Any]) -> int | None:
    """How many outputs a model configuration declares (None when it does not say)."""
    class_name = config.get("class_name", "")
    body = config.get("config", {})
    if class_name in ("Functional", "Model") and isinstance(body, dict):
        return _count_refs(body.get("output_layers"))
    if class_name == "Sequential":
        return 1
    return None


def _outputs_error(path: Path, n: int) -> ModelError:
    return ModelError(
        f"model {str(path)!r} has {n} outputs; rt-eda workers read exactly one (the decision "
        "and the network image come from it): save a model with a single output"
    )


def _time_window(path: Path) -> int | None:
    match = _TIME_WINDOW.search(path.name)
    if match is None:
        return None
    value = int(match.group(1))
    if value < 1:
        raise ModelError(f"file name {path.name!r} asks for a time window of {value} (_n0_f)")
    return value


def _make_info(
    path: Path,
    fmt: Literal["keras", "h5"],
    shapes: list[list[Any]] | list[Shape],
    output_shape: Shape | None,
    version: str,
) -> ModelInfo:
    if len(shapes) != 1:
        raise ModelError(
            f"model {str(path)!r} has {len(shapes)} inputs {[_fmt(tuple(s)) for s in shapes]}; "
            "rt-eda workers feed exactly one"
        )
    shape: Shape = tuple(None if d is None else int(d) for d in shapes[0])
    if len(shape) not in (4, 5):
        raise ModelError(
            f"model {str(path)!r} has input {_fmt(shape)}: rt-eda understands (batch, y, x, "
            "channels) and (batch, y, x, channels, slices) inputs (channels last)"
        )
    window = _time_window(path)
    info = ModelInfo(
        path=str(path),
        format=fmt,
        input_shape=shape,
        output_shape=output_shape,
        time_window=window or 1,
        time_window_from_name=window is not None,
        keras_version=version,
    )
    carrier = shape[3] if len(shape) == 4 else shape[4]
    if window is not None and carrier is not None and carrier % window:
        axis = "channel" if len(shape) == 4 else "slice"
        raise ModelError(
            f"model {path.name!r}: its name asks for a time window of {window} (_n{window}_f) "
            f"but its {axis} axis has {carrier} values (input {_fmt(shape)}), not a multiple"
        )
    return info


def inspect_model(path: str | Path) -> ModelInfo:
    """Read a model file's input shape and time window, without TensorFlow where possible.

    Parameters
    ----------
    path
        A Keras 3 ``.keras`` archive or a legacy Keras 2 HDF5 file.

    Returns
    -------
    ModelInfo
        ``output_shape`` is ``None`` unless the model had to be loaded (see below).

    Raises
    ------
    ModelError
        The file is missing, empty, corrupt or truncated (a broken zip, a failed CRC, an HDF5
        file cut short), not a model (a weights-only HDF5 file, a zip without
        ``config.json``, anything else), or its input is not one 4-D or 5-D tensor. The
        message names the file and the problem; it never carries a traceback.

    Notes
    -----
    Safe to call from any process; reads the file and never writes it. Only when the
    configuration does not state the input shape (a subclassed model) is the model loaded
    with Keras, which imports TensorFlow in the calling process.
    """
    p = Path(path)
    head = _magic(p)
    fmt: Literal["keras", "h5"]
    if head.startswith(_ZIP_MAGIC):
        fmt = "keras"
        config, version = _read_keras_archive(p)
    elif head.startswith(_HDF5_MAGIC):
        fmt = "h5"
        config, version = _read_hdf5(p)
    else:
        raise ModelError(
            f"{str(p)!r} is not a model file: it is neither a Keras 3 archive (zip) nor a "
            f"Keras 2 HDF5 file (first bytes {head!r})"
        )
    outputs = _count_outputs(config)
    if outputs is not None and outputs != 1:
        raise _outputs_error(p, outputs)
    shapes = _find_input_shapes(config)
    if shapes is None:
        log.info("%s does not state its input shape; loading it to find out", p)
        return inspect_loaded(load_model(p, _checked=True), p)
    return _make_info(p, fmt, shapes, None, version)


def inspect_loaded(model: keras.Model, path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a loaded model (``output_shape`` filled in).

    ``path`` is the file it came from (for the format and the ``_n<N>_f`` time window).
    """
    p = Path(path)
    inputs = model.inputs
    if not inputs:
        raise ModelError(f"model {str(p)!r} was never built: it has no input shape")
    shapes: list[Shape] = [tuple(t.shape) for t in inputs]
    outputs = model.outputs
    if len(outputs) != 1:
        raise _outputs_error(p, len(outputs))
    output_shape: Shape = tuple(outputs[0].shape)
    fmt: Literal["keras", "h5"]
    if _magic(p).startswith(_ZIP_MAGIC):
        fmt, (_, version) = "keras", _read_keras_archive(p)
    else:
        fmt, (_, version) = "h5", _read_hdf5(p)
    return _make_info(p, fmt, shapes, output_shape, version)


def _load_repaired(path: Path, error: Exception) -> keras.Model | None:
    """The model of a Keras 2 HDF5 file Keras 3 failed to load, repaired (or None)."""
    if "Invalid Functional model configuration" not in str(error) or not _magic(
            path).startswith(_HDF5_MAGIC):
        return None
    from ._legacy_h5 import load_repaired

    try:
        return load_repaired(path)
    except _LOAD_ERRORS as exc:
        log.debug("repairing %s did not help: %s", path, exc)
        return None


# -- loading -----------------------------------------------------------------------------------
def load_model(path: str | Path, *, _checked: bool = False) -> keras.Model:
    """Load a model for inference (``compile=False``); imports Keras and TensorFlow.

    For the worker process (call :func:`rt_eda.workers._keras.configure_threads` first).

    Raises
    ------
    ModelError
        The file is missing, corrupt or not a model (checked as in :func:`inspect_model`), or
        Keras cannot rebuild it (an unknown or custom layer, a broken weights file); the
        message carries Keras's own reason.
    """
    p = Path(path)
    if not _checked:
        head = _magic(p)
        if head.startswith(_ZIP_MAGIC):
            _read_keras_archive(p)
        elif head.startswith(_HDF5_MAGIC):
            _read_hdf5(p)
        else:
            raise ModelError(
                f"{str(p)!r} is not a model file: it is neither a Keras 3 archive (zip) nor a "
                f"Keras 2 HDF5 file (first bytes {head!r})"
            )
    import keras

    try:
        model = keras.models.load_model(p, compile=False)
    except _LOAD_ERRORS as exc:
        # A Keras 2 file calling a built nested Sequential: Keras 3 misnumbers its calls.
        repaired = _load_repaired(p, exc)
        if repaired is not None:
            return repaired
        raise ModelError(
            f"Keras {keras.__version__} cannot load {str(p)!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(model, keras.Model):
        raise ModelError(f"{str(p)!r} holds a {type(model).__name__}, not a Keras model")
    log.info("loaded model %s (%d parameters)", p, model.count_params())
    return model
