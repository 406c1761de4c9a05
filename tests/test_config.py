"""Tests of rt_eda.core.config: defaults, round trips, strict validation and its error messages."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from rt_eda.core.config import (
    Config,
    InterpreterConfig,
    SourceKind,
    all_keys,
    load_config,
    load_config_with_notes,
    parse_source_spec,
)
from rt_eda.core.errors import ConfigError

PYDANTIC_TEXT = ("Input should", "pydantic", "validation error", "Value error", "type=")


def write(tmp_path: Path, text: str, name: str = "rt-eda.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    """The problem lines of a ConfigError (the first line is the header)."""
    text = str(exc.value)
    for fragment in PYDANTIC_TEXT:
        assert fragment not in text, f"pydantic text leaked: {text}"
    return text.splitlines()[1:]


def test_default_configuration_values() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.camera.source == "synthetic"
    assert config.camera.source_spec.kind is SourceKind.SYNTHETIC
    assert config.camera.interval == 1.0
    assert config.camera.synthetic.height == 512
    assert config.camera.synthetic.dtype == "uint16"
    assert config.ring.slots == 0
    assert config.ring.max_bytes == 2 * 1024**3
    assert config.analysis.worker == "DemoModelWorker"
    assert config.analysis.workers == 1
    assert config.interpreter.kind == "binary"
    assert (config.interpreter.lower_threshold, config.interpreter.upper_threshold) == (
        0.3,
        0.48,
    )
    assert config.interpreter.manual_interval is None
    assert config.writer.format == "zarr"
    assert config.viewer.enabled == "auto"
    assert config.run.duration is None
    assert load_config_with_notes(None) == (config, [])


def test_every_key_documents_what_is_allowed() -> None:
    def check(model: type[Config] | type[InterpreterConfig], prefix: str) -> None:
        for name, info in model.model_fields.items():
            assert info.description, f"{prefix}{name} has no 'allowed' text"

    from rt_eda.core import config as cfg

    for model in (
        cfg.Config,
        cfg.CameraConfig,
        cfg.SyntheticConfig,
        cfg.RingConfig,
        cfg.AnalysisConfig,
        cfg.InterpreterConfig,
        cfg.WriterConfig,
        cfg.ViewerConfig,
        cfg.RunConfig,
    ):
        check(model, model.section + ".")  # type: ignore[arg-type]
    keys = all_keys()
    assert "analysis.workers" in keys
    assert "camera.synthetic.event_every_s" in keys
    assert "analysis.options" in keys
    assert keys == sorted(keys)


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [camera]
        interval = 0          # integers are fine where numbers are asked for
        channels = ["DAPI", "FITC"]
        channel_group = "Channel"
        z_positions = [0, 0.5]
        [camera.synthetic]
        height = 64
        width = 96
        [analysis]
        workers = 3
        threads_per_worker = 2
        channels_to_use = [1, 0]
        worker_modules = ["my_lab.workers"]
        [analysis.options]
        sigma = 1.5
        mode = "fast"
        [interpreter]
        kind = "manual"
        manual_interval = 0.25
        [viewer]
        enabled = false
        [run]
        duration = 5
        """,
    )
    config = load_config(path)
    assert config.camera.interval == 0.0
    assert isinstance(config.camera.interval, float)
    assert config.camera.channels == ("DAPI", "FITC")
    assert config.camera.z_positions == (0.0, 0.5)
    assert (config.camera.synthetic.height, config.camera.synthetic.width) == (64, 96)
    assert config.analysis.workers == 3
    assert config.analysis.channels_to_use == (1, 0)
    assert config.analysis.options == {"sigma": 1.5, "mode": "fast"}
    assert config.interpreter.kind == "manual"
    assert config.interpreter.manual_interval == 0.25
    assert config.viewer.enabled is False
    assert config.run.duration == 5.0


def test_toml_round_trip_and_pickle(tmp_path: Path) -> None:
    config = Config().with_overrides(
        {
            "analysis.workers": 4,
            "analysis.options": {"tile": 256, "flag": True},
            "interpreter.min_fast_frames": 3,
            "run.duration": 12.5,
            "run.save": str(tmp_path / "out"),
            "viewer.enabled": True,
        }
    )
    text = config.to_toml()
    assert "workers = 4" in text
    assert "duration = 12.5" in text
    assert "summary" not in text  # unset keys are left out (TOML has no null)
    again = load_config(write(tmp_path, text, "saved.toml"))
    assert again == config
    assert pickle.loads(pickle.dumps(config)) == config
    assert Config.model_validate(config.to_dict()) == config
    assert config.to_dict()["camera"]["channels"] == []  # JSON-compatible: lists


