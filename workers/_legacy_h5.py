"""Keras 2 HDF5 models that Keras 3's legacy reader cannot rebuild as saved, and their repair.

Keras 2 numbers the calls ("nodes") of a nested model from 1 when that model was built with
its own input (a ``Sequential`` whose first layer has ``input_shape``, any functional
model): node 0 is the nested model's own construction. Keras 3 subtracts that 1 again for a
nested *functional* model (keras-team/keras#19509), not for a nested ``Sequential``, so a Keras
2 model that calls a built ``Sequential`` inside another model fails to load with "Invalid
Functional model configuration ... has loops or disconnected nodes", although nothing is
wrong with it. :func:`repair_nested_sequential` renumbers those references in the
architecture; :func:`load_repaired` loads a copy of the file with the repaired architecture
through Keras' own legacy reader (weights included), leaving the user's file untouched.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

__all__ = ["load_repaired", "repair_nested_sequential"]

log = logging.getLogger(__name__)

_NESTED = ("Functional", "Model")


def _built_sequential(layer: dict[str, Any]) -> bool:
    """Whether a Sequential layer configuration was built with its own input (Keras 2)."""
    body = layer.get("config", {})
    inner = body.get("layers", []) if isinstance(body, dict) else body
    if isinstance(body, dict) and isinstance(body.get("build_input_shape"), list):
        return True
    if inner and isinstance(inner[0], dict):
        first = inner[0]
        if first.get("class_name") == "InputLayer":
            return True
        cfg = first.get("config", {})
        return any(isinstance(cfg.get(k), list) for k in ("batch_input_shape", "batch_shape"))
    return False


def _renumber(refs: Any, names: set[str]) -> int:
    """Decrement node indices of references ``[name, node, tensor, ...]`` to ``names``."""
    if isinstance(refs, list) and len(refs) >= 3 and isinstance(refs[0], str) and isinstance(
            refs[1], int):
        if refs[0] in names and refs[1] > 0:
            refs[1] -= 1
            return 1
        return 0
    if isinstance(refs, dict):
        refs = list(refs.values())
    if isinstance(refs, list):
        return sum(_renumber(r, names) for r in refs)
    return 0


def repair_nested_sequential(config: dict[str, Any]) -> int:
    """Renumber, in place, the calls of built nested Sequential models in a Keras 2
    functional configuration (and in the functional models nested in it).

    Returns
    -------
    int
        How many references were renumbered (0: nothing to repair).
    """
    if config.get("class_name") not in _NESTED:
        return 0
    body = config.get("config", {})
    layers = body.get("layers", []) if isinstance(body, dict) else []
    names = {str(layer.get("config", {}).get("name", layer.get("name"))) for layer in layers
             if layer.get("class_name") == "Sequential" and _built_sequential(layer)}
    changed = 0
    for layer in layers:
        if layer.get("class_name") in _NESTED:
            changed += repair_nested_sequential(layer)
        if names:
            changed += _renumber(layer.get("inbound_nodes", []), names)
    if names:
        changed += _renumber(body.get("output_layers", []), names)
    return changed


def load_repaired(path: Path) -> keras.Model | None:
    """Load a Keras 2 HDF5 model whose nested Sequential calls need renumbering.

    Returns None when the architecture has nothing to repair (the caller reports Keras' own
    error). The repaired architecture goes into a temporary copy of the file, loaded with
    ``keras.models.load_model(compile=False)``; exceptions of that load propagate.
    """
    import h5py
    import keras

    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    if not repair_nested_sequential(config):
        return None
    with tempfile.TemporaryDirectory(prefix="rt-eda-h5-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as f:
            f.attrs["model_config"] = json.dumps(config).encode()
        model = keras.models.load_model(copy, compile=False)
    log.info("%s: nested Sequential calls renumbered for Keras 3 (saved by Keras 2)", path)
    return model if isinstance(model, keras.Model) else None
