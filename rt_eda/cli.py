"""The ``rt-eda`` command line.

``rt-eda run`` runs an acquisition (the embedded default when no file is given);
``rt-eda workers`` lists the selectable workers; ``rt-eda train-demo-model`` retrains the
bundled demo model. Exit codes: 0 clean, 1 a fault during the run (summary still written),
2 bad configuration or model (nothing started).

Ctrl-C (SIGINT) and SIGTERM are taken from the first line of this module on: one that comes
before the engine runs is handed to it (it stops before starting anything and writes its
summary), one that comes after it has finished is ignored (the outputs are being written).
Neither ever prints a traceback; ``--debug`` shows tracebacks of other errors.
"""

from __future__ import annotations

import signal
import sys
from pathlib import PurePath
from types import FrameType
from typing import Any


class _Interrupts:
    """The command's SIGINT/SIGTERM handler while no engine has its own: records the signal
    and passes it to the engine once there is one."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.engine: Any = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        reason = signal.Signals(signum).name
        self.reasons.append(reason)
        if self.engine is not None:
            self.engine.request_stop(reason)


_INTERRUPTS = _Interrupts()
# As early as the command can (before the imports), but only when this is the command
# (``rt-eda`` or ``python -m rt_eda.cli``), never on a plain import.
if __name__ == "__main__" or PurePath(sys.argv[0]).name == "rt-eda":
    signal.signal(signal.SIGINT, _INTERRUPTS)
    signal.signal(signal.SIGTERM, _INTERRUPTS)

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from rt_eda import __version__  # noqa: E402
from rt_eda.core.errors import ConfigError, ModelError, RtEdaError  # noqa: E402
from rt_eda.core.process import quiet_environment  # noqa: E402

if TYPE_CHECKING:
    from rt_eda.engine.summary import PercentileSummary, RunSummary

__all__ = ["main"]

log = logging.getLogger("rt_eda")


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run an acquisition (default: synthetic source, demo model)",
                       description="Run an event-driven acquisition. Flags override the file.")
    p.add_argument("--config", metavar="PATH",
                   help="TOML configuration (or an original plugin settings.json)")
    p.add_argument("--source", metavar="SPEC",
                   help="synthetic | mm-demo | mmconfig:PATH | replay:PATH")
    p.add_argument("--plan", metavar="FILE",
                   help="acquisition plan: a useq-schema MDASequence (YAML or JSON) with "
                        "stage positions, channels and z (camera.plan)")
    p.add_argument("--worker", metavar="NAME", help="worker class (see `rt-eda workers`)")
    p.add_argument("--cluster", metavar="SPEC",
                   help="analyse on Ray actors: ray (Ray on this machine, or cluster.address),"
                        " ray://HOST:PORT, ray:auto, ray:HOST:PORT; none: local workers "
                        "(docs/cluster.md)")
    p.add_argument("--model", metavar="PATH", help="Keras model (.keras or .h5)")
    p.add_argument("--actuator", action="append", metavar="NAME", dest="actuator",
                   help="what an event does besides the interval (repeatable; the default is "
                        "interval alone): roi, channel, stimulate or one of "
                        "actuation.actuator_modules (see `rt-eda actuators`)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes")
    p.add_argument("--threads-per-worker", type=int, metavar="T",
                   help="compute threads per worker process")
    p.add_argument("--interpreter", choices=["binary", "manual"])
    p.add_argument("--interval", type=float, metavar="S",
                   help="starting interval in s (with --interpreter manual: the interval held;"
                        " 0 = free-run)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--save", metavar="DIR", help="record every frame and decision to DIR")
    p.add_argument("--summary", metavar="PATH", help="write the run summary as JSON")
    p.add_argument("--viewer", dest="viewer", action="store_true", default=None,
                   help="show the live viewer")
    p.add_argument("--no-viewer", dest="viewer", action="store_false")
    p.add_argument("--verify", action="store_true", default=None,
                   help="stamp frames with their sequence number; workers count torn reads")
    p.add_argument("--profile", metavar="DIR", help="write per-role timing breakdowns to DIR")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any configuration key, e.g. --set camera.synthetic.seed=3")
    p.add_argument("--strict", action="store_true", default=None,
                   help="refuse (exit 2) a run that exceeds the disk or cores measured before "
                        "the start, instead of warning and starting anyway")
    p.add_argument("--debug", action="store_true", help="log more and show tracebacks")


def _parse_value(text: str) -> object:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ConfigError(f"--set value {shown!r} nests arrays or tables too deeply") from None


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    o: dict[str, object] = {}
    simple = {
        "source": "camera.source", "plan": "camera.plan",
        "worker": "analysis.worker", "model": "analysis.model",
        "workers": "analysis.workers", "threads_per_worker": "analysis.threads_per_worker",
        "interpreter": "interpreter.kind", "duration": "run.duration", "save": "run.save",
        "summary": "run.summary", "viewer": "viewer.enabled", "verify": "run.verify",
        "profile": "run.profile", "strict": "run.strict",
    }
    for attr, key in simple.items():
        value = getattr(args, attr)
        if value is not None:
            o[key] = value
    if args.interval is not None:
        o["camera.interval"] = args.interval
        if args.interpreter == "manual":
            o["interpreter.manual_interval"] = args.interval
    if args.debug:
        o["run.debug"] = True
    if args.actuator:
        o["actuation.actuators"] = ["interval", *args.actuator]
    if args.cluster is not None:
        from rt_eda.core.config import cluster_overrides

        o.update(cluster_overrides(args.cluster))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        o[key.strip()] = _parse_value(value.strip())
    return o


def _cmd_run(args: argparse.Namespace) -> int:
    from rt_eda.core.config import load_config_with_notes
    from rt_eda.engine import EXIT_BAD_INPUT, Engine

    try:
        config, notes = load_config_with_notes(args.config)
        for note in notes:
            log.info("settings.json: %s", note)
        config = config.with_overrides(_overrides(args))
    except ConfigError as exc:  # one line per problem (a file that cannot be read: one)
        print(f"rt-eda: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from rt_eda.terminal import status_display

    with status_display(bool(args.debug)) as display:  # a live display on a terminal
        engine = Engine(config, on_status=display.show)
        for reason in _INTERRUPTS.reasons:  # a Ctrl-C while the configuration was read
            engine.request_stop(reason)
        _INTERRUPTS.engine = engine
        code = engine.run()  # writes every output (summary, run folder, profile) itself
        _INTERRUPTS.engine = None  # from here on a late Ctrl-C is ignored
    if code == EXIT_BAD_INPUT:  # nothing started: the lines that say why, once
        _print_summary(None, engine.errors, code)
        return code
    _print_outputs(config, engine.outputs)
    _print_summary(engine.summary, engine.errors, code)
    return code


def _print_outputs(config: Any, outputs: Any) -> None:
    """The profile's text and where the run folder is (what the engine wrote)."""
    if outputs is None:
        return
    profile = outputs.paths.get("profile")
    if profile is not None:
        try:
            print(profile.read_text(), end="")
        except OSError as exc:
            log.error("profile %s not readable: %s", profile, exc)
    if config.run.save and "run_summary" in outputs.paths:
        report = outputs.paths.get("report")
        if report is not None:
            print(f"saved to {config.run.save} (report: {report})")
        elif any(s.startswith("report (no frames") for s in outputs.skipped):
            print(f"saved to {config.run.save} (no frames: the run ended before acquisition)")
        else:
            print(f"saved to {config.run.save} (no report)")


