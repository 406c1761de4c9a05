"""How well the demo model's event regions make stimulation masks: precision and recall of
each way of drawing them, against the synthetic source's truth.

    python tools/mask_study.py [--events 6]

Renders stacks of the synthetic source (2 x 512 x 512, its default settings) at 12 moments
through each of the first ``--events`` events, runs the demo model on each (as a worker
does), and draws the mask from its network image in several ways: a fixed threshold (0.5,
0.65, 0.8, 0.9), components found at 0.5 and cut at a fraction of each one's own peak
(``location_relative`` 0.7, 0.8), and each of those regions as the disc of its own area
around its centre (what ``actuation.options.stimulate.shape = 'disc'`` shows). Each mask is
compared with the true event pixels at that moment (the core of every visible event:
:func:`rt_eda.core.location_truth.true_region`); the pixels add up over every stack. The
figures are quoted in docs/actuators.md and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import numpy as np

from rt_eda.core.location_truth import TrueEvent, mask_overlap, true_region
from rt_eda.core.regions import FrameRegion, paint_discs, paint_regions
from rt_eda.sources._synthetic_settings import SyntheticSettings
from rt_eda.sources.synthetic import SyntheticSource
from rt_eda.workers import DemoModelWorker, WorkerSettings, regions_from_image

WAYS = {  # name: (threshold, relative to each region's peak, drawn as discs)
    "threshold 0.5": (0.5, 0.0, False), "threshold 0.65": (0.65, 0.0, False),
    "threshold 0.8": (0.8, 0.0, False), "threshold 0.9": (0.9, 0.0, False),
    "0.5, cut at 0.7 of the peak": (0.5, 0.7, False),
    "0.5, cut at 0.8 of the peak": (0.5, 0.8, False),
    "0.5, 0.7 of the peak, discs": (0.5, 0.7, True),
    "0.5, 0.8 of the peak, discs (the default)": (0.5, 0.8, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6, help="events to go through (6)")
    args = parser.parse_args()
    source = SyntheticSource(SyntheticSettings())
    spec = source.open()
    worker = DemoModelWorker(WorkerSettings(options=(("locations", False),)))
    worker.setup(spec)
    worker.warm_up()
    full = FrameRegion.full(spec.height, spec.width)
    sigma = SyntheticSettings().focus_sigma_px
    totals = {name: np.zeros(3, np.int64) for name in WAYS}  # tp, fp, fn
    stack = np.empty(spec.shape, spec.np_dtype)
    stacks = 0
    events = source.events  # the first 600 s of the schedule
    for event in events[: args.events]:
        for u in np.linspace(0.04, 0.96, 12):
            t = event.start_s + u * event.duration_s
            source.render_stack(t, stack)
            image = worker.analyse(stack).network_image
            assert image is not None
            truth = true_region([TrueEvent(e.y, e.x, sigma, e.intensity(t))
                                 for e in events if e.start_s <= t < e.end_s], full)
            if not truth.any():
                continue
            stacks += 1
            for name, (threshold, relative, discs) in WAYS.items():
                regions = regions_from_image(image, threshold, min_area=4, relative=relative)
                mask = (paint_discs(regions, full) if discs
                        else paint_regions(regions, full))
                totals[name] += mask_overlap(mask, truth)
    print(f"{stacks} stacks with a visible event, {args.events} events")
    print(f"{'mask':<44} precision  recall")
    for name, (tp, fp, fn) in totals.items():
        print(f"{name:<44} {tp / max(1, tp + fp):9.2f}  {tp / max(1, tp + fn):6.2f}")


if __name__ == "__main__":
    main()
