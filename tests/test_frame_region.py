"""Stacks read from a region of the sensor (a camera ROI), from the ring to the run folder.

The camera keeps the ring's (C, Z, H, W) slots and reads a region into the slot at its
sensor position; the pixels outside are stale (whatever the slot held before). These tests
check that the ring records the region per stack (and forgets it when the slot is reused),
that the worker sees only the valid pixels and sends sensor coordinates, that a Keras worker
whose model was traced for the full frame pads a smaller stack and answers from the valid
pixels only, and that the writer saves zeros outside the region (never the stale pixels),
names the region in ``frames.csv`` and writes every event location to ``locations.csv``.
"""

from __future__ import annotations

import csv
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rt_eda.core.config import Config, load_config
from rt_eda.core.errors import RingOverrunError
from rt_eda.core.messages import DecisionRecord, Result, RoleEvent, RoleEventKind
from rt_eda.core.process import RoleChannels
from rt_eda.core.regions import EventRegion
from rt_eda.core.runfolder import FRAME_COLUMNS, FRAMES_CSV, LOCATION_COLUMNS, open_run
from rt_eda.roles import worker as worker_role
from rt_eda.roles import writer
from rt_eda.shm import FrameRegion, StackRing, StackSpec
from rt_eda.storage.inspect import describe
from rt_eda.storage.recording import Recording, prepare_save_dir
from rt_eda.workers import Worker, WorkerSettings

STALE = 5000  # what a slot holds outside the region: never analysed, never saved


def publish(ring: StackRing, pixels: np.ndarray, frame: FrameRegion | None = None,
            *, position: int = 0, t: float = 100.0) -> int:
    """Publish one stack (the whole slot filled with ``pixels``) read from ``frame``."""
    with ring.write_slot() as slot:
        np.copyto(slot.pixels, pixels)
        slot.frame_times[:] = t
        slot.publish(interval_s=0.1, position=position, frame=frame)
        return slot.seq


def with_stale(spec: StackSpec, frame: FrameRegion, inside: int | np.ndarray) -> np.ndarray:
    """A slot as a camera leaves it: ``inside`` in the region, STALE everywhere else."""
    out = np.full(spec.shape, STALE, spec.np_dtype)
    out[..., frame.y:frame.y1, frame.x:frame.x1] = inside
    return out


# -- the ring -----------------------------------------------------------------------------------
def test_a_claim_carries_the_region_its_stack_was_read_from(make_ring: Any) -> None:
    spec = StackSpec(2, 1, 32, 48, "uint16")
    ring = make_ring(spec, 3)
    region = FrameRegion(4, 8, 10, 20)
    publish(ring, with_stale(spec, region, 7), region)
    claim = ring.try_claim(1)
    assert claim is not None
    with claim:
        assert claim.frame == region
        assert claim.pixels.shape == spec.shape  # the slot keeps its full shape
        valid = worker_role.valid_pixels(claim)
        assert valid.shape == (2, 1, 10, 20)
        assert (valid == 7).all()
        assert np.shares_memory(valid, claim.pixels)  # a view: no copy
        outside = claim.pixels.copy()
        outside[..., region.y:region.y1, region.x:region.x1] = STALE
        assert (outside == STALE).all()  # the ring does not touch the stale pixels


def test_a_full_frame_has_no_region_and_a_reused_slot_forgets_the_last_one(
        make_ring: Any) -> None:
    spec = StackSpec(1, 1, 16, 16, "uint16")
    ring = make_ring(spec, 2)
    regions = [FrameRegion(1, 2, 3, 4), None, FrameRegion.full(16, 16), FrameRegion(0, 0, 16, 8),
               None]
    for k, region in enumerate(regions):  # 2 slots: every slot is reused
        publish(ring, np.full(spec.shape, k, spec.np_dtype), region)
        claim = ring.try_claim(1)
        assert claim is not None
        with claim:
            expected = None if region is None or region.is_full(16, 16) else region
            assert claim.frame == expected, k
            assert worker_role.valid_pixels(claim) is claim.pixels or region is not None


