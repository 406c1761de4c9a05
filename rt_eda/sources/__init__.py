"""Image sources driven by the camera role."""

__all__: list[str] = []
