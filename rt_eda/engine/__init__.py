"""The engine: one run, from the checks before anything starts to the finished run folder.

- :mod:`.engine` -- :class:`Engine`: the order roles start and stop in, the run;
- :mod:`.preflight` -- the checks before anything starts (worker, model fit, memory, paths);
- :mod:`.supervisor` -- the child processes: start, READY, events, restarts, joins;
- :mod:`.summary` -- the run summary (:class:`~.summary.RunSummary`) and the profile, from
  the roles' typed reports;
- :mod:`.status` -- the live status line (rates, interval, latency, camera jitter);
- :mod:`.budget` -- what a run will allocate (rings, copies), checked against the machine;
- :mod:`.outputs` -- the output paths, checked before start and all written at the end;
- :mod:`.watchdog` -- a worker that holds one claim too long is killed and restarted.

A dead writer's pinned stacks are saved by :mod:`rt_eda.roles.salvage`, next to the writer.

Exit codes: :data:`EXIT_OK` (0), :data:`EXIT_FAULT` (1, a fault during the run, summary
still written), :data:`EXIT_BAD_INPUT` (2, bad configuration, model, plan or path; nothing
started).
"""

from .budget import ring_slots
from .engine import EXIT_BAD_INPUT, EXIT_FAULT, EXIT_OK, Engine, Status
from .summary import RunSummary

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAULT", "EXIT_OK", "Engine", "RunSummary", "Status",
           "ring_slots"]
