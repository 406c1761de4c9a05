"""Live access to a running engine, without Qt: what a viewer reads and how it talks back.

- :mod:`.feed` -- :class:`~.feed.LiveFeed`: read-only copies of the newest stack, network
  image and decision records (never claims, never pins, never blocks the pipeline);
- :mod:`.raster` -- the visible part of a frame at about screen resolution;
- :mod:`.session` -- session files, by which ``rt-eda view`` finds a running engine;
- :mod:`.controls` -- controls from a viewer to the interpreter (a queue in the viewer role,
  a Unix socket relayed by the engine for an attached viewer);
- :mod:`.display` -- whether a window can be shown here, and whether the engine starts the
  viewer.

The window is :mod:`rt_eda.viewer` (Qt); the viewer role is :mod:`rt_eda.roles.viewer`.
"""
