"""The run summary, built from the roles' typed reports (no processes: the records by hand).

Every key the summary has is declared in ``RunSummary`` with its type; these tests check a
summary has exactly those keys with those types, that each figure comes from the field it
names (a renamed field is an error, never a silent 0), that a role that never reported is
said so and counted from elsewhere, and the latencies issue 17 asked for (actuation split
into speeding up and slowing down, the camera's jitter).
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import assert_summary_schema

from rt_eda.core.config import load_config
from rt_eda.core.messages import (
    CameraStatistics,
    CameraTimes,
    Command,
    ControlKey,
    ControlRecord,
    InterpreterReport,
    InterpreterState,
    InterpreterStatistics,
    IntervalChange,
    LostTimepoint,
    RoleEvent,
    RoleEventKind,
    RoleName,
    WorkerStatistics,
    WorkerTimes,
    WriterStatistics,
)
from rt_eda.core.stats import Percentiles
from rt_eda.engine.summary import RoleReports, RunFacts, RunSummary, build_summary, profile
from rt_eda.shm import RingStatistics, StackSpec

SPEC = StackSpec(2, 3, 8, 8)


def ring(published: int = 100, completed: int = 60, skipped: int = 30, recovered: int = 4,
         failed: int = 6) -> RingStatistics:
    return RingStatistics(published=published, claimed=completed + failed,
                          completed=completed, skipped=skipped, overruns=2,
                          recovered=recovered, torn_reads=1, unpinned=0, aborted=0,
                          windows_failed=0, failed=failed, next_seq=published, slots_ready=0,
                          slots_claimed=0, slots_writing=0)


def camera() -> CameraStatistics:
    return CameraStatistics(
        timepoints=103, frames_acquired=618, stacks_published=100, overruns=3,
        frames_lost=18, frames_abandoned=2,
        lost=(LostTimepoint(7, 1.5), LostTimepoint(8, 1.6), LostTimepoint(9, 1.7)),
        actuation_ms=Percentiles(40.0, 900.0, 950.0, 7),
        actuation_speed_up_ms=Percentiles(30.0, 60.0, 61.0, 4),
        actuation_slow_down_ms=Percentiles(800.0, 940.0, 950.0, 3),
        interval_error_ms=Percentiles(0.1, 0.5, 0.9, 90),
        publish_interval_ms=Percentiles(100.0, 102.5, 104.0, 90),
        acquisition_s=10.2, commands_applied=8, times=CameraTimes(9.0, 1.0, 0.2),
        source={"renders": 103.0}, jitter_ms=2.5,
    )


def interpreter() -> InterpreterReport:
    start = IntervalChange(Command(0.1, "start", -1, 5.0), fast=False)
    fast = IntervalChange(Command(0.01, "decision 0.9 > upper", 12, 6.0), fast=True)
    return InterpreterReport(
        statistics=InterpreterStatistics(
            decisions=50, results_dropped_out_of_order=5, interval_switches=1,
            current_interval=0.01, state=InterpreterState.FAST, results_ignored_paused=3,
            nonfinite_decisions=2),
        results=60, publish_to_claim=Percentiles(0.2, 1.0, 2.0, 60),
        publish_to_decision=Percentiles(20.0, 45.0, 50.0, 60),
        interval_changes=(start, fast),
        controls=(ControlRecord(ControlKey.PAUSED, 1.0, 7.0, accepted=True),),
        handle_s=0.03)


def worker(n: int) -> WorkerStatistics:
    return WorkerStatistics(analysed=30, torn=0, recovered=0, network_images=n,
                            network_images_lost=1, network_images_refused=2,
                            network_images_nonfinite=3,
                            times=WorkerTimes(1.0, 0.5, 2.0, 0.1, 0.01, 0.02))


def writer(frames: int) -> WriterStatistics:
    return WriterStatistics(
        frames_written=frames, stacks_written=frames // 6, network_images_written=40,
        bytes_written=frames * 128, decisions=60, intervals=2, controls=1, path="/x",
        format="zarr", write_ms=Percentiles(1.0, 2.0, 3.0, 100), max_backlog_stacks=2,
        rows_received=63, rows_rejected=0, error="")


def facts(**changes: Any) -> RunFacts:
    base: dict[str, Any] = dict(
        started=True, stop_reason="duration reached", cut_short=False, errors=[],
        ring=ring(), ring_slots=12, spec=SPEC, worker_restarts=1, watchdog_kills=0,
        viewer_exits=0, viewer_last_error="", frames_salvaged=0)
    return RunFacts(**{**base, **changes})


def reports(*, with_camera: bool = True, with_interp: bool = True,
            writer_frames: int | None = 600, killed_worker: bool = False) -> RoleReports:
    r = RoleReports()
    pids = iter(range(1000, 2000))

    def arrive(role: RoleName, index: int, payload: Any) -> None:
        pid = next(pids)
        r.expect(role, index, pid)
        if payload is not None:
            assert r.take(RoleEvent(role, index, RoleEventKind.STATS, payload, pid))

    arrive(RoleName.CAMERA, 0, camera() if with_camera else None)
    arrive(RoleName.INTERPRETER, 0, interpreter() if with_interp else None)
    arrive(RoleName.WORKER, 1, worker(20))
    arrive(RoleName.WORKER, 2, worker(25))
    if killed_worker:
        arrive(RoleName.WORKER, 1, None)  # a restarted worker 1 killed before it reported
    arrive(RoleName.WRITER, 0, writer(writer_frames) if writer_frames is not None else None)
    r.expect(RoleName.VIEWER, 0, next(pids))  # the viewer sends no statistics: not missing
    return r


def config(tmp_path: Path | None = None) -> Any:
    save = {"run.save": str(tmp_path)} if tmp_path is not None else {}
    return load_config(None).with_overrides({"analysis.workers": 2, **save})


def test_the_summary_has_exactly_the_documented_keys_and_types(tmp_path: Path) -> None:
    s = build_summary(config(tmp_path), reports(), facts())
    assert_summary_schema(s)
    assert_summary_schema(json.loads(json.dumps(s)))  # what --summary writes reads back
    # and a run that never started has every key too
    assert_summary_schema(build_summary(config(), RoleReports(), facts(
        started=False, ring=None, ring_slots=0, spec=None)))


def test_every_figure_comes_from_the_field_it_names(tmp_path: Path) -> None:
    s = build_summary(config(tmp_path), reports(), facts())
    assert (s["stacks_published"], s["stacks_analysed"], s["stacks_skipped"],
            s["stacks_failed"], s["torn_reads"], s["claims_recovered"]) == (100, 60, 34, 6, 1, 4)
    assert (s["frames_acquired"], s["frames_written"], s["overruns"],
            s["frames_abandoned"], s["timepoints"]) == (618, 600, 3, 2, 103)
    assert s["frames_lost"] == 18  # 618 acquired - 18 lost in the ring = 600 written
    assert (s["decisions"], s["results_dropped_out_of_order"], s["results_ignored_paused"],
            s["nonfinite_decisions"], s["interval_switches"]) == (50, 5, 3, 2, 1)
    assert s["acquired_fps"] == pytest.approx(102 / 10.2)
    assert s["analysed_per_s"] == pytest.approx(60 / 10.2)
    assert s["latency_ms"]["publish_to_decision"] == {"p50": 20.0, "p99": 45.0, "max": 50.0}
    assert s["latency_ms"]["publish_to_claim"] == {"p50": 0.2, "p99": 1.0, "max": 2.0}
    assert [c["interval_s"] for c in s["interval_changes"]] == [0.1, 0.01]
    assert s["interval_changes"][1]["after_seq"] == 12
    assert s["lost_timepoints"] == [(7, 1.5), (8, 1.6), (9, 1.7)]
    assert (s["network_images"], s["network_images_lost"], s["network_images_refused"],
            s["network_images_nonfinite"]) == (45, 2, 4, 6)
    assert s["worker_time_s"] == pytest.approx({
        "wait_s": 2.0, "prepare_s": 1.0, "infer_s": 4.0, "post_s": 0.2, "queue_s": 0.02,
        "publish_image_s": 0.04})
    assert s["writer"]["frames_written"] == 600 and s["writer"]["write_ms"]["p99"] == 2.0
    assert s["source_statistics"] == {"renders": 103.0}
    assert (s["worker_restarts"], s["ring_slots"], s["stack_shape"]) == (1, 12, [2, 3, 8, 8])
    prof = profile(s, reports())
    assert prof["camera_per_stack"]["read_ms"] == pytest.approx(1e3 * 1.0 / 100)
    assert prof["interpreter_per_result"]["handle_ms"] == pytest.approx(1e3 * 0.03 / 60)


def test_actuation_is_split_into_speeding_up_and_slowing_down() -> None:
    s = build_summary(config(), reports(), facts())
    lat = s["latency_ms"]
    assert lat["decision_to_actuation"] == {"p50": 40.0, "p99": 900.0, "max": 950.0}
    assert lat["decision_to_actuation_speed_up"] == {"p50": 30.0, "p99": 60.0, "max": 61.0}
    assert lat["decision_to_actuation_slow_down"] == {"p50": 800.0, "p99": 940.0, "max": 950.0}
    assert s["actuations"] == {"speed_up": 4, "slow_down": 3}


def test_camera_jitter_is_the_cameras_own() -> None:
    """p99 - p50 of each gap's distance from its interval, as the camera measured it (not
    the spread of the gaps, which mixes the slow and the fast ones)."""
    s = build_summary(config(), reports(), facts())
    assert s["publish_interval_ms"] == {"p50": 100.0, "p99": 102.5, "max": 104.0}
    assert s["camera_jitter_ms"] == pytest.approx(2.5)


def test_roles_that_never_reported_are_named_and_counted_from_elsewhere(tmp_path: Path
                                                                        ) -> None:
    # The writer died before its report: its frames.csv rows say what it saved.
    (tmp_path / "frames.csv").write_text("seq,t_index,c,z,t_exposure,interval_s\n"
                                         + "0,0,0,0,1.0,0.1\n" * 42)
    r = reports(with_camera=False, with_interp=False, writer_frames=None, killed_worker=True)
    s = build_summary(config(tmp_path), r, facts(frames_salvaged=6))
    assert_summary_schema(s)
    missing = s["missing_reports"]
    assert len(missing) == 4, missing
    assert [m.split(" (pid ")[0] for m in missing] == [
        "rt-eda-camera", "rt-eda-interp", "rt-eda-worker-1", "rt-eda-writer"]
    assert s["frames_acquired"] == 100 * SPEC.frames  # what reached the ring
    assert s["frames_written"] == 42 + 6  # frames.csv + salvaged
    assert s["writer"] == {}
    assert s["decisions"] == 0 and s["interval_changes"] == []
    assert s["latency_ms"]["decision_to_actuation"] == {"p50": 0.0, "p99": 0.0, "max": 0.0}
    assert s["network_images"] == 45  # the two workers that did report
    # Every process reported: nothing missing.
    assert build_summary(config(), reports(), facts())["missing_reports"] == []


def test_a_statistics_record_of_an_unknown_kind_is_not_taken() -> None:
    r = RoleReports()
    assert not r.take(RoleEvent(RoleName.CAMERA, 0, RoleEventKind.STATS, None, 1))
    assert not r.take(RoleEvent(RoleName.CAMERA, 0, RoleEventKind.READY, None, 1))
    assert r.camera is None


def test_the_schema_check_fails_on_a_renamed_or_retyped_key(tmp_path: Path) -> None:
    s: dict[str, Any] = dict(build_summary(config(tmp_path), reports(), facts()))
    renamed = {("frames_dropped" if k == "frames_lost" else k): v for k, v in s.items()}
    with pytest.raises(AssertionError, match="frames_lost"):
        assert_summary_schema(renamed)
    with pytest.raises(AssertionError, match="decisions"):
        assert_summary_schema({**s, "decisions": "50"})
    with pytest.raises(AssertionError, match="speed_up"):
        assert_summary_schema({**s, "latency_ms": {**s["latency_ms"],
                                                   "decision_to_actuation_speed_up": {}}})


def test_run_summary_declares_the_contract_keys() -> None:
    hints = typing.get_type_hints(RunSummary)
    contract = {  # DESIGN.md / README: the run summary
        "frames_acquired", "stacks_published", "stacks_analysed", "stacks_skipped",
        "stacks_failed", "frames_written", "frames_lost", "decisions",
        "results_dropped_out_of_order", "interval_switches", "torn_reads", "worker_restarts",
        "workers", "threads_per_worker", "acquired_fps", "analysed_per_s", "latency_ms",
        "errors"}
    assert contract <= set(hints)
    assert isinstance(hints["stack_shape"], types.UnionType)
