"""How many actors a run has, and which ring readers the bridge's lanes are.

A *lane* is one request in flight to one actor: the bridge runs ``actors x in_flight`` lanes,
each a thread that claims from the ring with its own reader id (the ring's counters are
written by one thread per reader id, and the engine recovers a dead bridge's claims by them).
Local workers are readers ``1 .. analysis.workers`` (the fallback's workers too), so the
lanes come after them::

    reader ids   1 .. W                      local workers (fallback)
                 W + 1 .. W + A x F          lanes: actor a, lane k -> W + (a - 1) x F + k
"""

from __future__ import annotations

from dataclasses import dataclass

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError

__all__ = ["RING_READERS", "ClusterLayout", "cluster_layout"]

RING_READERS = 255
"""Reader ids a stack ring has (1..255; ``rt_eda.shm``'s ``MAX_READER_ID``, which a test
keeps equal)."""


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """The actors of a run and the reader id of each lane (see the module docstring)."""

    actors: int
    in_flight: int
    first_reader: int

    def reader(self, actor: int, lane: int) -> int:
        """Reader id of ``lane`` (1..in_flight) of ``actor`` (1..actors)."""
        return self.first_reader + (actor - 1) * self.in_flight + (lane - 1)

    @property
    def readers(self) -> tuple[int, ...]:
        """Every lane's reader id, actor by actor."""
        return tuple(self.reader(a, k) for a in range(1, self.actors + 1)
                     for k in range(1, self.in_flight + 1))

    @property
    def lanes(self) -> int:
        """Requests in flight at most (``actors x in_flight``): claims the bridge may hold."""
        return self.actors * self.in_flight


def cluster_layout(config: Config) -> ClusterLayout:
    """The layout of ``config`` (``cluster.actors`` 0: ``analysis.workers`` actors).

    Raises
    ------
    ConfigError
        The local workers and the lanes need more reader ids than the ring has (255).
    """
    c = config.cluster
    workers = config.analysis.workers
    actors = c.actors or workers
    layout = ClusterLayout(actors=actors, in_flight=c.in_flight, first_reader=workers + 1)
    last = workers + layout.lanes
    if last > RING_READERS:
        raise ConfigError(
            f"cluster.actors x cluster.in_flight ({actors} x {c.in_flight}) lanes beside "
            f"analysis.workers ({workers}) local workers need {last} ring readers; the ring "
            f"has {RING_READERS}: lower cluster.actors, cluster.in_flight or analysis.workers")
    return layout
