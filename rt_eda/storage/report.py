"""A one-page report of a saved run: decisions against thresholds, intervals, latency.

:func:`write_report` reads a run folder (:mod:`rt_eda.core.runfolder`) and writes

- ``report.png``: top, the decision parameter of every analysed stack over time (seconds
  since the first exposure) with the lower/upper thresholds of ``config.toml``, the interval
  in force (fast periods shaded) and the ground-truth events when given; bottom, the
  histogram of the publish -> decision latency;
- ``report.json``: the data behind the figure (the same series, thresholds, percentiles).

A run of several positions (an acquisition plan) gets one small panel per position instead
(its decisions, its fast periods, its ground-truth events from ``truth.csv``, titled with its
outcome: events caught, detection delay, fraction of event time imaged fast, light dose
against always-fast), above a bar chart of those outcomes per position and the latency
histogram. A single-position run's title carries its outcome when it has one.

Matplotlib runs with the Agg backend (no display needed; safe in any process).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rt_eda.core.files import write_atomic
from rt_eda.core.runfolder import REPORT_JSON, REPORT_PNG, TRUTH_CSV, open_run, read_truth

__all__ = ["REPORT_JSON", "REPORT_PNG", "write_report"]

log = logging.getLogger(__name__)

def _intervals_in_force(t: np.ndarray, interval: np.ndarray) -> list[tuple[float, float, float]]:
    """(start, end, interval) runs of a constant interval over the stacks' times."""
    runs: list[tuple[float, float, float]] = []
    if t.size == 0:
        return runs
    start = 0
    for i in range(1, t.size + 1):
        if i == t.size or interval[i] != interval[start]:
            end = float(t[i]) if i < t.size else float(t[-1])
            runs.append((float(t[start]), end, float(interval[start])))
            start = i
    return runs


