"""Files written atomically: a reader sees the old content or the new one, never half of it.

One way of doing it for every file rt-eda replaces while others may read it (the run summary,
``summary.json`` of a run folder, a zarr store's ``zarr.json`` as the store grows): the data go
to a temporary file of a unique name in the same folder (``.<name>.<random>.tmp``), which is
then renamed over the target (``rename(2)`` is atomic within one file system). On any failure
the temporary file is removed and the target is left as it was. Nothing is fsynced: a crash
of the process loses nothing written, a power loss is the page cache's policy.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_json_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *,
                 make_parents: bool = False, prefix: str | None = None) -> Path:
    """Replace the file ``path`` with ``data`` (str is written as UTF-8), atomically.

    Parameters
    ----------
    path
        The file to create or replace.
    data
        Its whole new content.
    make_parents
        Create missing parent folders first.
    prefix
        Prefix of the temporary file's name (default ``.<name>.``), for callers that sweep
        what a killed writer left.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        The folder or the file cannot be written (full disk, no permission); the target is
        then unchanged and no temporary file is left.
    """
    p = Path(path)
    if make_parents:
        p.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        Path(tmp).replace(p)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    return p


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any], *,
                      make_parents: bool = True, indent: int = 2) -> Path:
    """Write ``data`` as JSON (``default=str`` for what JSON has no type for, a final
    newline) to ``path`` atomically (:func:`write_atomic`), creating missing parent folders
    unless ``make_parents`` is False.

    Raises
    ------
    OSError
        The file or a parent folder cannot be written.
    """
    text = json.dumps(dict(data), indent=indent, default=str) + "\n"
    return write_atomic(path, text, make_parents=make_parents)
