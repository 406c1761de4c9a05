"""The bottom layer of rt-eda above the ring: what every other package builds on.

- :mod:`.errors` -- the exception vocabulary (the ring's own errors re-exported);
- :mod:`.config` -- the validated configuration (and :mod:`.legacy_settings`, the original
  plugin's ``settings.json``);
- :mod:`.messages` -- every record that crosses a process boundary;
- :mod:`.stats` -- latency percentiles in constant memory;
- :mod:`.queues` -- pipe-based message queues and the stop event (nothing named, so a
  killed process group leaves nothing behind);
- :mod:`.process` -- what every role process does first (names, signals, logging);
- :mod:`.runfolder` -- the run folder's layout (file names, CSV columns) and its one reader
  (:func:`~.runfolder.open_run`, :func:`~.runfolder.read_table`, ``frames.csv`` timing),
  used by replay, ``rt-eda inspect``, the report and the engine;
- :mod:`.imagefiles` -- the readers of recorded images (run folders, OME-Zarr, TIFF) with
  their damage checks, shared by replay and ``rt-eda inspect``;
- :mod:`.files` -- atomic file writes (temporary file + rename).

Imports only :mod:`rt_eda.shm` of rt-eda.
"""