def write_report(run_dir: str | os.PathLike[str], summary: Mapping[str, Any] | None = None,
                 events: Sequence[tuple[float, float]] | None = None) -> Path:
    """Write ``report.png`` and ``report.json`` into ``run_dir``; returns the PNG's path.

    Parameters
    ----------
    run_dir
        A saved run folder.
    summary
        The run summary (its numbers go into the title); None reads ``summary.json`` if the
        folder has one.
    events
        Ground-truth events as ``(start_s, duration_s)`` in seconds since the first exposure
        (the synthetic source's schedule), drawn as spans; None for none.

    Raises
    ------
    WriterError
        ``run_dir`` is not a run folder.
    OSError
        The files cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    run = open_run(run_dir)
    summary = dict(summary) if summary is not None else run.summary
    if run.positions > 1:
        return _write_positions_report(run, summary)
    frames, decisions = run.frames, run.decisions
    interp = run.config.get("interpreter", {})
    lower = interp.get("lower_threshold")
    upper = interp.get("upper_threshold")
    fast_interval = interp.get("fast_interval")

    t_exp_frames = frames.get("t_exposure", np.zeros(0))
    t0 = float(t_exp_frames.min()) if t_exp_frames.size else (
        float(decisions["t_exposure"].min()) if decisions.get("t_exposure", np.zeros(0)).size
        else 0.0)
    # One time per stack: its first frame.
    if t_exp_frames.size:
        t_index = frames["t_index"]
        first = np.unique(t_index, return_index=True)[1]
        stack_t = t_exp_frames[first] - t0
        stack_interval = frames["interval_s"][first]
    else:
        stack_t = stack_interval = np.zeros(0)
    runs = _intervals_in_force(stack_t, stack_interval)

    d_t = decisions.get("t_exposure", np.zeros(0)) - t0
    d_value = decisions.get("decision", np.zeros(0))
    latency_ms = (decisions.get("t_decided", np.zeros(0))
                  - decisions.get("t_published", np.zeros(0))) * 1e3
    pct = {f"p{q}": float(np.percentile(latency_ms, q)) if latency_ms.size else 0.0
           for q in (50, 90, 99)}
    pct["max"] = float(latency_ms.max()) if latency_ms.size else 0.0

    acted = _acted(run)
    if acted:
        fig: Figure = plt.figure(figsize=(11, 9.5), dpi=110)
        grid = fig.add_gridspec(3, 1, height_ratios=(2.2, 1.1, 1), hspace=0.45)
    else:
        fig = plt.figure(figsize=(11, 7), dpi=110)
        grid = fig.add_gridspec(2, 1, height_ratios=(2.2, 1), hspace=0.35)
    ax = fig.add_subplot(grid[0])
    slow_values = sorted({r[2] for r in runs})
    fastest = fast_interval if fast_interval is not None else (
        slow_values[0] if len(slow_values) > 1 else None)
    labelled = False
    for start, end, value in runs:
        if fastest is not None and value <= fastest and end > start:
            ax.axvspan(start, end, color="tab:orange", alpha=0.18, lw=0,
                       label=None if labelled else f"fast interval ({value:.3g} s)")
            labelled = True
    for i, (start, duration) in enumerate(events or ()):
        ax.axvspan(start, start + duration, ymin=0.0, ymax=0.06, color="tab:red", alpha=0.8,
                   lw=0, label="ground-truth event" if i == 0 else None)
    ax.plot(d_t, d_value, ".", ms=3, color="tab:blue", label="decision parameter")
    if lower is not None:
        ax.axhline(float(lower), color="tab:green", ls="--", lw=1,
                   label=f"lower threshold {float(lower):.3g}")
    if upper is not None:
        ax.axhline(float(upper), color="tab:red", ls="--", lw=1,
                   label=f"upper threshold {float(upper):.3g}")
    ax.set_xlabel("time since first exposure (s)")
    ax.set_ylabel("decision parameter")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    if runs:
        xs = [p for r in runs for p in (r[0], r[1])]
        ys = [r[2] for r in runs for _ in (0, 1)]
        ax2.plot(xs, ys, color="tab:gray", lw=1.2, drawstyle="steps-post",
                 label="interval in force")
    ax2.set_ylabel("interval (s)", color="tab:gray")
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, loc="best", fontsize=8, framealpha=0.85)
    title = f"{run.path.name}: {d_value.size} decisions, {run.timepoints} stacks saved"
    if summary:
        title += (f", {summary.get('frames_lost', 0)} frames lost, "
                  f"{float(summary.get('acquired_fps', 0.0)):.1f} stacks/s acquired")
    eda = summary.get("eda") if summary else None
    if isinstance(eda, Mapping):
        title += "\n" + _outcome_text(eda)
    ax.set_title(title, fontsize=10)

    actions_data: dict[str, Any] = {}
    if acted:
        actions_data = _actions_panel(fig.add_subplot(grid[1], sharex=ax), run, t0, summary)
    hx = fig.add_subplot(grid[2 if acted else 1])
    _latency_histogram(hx, latency_ms, pct, fontsize=8)
    hx.set_ylabel("decisions")

    out_dir = run.path
    png = out_dir / REPORT_PNG
    fig.savefig(png)
    plt.close(fig)
    data = {
        "t0_monotonic_s": t0,
        "thresholds": {"lower": lower, "upper": upper},
        "fast_interval": fast_interval,
        "decisions": {"t_s": d_t.tolist(), "decision": d_value.tolist(),
                      "seq": decisions.get("seq", np.zeros(0, np.int64)).tolist()},
        "intervals_in_force": [{"start_s": s, "end_s": e, "interval_s": v} for s, e, v in runs],
        "events": [{"start_s": float(s), "duration_s": float(d)} for s, d in (events or ())],
        "publish_to_decision_ms": {"values": latency_ms.tolist(), **pct},
        "actions": actions_data,
    }
    write_atomic(out_dir / REPORT_JSON, json.dumps(data, indent=1) + "\n")
    log.info("report written: %s", png)
    return png


def _acted(run: Any) -> bool:
    """Whether the run had actions besides the interval, or read regions of the sensor."""
    kinds = run.actions.get("kind", np.zeros(0, str))
    if np.any(kinds != "interval"):
        return True
    heights = run.frames.get("roi_height")
    shape = run.frames.get("roi_height"), run.frames.get("roi_width")
    return heights is not None and shape[1] is not None and bool(
        np.any(heights * shape[1] < heights.max(initial=0) * shape[1].max(initial=0)))


def _actions_panel(ax: Any, run: Any, t0: float, summary: Mapping[str, Any] | None
                   ) -> dict[str, Any]:
    """What the actuators did over time: the fraction of the sensor each stack was read
    from (1: the full frame), a tick per stimulation mask shown (filled: with regions,
    hollow: blank) and per channel change; titled with the locations against the truth and
    each kind's decision -> actuation. Returns the data drawn."""
    frames = run.frames
    data: dict[str, Any] = {}
    if "roi_height" in frames and frames["roi_height"].size:
        first = np.unique(frames["t_index"], return_index=True)[1]
        h, w = frames["roi_height"][first], frames["roi_width"][first]
        full = float(h.max() * w.max()) or 1.0
        t = frames["t_exposure"][first] - t0
        fraction = h * w / full
        ax.plot(t, fraction, drawstyle="steps-post", color="tab:purple", lw=1.2,
                label="sensor fraction read (roi)")
        data["sensor_fraction"] = {"t_s": t.tolist(), "fraction": fraction.tolist()}
    acts = run.actions
    kinds = acts.get("kind", np.zeros(0, str))
    t_act = acts.get("t_actuated", np.zeros(0)) - t0
    regions = acts.get("regions", np.zeros(0))
    for kind, y, color in (("stimulate", 1.08, "tab:red"), ("channel", 1.16, "tab:green")):
        sel = (kinds == kind) & np.isfinite(t_act)
        if not np.any(sel):
            continue
        on = sel & (regions > 0) if kind == "stimulate" else sel & (acts["fast"] == 1)
        off = sel & ~on
        ax.plot(t_act[on], np.full(int(on.sum()), y), "|", ms=9, color=color,
                label=f"{kind} ({'mask' if kind == 'stimulate' else 'fast presets'})")
        ax.plot(t_act[off], np.full(int(off.sum()), y), "|", ms=9, color=color, alpha=0.35,
                label=f"{kind} ({'blank' if kind == 'stimulate' else 'original'})")
        data[kind] = {"t_s": t_act[sel].tolist(), "on": on[sel].tolist()}
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("sensor read")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=7, framealpha=0.85, ncol=3)  # the middle is empty
    ax.set_title(_actions_text(summary), fontsize=9)
    return data


