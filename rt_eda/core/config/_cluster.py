"""``[cluster]``: analysis on a Ray cluster instead of local worker processes (issue 14).

``kind = "none"`` (the default) runs the local workers of ``[analysis]``. ``kind = "ray"``
runs the same worker class inside Ray actors, fed by a local bridge process that claims from
the ring as a worker does (:mod:`rt_eda.roles.bridge`, :mod:`rt_eda.cluster`).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal, Self

from pydantic import field_validator, model_validator

from ._validation import Section, cross_error, key_field, value_error

__all__ = ["ADDRESS_FORMS", "CLUSTER_FORMS", "MAX_ACTORS", "ClusterConfig", "cluster_overrides"]

MAX_ACTORS = 64
"""At most this many actors: each of their ``in_flight`` lanes is one reader of the ring
(255 reader ids in all, shared with the local workers)."""

ADDRESS_FORMS = ("'local' (start Ray on this machine), 'auto' (the Ray cluster this machine "
                 "belongs to), 'ray://HOST:PORT' (Ray Client, e.g. ray://gpu-server:10001) "
                 "or 'HOST:PORT' (the head's GCS address)")

_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
_HOST_PORT = re.compile(rf"^{_HOST}:(\d{{1,5}})$")


class ClusterConfig(Section):
    """``[cluster]``: where analysis runs when it is not on this machine's worker processes.

    ``actors`` 0 means ``analysis.workers`` actors (so ``--cluster ray --workers 2`` runs two
    actors). Each actor reserves ``num_cpus_per_actor`` CPUs and ``num_gpus_per_actor`` GPUs
    of the cluster and runs with ``analysis.threads_per_worker`` compute threads. The bridge
    keeps at most ``in_flight`` stacks in flight per actor (1: the freshest decisions; 2: the
    next stack travels while the actor computes). ``fallback``: when the cluster is lost
    during a run, ``"local"`` starts ``analysis.workers`` local workers (acquisition never
    stops), ``"stop"`` ends the run (exit 1, summary written). ``max_restarts``: how often
    Ray restarts an actor that died (each restart is counted in ``worker_restarts``).
    ``timeout_s``: a remote analysis that has not come back within it is given up (the stack
    counted as skipped, the actor restarted), and an actor that is not back within it after
    a restart is lost. ``placement``: how the actors are spread over the cluster's nodes.
    """

    section: ClassVar[str] = "cluster"

    kind: Literal["none", "ray"] = key_field(
        "none", "one of 'none' (local worker processes), 'ray' (Ray actors)")
    address: str = key_field("local", ADDRESS_FORMS)
    actors: int = key_field(
        0, f"an integer from 0 to {MAX_ACTORS} (0: analysis.workers actors)", ge=0,
        le=MAX_ACTORS)
    num_cpus_per_actor: float = key_field(
        1.0, "a number >= 0 (CPUs of the cluster each actor reserves)", ge=0)
    num_gpus_per_actor: float = key_field(
        0.0, "a number >= 0 (GPUs of the cluster each actor reserves; fractions share one)",
        ge=0)
    in_flight: int = key_field(
        1, "1 or 2 (stacks in flight per actor; 2 pipelines the transfer)", ge=1, le=2)
    fallback: Literal["local", "stop"] = key_field(
        "local", "one of 'local' (local workers take over), 'stop' (the run ends, exit 1)")
    max_restarts: int = key_field(
        3, "an integer from 0 to 100 (restarts of each actor that dies)", ge=0, le=100)
    timeout_s: float = key_field(
        60.0, "a number > 0 (seconds a remote analysis or an actor's restart may take)", gt=0)
    placement: Literal["spread", "pack"] = key_field(
        "spread", "one of 'spread' (actors on as many nodes as possible), 'pack' (as few)")
    object_store_mb: int = key_field(
        0, "0 (automatic) or an integer >= 80 (MiB of Ray's object store, with address "
        "'local' only)", ge=0)

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        text = value.strip()
        if text in ("local", "auto"):
            return text
        rest = text.removeprefix("ray://")
        m = _HOST_PORT.match(rest)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise value_error(f"{value!r} is not an address; expected {ADDRESS_FORMS}")
        return text

    @field_validator("object_store_mb")
    @classmethod
    def _check_store(cls, value: int) -> int:
        if 0 < value < 80:
            raise value_error(f"{value} is below Ray's minimum; expected 0 (automatic) or an "
                              "integer >= 80 (MiB)")
        return value

    @model_validator(mode="after")
    def _check_store_address(self) -> Self:
        if self.object_store_mb and self.address != "local":
            raise cross_error(
                f"cluster.object_store_mb ({self.object_store_mb}) sizes the Ray instance "
                f"rt-eda starts, but cluster.address is {self.address!r}: an existing "
                "cluster's object store is sized where it was started (ray start "
                "--object-store-memory); set object_store_mb = 0")
        return self

    @property
    def enabled(self) -> bool:
        """Whether analysis runs on a cluster (``kind`` is not ``"none"``)."""
        return self.kind != "none"


CLUSTER_FORMS = ("'ray' (Ray at cluster.address, default 'local': on this machine), "
                 "'ray://HOST:PORT', 'ray:auto', 'ray:HOST:PORT' or 'none' (local workers)")


def cluster_overrides(spec: str) -> dict[str, object]:
    """The configuration keys ``--cluster SPEC`` sets: ``ray`` -> ``cluster.kind``;
    ``ray://HOST:PORT``, ``ray:auto``, ``ray:local`` or ``ray:HOST:PORT`` -> the kind and
    ``cluster.address`` (checked with the rest of the configuration); ``none`` -> local
    workers.

    Raises
    ------
    ConfigError
        Any other form (one line naming the forms allowed).
    """
    from rt_eda.core.errors import ConfigError

    text = spec.strip()
    if text == "none":
        return {"cluster.kind": "none"}
    if text == "ray":
        return {"cluster.kind": "ray"}
    if text.startswith("ray://"):
        return {"cluster.kind": "ray", "cluster.address": text}
    if text.startswith("ray:") and len(text) > 4:
        return {"cluster.kind": "ray", "cluster.address": text[4:]}
    raise ConfigError(f"--cluster {spec!r} is not allowed; expected {CLUSTER_FORMS}")
