"""The shared-memory stack ring: the kernel every process role builds on.

Imports only the standard library, numpy and numba.
"""

from ._spec import StackSpec

__all__ = ["StackSpec"]