def test_a_region_outside_the_frame_is_refused_and_nothing_is_published(
        make_ring: Any) -> None:
    spec = StackSpec(1, 1, 16, 16, "uint16")
    ring = make_ring(spec, 2)
    slot = ring.write_slot()
    with pytest.raises(ValueError, match="does not lie within"):
        slot.publish(frame=FrameRegion(10, 10, 8, 8))
    slot.abort()
    assert ring.statistics().published == 0


def test_the_writer_pin_and_a_time_window_see_the_region(make_ring: Any) -> None:
    spec = StackSpec(1, 1, 16, 16, "uint16")
    ring = make_ring(spec, 6)
    pin = ring.register_pin()
    regions = [FrameRegion(0, 0, 8, 8), None, FrameRegion(2, 3, 5, 6)]
    for k, region in enumerate(regions):
        publish(ring, np.full(spec.shape, k, spec.np_dtype), region)
    for region in regions:
        stack = pin.next(timeout=1.0)
        assert stack is not None
        assert stack.frame == region
        pin.release(stack)
    claim = ring.try_claim(1, n_timepoints=3)
    assert claim is not None
    with claim:
        assert claim.frame == regions[-1]  # a window: its newest stack's region
        assert worker_role.valid_pixels(claim).shape == (3, 1, 1, 5, 6)


# -- the worker role ------------------------------------------------------------------------------
class Spot(Worker):
    """Model-free: the network image is channel 0 / 1000, so the decision is the brightest
    pixel / 1000 and an event is every pixel >= 500 (location threshold 0.5)."""

    def network_image_shape(self) -> tuple[int, int] | None:
        assert self.spec is not None
        return (self.spec.height, self.spec.width)

    def prepare_images(self, stack: np.ndarray) -> dict[str, Any]:
        return {"pixels": stack[0, 0].astype(np.float32) / 1000}

    def post_process_output(self, output: np.ndarray, data: dict[str, Any]) -> np.ndarray:
        return output


def run_worker_loop(ring: StackRing, out_ring: StackRing, worker: Worker,
                    publish_all: Any) -> tuple[list[Result], worker_role._Counts]:
    """The worker role's loop in a thread over real rings; the Results it sent."""
    results: queue.Queue[Result] = queue.Queue()
    channels = RoleChannels(events=queue.Queue(), camera=None, results=results,
                            stop=threading.Event(), log=None, writer=None, ring=ring.name,
                            output_ring=out_ring.name)
    counts = worker_role._Counts()
    thread = threading.Thread(target=worker_role._loop, args=(
        worker, ring, out_ring, channels, load_config(None), 1, counts), daemon=True)
    thread.start()
    expected = publish_all()
    deadline = time.monotonic() + 30
    got: list[Result] = []
    while len(got) < expected and time.monotonic() < deadline:
        try:
            got.append(results.get(timeout=0.1))
        except queue.Empty:
            continue
    ring.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()
    return got, counts


def test_the_worker_sees_only_the_region_and_reports_sensor_pixels(make_ring: Any) -> None:
    spec = StackSpec(1, 1, 64, 80, "uint16")
    ring = make_ring(spec, 4)
    out_ring = make_ring(StackSpec(1, 1, 64, 80, "float32"), 4)
    pin = out_ring.register_pin()
    region = FrameRegion(30, 40, 20, 30)
    inside = np.zeros((20, 30), np.uint16)
    inside[10:14, 10:15] = 800  # the event: sensor rows 40..43, columns 50..54
    worker = Spot(WorkerSettings())
    worker.setup(spec)

    def publish_all() -> int:
        # each stack waits for its result: the worker claims the newest, skipping the rest
        publish(ring, with_stale(spec, region, inside), region)
        return 1

    results, counts = run_worker_loop(ring, out_ring, worker, publish_all)
    assert len(results) == 1
    r = results[0]
    assert r.frame == region
    assert r.decision == pytest.approx(0.8)  # the stale 5.0 outside was never seen
    assert len(r.regions) == 1
    event = r.regions[0]
    assert (event.y0, event.x0, event.y1, event.x1) == (40, 50, 44, 55)
    assert (event.y, event.x) == pytest.approx((41.5, 52.0))
    assert event.area == 20
    image = pin.next(timeout=5.0)
    assert image is not None  # pasted into the full frame at the region's offset
    expected = np.zeros((64, 80), np.float32)
    expected[30:50, 40:70] = inside / 1000
    np.testing.assert_allclose(image.pixels[0, 0], expected, rtol=1e-6)
    pin.release(image)
    assert counts.network_images == 1 and counts.network_images_refused == 0


