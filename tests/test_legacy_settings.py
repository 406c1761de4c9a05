"""Tests of rt_eda.core.legacy_settings: importing the original eda_plugin settings.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rt_eda.core.config import Config, load_config, load_config_with_notes
from rt_eda.core.errors import ConfigError
from rt_eda.core.legacy_settings import map_legacy_settings, read_legacy_settings


def packaged_layout(model: str) -> dict[str, Any]:
    """The layout of the packaged plugin's settings.json (under "eda_plugin")."""
    return {
        "eda_plugin": {
            "actuators": {"micro_manager": {"channel_switch_time_ms": 50, "calibration": 324.87}},
            "analysers": {
                "keras": {
                    "worker_modules": ["eda_plugin.examples.analysers", "my_lab.workers"],
                    "model": model,
                },
                "image": {"channels": 2, "z_slices": 1},
            },
            "interpreters": {
                "frame_rate": {
                    "slow_interval": 2,
                    "fast_interval": 0,
                    "lower_threshold": 0.3,
                    "upper_threshold": 0.48,
                }
            },
        }
    }


def write_json(folder: Path, content: object, name: str = "settings.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(content, indent=4), encoding="utf-8")
    return path


def test_packaged_layout_is_mapped(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model1_rescale.h5").write_bytes(b"")
    path = write_json(tmp_path, packaged_layout("models/model1_rescale.h5"))

    config, notes = load_config_with_notes(path)

    assert config.interpreter.kind == "binary"
    assert config.interpreter.slow_interval == 2.0
    assert config.interpreter.fast_interval == 0.0
    assert (config.interpreter.lower_threshold, config.interpreter.upper_threshold) == (
        0.3,
        0.48,
    )
    assert config.analysis.model == str(tmp_path / "models" / "model1_rescale.h5")
    assert config.analysis.worker_modules == ("my_lab.workers",)
    # Nothing else changed.
    assert config.camera == Config().camera
    assert config.analysis.workers == 1

    text = "\n".join(notes)
    assert (
        "taken: eda_plugin.interpreters.frame_rate.slow_interval = 2 -> interpreter.slow_interval"
        in text
    )
    assert "taken: eda_plugin.analysers.keras.model" in text
    assert "dropped from eda_plugin.analysers.keras.worker_modules: ['eda_plugin.examples" in text
    no_counterpart = [n for n in notes if n.startswith("no counterpart:")]
    assert [n.split(" = ")[0] for n in no_counterpart] == [
        "no counterpart: eda_plugin.actuators.micro_manager.calibration",
        "no counterpart: eda_plugin.actuators.micro_manager.channel_switch_time_ms",
        "no counterpart: eda_plugin.analysers.image.channels",
        "no counterpart: eda_plugin.analysers.image.z_slices",
    ]
    assert "channel switching" in no_counterpart[1]
    assert load_config(path) == config


def test_older_layout_without_root_key(tmp_path: Path) -> None:
    content = {
        "actuators": {"micro_manager": {"channel_switch_time_ms": 100}},
        "analysers": {"keras": {"worker_modules": ["examples.analysers.keras"]}},
        "interpreters": {
            "frame_rate": {
                "slow_interval": 5,
                "fast_interval": 0,
                "lower_threshold": 0.9,
                "upper_threshold": 0.97,
                "min_fast_frames": 3,
            }
        },
        "writers": {"zarr": True},
    }
    config, notes = load_config_with_notes(write_json(tmp_path, content))
    assert config.interpreter.slow_interval == 5.0
    assert config.interpreter.upper_threshold == 0.97
    assert config.interpreter.min_fast_frames == 3
    assert config.analysis.worker_modules == ()  # only the original's example module
    assert "no counterpart: writers.zarr = True" in notes
    assert any(n.startswith("dropped from analysers.keras.worker_modules") for n in notes)


def test_missing_model_is_not_taken_and_said_so(tmp_path: Path) -> None:
    path = write_json(tmp_path, packaged_layout("W:/Watchdog/Model/paramSweep9/f32_c07_b16.h5"))
    config, notes = load_config_with_notes(path)
    assert config.analysis.model == ""
    (note,) = [n for n in notes if "analysers.keras.model" in n]
    assert note.startswith("NOT taken: eda_plugin.analysers.keras.model = 'W:/Watchdog")
    assert "--model" in note
    assert config.interpreter.slow_interval == 2.0  # the rest is still imported


def test_bad_values_name_the_settings_json_key(tmp_path: Path) -> None:
    content = packaged_layout("")
    content["eda_plugin"]["interpreters"]["frame_rate"]["fast_interval"] = "0"
    content["eda_plugin"]["analysers"]["keras"]["worker_modules"] = "my_lab.workers"
    with pytest.raises(ConfigError) as exc:
        load_config(write_json(tmp_path, content))
    text = str(exc.value)
    assert "settings.json" in text.splitlines()[0]
    lines = text.splitlines()[1:]
    assert len(lines) == 2, lines
    assert lines[0].startswith("analysis.worker_modules: 'my_lab.workers' (str) is not allowed")
    assert lines[0].endswith("(from settings.json key 'eda_plugin.analysers.keras.worker_modules')")
    assert lines[1].startswith("interpreter.fast_interval: '0' (str) is not allowed")
    assert lines[1].endswith(
        "(from settings.json key 'eda_plugin.interpreters.frame_rate.fast_interval')"
    )
    assert "Input should" not in text


def test_thresholds_of_the_original_image_analyser_are_kept(tmp_path: Path) -> None:
    content = packaged_layout("")
    content["eda_plugin"]["interpreters"]["frame_rate"].update(
        {"slow_interval": 3, "lower_threshold": 2000, "upper_threshold": 3000}
    )
    config = load_config(write_json(tmp_path, content))
    assert (config.interpreter.lower_threshold, config.interpreter.upper_threshold) == (
        2000.0,
        3000.0,
    )


def test_unmappable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_legacy_settings(tmp_path / "settings.json")
    bad = tmp_path / "broken.json"
    bad.write_text('{"eda_plugin": {', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not valid JSON: .*line 1"):
        load_config(bad)
    with pytest.raises(ConfigError, match="holds a JSON list, not an object"):
        load_config(write_json(tmp_path, [1, 2]))
    with pytest.raises(ConfigError, match=r"not an eda_plugin settings.json.*\['camera'\]"):
        load_config(write_json(tmp_path, {"camera": {}}))


def test_mapping_without_a_file() -> None:
    imported = map_legacy_settings(
        {"eda_plugin": {"interpreters": {"frame_rate": {"upper_threshold": 0.6}}}, "extra": 1},
        Path("/nonexistent"),
    )
    assert dict(imported.values) == {
        "interpreter.upper_threshold": 0.6,
        "interpreter.kind": "binary",
    }
    assert imported.origins["interpreter.upper_threshold"] == (
        "settings.json key 'eda_plugin.interpreters.frame_rate.upper_threshold'"
    )
    assert imported.notes[-1] == "no counterpart: top-level key 'extra' (outside 'eda_plugin')"
