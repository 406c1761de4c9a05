"""Do the interval switches change with the backend or the precision? A recorded run replayed.

    python bench/replay_decisions.py WORKDIR [--duration S] [--model PATH]

1. Records a run of the default configuration (synthetic 2x512x512, the demo model, the binary
   interpreter, one worker) with ``--save``.
2. Replays it (``--source replay:``, at its recorded timing) once per configuration: the call
   (twice: how far two identical replays agree is the comparison's own noise), ONNX Runtime,
   OpenVINO, and both in int8 (calibrated on a recording of another synthetic seed, never on
   the replayed one).
3. Compares each replay's ``intervals.csv`` rows (interval, reason, the stack that triggered
   the switch) and its decisions per stack with the first call replay's.

Prints one JSON line per configuration and a summary table; writes ``replay_decisions.json``
into WORKDIR.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS: dict[str, list[str]] = {
    "call": ["analysis.options.inference=call"],
    "call (again)": ["analysis.options.inference=call"],
    "onnx": ["analysis.options.inference=onnx"],
    "openvino": ["analysis.options.inference=openvino"],
    "onnx/int8": ["analysis.options.inference=onnx", "analysis.options.precision=int8"],
    "openvino/int8": ["analysis.options.inference=openvino",
                      "analysis.options.precision=int8"],
}


def rt_eda(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "rt_eda.cli", "run", *args],
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=900)
    if proc.returncode != 0:
        sys.exit(f"rt-eda run {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def calibration_recording(path: Path) -> Path:
    """32 stacks of synthetic seed 7, 2 s apart (events in it), as an OME-TIFF."""
    import tifffile

    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    source = SyntheticSource(SyntheticSettings(height=512, width=512, seed=7))
    spec = source.open()
    data = np.empty((32, *spec.shape), spec.np_dtype)
    for i in range(len(data)):
        source.render_stack(2.0 * i, data[i])
    source.close()
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCZYX"})
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    model = ["--model", args.model] if args.model else []
    recorded = work / "recorded"
    if not recorded.exists():
        rt_eda("--duration", str(args.duration), "--no-viewer", "--save", str(recorded),
               *model, env=env)
    calibration = work / "seed7.ome.tif"
    if not calibration.exists():
        calibration_recording(calibration)
    results: dict[str, Any] = {}
    base_switches: list[tuple[str, str, str]] | None = None
    base_decisions: dict[str, float] | None = None
    for name, sets in CONFIGS.items():
        out = work / ("replay-" + name.replace("/", "-").replace(" ", "").replace("(", "")
                      .replace(")", ""))
        if not out.exists():
            extra = [f"analysis.options.calibration={calibration}"] if "int8" in name else []
            flags = [a for s in [*sets, *extra] for a in ("--set", s)]
            rt_eda("--source", f"replay:{recorded}", "--duration", str(args.duration + 5),
                   "--no-viewer", "--save", str(out), *model, *flags, env=env)
        switches = [(r["interval_s"], r["reason"], r["after_seq"])
                    for r in rows(out / "intervals.csv")]
        decisions = {r["seq"]: float(r["decision"]) for r in rows(out / "decisions.csv")}
        if base_switches is None:
            base_switches, base_decisions = switches, decisions
        assert base_decisions is not None
        common = sorted(set(decisions) & set(base_decisions), key=int)
        diffs = [abs(decisions[s] - base_decisions[s]) for s in common]
        results[name] = {
            "interval_switches": len(switches),
            "switch_rows_identical": switches == base_switches,
            "stacks_decided": len(decisions), "stacks_in_common": len(common),
            "max_decision_diff": max(diffs) if diffs else None,
        }
        print(json.dumps({name: results[name]}), flush=True)
    (work / "replay_decisions.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'configuration':>15} {'switches':>8} {'rows identical':>15} {'decided':>8} "
          f"{'in common':>9} {'max |decision diff|':>20}")
    for name, r in results.items():
        print(f"{name:>15} {r['interval_switches']:>8} {r['switch_rows_identical']!s:>15} "
              f"{r['stacks_decided']:>8} {r['stacks_in_common']:>9} "
              f"{r['max_decision_diff'] if r['max_decision_diff'] is not None else '-':>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
