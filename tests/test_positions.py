"""Acquisition plans, per-position interpreters and the outcome measure (in one process), and
bad plans as the command line meets them (exit 2 before anything starts, one line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from engine_helpers import role_processes, rt_eda

from rt_eda.core.config import Config
from rt_eda.core.errors import ConfigError
from rt_eda.core.messages import ALL_POSITIONS, ControlMessage, InterpreterState, Result
from rt_eda.core.outcome import position_outcome, summarize
from rt_eda.core.plan import load_plan
from rt_eda.interpreters import PerPosition, make_interpreter
from rt_eda.shm import list_blocks
from rt_eda.sources import make_source
from rt_eda.sources.synthetic_positions import SyntheticPositions, field_seed

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "four_positions.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- plans ---------------------------------------------------------------------------------
def test_the_example_plan_has_four_positions() -> None:
    plan = load_plan(EXAMPLE)
    assert [p.name for p in plan.positions] == ["A1", "A2", "B1", "B2"]
    assert [(p.x, p.y) for p in plan.positions] == [(0, 0), (200, 0), (0, 200), (200, 200)]
    assert plan.channels == () and plan.z == ()


def test_json_and_yaml_give_the_same_plan_and_grids_expand(tmp_path: Path) -> None:
    data = {"stage_positions": [{"x": 1, "y": 2, "z": 3, "name": "a"},
                                {"x": 10, "y": 20, "sequence": {
                                    "grid_plan": {"rows": 1, "columns": 2}}}],
            "channels": ["structure", "marker"], "z_plan": {"range": 2, "step": 1}}
    j = load_plan(write(tmp_path, "p.json", json.dumps(data)))
    y = load_plan(write(tmp_path, "p.yaml", json.dumps(data)))  # JSON is YAML too
    assert j.positions == y.positions and j.channels == y.channels
    assert len(j.positions) == 3  # one, and a grid of two tiles
    assert j.positions[0].z == 3.0 and j.positions[1].name.endswith("-g0")
    assert j.channel_names == ("structure", "marker")
    assert j.z == (-1.0, 0.0, 1.0) and j.z_relative


@pytest.mark.parametrize(("text", "name", "words"), [
    ("stage_positions: [{x: 0, y: 0}\n", "bad.yaml", ["not YAML or JSON"]),
    ("{\"stage_positions\": [}", "bad.json", ["not JSON"]),
    ("- 1\n- 2\n", "list.yaml", ["not an MDASequence", "list"]),
    ("stage_position: [{x: 0, y: 0}]\n", "typo.yaml", ["'stage_position'", "stage_positions"]),
    ("time_plan: {interval: 1, loops: 5}\n", "time.yaml", ["time_plan", "interpreter"]),
    ("stage_positions: [{x: a, y: 0}]\n", "value.yaml", ["not a useq MDASequence"]),
    ("channels: [{config: marker, exposure: 5}]\n", "expo.yaml", ["exposure", "exposure_ms"]),
    ("", "empty.yaml", ["empty"]),
])
def test_bad_plans_are_refused_with_one_line(tmp_path: Path, text: str, name: str,
                                             words: list[str]) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    message = str(err.value)
    assert message.startswith(f"camera.plan: {path}")
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_plan_that_contradicts_the_source_is_refused(tmp_path: Path) -> None:
    dapi = write(tmp_path, "dapi.yaml", "channels: [DAPI, FITC]\n")
    z3 = write(tmp_path, "z3.yaml", "z_plan: {range: 2, step: 1}\n")
    cases = [
        ({"camera.plan": str(dapi)}, "not channels of the synthetic source"),
        ({"camera.plan": str(z3), "camera.synthetic.z_slices": 2}, "z_slices is 2"),
        ({"camera.plan": str(EXAMPLE), "writer.format": "tiff"}, "OME-Zarr"),
        ({"camera.plan": str(EXAMPLE), "camera.source": f"replay:{tmp_path}"}, "replay"),
        ({"camera.plan": str(dapi), "camera.source": "mm-demo", "camera.channel_group":
          "Channel", "camera.channels": ["Cy5"]}, "contradict camera.channels"),
        ({"camera.plan": str(tmp_path / "none.yaml")}, "does not exist"),
    ]
    for overrides, words in cases:
        with pytest.raises(ConfigError, match=words):
            Config().with_overrides(overrides)
    # What fits is taken: the synthetic source's own channels, and Micro-Manager presets.
    ok = write(tmp_path, "ok.yaml", "channels: [marker, structure]\nz_plan: {range: 2, step: 1}")
    source = make_source(Config().with_overrides({"camera.plan": str(ok)}))
    assert isinstance(source, SyntheticPositions)
    assert source.spec.shape[:2] == (2, 3)
    Config().with_overrides({"camera.plan": str(dapi), "camera.source": "mm-demo"})


def test_bad_plans_on_the_command_line_exit_2_before_anything_starts(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    write(tmp_path, "dapi.yaml", "stage_positions: [{x: 0, y: 0}]\nchannels: [DAPI]\n")
    write(tmp_path, "list.yaml", "- 1\n")
    for plan, words in (("missing.yaml", "does not exist"),
                        ("dapi.yaml", "synthetic source"), ("list.yaml", "MDASequence")):
        proc = rt_eda("--plan", plan, "--duration", "1", "--no-viewer", cwd=tmp_path,
                      timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = [x for x in proc.stderr.splitlines() if x and not x.startswith("INFO")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "camera.plan" in lines[0] and words in lines[0], lines[0]
    assert role_processes() == []
    assert {n for n, _ in list_blocks()} - before == set()


# -- the synthetic source's positions ----------------------------------------------------
def test_each_position_is_an_independent_seeded_field() -> None:
    config = Config().with_overrides({"camera.plan": str(EXAMPLE),
                                      "camera.synthetic.height": 64,
                                      "camera.synthetic.width": 64})
    source = SyntheticPositions.from_config(config)
    seeds = [f.settings.seed for f in source.fields]
    assert seeds[0] == 0 and len(set(seeds)) == 4
    assert seeds == [field_seed(0, p) for p in range(4)]
    starts = [tuple(e.start_s for e in f.events[:3]) for f in source.fields]
    assert len(set(starts)) == 4  # each its own event schedule
    again = SyntheticPositions.from_config(config)
    assert [f.events[:3] for f in again.fields] == [f.events[:3] for f in source.fields]


# -- one interpreter per position ---------------------------------------------------------
def result(seq: int, position: int, decision: float, t: float) -> Result:
    return Result(seq=seq, worker=1, decision=decision, t_exposure=t, t_published=t,
                  t_claimed=t, t_done=t, position=position)


def test_each_position_has_its_own_state_and_ordering() -> None:
    clock = [100.0]
    interp = PerPosition(make_interpreter(Config(), clock=lambda: clock[0]), positions=3)
    start = interp.start()
    assert start.position == ALL_POSITIONS and start.interval_s == 1.0 and not start.fast
    cmd = interp.on_result(result(5, 1, 0.9, 99.0))  # an event at position 1
    assert cmd is not None and (cmd.position, cmd.interval_s, cmd.fast) == (1, 0.1, True)
    assert interp.state(1) == (0.1, True) and interp.state(0) == (1.0, False)
    # Position 0's older stack is still news for position 0 (its own ordering)...
    assert interp.on_result(result(3, 0, 0.1, 99.0)) is None
    # ... but an older stack of position 1 is dropped.
    assert interp.on_result(result(4, 1, 0.0, 98.0)) is None
    clock[0] = 101.0
    cmd = interp.on_result(result(9, 1, 0.0, 100.5))  # a fast stack of 1, below the lower
    assert cmd is not None and (cmd.position, cmd.interval_s, cmd.fast) == (1, 1.0, False)
    stats = interp.position_statistics()
    assert [s.decisions for s in stats] == [1, 2, 0]
    assert [s.results_dropped_out_of_order for s in stats] == [0, 1, 0]
    assert [s.interval_switches for s in stats] == [0, 2, 0]
    total = interp.statistics()
    assert total.decisions == 3 and total.interval_switches == 2
    assert total.results_dropped_out_of_order == 1
    assert total.state is InterpreterState.SLOW


def test_a_control_applies_to_every_position() -> None:
    interp = PerPosition(make_interpreter(Config()), positions=2)
    interp.on_result(result(1, 0, 0.9, 1.0))  # position 0 fast
    cmds = interp.on_control(ControlMessage("slow_interval", 2.0))
    assert [(c.position, c.interval_s) for c in cmds] == [(1, 2.0)]  # 0 is fast: no change
    cmds = interp.on_control(ControlMessage("fast_interval", 0.05))
    assert [(c.position, c.interval_s, c.fast) for c in cmds] == [(0, 0.05, True)]
    with pytest.raises(ConfigError):
        interp.on_control(ControlMessage("fast_interval", 5.0))  # > slow: refused everywhere
    assert interp.state(0) == (0.05, True) and interp.state(1) == (2.0, False)


def test_non_finite_decisions_break_the_detector_across_positions() -> None:
    config = Config().with_overrides({"interpreter.max_nonfinite_in_a_row": 4})
    interp = PerPosition(make_interpreter(config), positions=4)
    for k in range(3):
        interp.on_result(result(k, k, math.nan, 1.0))
    assert interp.broken() is None
    interp.on_result(result(3, 3, math.inf, 1.0))
    assert interp.broken() is not None and "4 non-finite decisions in a row" in interp.broken()


# -- the outcome ------------------------------------------------------------------------------
def test_outcome_counts_detection_delay_fast_fraction_and_dose() -> None:
    # Stacks every 1 s until an event at [10.3, 12.3) is seen at 11.0, then every 0.1 s
    # until 13.0, then 1 s again, until 20 s.
    visits = [(float(t), False, 1.0) for t in range(0, 11)]
    visits += [(11.0 + 0.1 * k, True, 0.1) for k in range(1, 21)]
    visits += [(14.0 + k, False, 1.0) for k in range(0, 7)]
    events = [(10.3, 12.3), (25.0, 26.0), (-1.0, 0.5)]  # one after the end, one before
    out = position_outcome(events, visits, fast_interval=0.1, frames_per_stack=2)
    assert out.events == 1 and out.events_detected == 1
    assert out.detection_delays_s == pytest.approx((11.1 - 10.3,))
    assert out.event_time_s == pytest.approx(2.0)
    assert out.event_time_fast_s == pytest.approx(12.3 - 11.1)
    assert out.frames == len(visits) * 2
    assert out.frames_always_fast == (round((20.0 - 0.0) / 0.1) + 1) * 2
    eda = summarize([out, out])
    assert eda["events"] == 2 and eda["events_detected"] == 2
    assert eda["event_time_fast_fraction"] == pytest.approx(1.2 / 2.0)
    assert eda["dose_vs_always_fast"] == pytest.approx(len(visits) / 201)
    assert eda["detection_delay_s"]["p50"] == pytest.approx(0.8)


def test_an_event_never_imaged_fast_is_not_detected() -> None:
    visits = [(float(t), False, 1.0) for t in range(0, 10)]
    out = position_outcome([(2.2, 4.2)], visits, fast_interval=0.1, frames_per_stack=1)
    assert (out.events, out.events_detected, out.event_time_fast_s) == (1, 0, 0.0)
    eda = summarize([out])
    assert eda["detection_delay_s"] == {"p50": 0.0, "p99": 0.0}
    assert eda["event_time_fast_fraction"] == 0.0
