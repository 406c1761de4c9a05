"""Training the bundled models: ``rt-eda train-demo-model`` (:mod:`.demo_model`).

A top-layer package: training draws its data from a source (:mod:`rt_eda.sources`) and
preprocesses it with a worker's own code (:mod:`rt_eda.workers`), two packages of the same
layer that must not import each other. Imports TensorFlow only when it trains.
"""

__all__: list[str] = []
