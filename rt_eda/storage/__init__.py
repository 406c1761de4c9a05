"""Writing a run folder while a run goes, and describing or plotting it afterwards.

The folder's layout and its reader are one layer down, in :mod:`rt_eda.core.runfolder` (replay
reads run folders too); this package writes and presents them:

- :mod:`.recording` -- :class:`~.recording.Recording`, the writer role's store (frames,
  CSV logs, network images), :func:`~.recording.prepare_save_dir`,
  :func:`~.recording.write_summary`;
- :mod:`.zarr_store` -- the OME-Zarr store, written chunk file by chunk file as it grows;
- :mod:`.tiff_store` -- the OME-TIFF store, one contiguous BigTIFF;
- :mod:`.inspect` -- :func:`~.inspect.describe`, what ``rt-eda inspect DIR`` prints;
- :mod:`.report` -- the run report (``report.png``, ``report.json``).
"""
