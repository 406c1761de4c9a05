"""What a person reads while ``rt-eda run`` runs (issue 19).

On a terminal (a pseudo-terminal of 160x40 here, as a person's window): log lines above one
live display with a progress bar, no line from a third-party library, one line per interval
change; the display's last state is the final status. Without a terminal: plain log lines and
the status as one line every 10 s. And the live status is built from the statistics the summary
is built from: its last values are the summary's figures, and the decision latency never reads
0 once decisions are made.
"""

from __future__ import annotations

import fcntl
import math
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyte
import pytest
from engine_helpers import assert_clean, assert_counts_add_up, rt_eda, summary

from rt_eda.core.config import load_config
from rt_eda.engine import EXIT_OK, Engine
from rt_eda.engine.status import Status
from rt_eda.shm import list_blocks

SMALL = ["--no-viewer", "--worker", "ImageWorker", "--interpreter", "manual",
         "--interval", "0.02", "--set", "camera.synthetic.height=64",
         "--set", "camera.synthetic.width=64"]
#: Start-up chatter of the libraries rt-eda uses, as each prints it (TensorFlow's absl C++
#: logging, oneDNN, CPU features; numba; Qt; pymmcore-plus' own log format).
THIRD_PARTY = re.compile(
    r"absl::InitializeLog|^[IWE]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]|oneDNN|cpu_feature_guard"
    r"|To enable the following instructions|NumbaWarning|qt\.qpa|pymmcore[-_]plus"
    r"|Traceback", re.MULTILINE)


def run_on_a_terminal(*args: str, cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """``rt-eda run ARGS`` with stdin, stdout and stderr on one 160x40 pseudo-terminal; its
    exit code and what a person sees there at the end: every line scrolled up and the screen,
    as a terminal emulator (pyte) draws what it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "rt_eda.cli", "run", *args], cwd=cwd,
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    screen = pyte.HistoryScreen(160, 40, history=5000)
    stream = pyte.ByteStream(screen)
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process closed the terminal
                break
            if not data:
                break
            stream.feed(data)
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = [*screen.history.top, *(screen.buffer[y] for y in range(screen.lines))]
    lines = ["".join(row[x].data for x in range(screen.columns)).rstrip() for row in rows]
    while lines and not lines[-1]:
        lines.pop()
    return proc.returncode, "\n".join(lines)


def test_a_default_run_on_a_terminal(tmp_path: Path) -> None:
    """The issue's 'done when': the default run (the demo model, the binary interpreter) on a
    terminal shows no line from a third-party library, one live display with a progress bar
    and one log line per interval change."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    code, text = run_on_a_terminal("--duration", "12", "--no-viewer", "--summary", str(out),
                                   cwd=tmp_path)
    assert code == 0, text
    s = summary(out)
    assert_counts_add_up(s)
    started = text.index("acquisition started")
    third_party = THIRD_PARTY.findall(text)
    assert not third_party, text
    assert "{" not in text, text  # no Python repr (the source's statistics are words)
    # One line per interval change: the camera's, as it applies it, with the cause.
    changes = re.findall(r"camera: interval ([\d.]+) s -> ([\d.]+) s \(decision ", text)
    assert s["interval_switches"] - 1 <= len(changes) <= s["interval_switches"], text
    assert s["interval_switches"] >= 1, s
    assert "interval -> " not in text and "(start: slow interval" not in text, text
    # The live display: a progress bar with the time left, redrawn; its last state the end.
    # ... one live display, left at its final state: one progress bar, one row of rates.
    assert text.count("━") >= 50 and len(re.findall(r"^━+ ", text, re.MULTILINE)) == 1, text
    assert len(re.findall(r"^acquired +[\d.]+/s \(", text, re.MULTILINE)) == 1, text
    assert text.count("finished") == 1 and text.index("━") > started, text
    assert re.search(r"of 12 s +finished", text), text
    assert "acquired " in text and "latency p50 " in text and "frames lost 0" in text
    summary_line = re.search(r"^acquired \d+ stacks \(\d+ frames\)", text, re.MULTILINE)
    assert summary_line and summary_line.start() > text.index("finished"), text
    assert_clean(before)


