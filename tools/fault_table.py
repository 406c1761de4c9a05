"""Inject each fault into a real `rt-eda run --save` and print what the engine did and what
was lost, as a Markdown table (the figures of RELIABILITY.md).

    python tools/fault_table.py

Each scenario is one run on the synthetic source (2 x 64 x 64, 100 stacks/s, ImageWorker);
runs take ~10 s each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

BASE = ["--worker", "ImageWorker", "--interpreter", "manual", "--interval", "0.01",
        "--no-viewer", "--set", "camera.synthetic.height=64",
        "--set", "camera.synthetic.width=64"]


def roles() -> dict[str, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("rt-eda-"):
                found[comm] = int(entry.name)
    return found


def wait_role(name: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = roles().get(name)
        if pid:
            return pid
        time.sleep(0.1)
    raise TimeoutError(name)


def kill_role(name: str, sig: int = signal.SIGKILL) -> Callable[[subprocess.Popen[str]], None]:
    def act(proc: subprocess.Popen[str]) -> None:
        wait_role("rt-eda-interp")
        pid = wait_role(name)
        time.sleep(4.0)  # acquiring
        os.kill(pid, sig)
        time.sleep(3.0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    return act


def stop_then_kill_writer(proc: subprocess.Popen[str]) -> None:
    wait_role("rt-eda-interp")
    pid = wait_role("rt-eda-writer")
    time.sleep(4.0)  # acquiring
    os.kill(pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)


def signal_engine(sig: int, after: str = "rt-eda-interp", delay: float = 4.0
                  ) -> Callable[[subprocess.Popen[str]], None]:
    def act(proc: subprocess.Popen[str]) -> None:
        wait_role(after)
        time.sleep(delay)
        proc.send_signal(sig)
    return act


def run(label: str, extra: list[str], act: Callable[[subprocess.Popen[str]], None],
        tmp: Path, env: dict[str, str] | None = None) -> str:
    folder, out = tmp / label.replace(" ", "_"), tmp / f"{label.replace(' ', '_')}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rt_eda.cli", "run", *BASE, *extra, "--save", str(folder),
         "--summary", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, cwd=tmp)
    t0 = time.monotonic()
    try:
        act(proc)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    took = time.monotonic() - t0
    time.sleep(1.0)
    left = len(roles())
    shm = sum(1 for p in Path("/dev/shm").iterdir() if p.name.startswith("rt_eda_")
              and not Path(f"/proc/{p.name.split('_')[2]}").exists())
    if not out.exists():
        return f"| {label} | {proc.returncode} | no summary | | | | {left} / {shm} |"
    s = json.loads(out.read_text())
    did = s["stop_reason"] + (f"; restarts {s['worker_restarts']}, claims recovered "
                              f"{s['claims_recovered']}" if s["worker_restarts"] else "")
    if s.get("frames_salvaged"):
        did += f"; {s['frames_salvaged']} frames salvaged"
    return (f"| {label} | {proc.returncode} | {did} | {s['frames_acquired']} | "
            f"{s['frames_written']} | {s['frames_lost']} | {took:.1f} s | {left} / {shm} |")


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "faulty.py").write_text(textwrap.dedent("""
            import numpy as np
            from rt_eda.workers import Worker

            class Raises(Worker):
                '''Raises on every real stack.'''
                def extract_decision_parameter(self, output):
                    if output.size and output.flat[0] != 0:
                        raise RuntimeError("hook exploded")
                    return 0.0
        """))
        env = {"PYTHONPATH": str(tmp)}
        rows = [
            run("worker SIGKILL", [], kill_role("rt-eda-worker-1"), tmp),
            run("worker hook raises", ["--worker", "Raises", "--set",
                "analysis.worker_modules=['faulty']", "--duration", "30"],
                lambda p: None, tmp, env),
            run("interpreter SIGKILL", [], kill_role("rt-eda-interp"), tmp),
            run("camera SIGKILL", [], kill_role("rt-eda-camera"), tmp),
            run("writer SIGSTOP+SIGKILL", [], stop_then_kill_writer, tmp),
            run("SIGINT while running", [], signal_engine(signal.SIGINT), tmp),
            run("SIGTERM while running", [], signal_engine(signal.SIGTERM), tmp),
            run("SIGINT during warm-up", ["--worker", "DemoModelWorker"],
                signal_engine(signal.SIGINT, "rt-eda-worker-1", 0.5), tmp),
        ]
    print("| fault | exit | what the engine did | frames acquired | frames written | "
          "frames lost | until exit | processes / segments left |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
