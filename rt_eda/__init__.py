"""rt-eda: real-time event-driven acquisition for microscopy.

The package is split by concern, and its imports go one way (``tests/test_layering.py``
checks it)::

    rt_eda.shm          (shm/)      the shared-memory stack ring and its atomics
    rt_eda.core                     errors, configuration, messages, statistics, queues
    rt_eda.sources                  image sources (synthetic, Micro-Manager, replay)
    rt_eda.workers      (workers/)  the worker API, built-in workers, models (TensorFlow)
    rt_eda.interpreters             decisions -> acquisition changes
    rt_eda.storage                  the run folder: recording, reading, the report
    rt_eda.live                     Qt-free live access for viewers (feed, sessions, controls)
    rt_eda.roles                    every process loop: camera, worker, interpreter, writer,
                                    viewer
    rt_eda.engine                   one run: preflight, supervision, summary
    rt_eda.viewer       (viewer/)   the Qt window (the only package that imports Qt)
    rt_eda.training                 retraining the bundled demo model (sources + workers)
    rt_eda.cli                      the ``rt-eda`` command

A stack's way: ``roles.camera`` fills a ring slot from a source, ``roles.worker`` claims the
newest stack and runs a worker's hooks, ``roles.interpreter`` turns the result into a decision
and a command back to ``roles.camera``; ``roles.writer`` saves everything. Importing
:mod:`rt_eda` is cheap: nothing heavy is imported until it is used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
