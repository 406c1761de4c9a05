"""The exception vocabulary of rt-eda (one module, precise names).

Every process role raises these; the engine maps them onto exit codes:
configuration and model problems (:class:`ConfigError`, :class:`ModelError`) exit 2 before
anything starts, faults during a run exit 1 with the summary still written.

The base class and the ring's own errors live in the kernel layer (:mod:`rt_eda.shm`, which
depends on nothing else of rt-eda) and are re-exported here, so this is the one module to
import errors from. Standard library only.
"""

from __future__ import annotations

from rt_eda.shm import (
    ClaimRecoveredError,
    RingClosedError,
    RingError,
    RingOverrunError,
    RtEdaError,
    TornReadError,
)

__all__ = [
    "ClaimRecoveredError",
    "ClusterError",
    "ClusterLostError",
    "ClusterUnreachableError",
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


class ConfigError(RtEdaError, ValueError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""


class ModelError(RtEdaError):
    """A model file is missing, corrupt, or does not fit the acquisition (both shapes named)."""


class SourceError(RtEdaError):
    """The image source failed (the camera's own message is kept in the text)."""


class WorkerFailedError(RtEdaError):
    """A worker process kept failing; the message names the worker and the exception."""


class WriterError(RtEdaError):
    """The writer could not persist data (e.g. a full disk); what was saved stays readable."""


class ClusterUnreachableError(ConfigError):
    """The Ray cluster named by ``cluster.address`` cannot be reached (or started) before
    acquisition: exit 2, nothing started; the message names the address and Ray's own words."""


class ClusterError(RtEdaError):
    """Analysis on the cluster failed during a run (an actor that cannot be restarted)."""


class ClusterLostError(ClusterError):
    """Every actor is gone and none came back within ``cluster.timeout_s``: the cluster is
    lost. The engine falls back to local workers (``cluster.fallback = "local"``) or ends the
    run (exit 1); acquisition and recording go on either way."""