def _one_line(message: str) -> str:
    """A configuration error with a single problem, as one line (header: problem)."""
    lines = message.splitlines()
    if len(lines) == 2 and lines[0].endswith(": 1 problem"):
        return f"{lines[0].removesuffix(': 1 problem')}: {lines[1]}"
    return message


def _print_summary(s: RunSummary | None, errors: list[str], code: int) -> None:
    if not s:
        for e in errors:
            for line in _one_line(e).splitlines():
                print(f"rt-eda: {line}", file=sys.stderr)
        return
    lat = s["latency_ms"]
    moves = s["actuations"]
    print(
        f"acquired {s['stacks_published']} stacks ({s['frames_acquired']} frames) in "
        f"{s['acquisition_s']:.1f} s at {s['acquired_fps']:.1f} stacks/s "
        f"(jitter {s['camera_jitter_ms']:.2f} ms); "
        f"analysed {s['stacks_analysed']}, skipped {s['stacks_skipped']}, failed "
        f"{s['stacks_failed']} "
        f"({s['workers']} worker(s) x {s['threads_per_worker']} thread(s), {s['worker']})\n"
        f"decisions {s['decisions']}, interval switches {s['interval_switches']}, "
        f"dropped out of order {s['results_dropped_out_of_order']}, "
        + (f"non-finite {s['nonfinite_decisions']}, " if s["nonfinite_decisions"] else "")
        + f"torn reads "
        f"{s['torn_reads']}, worker restarts {s['worker_restarts']}, frames lost "
        f"{s['frames_lost']}\n"
        f"latency ms (p50/p99/max): publish->claim "
        f"{_lat(lat['publish_to_claim'])}, publish->decision "
        f"{_lat(lat['publish_to_decision'])}, decision->actuation "
        f"{_lat(lat['decision_to_actuation'])}"
        + (f" (speed-up x{moves['speed_up']} {_lat(lat['decision_to_actuation_speed_up'])}, "
           f"slow-down x{moves['slow_down']} {_lat(lat['decision_to_actuation_slow_down'])})"
           if moves["speed_up"] or moves["slow_down"] else "")
    )
    for line in _action_lines(s):
        print(line)
    if s["capacity"]["verdict"] == "exceeds":
        from rt_eda.engine.capacity import describe

        print(f"capacity (checked before the start): {describe(s['capacity'])}")
    if s["viewer_exits"]:
        print(f"viewer died {s['viewer_exits']} time(s) (acquisition unaffected); last: "
              f"{s['viewer_last_error']}")
    for e in errors:
        print(f"rt-eda: error: {e}", file=sys.stderr)
    if code:
        print(f"rt-eda: exit code {code}", file=sys.stderr)