def test_a_network_image_that_cannot_be_placed_in_the_region_is_refused() -> None:
    region = FrameRegion(8, 16, 10, 12)
    declared = (32, 40)
    placed, problem = worker_role.checked_network_image(
        np.ones((10, 12), np.float32), region, declared)
    assert problem is None and placed is not None
    assert placed.shape == declared and placed.sum() == 120
    assert (placed[8:18, 16:28] == 1).all()
    placed, problem = worker_role.checked_network_image(
        np.ones((5, 6), np.float32), region, declared)  # another size (a resampled image)
    assert placed is None and problem is not None
    assert "(5, 6)" in problem and "12x10 at (y=8, x=16)" in problem
    # a worker that crops the frame to multiples of 4 declares a smaller image: cut off
    edge = FrameRegion(26, 0, 6, 40)
    for shape in ((6, 40), (2, 40)):
        placed, problem = worker_role.checked_network_image(
            np.ones(shape, np.float32), edge, (28, 40))
        assert problem is None and placed is not None
        assert placed.shape == (28, 40) and placed[26:].all() and not placed[:26].any()
    # without a region: unchanged, checked against the declaration as before
    full, problem = worker_role.checked_network_image(np.ones((32, 40)), None, declared)
    assert problem is None and full is not None and full.shape == declared


def test_event_regions_are_shifted_to_sensor_pixels() -> None:
    r = EventRegion(2.5, 3.0, 1, 2, 4, 5, 0.9, 9)
    assert worker_role.sensor_regions((r,), None) == (r,)
    (s,) = worker_role.sensor_regions((r,), FrameRegion(10, 20, 8, 8))
    assert (s.y, s.x, s.y0, s.x0, s.y1, s.x1) == (12.5, 23.0, 11, 22, 14, 25)


# -- a Keras worker traced for the full frame ---------------------------------------------------
@pytest.fixture(scope="module")
def demo_workers() -> dict[tuple[int, int], Any]:
    pytest.importorskip("tensorflow")
    from rt_eda.workers import DemoModelWorker

    # (no configure_threads: other tests of the session may have started TensorFlow with
    # their own thread counts, which it cannot change any more)
    out = {}
    for shape in ((256, 256), (128, 128)):
        w = DemoModelWorker(WorkerSettings())
        w.setup(StackSpec(2, 1, *shape, "uint16"))
        w.warm_up()
        out[shape] = w
    yield out
    for w in out.values():
        w.teardown()


