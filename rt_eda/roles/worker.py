"""The worker process: claim the newest stack, run the worker's hooks, send a Result.

Entry point :func:`run`, started by the engine (spawn) once per worker, ``index`` 1..N.
The loop::

    claim newest stack (or time window)  -- sleeps on the ring's doorbell when idle
      [--verify] check every frame's stamp; a torn stack is counted, never analysed
      prepare_images -> run_model -> extract_decision_parameter / post_process_output
    release the claim -> Result on the results queue

A hook that raises hands its claim back counted as *failed* (never as analysed) and ends the
process (FAILED, exit 1, one line naming the exception; the traceback only with ``--debug``);
the engine restarts the worker, a bounded number of times.

Network images are checked against the shape the worker declares
(:func:`~rt_eda.workers._base.network_image_problem`): one that breaks it is refused, counted
(``network_images_refused``), logged once per distinct shape and dtype, and never stored. At
start-up, a warm-up image that breaks the declaration is a :class:`~rt_eda.core.errors.ModelError`.

Frame regions (a camera ROI): a stack read from a region of the sensor fills its ring slot at
the region's sensor position, the other pixels stale (:attr:`~rt_eda.shm.Claim.frame`). The
worker sees only the valid pixels, ``pixels[..., y:y1, x:x1]`` (:func:`valid_pixels`; for a
time window, the newest stack's region cuts every stack of the window); the event regions it
returns, in the stack's own pixels, are shifted to sensor pixels (:func:`sensor_regions`) and
sent with the region in the :class:`~rt_eda.core.messages.Result`; its network image, made of
the valid pixels, is pasted at the region's offset into a zero image of the declared
(full-frame) shape for the network-image ring (:func:`place_network_image`). An image of
another shape while a region is set cannot be placed: it is refused like a misshapen one
(counted in ``network_images_refused``, logged once per shape).
"""

from __future__ import annotations

import logging
import os
import queue
import time

import numpy as np

from rt_eda.core.config import Config
from rt_eda.core.errors import (
    ClaimRecoveredError,
    RingClosedError,
    RingOverrunError,
)
from rt_eda.core.messages import (
    Failure,
    Result,
    RoleEventKind,
    RoleName,
    WorkerReady,
    WorkerStart,
    WorkerStatistics,
    WorkerTimes,
)
from rt_eda.core.process import RoleChannels, enter_role, native_output_to_log, report
from rt_eda.core.queues import Channel
from rt_eda.core.regions import EventRegion, FrameRegion
from rt_eda.shm import Claim, StackRing, check_stack
from rt_eda.workers import (
    Worker,
    check_warm_up,
    exception_line,
    network_image_problem,
    worker_settings,
)

__all__ = [
    "checked_network_image",
    "place_network_image",
    "run",
    "sensor_regions",
    "valid_pixels",
]

log = logging.getLogger(__name__)


def _intact(pixels: np.ndarray, seqs: tuple[int, ...]) -> bool:
    """Every stack of a claim carries the stamps of its sequence number (``seqs``: the
    claim's stacks, oldest first; a window's are one position's, not consecutive)."""
    if len(seqs) == 1:
        return check_stack(pixels, seqs[0])
    return all(check_stack(pixels[k], seq) for k, seq in enumerate(seqs))


def valid_pixels(claim: Claim) -> np.ndarray:
    """The claim's pixels the camera read: all of them for a full frame, else the view
    ``pixels[..., y:y1, x:x1]`` of its frame region (no copy). A time window is cut by its
    newest stack's region (the one the ring records with the claim): a window whose stacks
    were read from different regions is analysed inside the newest one's, where its older
    stacks may hold stale pixels (a region changes rarely; a window spanning a change is the
    price of not copying)."""
    frame = claim.frame
    if frame is None:
        return claim.pixels
    return claim.pixels[..., frame.y:frame.y1, frame.x:frame.x1]


def sensor_regions(regions: tuple[EventRegion, ...], frame: FrameRegion | None
                   ) -> tuple[EventRegion, ...]:
    """Event regions found in the pixels of a stack read from ``frame``, in sensor pixels."""
    if frame is None or not regions:
        return regions
    return tuple(r.shifted(frame.y, frame.x) for r in regions)


