"""The one Qt binding the viewer uses (PyQt6), and pyqtgraph bound to it.

Every viewer module imports Qt and pyqtgraph from here, never directly, so that pyqtgraph
cannot pick another binding that happens to be installed: ``PYQTGRAPH_QT_LIB`` is set to
``PyQt6`` before pyqtgraph is imported (overriding a user's setting). A pyqtgraph that was
already imported on another binding (by a host application) is refused with
:class:`ImportError` naming both, instead of mixing two bindings in one process.

Why PyQt6: under PySide6 6.12 and Python 3.11 the viewer process aborted within a minute of
a real run (``Fatal Python error: none_dealloc`` in pyqtgraph's ``paintEvent``), and
pyqtgraph's tracker records such PySide6-only faults release after release (segfaults,
"Internal C++ object already deleted", leaks) that do not occur with PyQt6; see the README.
"""

from __future__ import annotations

import os
import sys

__all__ = ["QT_LIB", "QtCore", "QtGui", "QtWidgets", "pg"]

QT_LIB = "PyQt6"

if "pyqtgraph" not in sys.modules:
    os.environ["PYQTGRAPH_QT_LIB"] = QT_LIB

import pyqtgraph as pg  # noqa: E402  (after PYQTGRAPH_QT_LIB is set)
from PyQt6 import QtCore, QtGui, QtWidgets  # noqa: E402

if pg.Qt.QT_LIB != QT_LIB:
    raise ImportError(
        f"pyqtgraph was already imported on {pg.Qt.QT_LIB}; the rt-eda viewer needs it on "
        f"{QT_LIB} (import rt_eda.viewer before pyqtgraph, or set PYQTGRAPH_QT_LIB={QT_LIB})"
    )
