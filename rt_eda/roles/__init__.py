"""Process roles: one module per role, each with one entry point ``run(config, channels)``.

The worker role lives in :mod:`rt_eda.workers._process` (it is the only role that may
import TensorFlow) and the viewer in :mod:`rt_eda.viewer` (the only one that imports Qt).
"""

__all__: list[str] = []