def place_network_image(image: np.ndarray, frame: FrameRegion | None,
                        declared: tuple[int, int] | None) -> np.ndarray | None:
    """The network image as the network-image ring stores it (the declared full-frame shape).

    Without a region the image is returned as it is (checked later against ``declared``).
    With one, an image of the region's ``(height, width)`` (made of the valid pixels) is
    pasted at the region's offset into a new zero image of ``declared``; the part beyond a
    declared image smaller than the sensor (a worker cropping to multiples of 4) is cut off,
    and an image of exactly that clipped size is accepted as well. None: an image of another
    shape, which cannot be placed (the caller refuses and counts it).
    """
    if frame is None or declared is None or not isinstance(image, np.ndarray):
        return image
    if image.ndim != 2:
        return None
    dh, dw = int(declared[0]), int(declared[1])
    h = min(frame.height, max(0, dh - frame.y))
    w = min(frame.width, max(0, dw - frame.x))
    ih, iw = image.shape
    if ih not in (frame.height, h) or iw not in (frame.width, w):
        return None
    full = np.zeros((dh, dw), image.dtype)
    full[frame.y:frame.y + h, frame.x:frame.x + w] = image[:h, :w]
    return full


def checked_network_image(image: np.ndarray, frame: FrameRegion | None,
                          declared: tuple[int, int] | None
                          ) -> tuple[np.ndarray, None] | tuple[None, str]:
    """``(image to store, None)``: the network image placed in the full frame
    (:func:`place_network_image`) and fit for the network-image ring; or ``(None, why)``
    when it is refused (:func:`~rt_eda.workers.network_image_problem`, or an image that
    cannot be placed in the region the stack was read from)."""
    placed = place_network_image(image, frame, declared)
    if placed is None:
        where = frame.describe() if frame is not None else "the full frame"
        return None, (f"it is {getattr(image, 'shape', None)}, but the stack was read from "
                      f"the sensor region {where}: only an image of the region's (height, "
                      "width) can be placed in the full-frame network image")
    problem = network_image_problem(placed, declared)
    if problem is not None:
        return None, problem
    return placed, None


WORKER_NICENESS = 15
"""Workers run at a lower CPU priority than the camera: when the machine is short of cores,
acquisition keeps its rate and analysis (which skips stale stacks anyway) gives way."""


class _Counts:
    """What one worker process counts; :meth:`statistics` freezes it for the engine."""

    def __init__(self) -> None:
        self.analysed = self.torn = self.recovered = 0
        self.network_images = self.network_images_lost = 0
        self.network_images_refused = self.network_images_nonfinite = 0
        self.wait_s = self.prepare_s = self.infer_s = self.post_s = 0.0
        self.queue_s = self.publish_image_s = 0.0

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            analysed=self.analysed, torn=self.torn, recovered=self.recovered,
            network_images=self.network_images,
            network_images_lost=self.network_images_lost,
            network_images_refused=self.network_images_refused,
            network_images_nonfinite=self.network_images_nonfinite,
            times=WorkerTimes(self.wait_s, self.prepare_s, self.infer_s, self.post_s,
                              self.queue_s, self.publish_image_s),
        )


def run(config: Config, channels: RoleChannels, index: int,
        control: Channel[WorkerStart]) -> None:
    """Entry point of worker process ``index`` (its ring reader id is ``index`` too).

    After warm-up the worker reports READY (:class:`~rt_eda.core.messages.WorkerReady`: the
    shape of its network images) and waits on ``control`` for
    :class:`~rt_eda.core.messages.WorkerStart` (the output ring's name, "" for none) before
    it claims anything.
    """
    me = RoleName.WORKER
    enter_role(me, channels, index=index,
               level=logging.DEBUG if config.run.debug else logging.INFO)
    os.nice(WORKER_NICENESS)
    from rt_eda.workers import KerasWorker, configure_threads, discover_workers

    worker: Worker | None = None
    ring: StackRing | None = None
    out_ring: StackRing | None = None
    counts = _Counts()
    try:
        # TensorFlow (imported here, or by a worker module) writes its start-up lines to
        # file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says: held, logged at DEBUG.
        with native_output_to_log(f"worker {index}: imports", log):
            cls = discover_workers(config.analysis.worker_modules)[config.analysis.worker]
            configure_threads(config.analysis.threads_per_worker,
                              tensorflow=issubclass(cls, KerasWorker))
        ring = StackRing.attach(channels.ring)
        worker = cls(worker_settings(config))
        worker.setup(ring.spec)
        check_warm_up(worker, worker.warm_up())
        shape = worker.network_image_shape()
        report(channels, me, index, RoleEventKind.READY,
               WorkerReady((int(shape[0]), int(shape[1])) if shape else None))
        name = _wait_output_ring(channels, control)
        if name is None:
            return
        if name:
            out_ring = StackRing.attach(name)
        _loop(worker, ring, out_ring, channels, config, index, counts)
    except Exception as exc:  # the role's top loop: report, then exit non-zero
        # The engine reports the FAILED event in one line; the traceback only with --debug.
        log.debug("worker %d failed", index, exc_info=True)
        report(channels, me, index, RoleEventKind.FAILED,
               Failure.from_exception(exc, exception_line(exc)))
        raise SystemExit(1) from None
    finally:
        if worker is not None:
            worker.teardown()
        if ring is not None:
            ring.close()
        if out_ring is not None:
            out_ring.close()
        report(channels, me, index, RoleEventKind.STATS, counts.statistics())
    report(channels, me, index, RoleEventKind.STOPPED)


