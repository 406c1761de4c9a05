"""Writer benchmarks: one stack written, timed beside ``numpy.tofile`` of the same bytes; the
real writer process persisting a real ring (whole runs) is a module fixture recorded in
``extra_info``, beside the disk's own sequential write bandwidth measured in the same run.

    pytest bench/test_writer_bench.py --benchmark-only [--quick] [--benchmark-save=NAME]

- ``test_stack_written``: ``Recording.write_stack`` of one two-channel 512x512 uint16 stack,
  straight from shared memory, into an OME-Zarr run folder (one chunk file per stack, the
  frame rows after it); baseline: ``numpy.tofile`` of the same stack appended to one file;
- runs (fixture): paced, stacks at 200 stacks/s (about 210 MB/s) for 60 s (quick: 3 s) from a
  camera process into a 1 s ring, every frame must be written (frames_lost 0); saturation, the
  camera publishing as fast as the writer frees slots (it waits on a full ring, so nothing is
  lost) for 8 s (quick: 3 s): the highest stack rate the writer sustains, and its ratio to the
  ``numpy.tofile`` bandwidth (mean of a measurement before and after).

Two bandwidth baselines for the runs, each on the same terms as the writer figure it is
compared with:

- *page cache*: ``tofile`` without fsync (a copy into the kernel's cache, as fast as memory)
  against the writer's rate until its last stack is written;
- *disk*: ``tofile`` + fsync against the writer's rate until its files are on the disk
  (``syncfs`` after the run), i.e. the disk's sequential write bandwidth, which a long
  recording is held to once the kernel's dirty-page limit is reached.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing as mp
import os
import queue
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import writer_procs
from bench_timing import figures, median, per_op, times

from rt_eda.core.config import load_config
from rt_eda.core.messages import RoleEventKind, WriterStatistics
from rt_eda.core.process import RoleChannels
from rt_eda.core.queues import MessageQueue
from rt_eda.core.runfolder import open_run
from rt_eda.roles import writer
from rt_eda.shm import StackRing, StackSpec
from rt_eda.storage.recording import Recording, prepare_save_dir

CTX = mp.get_context("spawn")
SPEC = StackSpec(2, 1, 512, 512, "uint16")


def syncfs(folder: Path) -> None:
    """Flush every dirty page of ``folder``'s filesystem to the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", str(folder))
    finally:
        os.close(fd)


