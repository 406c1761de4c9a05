"""The live viewer (pyqtgraph): the only package of rt-eda that imports Qt."""

__all__: list[str] = []