def test_all_problems_reported_at_once_with_key_value_and_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [analysis]
        workers = 0
        threads_per_worker = "2"
        n_timepoints = 1.5
        channels_to_use = [1, -1]
        [camera]
        exposure_ms = -1
        channels = ["DAPI", 3]
        channel_group = "Channel"
        [camera.synthetic]
        dtype = "int7"
        [interpreter]
        kind = "fuzzy"
        [viewer]
        enabled = "yes"
        [ring]
        slots = 1
        [run]
        debug = 1
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value).splitlines()[0]
    lines = problems(exc)
    expected = {
        "analysis.workers": ("0", "integer >= 1"),
        "analysis.threads_per_worker": ("'2' (str)", "integer >= 1"),
        "analysis.n_timepoints": ("1.5", "integer >= 1"),
        "analysis.channels_to_use": ("[1, -1]", "integers >= 0"),
        "camera.exposure_ms": ("-1", "> 0"),
        "camera.channels[1]": ("3 (int)", "list of strings"),
        "camera.synthetic.dtype": ("'int7'", "'uint16'"),
        "interpreter.kind": ("'fuzzy'", "'binary', 'manual'"),
        "viewer.enabled": ("'yes'", "'auto', true or false"),
        "ring.slots": ("1", "0 (automatic)"),
        "run.debug": ("1 (int)", "true or false"),
    }
    assert len(lines) == len(expected), lines
    for key, (value, allowed) in expected.items():
        matching = [line for line in lines if line.startswith(key + ":")]
        assert len(matching) == 1, (key, lines)
        assert value in matching[0], matching[0]
        assert allowed in matching[0], matching[0]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[analysis]\nthreads_per_workr = 2\n", "did you mean 'analysis.threads_per_worker'?"),
        ("[analysys]\nworkers = 2\n", "did you mean 'analysis'?"),
        ("[camera.synthetic]\nheigth = 2\n", "did you mean 'camera.synthetic.height'?"),
        ("[interpreter]\nupper_treshold = 0.5\n", "did you mean 'interpreter.upper_threshold'?"),
        ("[writer]\nqqq = 1\n", "valid keys here: 'format', 'save_network_images'"),
    ],
)
def test_unknown_key_names_the_nearest_valid_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, toml))
    (line,) = problems(exc)
    assert "unknown key" in line
    assert message in line


def test_cross_key_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [interpreter]
        lower_threshold = 0.6
        upper_threshold = 0.5
        slow_interval = 0.1
        fast_interval = 0.2
        [camera]
        channels = ["DAPI"]
        [camera.synthetic]
        event_every_s = 2
        event_duration_s = 3
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = problems(exc)
    assert any(
        "interpreter.lower_threshold (0.6) must be <= interpreter.upper_threshold (0.5)" in line
        for line in lines
    ), lines
    assert any(
        "interpreter.fast_interval (0.2) must be <= interpreter.slow_interval (0.1)" in line
        for line in lines
    ), lines
    assert any("camera.channel_group is empty" in line for line in lines), lines
    assert any("camera.synthetic.event_duration_s (3)" in line for line in lines), lines
    assert len(lines) == 4


def test_synthetic_limits_match_the_source() -> None:
    no_events = Config().with_overrides(
        {"camera.synthetic.event_every_s": 0, "camera.synthetic.event_duration_s": 5}
    )
    assert no_events.camera.synthetic.event_every_s == 0.0
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides({"camera.synthetic.width": 20000, "camera.synthetic.z_slices": 0})
    lines = problems(exc)
    assert lines[0].startswith("camera.synthetic.width: 20000 (int) is not allowed")
    assert "from 8 to 16384" in lines[0]
    assert lines[1].startswith("camera.synthetic.z_slices: 0 (int)")


def test_thresholds_may_be_equal_and_intervals_zero() -> None:
    config = Config().with_overrides(
        {
            "interpreter.lower_threshold": 0.4,
            "interpreter.upper_threshold": 0.4,
            "interpreter.slow_interval": 0,
            "interpreter.fast_interval": 0,
        }
    )
    assert config.interpreter.slow_interval == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_non_finite_and_negative_intervals_refused(value: float) -> None:
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides({"interpreter.slow_interval": value})
    (line,) = problems(exc)
    assert line.startswith("interpreter.slow_interval: ")
    assert repr(value) in line


