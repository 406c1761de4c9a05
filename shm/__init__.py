"""The shared-memory stack ring: the kernel every process role builds on.

Imports only the standard library, numpy and numba.
"""

from ._spec import StackSpec
from ._stamp import STAMP_PIXELS, check_stack, read_stamp, stamp_frame

__all__ = ["STAMP_PIXELS", "StackSpec", "check_stack", "read_stamp", "stamp_frame"]
