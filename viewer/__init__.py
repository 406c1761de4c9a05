"""The live viewer's window (pyqtgraph): the only package of rt-eda that imports Qt.

Everything Qt-free that a viewer needs (the read-only feed of the rings, session files,
controls, the raster, the display check) is :mod:`rt_eda.live`; the viewer role and
``rt-eda view`` are :mod:`rt_eda.roles.viewer`, which import this package inside the
viewer's own process only. Importing it loads Qt (PyQt6, chosen in :mod:`._qt`).

- :func:`run_window` -- show a :class:`ViewerWindow` on a feed and run the Qt event loop;
- :data:`SHORTCUTS` -- the key of every control.
"""

from ._window import SHORTCUTS, ViewerWindow, run_window

__all__ = ["SHORTCUTS", "ViewerWindow", "run_window"]
