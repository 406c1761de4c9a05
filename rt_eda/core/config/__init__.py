"""The rt-eda configuration: one TOML file, validated on load.

A configuration is a frozen tree of pydantic models, one per TOML section::

    [camera]             source, interval, exposure_ms, channels, channel_group, z_positions
    [camera.synthetic]   height, width, z_slices, dtype, seed, event_every_s, event_duration_s,
                         verify
    [ring]               slots, buffer_s, max_bytes
    [analysis]           worker, model, workers, threads_per_worker, n_timepoints,
                         channels_to_use, worker_modules, watchdog_s, device
    [analysis.options]   free-form worker settings (strings, numbers, booleans)
    [interpreter]        kind, slow_interval, fast_interval, lower_threshold, upper_threshold,
                         min_fast_frames, manual_interval, max_nonfinite_in_a_row
    [writer]             format, save_network_images
    [viewer]             enabled, max_fps
    [run]                duration, save, summary, verify, profile, debug, strict
    [cluster]            kind, address, actors, num_cpus_per_actor, num_gpus_per_actor,
                         in_flight, fallback, max_restarts, timeout_s, placement,
                         object_store_mb (analysis on Ray actors: issue 14)

Guarantees
----------
- Every key has a default; :func:`load_config` with no path returns the embedded default.
- Every problem is reported at once, one line per problem, as a
  :class:`~rt_eda.core.errors.ConfigError` whose lines name the full dotted key
  (``analysis.workers``), the value given and what is allowed. An unknown key names the
  nearest valid key. No pydantic error text reaches the user.
- Values are checked strictly: ``workers = "2"`` is an error, not silently 2; integers are
  accepted where a number is asked for; NaN and infinities are refused everywhere.
- Checks that involve two keys (``lower_threshold <= upper_threshold``) run once both keys
  hold values of the right kind, so they are reported together with other sections' problems
  but after their own keys' problems are fixed.
- Relative paths (``mmconfig:``/``replay:`` sources, ``analysis.model``, ``run.save``,
  ``run.summary``, ``run.profile``) are relative to the configuration file's folder when they
  come from a file, and to the current folder when they come from overrides (the command
  line). They are stored absolute, so the saved configuration of a run is self-contained.
- A :class:`Config` is immutable and pickles (it is sent to spawned processes as is, without
  being validated again).
- An original eda_plugin ``settings.json`` (any path ending in ``.json``) is imported through
  :mod:`rt_eda.core.legacy_settings`; :func:`load_config_with_notes` also returns the notes that
  say what was taken and what has no counterpart.

Where each part lives: ``_sections`` (one model per table), ``_root`` (:class:`Config`, its
round trips and overrides, :func:`all_keys`), ``_validation`` (the section base and the
translation of every validation error into one line), ``_source_spec`` (``camera.source``
specs), ``_files`` (the files a user names: looked at without blocking, read as text) and
``_loading`` (TOML, ``settings.json``, the default). Everything public is imported from here.
"""

from ._cluster import ClusterConfig, cluster_overrides
from ._files import MAX_CONFIG_BYTES, path_problem, read_text_input
from ._loading import load_config, load_config_with_notes
from ._root import Config, all_keys
from ._sections import (
    AnalysisConfig,
    CameraConfig,
    InterpreterConfig,
    RingConfig,
    RunConfig,
    SyntheticConfig,
    ViewerConfig,
    WriterConfig,
)
from ._source_spec import SourceKind, SourceSpec, parse_source_spec

__all__ = [
    "MAX_CONFIG_BYTES",
    "AnalysisConfig",
    "CameraConfig",
    "ClusterConfig",
    "Config",
    "InterpreterConfig",
    "RingConfig",
    "RunConfig",
    "SourceKind",
    "SourceSpec",
    "SyntheticConfig",
    "ViewerConfig",
    "WriterConfig",
    "all_keys",
    "cluster_overrides",
    "load_config",
    "load_config_with_notes",
    "parse_source_spec",
    "path_problem",
    "read_text_input",
]
