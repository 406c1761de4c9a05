"""The exception vocabulary of rt-eda (one module, precise names).

Every process role raises these; the engine maps them onto exit codes:
configuration and model problems (:class:`ConfigError`, :class:`ModelError`) exit 2 before
anything starts, faults during a run exit 1 with the summary still written.

This module imports nothing but the standard library, so every layer (``shm`` included) may
use it.
"""

from __future__ import annotations

__all__ = [
    "ClaimRecoveredError",
    "ConfigError",
    "ModelError",
    "RingClosedError",
    "RingError",
    "RingOverrunError",
    "RtEdaError",
    "SourceError",
    "TornReadError",
    "WorkerFailedError",
    "WriterError",
]


class RtEdaError(Exception):
    """Base class of every rt-eda error."""


class ConfigError(RtEdaError, ValueError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""


class ModelError(RtEdaError):
    """A model file is missing, corrupt, or does not fit the acquisition (both shapes named)."""


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


class SourceError(RtEdaError):
    """The image source failed (the camera's own message is kept in the text)."""


class WorkerFailedError(RtEdaError):
    """A worker process kept failing; the message names the worker and the exception."""


class WriterError(RtEdaError):
    """The writer could not persist data (e.g. a full disk); what was saved stays readable."""
