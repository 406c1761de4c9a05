"""rt-eda: real-time event-driven acquisition for microscopy.

The package is split by concern, and its imports go one way:

- :mod:`rt_eda.shm` -- the shared-memory stack ring and its atomics (stdlib, numpy, numba);
- :mod:`rt_eda.workers` -- the analysis worker API, built-in workers, model loading (the only
  place that imports TensorFlow/Keras);
- :mod:`rt_eda.viewer` -- the live viewer (the only place that imports Qt);
- :mod:`rt_eda` itself -- engine, command line, configuration, messages, camera and sources,
  interpreters, writer.

Importing :mod:`rt_eda` is cheap: nothing heavy is imported until it is used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