def test_source_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_source_spec("mm-demo").kind is SourceKind.MM_DEMO
    spec = parse_source_spec("replay:data/run.tif")
    assert (spec.kind, spec.path) == (SourceKind.REPLAY, Path("data/run.tif"))
    for bad in ("camera", "replay:", "mmconfig", "file:/x"):
        with pytest.raises(ConfigError, match=r"camera\.source"):
            parse_source_spec(bad)

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "run.tif").write_bytes(b"")
    (tmp_path / "scope.cfg").write_text("", encoding="utf-8")
    # From a file: relative to the file's folder, stored absolute.
    sub = tmp_path / "configs"
    sub.mkdir()
    config = load_config(write(sub, 'camera.source = "replay:../data/run.tif"\n'))
    assert config.camera.source == f"replay:{tmp_path / 'data' / 'run.tif'}"
    assert config.camera.source_spec.path == tmp_path / "data" / "run.tif"
    # From overrides: relative to the current folder.
    monkeypatch.chdir(tmp_path)
    config = Config().with_overrides({"camera.source": "mmconfig:scope.cfg"})
    assert config.camera.source == f"mmconfig:{tmp_path / 'scope.cfg'}"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("webcam", "'webcam' is not a source spec; expected 'synthetic', 'mm-demo'"),
        ("replay:missing.tif", "missing.tif does not exist"),
        ("mmconfig:", "names no path"),
        ("mmconfig:.", "is not a file"),
    ],
)
def test_bad_sources_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides({"camera.source": spec})
    (line,) = problems(exc)
    assert line.startswith("camera.source: ")
    assert message in line


def test_model_path_checked_and_resolved(tmp_path: Path) -> None:
    (tmp_path / "net.h5").write_bytes(b"")
    config = load_config(write(tmp_path, 'analysis.model = "net.h5"\n'))
    assert config.analysis.model == str(tmp_path / "net.h5")
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, 'analysis.model = "other.keras"\n'))
    (line,) = problems(exc)
    assert line.startswith("analysis.model: 'other.keras'")
    assert str(tmp_path / "other.keras") in line
    with pytest.raises(ConfigError, match="not a model file"):
        load_config(write(tmp_path, 'analysis.model = "net.txt"\n'))


def test_with_overrides_validates_and_leaves_original_unchanged() -> None:
    base = Config()
    changed = base.with_overrides({"analysis.workers": 2, "interpreter.kind": "manual"})
    assert (changed.analysis.workers, changed.interpreter.kind) == (2, "manual")
    assert (base.analysis.workers, base.interpreter.kind) == (1, "binary")
    assert base.with_overrides({}) is base
    unset = changed.with_overrides({"run.duration": 3}).with_overrides({"run.duration": None})
    assert unset.run.duration is None

    with pytest.raises(ConfigError) as exc:
        base.with_overrides({"analysis.workers": -2, "analysis.worker_modules": ["9bad"]})
    lines = problems(exc)
    assert "overrides" in str(exc.value).splitlines()[0]
    assert [line.split(":")[0] for line in lines] == [
        "analysis.workers",
        "analysis.worker_modules",
    ]

    with pytest.raises(ConfigError) as exc:
        base.with_overrides({"analysis.wrokers": 2})
    assert "did you mean 'analysis.workers'?" in problems(exc)[0]

    with pytest.raises(ConfigError) as exc:
        base.with_overrides({"analysis.workers.count": 2})
    assert problems(exc) == ["analysis.workers.count: analysis.workers is a value, not a table"]

    # Who made the changes is named in the header (a source's settings built from Python).
    for bad in ({"camera.exposure_ms": 0}, {"camera.exposure_ms.x": 1}):
        with pytest.raises(ConfigError) as exc:
            base.with_overrides(bad, source="synthetic source settings")
        assert str(exc.value).startswith(
            "invalid configuration (synthetic source settings): 1 problem\n")


def test_section_with_changes() -> None:
    settings = InterpreterConfig()
    changed = settings.with_changes({"upper_threshold": 0.9})
    assert changed.upper_threshold == 0.9
    assert settings.upper_threshold == 0.48
    with pytest.raises(ConfigError) as exc:
        settings.with_changes({"lower_threshold": 0.5}, source="run-time control")
    assert "run-time control" in str(exc.value)
    assert problems(exc) == [
        "interpreter.lower_threshold (0.5) must be <= interpreter.upper_threshold (0.48)"
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*line 2"):
        load_config(write(tmp_path, "[analysis]\nworkers = = 2\n"))
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_ring_and_run_values() -> None:
    assert Config().with_overrides({"ring.slots": 2}).ring.slots == 2
    with pytest.raises(ConfigError) as exc:
        Config().with_overrides({"ring.max_bytes": 1000, "run.save": "", "run.duration": 0})
    lines = problems(exc)
    assert len(lines) == 3
    assert lines[0].startswith("ring.max_bytes: 1000 (int) is not allowed; expected an integer")
    assert lines[1].startswith("run.duration: 0 (int) is not allowed")
    assert lines[2].startswith("run.save: '' is not allowed")
