"""The shared-memory stack ring: the kernel every process role builds on.

Imports only the standard library, numpy and numba: nothing else of rt-eda (its errors,
the base class of every rt-eda error included, live here and are re-exported by
:mod:`rt_eda.core.errors`).
"""

from ._block import SharedBlock, list_blocks, sweep_stale_blocks
from ._errors import (
    ClaimRecoveredError,
    RingClosedError,
    RingError,
    RingOverrunError,
    RtEdaError,
    TornReadError,
)
from ._region import FrameRegion
from ._ring import (
    Claim,
    PinnedStack,
    PinReader,
    PositionStatistics,
    RingStatistics,
    SlotWriter,
    StackRing,
)
from ._spec import StackSpec
from ._stamp import STAMP_PIXELS, check_stack, read_stamp, stamp_frame
from ._trace import TRACE_FIELDS, DecisionTrace

__all__ = [
    "ClaimRecoveredError",
    "RingClosedError",
    "RingError",
    "RingOverrunError",
    "RtEdaError",
    "TornReadError",
    "STAMP_PIXELS",
    "TRACE_FIELDS",
    "Claim",
    "DecisionTrace",
    "FrameRegion",
    "PinReader",
    "PinnedStack",
    "PositionStatistics",
    "RingStatistics",
    "SharedBlock",
    "SlotWriter",
    "StackRing",
    "StackSpec",
    "check_stack",
    "list_blocks",
    "read_stamp",
    "stamp_frame",
    "sweep_stale_blocks",
]
