"""Salvage: what a dead writer had pinned but not written, saved by the engine after the run.

The writer holds a pin on every stack until it is persisted (:mod:`.writer`), so when it dies
(killed, or crashed other than by a full disk, which releases its pins) the stacks it had not
written are still in the ring, pinned by a consumer that is gone. After the camera has
stopped, the engine calls :func:`salvage`::

    for each pin bit still registered:  adopt it (the ring's owner takes the dead reader's
                                         place), read its stacks lowest sequence first
        stack -> <save>/salvage/ (a run folder of its own: images + frames.csv) -> release
    then every pin bit is dropped (:func:`release_pins`), so nothing waits for a dead reader

Nothing acquired is lost unless the salvage itself cannot write (it raises; the engine
counts the frames as lost). Runs in the engine process; the writer role's own recording is
left as the writer left it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rt_eda.core.config import Config
from rt_eda.core.errors import RingClosedError
from rt_eda.shm import StackRing
from rt_eda.storage.recording import Recording, position_names, prepare_save_dir

__all__ = ["SALVAGE_DIR", "release_pins", "salvage"]

log = logging.getLogger(__name__)

SALVAGE_DIR = "salvage"
"""The folder, inside the run folder, that salvaged stacks go to."""


def salvage(ring: StackRing, config: Config, *, hurry: Callable[[], bool]) -> int:
    """Persist every stack still pinned in ``ring`` into ``<run.save>/salvage``.

    Parameters
    ----------
    ring
        The stack ring (this process is its owner); the camera has stopped.
    config
        The run's configuration (``run.save``, ``writer.format``).
    hurry
        Polled between stacks: True (a second Ctrl-C) ends the salvage at once.

    Returns
    -------
    int
        Frames saved (0 when nothing was pinned: no folder is created then).

    Raises
    ------
    OSError, RtEdaError
        The salvage folder could not be created or written; what was written stays.
    """
    if not config.run.save:
        raise ValueError("salvage needs run.save (the run folder)")
    recording: Recording | None = None
    for bit in ring.pin_bits():
        pin = ring.adopt_pin(bit)
        while not hurry():
            try:
                stack = pin.next_any(timeout=0.0)
            except RingClosedError:
                break
            if stack is None:
                break
            if recording is None:
                folder = prepare_save_dir(Path(config.run.save) / SALVAGE_DIR)
                recording = Recording(folder, ring.spec.shape, ring.spec.np_dtype,
                                      fmt=config.writer.format,
                                      config_toml=config.to_toml(),
                                      positions=position_names(config, ring.positions))
            recording.write_stack(stack.seq, stack.pixels, stack.frame_times,
                                  stack.interval_s, stack.position, stack.frame)
            pin.release(stack)
    if recording is None:
        return 0
    recording.close()
    saved = recording.stats.frames_written
    log.warning("writer died: %d frame(s) it had not written were saved to %s", saved,
                recording.run_dir)
    return saved


def release_pins(ring: StackRing) -> int:
    """Drop every pin still registered (their consumers are dead): no slot waits for them.
    Returns the slots unpinned."""
    return sum(ring.recover_pin(bit) for bit in ring.pin_bits())