def _actions_text(summary: Mapping[str, Any] | None) -> str:
    """Each actuator's decision -> actuation, and the locations against the truth."""
    if not summary:
        return "actions"
    parts = [f"{k} x{a['applied']} p50/p99 {a['decision_to_actuation_ms']['p50']:.0f}/"
             f"{a['decision_to_actuation_ms']['p99']:.0f} ms"
             for k, a in summary.get("actions", {}).items()
             if a["decision_to_actuation_ms"]["count"]]
    text = "decision -> actuation: " + ", ".join(parts) if parts else "actions"
    loc = summary.get("locations")
    if isinstance(loc, Mapping) and loc.get("located"):
        line = (f"locations vs truth: error p50/p99 {loc['error_px']['p50']:.1f}/"
                f"{loc['error_px']['p99']:.1f} px")
        if loc.get("roi_coverage") is not None:
            line += f", event pixels inside the ROI {loc['roi_coverage']:.1%}"
        if loc.get("mask_precision") is not None and loc.get("mask_recall") is not None:
            line += (f", masks precision {loc['mask_precision']:.2f} recall "
                     f"{loc['mask_recall']:.2f}")
        text += "\n" + line
    return text


def _latency_histogram(hx: Any, latency_ms: np.ndarray, pct: Mapping[str, float], *,
                       fontsize: int) -> None:
    """The publish -> decision histogram with its p50 and p99 (one per report)."""
    if latency_ms.size:
        hx.hist(latency_ms, bins=min(60, max(10, latency_ms.size // 5)), color="tab:blue",
                alpha=0.8)
        for key, color in (("p50", "tab:green"), ("p99", "tab:red")):
            hx.axvline(pct[key], color=color, ls="--", lw=1, label=f"{key} {pct[key]:.2f} ms")
        hx.legend(fontsize=fontsize)
    else:
        hx.text(0.5, 0.5, "no decisions", ha="center", va="center", transform=hx.transAxes)
    hx.set_xlabel("publish -> decision latency (ms)", fontsize=fontsize + 2)
    hx.grid(alpha=0.3)


def _outcome_text(eda: Mapping[str, Any]) -> str:
    """One line of an ``eda`` section."""
    delay = eda.get("detection_delay_s", {})
    return (f"{eda.get('events_detected', 0)}/{eda.get('events', 0)} events caught, delay "
            f"p50 {float(delay.get('p50', 0.0)):.2f} s (p99 {float(delay.get('p99', 0.0)):.2f}),"
            f" {100 * float(eda.get('event_time_fast_fraction', 0.0)):.0f}% of event time fast,"
            f" dose {float(eda.get('dose_vs_always_fast', 0.0)):.2f}x always-fast")


def _write_positions_report(run: Any, summary: Mapping[str, Any]) -> Path:
    """The report of a run of several positions (see the module docstring)."""
    import matplotlib.pyplot as plt

    frames, decisions = run.frames, run.decisions
    interp = run.config.get("interpreter", {})
    lower, upper = interp.get("lower_threshold"), interp.get("upper_threshold")
    fast_interval = interp.get("fast_interval")
    n = run.positions
    entries = {int(p.get("index", -1)): p for p in summary.get("positions", [])
               if isinstance(p, Mapping)}
    truth = read_truth(run.path / TRUTH_CSV) or {}
    te = frames.get("t_exposure", np.zeros(0))
    t0 = float(te.min()) if te.size else 0.0
    f_pos = frames.get("position", np.zeros(te.size, np.int64))
    d_pos = decisions.get("position", np.zeros(len(decisions.get("seq", ())), np.int64))
    latency_ms = (decisions.get("t_decided", np.zeros(0))
                  - decisions.get("t_published", np.zeros(0))) * 1e3
    pct = {f"p{q}": float(np.percentile(latency_ms, q)) if latency_ms.size else 0.0
           for q in (50, 90, 99)}
    pct["max"] = float(latency_ms.max()) if latency_ms.size else 0.0

    cols = 1 if n <= 2 else (2 if n <= 8 else 4)
    rows = -(-n // cols)
    fig = plt.figure(figsize=(6.5 * min(cols, 2) + (3 if cols == 4 else 0),
                              3.2 + 1.7 * rows + 2.2), dpi=100)
    outer = fig.add_gridspec(3, 1, height_ratios=(1.5, 1.7 * rows, 1.2), hspace=0.45)
    panels = outer[1].subgridspec(rows, cols, hspace=0.85, wspace=0.25)
    per: list[dict[str, Any]] = []
    t_max = float(te.max() - t0) if te.size else 1.0
    for p in range(n):
        ax = fig.add_subplot(panels[p // cols, p % cols])
        mine = f_pos == p
        t_index = frames["t_index"][mine]
        first = np.unique(t_index, return_index=True)[1]
        stack_t = te[mine][first] - t0
        runs = _intervals_in_force(stack_t, frames["interval_s"][mine][first])
        for start, end, value in runs:
            if fast_interval is not None and value <= float(fast_interval) and end > start:
                ax.axvspan(start, end, color="tab:orange", alpha=0.25, lw=0)
        events = [(a - t0, b - t0) for a, b in truth.get(p, []) if a - t0 <= t_max]
        for a, b in events:
            ax.axvspan(a, b, ymin=0.0, ymax=0.08, color="tab:red", alpha=0.85, lw=0)
        d_mine = d_pos == p
        ax.plot(decisions.get("t_exposure", np.zeros(0))[d_mine] - t0,
                decisions.get("decision", np.zeros(0))[d_mine], ".", ms=2.5,
                color="tab:blue")
        for value, color in ((lower, "tab:green"), (upper, "tab:red")):
            if value is not None:
                ax.axhline(float(value), color=color, ls="--", lw=0.8)
        ax.set_xlim(0, max(t_max, 1e-3))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        entry = entries.get(p, {})
        eda = entry.get("eda")
        name = entry.get("name", f"p{p}")
        text = f"{name}: {int(d_mine.sum())} decisions, {stack_t.size} stacks"
        if isinstance(eda, Mapping):
            text += (f"\n{eda.get('events_detected', 0)}/{eda.get('events', 0)} caught, delay "
                     f"{float(eda.get('detection_delay_s', {}).get('p50', 0)):.2f} s, "
                     f"{100 * float(eda.get('event_time_fast_fraction', 0)):.0f}% fast, dose "
                     f"{float(eda.get('dose_vs_always_fast', 0)):.2f}x")
        ax.set_title(text, fontsize=8)
        if p // cols == rows - 1:
            ax.set_xlabel("time since first exposure (s)", fontsize=7)
        per.append({"position": p, "name": name, "stacks": int(stack_t.size),
                    "decisions": int(d_mine.sum()), "eda": dict(eda) if eda else None,
                    "events": [{"start_s": a, "end_s": b} for a, b in events],
                    "intervals_in_force": [{"start_s": s, "end_s": e, "interval_s": v}
                                           for s, e, v in runs]})

    bx = fig.add_subplot(outer[0])
    x = np.arange(n)
    caught = [float((r["eda"] or {}).get("events_detected", 0)) for r in per]
    total = [float((r["eda"] or {}).get("events", 0)) for r in per]
    fraction = [float((r["eda"] or {}).get("event_time_fast_fraction", 0)) for r in per]
    dose = [float((r["eda"] or {}).get("dose_vs_always_fast", 0)) for r in per]
    w = 0.2
    bx.bar(x - 1.5 * w, total, w, color="tab:gray", label="events")
    bx.bar(x - 0.5 * w, caught, w, color="tab:green", label="events caught")
    bx2 = bx.twinx()
    bx2.bar(x + 0.5 * w, fraction, w, color="tab:orange", label="event time imaged fast")
    bx2.bar(x + 1.5 * w, dose, w, color="tab:purple", label="dose / always-fast")
    bx2.set_ylim(0, 1.05)
    bx.set_xticks(x, [str(r["name"]) for r in per], fontsize=7)
    bx.set_ylabel("events", fontsize=8)
    bx2.set_ylabel("fraction", fontsize=8)
    h1, l1 = bx.get_legend_handles_labels()
    h2, l2 = bx2.get_legend_handles_labels()
    bx.legend(h1 + h2, l1 + l2, fontsize=7, ncol=4, loc="upper center",
              bbox_to_anchor=(0.5, -0.18 if n <= 8 else -0.3), framealpha=0.85)
    title = (f"{run.path.name}: {n} positions, {len(decisions.get('seq', ()))} decisions, "
             f"{sum(r['stacks'] for r in per)} stacks saved")
    eda_all = summary.get("eda")
    if isinstance(eda_all, Mapping):
        title += "\n" + _outcome_text(eda_all)
    sched = summary.get("scheduler")
    if isinstance(sched, Mapping):
        title += (f"\nscheduler: {sched.get('moves', 0)} moves, timing error p99 "
                  f"{float(sched.get('timing_error_ms', {}).get('p99', 0)):.2f} ms; "
                  + (f"OVERLOADED {float(sched.get('overload_s', 0)):.1f} s (demand up to "
                     f"{float(sched.get('demand_max', 0)):.2f}); " if sched.get("overloaded")
                     else "")
                  + f"{sched.get('slow_delayed', 0)} slow visits delayed for fast ones, "
                  f"starved {sched.get('starved', [])}")
    bx.set_title(title, fontsize=9)

    _latency_histogram(fig.add_subplot(outer[2]), latency_ms, pct, fontsize=7)

    png: Path = run.path / REPORT_PNG
    fig.savefig(png)
    plt.close(fig)
    data = {"t0_monotonic_s": t0, "thresholds": {"lower": lower, "upper": upper},
            "fast_interval": fast_interval, "positions": per,
            "eda": dict(eda_all) if isinstance(eda_all, Mapping) else None,
            "publish_to_decision_ms": {"values": latency_ms.tolist(), **pct}}
    write_atomic(run.path / REPORT_JSON, json.dumps(data, indent=1) + "\n")
    log.info("report written: %s", png)
    return png
