"""Analysis on a Ray cluster: the run's worker class inside Ray actors (issue 14).

::

    microscope PC                                            Ray cluster (or this machine)
    ring --claim newest--> bridge process (rt-eda-bridge)    actors analysis-1..N
                           lanes: actors x in_flight  --stack-->  Worker(settings): setup,
                           threads, each a ring reader  <--result-- warm_up, analyse
                           Result -> interpreter, network image -> output ring

- :mod:`._session`: start or join Ray (``cluster.address``), within a time limit; a
  cluster that cannot be reached is :class:`~rt_eda.core.errors.ClusterUnreachableError`.
- :mod:`._actor`: :class:`AnalysisActor`, which runs any :class:`~rt_eda.workers.Worker`
  subclass unchanged on a node, with the model's bytes written to the node's temp folder.
- :mod:`._shipping`: the model's bytes and the worker modules (Ray ``py_modules``) that
  travel with the actors; no shared filesystem is assumed.
- :mod:`._pool`: placing, starting, warming, restarting and ending the actors.
- :mod:`._layout`: how many actors, and the ring reader id of each lane.

The loop that feeds the actors from the ring is a role, :mod:`rt_eda.roles.bridge`. Ray is
imported only there and inside the actors, never by the engine: Ray ends a driver process
whose cluster has been gone for a minute, and acquisition must never depend on a cluster.
"""

from ._actor import ActorIdentity, ActorSpec, AnalysisActor, RemoteAnalysis, materialize_model
from ._layout import RING_READERS, ClusterLayout, cluster_layout
from ._pool import READY_TIMEOUT_S, ActorPool, RemoteActor, StartCancelled
from ._session import REACH_S, ClusterSession, connect, disconnect, forward_native_output
from ._shipping import ModelPayload, model_payload, runtime_env, shipped_modules

__all__ = [
    "READY_TIMEOUT_S",
    "REACH_S",
    "RING_READERS",
    "ActorIdentity",
    "ActorPool",
    "ActorSpec",
    "AnalysisActor",
    "ClusterLayout",
    "ClusterSession",
    "ModelPayload",
    "RemoteActor",
    "RemoteAnalysis",
    "StartCancelled",
    "cluster_layout",
    "connect",
    "disconnect",
    "forward_native_output",
    "materialize_model",
    "model_payload",
    "runtime_env",
    "shipped_modules",
]