def _wait_output_ring(channels: RoleChannels, control: Channel[WorkerStart]) -> str | None:
    """The output ring's name from the engine ("" for none); None if the run stopped."""
    while not channels.stop.is_set():
        try:
            msg = control.get(timeout=0.2)
        except queue.Empty:
            continue
        return msg.output_ring
    return None


def _publish_image(out_ring: StackRing, seq: int, image: np.ndarray, t_exposure: float,
                   interval_s: float, counts: _Counts, position: int = 0) -> None:
    """Network image of stack ``seq`` (of ``position``) into the output ring (never through
    a queue)."""
    try:
        with out_ring.write_slot(seq) as slot:
            np.copyto(slot.pixels[0, 0], image, casting="unsafe")
            slot.frame_times[:] = t_exposure
            slot.publish(interval_s=interval_s,
                         position=position if position < out_ring.positions else 0)
    except RingOverrunError:
        counts.network_images_lost += 1
        log.warning("network image of stack %d lost: output ring full", seq)
        return
    except RingClosedError:
        return
    counts.network_images += 1


def _loop(worker: Worker, ring: StackRing, out_ring: StackRing | None,
          channels: RoleChannels, config: Config, index: int, counts: _Counts) -> None:
    verify = config.run.verify or config.camera.synthetic.verify
    n_t = config.analysis.n_timepoints
    results = channels.results
    declared = worker.network_image_shape()
    refused: set[tuple[object, ...]] = set()
    while True:
        t0 = time.perf_counter()
        try:
            claim = ring.claim(index, timeout=0.5, n_timepoints=n_t)
        except RingClosedError:
            return
        if claim is None:
            continue
        counts.wait_s += time.perf_counter() - t0
        try:
            with claim:
                # the stamp is in the first row of the pixels read (a region's, with an ROI)
                if verify and not _intact(valid_pixels(claim), claim.seqs):
                    counts.torn += 1
                    claim.count_torn()
                    log.error("worker %d: stack %d is torn (stamps do not match)", index,
                              claim.seq)
                    claim.release(analysed=False)
                    continue
                analysis = worker.analyse(valid_pixels(claim))
        except ClaimRecoveredError:
            counts.recovered += 1  # declared dead while analysing: drop the result
            continue
        t_done = time.monotonic()
        counts.analysed += 1
        counts.prepare_s += analysis.t_prepare_s
        counts.infer_s += analysis.t_infer_s
        counts.post_s += analysis.t_post_s
        tq = time.perf_counter()
        results.put(Result(
            seq=claim.seq, worker=index, decision=analysis.decision,
            t_exposure=claim.t_exposure, t_published=claim.t_published,
            t_claimed=claim.t_claimed, t_done=t_done, n_timepoints=n_t,
            t_prepare_s=analysis.t_prepare_s, t_infer_s=analysis.t_infer_s,
            t_post_s=analysis.t_post_s, position=claim.position,
            regions=sensor_regions(analysis.regions, claim.frame), frame=claim.frame,
        ))
        counts.queue_s += time.perf_counter() - tq
        image = analysis.network_image
        if image is None:
            continue
        placed, problem = checked_network_image(image, claim.frame, declared)
        if placed is None:
            counts.network_images_refused += 1
            key = (type(image).__name__, getattr(image, "shape", None),
                   str(getattr(image, "dtype", "")))
            if key not in refused:
                refused.add(key)
                log.warning("worker %d: network image of stack %d refused, not stored: %s "
                            "(logged once per shape; counted in network_images_refused)",
                            index, claim.seq, problem)
            continue
        if placed.dtype.kind == "f" and not np.isfinite(placed).all():
            counts.network_images_nonfinite += 1
        if out_ring is not None:
            tp = time.perf_counter()
            _publish_image(out_ring, claim.seq, placed, claim.t_exposure, claim.interval_s,
                           counts, claim.position)
            counts.publish_image_s += time.perf_counter() - tp