def test_the_live_display_shows_the_figures_on_a_small_run(tmp_path: Path) -> None:
    """Rates, interval and state, latency, jitter and frames lost; the final display equals
    the summary printed under it."""
    out = tmp_path / "s.json"
    code, text = run_on_a_terminal(*SMALL, "--duration", "4", "--summary", str(out),
                                   cwd=tmp_path)
    assert code == 0, text
    s = summary(out)
    assert "interval 0.02 s manual" in text, text
    jitters = [float(m) for m in re.findall(r"camera jitter ([\d.]+) ms", text)]
    assert jitters and all(0 <= j < 1000 for j in jitters), text
    final = text[text.rindex("of 4 s"):]
    lat = s["latency_ms"]["publish_to_decision"]
    assert f"latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms" in final, final
    assert f"acquired {s['acquired_fps']:6.1f}/s ({s['stacks_published']} stacks)" in final
    assert f"camera jitter {s['camera_jitter_ms']:.2f} ms" in final, final
    assert f"decisions {s['decisions']} (switches {s['interval_switches']})" in final
    assert re.search(r"stacks/s \(jitter [\d.]+ ms\); analysed", text), text  # the summary


def test_without_a_terminal_the_status_is_a_line_every_10_s(tmp_path: Path) -> None:
    proc = rt_eda(*SMALL, "--duration", "11", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("INFO: ") and "of 11 s:" in x]
    assert len(lines) == 1, proc.stderr
    assert re.match(r"INFO: 1\d s of 11 s: acquired \d+ stacks \([\d.]+/s\), analysed \d+ "
                    r"\([\d.]+/s\), skipped \d+; interval 0.02 s manual; decision latency "
                    r"p50 [\d.]+ ms, p99 [\d.]+ ms; camera jitter [\d.]+ ms; frames lost 0; "
                    r"workers 1$", lines[0]), lines[0]
    assert "\x1b" not in proc.stderr + proc.stdout and "━" not in proc.stderr


def test_the_last_status_is_the_summary(tmp_path: Path) -> None:
    """The status is built from the statistics the summary is built from: after every role
    has stopped, the final status holds the summary's counts, latency, jitter and rates;
    while the run goes, a decision latency is shown as soon as there are decisions (never
    0.00 between two snapshots, as the old status line did)."""
    config = load_config(None).with_overrides({
        "analysis.worker": "ImageWorker", "interpreter.kind": "manual",
        "camera.interval": 0.02, "interpreter.manual_interval": 0.02, "run.duration": 3.0,
        "viewer.enabled": False, "camera.synthetic.height": 64,
        "camera.synthetic.width": 64})
    statuses: list[Status] = []
    engine = Engine(config, on_status=statuses.append)
    assert engine.run() == EXIT_OK, engine.errors
    s = engine.summary
    assert s is not None
    assert [st.final for st in statuses].count(True) == 1 and statuses[-1].final
    live, last = statuses[:-1], statuses[-1]
    assert len(live) >= 4
    for st in live:
        if st.decisions:
            assert st.p2d_p50_ms > 0 and st.p2d_p99_ms >= st.p2d_p50_ms, st
        else:
            assert math.isnan(st.p2d_p50_ms), st
    assert any(st.decisions for st in live)
    assert [st.published for st in statuses] == sorted(st.published for st in statuses)
    lat = s["latency_ms"]["publish_to_decision"]
    assert (last.published, last.analysed, last.skipped, last.failed) == (
        s["stacks_published"], s["stacks_analysed"], s["stacks_skipped"], s["stacks_failed"])
    assert (last.decisions, last.interval_switches) == (s["decisions"],
                                                        s["interval_switches"])
    assert (last.p2d_p50_ms, last.p2d_p99_ms) == (lat["p50"], lat["p99"])
    assert last.jitter_ms == s["camera_jitter_ms"]
    assert (last.frames_acquired, last.frames_lost) == (s["frames_acquired"],
                                                        s["frames_lost"])
    assert last.acquired_per_s == s["acquired_fps"]
    assert last.analysed_per_s == pytest.approx(s["analysed_per_s"])
    assert last.interval_s == s["interval_changes"][-1]["interval_s"] == 0.02
    assert last.duration_s == 3.0 and last.left_s == pytest.approx(0.0, abs=0.1)
    assert last.workers == 1 and last.restarts == 0
