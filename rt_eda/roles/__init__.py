"""Process roles: every process loop of a run, one module per role.

Each module has one entry point, ``run(config, channels, ...)``, which the engine starts with
the ``spawn`` method; the role owns its loop, the engine owns its lifecycle. A stack's way
through them::

    camera.py       source -> a ring slot, frame by frame -> publish        (rt-eda-camera)
    worker.py       claim the newest stack -> the worker's hooks -> Result  (rt-eda-worker-N)
    interpreter.py  Results in order -> DecisionRecord -> Command to camera (rt-eda-interp)
    writer.py       every stack (pinned until saved), decision and image     (rt-eda-writer)
    viewer.py       read-only window on the rings and the decision trace    (rt-eda-viewer)
    salvage.py      a dead writer's pinned stacks -> <save>/salvage          (in the engine)

Every message between them is a typed record of :mod:`rt_eda.core.messages`.
``worker.py`` is the only role that may import TensorFlow (through :mod:`rt_eda.workers`);
``viewer.py`` imports Qt (:mod:`rt_eda.viewer`) inside the viewer's own process only.
"""

__all__: list[str] = []