def event_frame(shape: tuple[int, int], y: float, x: float) -> np.ndarray:
    """The synthetic source's two channels: a flat structure and marker background with one
    bright spot (what the demo model was trained to find)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 6.0**2))
    stack = np.empty((2, 1, *shape), np.float32)
    stack[0, 0] = 100 + 300 * blob
    stack[1, 0] = 100 + 800 * blob
    return stack.round().astype(np.uint16)


def test_a_smaller_stack_is_padded_for_the_model_and_answered_from_its_pixels(
        demo_workers: dict[tuple[int, int], Any]) -> None:
    full_worker = demo_workers[(256, 256)]
    # The full frame repeats a 128 x 128 pattern with one spot at (100, 100): a region of one
    # period holds the same pixel values, so the per-image normalisation (mean, min, max) is
    # the full frame's, and any difference would come from the padding.
    full = np.tile(event_frame((128, 128), 100, 100), (1, 1, 2, 2))
    region = FrameRegion(36, 36, 128, 128)  # the spot at its centre, (64, 64)
    sub = full[..., region.y:region.y1, region.x:region.x1]
    a_full = full_worker.analyse(full)
    a_sub = full_worker.analyse(sub)  # the traced call is fixed to 256 x 256: padded
    assert a_sub.network_image.shape == (128, 128)  # cropped back: the region's size
    # the answer of a model run on exactly the region (a worker set up for its size)
    a_exact = demo_workers[(128, 128)].analyse(sub)
    assert a_sub.decision == pytest.approx(a_exact.decision, abs=1e-4)
    np.testing.assert_allclose(a_sub.network_image, a_exact.network_image, atol=1e-3)
    # the full frame's answer, and its network image near the event (to the 1e-3 the
    # blurred mean differs by at the frame's mirrored borders)
    assert a_sub.decision == pytest.approx(a_full.decision, abs=2e-3)
    near = (slice(64 - 24, 64 + 24), slice(64 - 24, 64 + 24))
    crop = a_full.network_image[region.slices()]
    np.testing.assert_allclose(a_sub.network_image[near], crop[near], atol=2e-3)
    # the event where the full frame has it (regions in the stack's own pixels)
    (event,) = a_sub.regions
    shifted = event.shifted(region.y, region.x)
    same = [r for r in a_full.regions if abs(r.y - 100) < 10 and abs(r.x - 100) < 10]
    assert len(same) == 1
    assert (shifted.y, shifted.x) == pytest.approx((same[0].y, same[0].x), abs=1e-3)
    assert (shifted.y0, shifted.x0, shifted.y1, shifted.x1) == (
        same[0].y0, same[0].x0, same[0].y1, same[0].x1)


def test_the_decision_never_comes_from_the_padding(
        demo_workers: dict[tuple[int, int], Any]) -> None:
    # A spot cut by the region's bottom-right edge: edge padding repeats it, but the output
    # is cropped back before the decision, so the answer is the region's own.
    w = demo_workers[(256, 256)]
    sub = event_frame((96, 128), 95, 127)
    a = w.analyse(sub)
    assert a.network_image.shape == (96, 128)
    assert a.decision == pytest.approx(float(a.network_image.max()), abs=1e-6)
    assert all(r.y1 <= 96 and r.x1 <= 128 for r in a.regions)
    assert w.analyse(np.zeros((2, 1, 200, 252), np.uint16)).network_image.shape == (200, 252)


# -- the writer -----------------------------------------------------------------------------------
def make_config(save: Path) -> Config:
    return load_config(None).with_overrides({
        "run.save": str(save), "writer.format": "zarr", "writer.save_network_images": False})


class WriterThread:
    """The writer role (:func:`rt_eda.roles.writer.serve`) in a thread."""

    def __init__(self, config: Config, ring: StackRing) -> None:
        self.events: queue.Queue[RoleEvent] = queue.Queue()
        self.rows: queue.Queue[Any] = queue.Queue()
        self.channels = RoleChannels(events=self.events, camera=None, results=None,
                                     stop=threading.Event(), log=None, writer=self.rows,
                                     ring=ring.name, output_ring="")
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while True:
            ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            assert ev.kind is not RoleEventKind.FAILED, ev.payload
            if ev.kind is RoleEventKind.READY:
                break

    def _run(self, config: Config) -> None:
        self.code = writer.serve(config, self.channels)

    def finish(self, ring: StackRing) -> None:
        ring.shutdown()
        self.rows.put(None)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive() and self.code == 0


def decision(seq: int, regions: tuple[EventRegion, ...], frame: FrameRegion | None) -> Any:
    t = 100.0 + seq
    result = Result(seq=seq, worker=1, decision=0.5, t_exposure=t, t_published=t + 0.01,
                    t_claimed=t + 0.02, t_done=t + 0.03, regions=regions, frame=frame)
    return DecisionRecord(result, t + 0.04, 0.5, False, None)


def test_the_writer_saves_zeros_outside_the_region_and_records_it(tmp_path: Path,
                                                                   make_ring: Any) -> None:
    spec = StackSpec(2, 1, 24, 32, "uint16")
    ring = make_ring(spec, 3)
    save = prepare_save_dir(tmp_path / "run")
    w = WriterThread(make_config(save), ring)
    region = FrameRegion(5, 6, 10, 12)
    rng = np.random.default_rng(3)
    inside = rng.integers(1, 1000, (2, 1, 10, 12)).astype(np.uint16)
    full = rng.integers(1, 1000, spec.shape).astype(np.uint16)
    stacks = [(full, None), (with_stale(spec, region, inside), region), (full, None)]
    for k, (pixels, frame) in enumerate(stacks):
        while True:
            try:
                publish(ring, pixels, frame, t=100.0 + k)
                break
            except RingOverrunError:  # the writer holds every slot for a moment
                time.sleep(0.001)
    events = (EventRegion(9.5, 11.0, 8, 9, 12, 14, 0.9, 14),
              EventRegion(6.0, 7.5, 5, 6, 8, 10, 0.6, 7))
    w.rows.put(decision(0, (), None))
    w.rows.put(decision(1, events, region))
    w.finish(ring)

    run = open_run(save)
    assert run.timepoints == 3
    np.testing.assert_array_equal(run.stack(0), full)
    np.testing.assert_array_equal(run.stack(2), full)  # the buffer's zeros stayed its own
    saved = run.stack(1)
    expected = np.zeros(spec.shape, np.uint16)
    expected[..., 5:15, 6:18] = inside
    np.testing.assert_array_equal(saved, expected)  # zeros outside, never STALE
    assert run.frame_region(1) == region
    assert run.frame_region(0) == FrameRegion.full(24, 32)
    frames = run.frames
    assert all(c in frames for c in FRAME_COLUMNS)
    rows = frames["seq"] == 1
    assert set(frames["roi_y"][rows]) == {5} and set(frames["roi_width"][rows]) == {12}
    assert set(frames["roi_height"][~rows]) == {24} and set(frames["roi_x"][~rows]) == {0}

    with (save / "locations.csv").open(newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == LOCATION_COLUMNS
    assert table[1:] == [
        ["1", "0", "101.0", "0", "9.5", "11.0", "8", "9", "12", "14", "0.9", "14"],
        ["1", "0", "101.0", "1", "6.0", "7.5", "5", "6", "8", "10", "0.6", "7"],
    ]
    loc = run.locations
    assert list(loc["region"]) == [0, 1] and list(loc["y0"]) == [8, 5]


def test_a_recording_without_region_columns_reads_as_full_frames(tmp_path: Path) -> None:
    # A folder written before frame regions: frames.csv without roi_*, no locations.csv.
    save = prepare_save_dir(tmp_path / "old")
    rec = Recording(save, (1, 1, 8, 8), "uint16")
    for k in range(2):
        rec.write_stack(k, np.full((1, 1, 8, 8), k + 1, np.uint16), np.array([1.0 + k]), 0.1)
    rec.close()
    (save / "locations.csv").unlink()
    text = (save / FRAMES_CSV).read_text().splitlines()
    old = [",".join(line.split(",")[:7]) for line in text]
    (save / FRAMES_CSV).write_text("\n".join(old) + "\n")
    run = open_run(save)
    assert "roi_y" not in run.frames and run.timepoints == 2
    assert run.frame_region(1) == FrameRegion.full(8, 8)
    assert run.locations == {}
    for folder in (save, tmp_path / "new"):  # rt-eda inspect reads both, damage-free
        if folder != save:
            new = Recording(prepare_save_dir(folder), (1, 1, 8, 8), "uint16")
            new.write_stack(0, np.ones((1, 1, 8, 8), np.uint16), np.array([1.0]), 0.1,
                            frame=FrameRegion(2, 2, 4, 4))
            new.close()
        text = describe(folder)
        assert "row(s) in frames.csv" in text and "DAMAGED" not in text, text


def test_the_recording_refuses_a_region_outside_its_frames(tmp_path: Path) -> None:
    save = prepare_save_dir(tmp_path / "run")
    rec = Recording(save, (1, 1, 8, 8), "uint16")
    with pytest.raises(ValueError, match="does not lie within"):
        rec.write_stack(0, np.zeros((1, 1, 8, 8), np.uint16), np.array([1.0]), 0.1,
                        frame=FrameRegion(4, 4, 8, 8))
    rec.close()
    assert open_run(save).timepoints == 0
