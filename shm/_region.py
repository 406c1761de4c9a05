"""The rectangle of the sensor a stack was read from (:class:`FrameRegion`).

It lives in the ring because the ring records it per stack: a camera reading a region of
interest keeps the slot's full ``(C, Z, H, W)`` shape and writes only the region's pixels at
their sensor position, and every reader (worker, writer, viewer) must know which pixels are
valid. :mod:`rt_eda.core.regions` re-exports it beside :class:`~rt_eda.core.regions.EventRegion`
(that is where the rest of rt-eda imports it from). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameRegion"]


@dataclass(frozen=True, slots=True)
class FrameRegion:
    """A rectangle of the sensor: rows ``y .. y + height``, columns ``x .. x + width``.

    The region a stack was read from (offset and size, recorded per stack), or the region
    an actuator asks the camera to read. :meth:`full` is the whole sensor.
    """

    y: int
    x: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"a frame region needs a size of at least 1 x 1 px, got "
                             f"{self.height} x {self.width} at ({self.y}, {self.x})")

    @classmethod
    def full(cls, height: int, width: int) -> FrameRegion:
        """The whole sensor of ``height`` x ``width`` px."""
        return cls(0, 0, int(height), int(width))

    @property
    def y1(self) -> int:
        """The first row below the region."""
        return self.y + self.height

    @property
    def x1(self) -> int:
        """The first column right of the region."""
        return self.x + self.width

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def area(self) -> int:
        """Pixels in the region."""
        return self.height * self.width

    def inside(self, height: int, width: int) -> bool:
        """Whether the region lies within a sensor of ``height`` x ``width`` px."""
        return self.y >= 0 and self.x >= 0 and self.y1 <= height and self.x1 <= width

    def is_full(self, height: int, width: int) -> bool:
        """Whether the region is the whole sensor of ``height`` x ``width`` px."""
        return (self.y, self.x, self.height, self.width) == (0, 0, height, width)

    def contains(self, y0: int, x0: int, y1: int, x1: int) -> bool:
        """Whether the half-open box ``[y0, y1) x [x0, x1)`` lies within the region."""
        return self.y <= y0 and self.x <= x0 and y1 <= self.y1 and x1 <= self.x1

    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` of the region in a full-frame array."""
        return slice(self.y, self.y1), slice(self.x, self.x1)

    def describe(self) -> str:
        """``"256x192 at (y=128, x=64)"``."""
        return f"{self.width}x{self.height} at (y={self.y}, x={self.x})"