def _action_lines(s: RunSummary) -> list[str]:
    """The actuators besides ``interval`` and the locations against ground truth, as words
    (nothing for a run with the interval alone and no ground truth of locations)."""
    lines = []
    acts = [f"{k} x{a['count']} (applied {a['applied']}"
            + (f", failed {a['failed']}" if a["failed"] else "")
            + (f"; decision->actuation p50/p99 {a['decision_to_actuation_ms']['p50']:.1f}/"
               f"{a['decision_to_actuation_ms']['p99']:.1f} ms"
               if a["decision_to_actuation_ms"]["count"] else "") + ")"
            for k, a in s.get("actions", {}).items() if k != "interval"]
    if acts:
        lines.append("actions: " + ", ".join(acts))
    loc = s.get("locations")
    if loc is not None and (loc["located"] or loc["false_regions"] or loc["missed_events"]):
        parts = [f"locations: error p50/p99 {loc['error_px']['p50']:.1f}/"
                 f"{loc['error_px']['p99']:.1f} px over {loc['located']} events found "
                 f"({loc['missed_events']} missed, {loc['false_regions']} false regions)"]
        if loc["roi_coverage"] is not None:
            parts.append(f"ROI held {loc['roi_coverage']:.1%} of event pixels "
                         f"({loc['roi_stacks']} stacks)")
        if loc["mask_precision"] is not None and loc["mask_recall"] is not None:
            parts.append(f"stimulation masks precision {loc['mask_precision']:.2f}, recall "
                         f"{loc['mask_recall']:.2f} ({loc['masks_scored']} masks)")
        lines.append("; ".join(parts))
    return lines


def _lat(d: PercentileSummary) -> str:
    return f"{d['p50']:.2f}/{d['p99']:.2f}/{d['max']:.2f}"


