"""Analysis workers: the worker API, built-in workers, model loading, the worker process loop.

The only package of rt-eda that imports TensorFlow/Keras, and only when a Keras worker is
used: importing :mod:`rt_eda.workers` itself stays light.
"""

from ._base import Analysis, Worker, WorkerSettings

__all__ = ["Analysis", "Worker", "WorkerSettings"]
