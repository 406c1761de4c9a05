"""The ring's exceptions, and the base class of every rt-eda error.

They live in the kernel layer so that ``rt_eda.shm`` depends on nothing else of rt-eda;
:mod:`rt_eda.core.errors` re-exports them beside the rest of the vocabulary. Standard
library only.
"""

from __future__ import annotations

__all__ = [
    "ClaimRecoveredError",
    "RingClosedError",
    "RingError",
    "RingOverrunError",
    "RtEdaError",
    "TornReadError",
]


class RtEdaError(Exception):
    """Base class of every rt-eda error."""


class RingError(RtEdaError):
    """Base class of stack-ring errors."""


class RingClosedError(RingError):
    """The ring was closed by its owner (the run is ending); not a fault."""


class RingOverrunError(RingError):
    """The producer found no slot it may overwrite: every slot is claimed or pinned.

    The frame is lost; the producer counts it (``overruns``) and the engine reports it.
    """


class TornReadError(RingError):
    """A stack changed while it was read (a sequence check failed); the read is discarded."""


class ClaimRecoveredError(RingError):
    """The claim was taken back by the ring's owner because its holder was declared dead."""