def _cmd_bench(args: argparse.Namespace) -> int:
    from rt_eda.core.config import load_config_with_notes
    from rt_eda.tuning import (
        GridPoint,
        default_grid,
        format_table,
        parse_grid,
        recommend,
        run_grid,
    )

    config, _ = load_config_with_notes(args.config)
    overrides: dict[str, object] = {}
    if args.model:
        overrides["analysis.model"] = args.model
    if args.worker:
        overrides["analysis.worker"] = args.worker
    if args.source:
        overrides["camera.source"] = args.source
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = _parse_value(value.strip())
    config = config.with_overrides(overrides)
    grid = parse_grid(args.grid) if args.grid else default_grid()
    print(f"rt-eda bench: {config.analysis.worker} on {config.camera.source}, "
          f"{len(grid)} runs of {args.duration:g} s at interval {args.interval:g} s "
          f"({os.cpu_count()} cores)", flush=True)

    def show(p: GridPoint) -> None:
        print(f"  {p.workers}x{p.threads}: {p.analysed_per_s:.1f} analysed/s, "
              f"publish->decision p99 {p.p2d_p99_ms:.1f} ms", flush=True)

    points = run_grid(config, grid, args.duration, args.interval, on_point=show)
    best = recommend(points)
    print(format_table(points, best))
    print(f"recommended: {best.flags()}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rt_eda.core.errors import WriterError
    from rt_eda.storage.inspect import describe

    try:
        print(describe(args.dir))
    except (WriterError, OSError) as exc:
        print(f"rt-eda inspect: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from rt_eda.roles.viewer import view

    return view(pid=args.pid, controls=not args.read_only)


def _cmd_workers(args: argparse.Namespace) -> int:
    from rt_eda.core.config import load_config
    from rt_eda.workers._discovery import describe_workers

    modules: Sequence[str] = args.module or ()
    if args.config:
        modules = (*load_config(args.config).analysis.worker_modules, *modules)
    for name, doc, needs_model in describe_workers(modules):
        print(f"{name:<24} {'(model) ' if needs_model else ''}{doc}")
    return 0


def _cmd_actuators(args: argparse.Namespace) -> int:
    from rt_eda.actuators import discover_actuators
    from rt_eda.core.config import load_config

    modules: Sequence[str] = args.module or ()
    if args.config:
        modules = (*load_config(args.config).actuation.actuator_modules, *modules)
    for name, cls in sorted(discover_actuators(modules).items()):
        where = "" if cls.__module__.startswith("rt_eda.") else f"  [{cls.__module__}]"
        print(f"{name:<12} {cls.describe()}{where}")
        for key, text in cls.options_help.items():
            print(f"{'':<14}{key}: {text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rt-eda`` command."""
    parser = argparse.ArgumentParser(prog="rt-eda", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"rt-eda {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    w = sub.add_parser("workers", help="list the selectable workers")
    w.add_argument("--config", metavar="PATH", help="also list workers of its worker_modules")
    w.add_argument("--module", action="append", metavar="MODULE",
                   help="also list the workers of this module")
    act = sub.add_parser("actuators", help="list the selectable actuators and their options")
    act.add_argument("--config", metavar="PATH",
                     help="also list the actuators of its actuation.actuator_modules")
    act.add_argument("--module", action="append", metavar="MODULE",
                     help="also list the actuators of this module")
    i = sub.add_parser("inspect", help="print what a saved run holds")
    i.add_argument("dir", metavar="DIR")
    v = sub.add_parser("view", help="attach the live viewer to a running rt-eda run")
    v.add_argument("--pid", type=int, help="the engine's pid (default: the newest run)")
    v.add_argument("--read-only", action="store_true", help="no controls")
    b = sub.add_parser("bench", help="measure inference backend x workers x threads on this "
                       "machine with your configuration and recommend the best")
    b.add_argument("--config", metavar="PATH")
    b.add_argument("--model", metavar="PATH")
    b.add_argument("--worker", metavar="NAME")
    b.add_argument("--source", metavar="SPEC")
    b.add_argument("--grid", metavar="[BACKEND:]WxT,...", help="e.g. 1x2,2x1,onnx:2x2 "
                   "(default: every split of the cores, each with every backend installed)")
    b.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="seconds per grid point (default 10)")
    b.add_argument("--interval", type=float, default=0.01, metavar="S",
                   help="camera interval, faster than the analysis (default 0.01)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t = sub.add_parser("train-demo-model", help="retrain the bundled demo model",
                       add_help=False)
    t.add_argument("rest", nargs=argparse.REMAINDER)
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["train-demo-model"]:  # every option is the trainer's (REMAINDER would
        args = argparse.Namespace(command=raw[0], rest=raw[1:])  # refuse a leading --option)
    else:
        args = parser.parse_args(raw)
    debug = bool(getattr(args, "debug", False))
    quiet_environment(debug)  # before anything imports a library; every child inherits it
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(processName)s %(name)s %(levelname)s: "
                               "%(message)s" if debug else "%(levelname)s: %(message)s")
    try:
        if args.command == "run":
            return _run_quietly(args, debug)
        # Other commands: Ctrl-C interrupts them at once (and quietly, see below).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if _INTERRUPTS.reasons:
            return 130
        if args.command == "workers":
            return _cmd_workers(args)
        if args.command == "actuators":
            return _cmd_actuators(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "inspect":
            return _cmd_inspect(args)
        if args.command == "view":
            return _cmd_view(args)
        if args.command == "train-demo-model":
            from rt_eda.training.demo_model import main as train_main

            result: int = train_main(args.rest)
            return result
    except (ConfigError, ModelError) as exc:
        if debug:
            raise
        print(f"rt-eda: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        return 130
    except RtEdaError as exc:  # a fault outside a run's own handling: one line, exit 1
        if debug:
            raise
        print(f"rt-eda: error: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


def _run_quietly(args: argparse.Namespace, debug: bool) -> int:
    """``rt-eda run`` with SIGINT/SIGTERM taken by :class:`_Interrupts` (and the engine)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, _INTERRUPTS)
    try:
        return _cmd_run(args)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