def tofile_mb_s(folder: Path, nbytes: int, fsync: bool) -> float:
    """Sequential write bandwidth: stacks appended with numpy.tofile (and fsynced)."""
    frame = np.random.default_rng(1).integers(0, 4000, SPEC.shape, dtype=np.uint16)
    n = max(1, nbytes // frame.nbytes)
    path = folder / "tofile.bin"
    syncfs(folder)
    t0 = time.perf_counter()
    with path.open("wb") as f:
        for _ in range(n):
            frame.tofile(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return n * frame.nbytes / dt / 1e6


def writer_run(folder: Path, rate: float, seconds: float, backpressure: bool) -> dict[str, Any]:
    save = prepare_save_dir(folder / f"run-{rate:g}-{int(backpressure)}")
    config = load_config(None).with_overrides({"run.save": str(save)})
    procs: list[Any] = []
    syncfs(folder)
    with StackRing.create(SPEC, 200) as ring:
        channels = RoleChannels(events=CTX.Queue(), camera=None, results=None,
                                stop=CTX.Event(), log=CTX.Queue(), writer=MessageQueue(CTX),
                                ring=ring.name, parent_pid=os.getpid())
        try:
            w = CTX.Process(target=writer.run, args=(config, channels), daemon=True)
            w.start()
            procs.append(w)
            ev = channels.events.get(timeout=120)
            assert ev.kind is RoleEventKind.READY, ev
            out, go = CTX.Queue(), CTX.Event()
            cam = CTX.Process(target=writer_procs.camera,
                              args=(ring.name, rate, seconds, backpressure, go, out),
                              daemon=True)
            cam.start()
            procs.append(cam)
            time.sleep(1.0)  # attached, kernels compiled
            t0 = time.monotonic()
            go.set()
            cam_stats = out.get(timeout=seconds + 120)
            ring.shutdown()
            channels.writer.put(None)
            stats: dict[str, Any] = {}
            deadline = time.monotonic() + 600
            while not stats:
                try:
                    e = channels.events.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    break
                assert e.kind is not RoleEventKind.FAILED, e.payload
                if e.kind is RoleEventKind.STATS:
                    assert isinstance(e.payload, WriterStatistics), e
                    stats = dataclasses.asdict(e.payload)
            drained_s = time.monotonic() - t0
            syncfs(save)
            synced_s = time.monotonic() - t0
            w.join(60)
            assert w.exitcode == 0
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join(10)
    run = open_run(save)
    assert run.timepoints == stats["stacks_written"]
    published = cam_stats["published"]
    frames_lost = (cam_stats["lost"] + published - stats["stacks_written"]) * SPEC.frames
    result = {
        "published": published, "stacks_written": stats["stacks_written"],
        "frames_written": stats["frames_written"], "frames_lost": frames_lost,
        "camera_s": cam_stats["elapsed_s"], "drained_s": drained_s,
        "stacks_per_s": stats["stacks_written"] / drained_s,
        "mb_per_s": stats["bytes_written"] / drained_s / 1e6,
        "synced_mb_per_s": stats["bytes_written"] / synced_s / 1e6,
        "write_ms_p50": stats["write_ms"]["p50"], "write_ms_p99": stats["write_ms"]["p99"],
        "write_ms_max": stats["write_ms"]["max"], "max_backlog": stats["max_backlog_stacks"],
    }
    shutil.rmtree(save)
    return result


@pytest.fixture(scope="module")
def writer_runs(tmp_path_factory: pytest.TempPathFactory, quick: bool) -> dict[str, Any]:
    """The paced and saturation runs of the writer process, between bandwidth probes."""
    folder = tmp_path_factory.mktemp("writer-runs")
    paced_s, sat_s = (3.0, 3.0) if quick else (60.0, 8.0)
    probe = int(1.0e9 if not quick else 0.2e9)
    cache_before = tofile_mb_s(folder, probe, fsync=False)
    disk_before = tofile_mb_s(folder, probe, fsync=True)
    paced = writer_run(folder, 200.0, paced_s, backpressure=False)
    sat = writer_run(folder, 0.0, sat_s, backpressure=True)
    cache_after = tofile_mb_s(folder, probe, fsync=False)
    disk_after = tofile_mb_s(folder, probe, fsync=True)
    cache = (cache_before + cache_after) / 2
    disk = (disk_before + disk_after) / 2
    return {
        "tofile_mb_s": cache, "tofile_before_mb_s": cache_before,
        "tofile_after_mb_s": cache_after,
        "tofile_fsync_mb_s": disk, "tofile_fsync_before_mb_s": disk_before,
        "tofile_fsync_after_mb_s": disk_after,
        "paced_rate": 200.0, "paced_seconds": paced_s,
        "paced_published": paced["published"], "paced_frames_lost": paced["frames_lost"],
        "paced_write_ms_p99": paced["write_ms_p99"], "paced_max_backlog": paced["max_backlog"],
        "max_stacks_per_s": sat["stacks_per_s"], "max_mb_s": sat["mb_per_s"],
        "ratio_to_tofile": sat["mb_per_s"] / cache,
        "max_synced_mb_s": sat["synced_mb_per_s"],
        "disk_ratio_to_tofile_fsync": sat["synced_mb_per_s"] / disk,
        "sat_write_ms_p50": sat["write_ms_p50"], "sat_write_ms_p99": sat["write_ms_p99"],
    }


def test_stack_written(benchmark: Any, tmp_path: Path, quick: bool, report: Any,
                       writer_runs: dict[str, Any]) -> None:
    """Timed: one ``Recording.write_stack`` of a two-channel 512x512 uint16 stack (1 MiB)
    straight from a claimed ring slot (shared memory), as the writer role does: its chunk
    file written into the OME-Zarr run folder, then its frame rows; rounds x iterations, per
    stack, into the page cache of the test's temporary folder.

    Baseline, same rounds x iterations: ``numpy.tofile`` of the same stack appended to one
    open file (a bare sequential write of the same bytes). ``extra_info``: the writer-process
    runs (paced: frames lost; saturation: highest rate, ratio to ``tofile`` bandwidth).
    """
    rounds, iterations = (5, 20) if quick else (20, 50)
    save = prepare_save_dir(tmp_path / "run")
    frame = np.random.default_rng(1).integers(0, 4000, SPEC.shape, dtype=np.uint16)
    with StackRing.create(SPEC, 2) as ring:
        with ring.write_slot() as slot:
            np.copyto(slot.pixels, frame)
            slot.frame_times[:] = np.arange(SPEC.frames) * 1e-3
        claim = ring.try_claim(1)
        assert claim is not None
        recording = Recording(save, SPEC.shape, SPEC.np_dtype, fmt="zarr")
        seqs = iter(range(1 << 62))
        try:
            benchmark.pedantic(
                lambda: recording.write_stack(next(seqs), claim.pixels, claim.frame_times,
                                              0.005),
                rounds=rounds, iterations=iterations, warmup_rounds=1)
        finally:
            recording.close()
            claim.release()
    written = open_run(save).timepoints
    write_t = times(benchmark)
    with (tmp_path / "tofile.bin").open("wb") as f:
        tofile_t = per_op(lambda: frame.tofile(f), rounds=rounds, iterations=iterations,
                          warmup_rounds=1)
    shutil.rmtree(tmp_path)
    result = {
        **figures(write_t, "write_stack"), **figures(tofile_t, "tofile"),
        "write_stack_mb_s": SPEC.nbytes / float(np.mean(write_t)) / 1e6,
        "tofile_stack_mb_s": SPEC.nbytes / float(np.mean(tofile_t)) / 1e6,
        "write_stack_vs_tofile": median(tofile_t) / median(write_t),
        "stacks_written": written,
        **{f"run_{k}": v for k, v in writer_runs.items()},
    }
    benchmark.extra_info.update(result)
    report("writer: one 2x512x512 uint16 stack (us; ratio: tofile time / write_stack time)", {
        "write_stack p50": result["write_stack_median_us"],
        "tofile p50": result["tofile_median_us"],
        "ratio": result["write_stack_vs_tofile"],
        "write_stack MB/s": result["write_stack_mb_s"],
        "tofile MB/s": result["tofile_stack_mb_s"],
    })
    report("writer process: 2x512x512 uint16 stacks from a real ring", {
        "paced 200/s lost frames": writer_runs["paced_frames_lost"],
        "paced p99 write ms": writer_runs["paced_write_ms_p99"],
        "max stacks/s": writer_runs["max_stacks_per_s"],
        "cache: writer MB/s": writer_runs["max_mb_s"], "tofile MB/s": writer_runs["tofile_mb_s"],
        "ratio": writer_runs["ratio_to_tofile"],
        "disk: writer+sync MB/s": writer_runs["max_synced_mb_s"],
        "tofile+fsync MB/s": writer_runs["tofile_fsync_mb_s"],
        "disk ratio": writer_runs["disk_ratio_to_tofile_fsync"],
    })
    assert written == (rounds + 1) * iterations + 1
    assert writer_runs["paced_frames_lost"] == 0
