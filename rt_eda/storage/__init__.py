"""A run folder on disk: how a run is written while it goes, how it is described and plotted.

- :mod:`.recording` -- the run folder's layout, :class:`~.recording.Recording` (the writer
  role's store: OME-Zarr or OME-TIFF, CSV logs, network images) and its readers;
- :mod:`.report` -- the run report (``report.png``, ``report.json``).
"""
