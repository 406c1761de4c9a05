"""The shape of one stack (one timepoint: channels x z-slices x height x width)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StackSpec"]


@dataclass(frozen=True, slots=True)
class StackSpec:
    """Shape and pixel type of one stack.

    A stack is every channel and z-slice of one timepoint, stored C-contiguous as
    ``(channels, z_slices, height, width)``. ``dtype`` is any numpy integer or float type, kept
    as its string name (``"uint16"``) so the spec pickles as primitives.
    """

    channels: int
    z_slices: int
    height: int
    width: int
    dtype: str = "uint16"

    def __post_init__(self) -> None:
        for key in ("channels", "z_slices", "height", "width"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StackSpec.{key} must be an integer >= 1, got {value!r}")
        kind = np.dtype(self.dtype).kind
        if kind not in "iuf":
            raise ValueError(
                f"StackSpec.dtype must be a numpy integer or float type, got {self.dtype!r}"
            )
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(channels, z_slices, height, width)``."""
        return (self.channels, self.z_slices, self.height, self.width)

    @property
    def frames(self) -> int:
        """Frames per stack (channels x z-slices)."""
        return self.channels * self.z_slices

    @property
    def np_dtype(self) -> np.dtype[np.generic]:
        """The pixel type as a numpy dtype."""
        return np.dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels in one stack."""
        return self.frames * self.height * self.width * self.np_dtype.itemsize
