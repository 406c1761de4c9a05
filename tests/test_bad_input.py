"""Bad input, as a hostile user gives it: every class refused before anything starts (exit 2,
one line naming the flag or key, the path or value and why, no traceback, nothing started),
and outputs that fail after the run never cost the others (exit 1, every failure listed)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_helpers import (
    assert_clean,
    assert_counts_add_up,
    role_processes,
    rt_eda,
    start_rt_eda,
    summary,
    wait_for_role,
)

from rt_eda.shm import list_blocks

SMALL = ["--worker", "ImageWorker", "--no-viewer", "--set", "camera.synthetic.height=64",
         "--set", "camera.synthetic.width=64"]


def problem_lines(stderr: str) -> list[str]:
    """What the command said, without its INFO log lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("INFO")]


def assert_refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, one line that holds every word, no traceback, no role process."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = problem_lines(proc.stderr)
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert role_processes() == []
    return lines[0]


@contextlib.contextmanager
def read_only_mount(path: Path) -> Iterator[bool]:
    """A read-only tmpfs at ``path`` (True), or False where mounting is not allowed."""
    path.mkdir()
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        yield False
        return
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(path)], check=False)


# -- item 1: output paths -----------------------------------------------------------------

def test_unwritable_output_paths_are_refused_before_anything_starts(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    folder = tmp_path / "afolder"
    folder.mkdir()
    (folder / "profile.json").mkdir()  # a folder where the profile's file goes
    run = tmp_path / "run"
    cases: list[tuple[list[str], list[str]]] = [
        (["--save", str(run), "--summary", str(afile / "s.json")],
         ["--summary", str(afile / "s.json"), "is a file, not a folder"]),
        (["--summary", str(afile / "deeper" / "s.json")],
         ["--summary", str(afile), "is a file, not a folder"]),
        (["--save", str(run), "--profile", str(afile / "p")],
         ["--profile", str(afile / "p"), "is a file, not a folder"]),
        (["--save", str(afile / "run")], ["--save", str(afile), "is a file, not a folder"]),
        (["--save", str(run), "--summary", str(folder)],
         ["--summary", str(folder), "is a folder; expected a file name"]),
        (["--profile", str(afile)], ["--profile", str(afile), "expected a folder"]),
        (["--profile", str(folder)], ["--profile", str(folder / "profile.json"), "folder"]),
        (["--summary", "/dev/null"], ["--summary", "/dev/null", "device"]),
        (["--save", str(run), "--summary", "/proc/rt-eda-test/s.json"],
         ["--summary", "/proc/rt-eda-test/s.json", "cannot create files in /proc"]),
        (["--save", "/dev/null/run"], ["--save", "/dev/null", "not a folder"]),
        (["--save", str(run), "--summary", str(run)], ["--summary", "it is the run folder"]),
        (["--save", str(run), "--summary", str(run / "report.png")],
         ["--summary", "report.png would overwrite it"]),
    ]
    for args, words in cases:
        proc = rt_eda(*args, "--duration", "1", *SMALL, cwd=tmp_path, timeout=60)
        assert_refused(proc, *words)
        assert not run.exists(), args  # nothing was created for a run that never started
    with read_only_mount(tmp_path / "ro") as mounted:
        if mounted:
            ro = tmp_path / "ro"
            for args, flag in [(["--summary", str(ro / "s.json")], "--summary"),
                               (["--save", str(ro / "run")], "--save"),
                               (["--profile", str(ro / "prof")], "--profile")]:
                proc = rt_eda(*args, "--duration", "1", *SMALL, cwd=tmp_path, timeout=60)
                assert_refused(proc, flag, str(ro), "Read-only file system")
    assert_clean(before)
    if not mounted:
        pytest.skip("read-only members not tried: mounting a read-only tmpfs needs root")


def test_outputs_that_fail_after_the_run_do_not_cost_the_others(tmp_path: Path) -> None:
    """Sabotage three outputs while the run goes: each failure is one line and listed in
    the summary's errors (exit 1), and every other output is still written."""
    before = {n for n, _ in list_blocks()}
    run, out, prof = tmp_path / "run", tmp_path / "out", tmp_path / "prof"
    out.mkdir()
    proc = start_rt_eda("--save", str(run), "--summary", str(out / "s.json"), "--profile",
                        str(prof), "--duration", "4", "--interpreter", "manual",
                        "--interval", "0.05", *SMALL, cwd=tmp_path)
    try:
        wait_for_role("interp")
        shutil.rmtree(out)
        out.write_text("the summary's folder is a file now\n")
        prof.write_text("the profile's folder is a file now\n")
        (run / "report.png").mkdir()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    s = summary(run / "summary.json")  # the run folder's summary is written
    assert_counts_add_up(s)
    failures = [e for e in s["errors"] if "not written" in e]
    assert len(failures) == 3, s["errors"]
    assert any(e.startswith("run report in") for e in failures)
    assert any(e.startswith("profile in") for e in failures)
    assert any(e.startswith(f"--summary {out / 's.json'}") for e in failures)
    for line in failures:  # each logged as one line
        assert sum(line in x for x in err.splitlines() if x.startswith("ERROR")) == 1, line
    assert (run / "frames.csv").exists()
    assert s["frames_written"] == s["frames_acquired"] > 0
    assert_clean(before)


def test_a_run_folder_summary_that_fails_is_listed_in_the_summary_file(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    run, out, prof = tmp_path / "run", tmp_path / "s.json", tmp_path / "prof"
    proc = start_rt_eda("--save", str(run), "--summary", str(out), "--profile", str(prof),
                        "--duration", "3", "--interpreter", "manual", "--interval", "0.05",
                        *SMALL, cwd=tmp_path)
    try:
        wait_for_role("interp")
        (run / "summary.json").mkdir()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    s = summary(out)
    assert_counts_add_up(s)
    assert [e for e in s["errors"] if "not written" in e] == [
        e for e in s["errors"] if e.startswith(f"summary in {run}")], s["errors"]
    assert len(s["errors"]) == 1, s["errors"]
    assert (run / "report.png").is_file() and (run / "report.json").is_file()
    assert (prof / "profile.json").is_file() and (prof / "profile.txt").is_file()
    assert "Traceback" not in err
    assert_clean(before)


def test_engine_run_leaves_the_run_folder_finished(tmp_path: Path) -> None:
    """A Python user driving Engine gets the same run folder as the command line."""
    before = {n for n, _ in list_blocks()}
    code = textwrap.dedent(f"""
        import sys
        from rt_eda.core.config import load_config
        from rt_eda.engine import Engine
        cfg = load_config(None).with_overrides({{
            "analysis.worker": "ImageWorker", "viewer.enabled": False, "run.duration": 2.0,
            "camera.synthetic.height": 64, "camera.synthetic.width": 64,
            "interpreter.kind": "manual", "camera.interval": 0.05,
            "run.save": {str(tmp_path / "run")!r},
        }})
        sys.exit(Engine(cfg).run())
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    for name in ("summary.json", "report.png", "report.json", "frames.csv", "config.toml"):
        assert (run / name).is_file(), name
    s = json.loads((run / "summary.json").read_text())
    assert_counts_add_up(s)
    assert s["errors"] == [] and s["cut_short"] is False
    assert_clean(before)


# -- item 12: configuration inputs that cannot be read or decoded ----------------------------

def _config_inputs(d: Path) -> list[tuple[str, list[str]]]:
    """(--config PATH, words of the one line) for every member of the class."""
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00\x01 not text")
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "deep_objects.json").write_text('{"a":' * 990 + "1" + "}" * 990)
    (d / "loop.toml").symlink_to(d / "loop.toml")
    (d / "folder.toml").mkdir()
    os.mkfifo(d / "fifo.toml")
    (d / "empty.toml").write_bytes(b"")
    (d / "empty.json").write_bytes(b"")
    (d / "array.json").write_text("[1, 2]\n")
    (d / "null.json").write_text("null\n")
    (d / "dangling.toml").symlink_to(d / "nothing.toml")
    (d / "huge.toml").write_bytes(b"# " + b"x" * (17 * 2**20) + b"\n")
    return [
        ("binary.toml", ["binary.toml", "not UTF-8 text", "0xff"]),
        ("deep.toml", ["deep.toml", "too deeply"]),
        ("deep.json", ["deep.json", "too deeply"]),
        ("deep_objects.json", ["deep_objects.json", "too deeply"]),
        ("loop.toml", ["loop.toml", "symbolic link loop"]),
        ("folder.toml", ["folder.toml", "is a folder: it is not a file"]),
        ("fifo.toml", ["fifo.toml", "FIFO"]),
        ("/dev/zero", ["/dev/zero", "device"]),
        ("empty.toml", ["empty.toml", "empty (0 bytes)"]),
        ("empty.json", ["empty.json", "empty (0 bytes)"]),
        ("array.json", ["array.json", "JSON list, not an object"]),
        ("null.json", ["null.json", "JSON null, not an object"]),
        ("dangling.toml", ["dangling.toml", "nothing.toml", "does not exist"]),
        ("huge.toml", ["huge.toml", "17 MiB", "at most 16 MiB"]),
    ]


def test_configuration_files_that_cannot_be_read_exit_2_in_one_line(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    for name, words in _config_inputs(tmp_path):
        proc = rt_eda("--config", name, "--duration", "1", cwd=tmp_path, timeout=60)
        line = assert_refused(proc, *words)
        assert line.startswith(("rt-eda: configuration file", "rt-eda: settings file")), line
    # The same file access for `rt-eda workers --config`.
    proc = subprocess.run([sys.executable, "-m", "rt_eda.cli", "workers", "--config",
                           "binary.toml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert_refused(proc, "binary.toml", "not UTF-8 text")
    assert_clean(before)


def test_unreadable_configuration_file_exits_2(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000: no EACCES to provoke")
    before = {n for n, _ in list_blocks()}
    secret = tmp_path / "secret.toml"
    secret.write_text("[analysis]\nworkers = 1\n")
    secret.chmod(0)
    proc = rt_eda("--config", str(secret), "--duration", "1", cwd=tmp_path, timeout=60)
    assert_refused(proc, str(secret), "Permission denied")
    assert_clean(before)


def test_model_replay_and_mmconfig_paths_that_cannot_be_read_exit_2(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    d = tmp_path
    (d / "folder.keras").mkdir()
    os.mkfifo(d / "fifo.keras")
    (d / "loop.keras").symlink_to(d / "loop.keras")
    os.mkfifo(d / "fifo.tif")
    (d / "loop.tif").symlink_to(d / "loop.tif")
    (d / "folder.cfg").mkdir()
    os.mkfifo(d / "fifo.cfg")
    cases: list[tuple[list[str], list[str]]] = [
        (["--model", "folder.keras"], ["analysis.model", "folder.keras", "is a folder"]),
        (["--model", "fifo.keras"], ["analysis.model", "fifo.keras", "FIFO"]),
        (["--model", "loop.keras"], ["analysis.model", "loop.keras", "symbolic link loop"]),
        (["--source", "replay:fifo.tif"], ["camera.source", "fifo.tif", "FIFO", "recording"]),
        (["--source", "replay:/dev/null"], ["camera.source", "/dev/null", "device"]),
        (["--source", "replay:loop.tif"], ["camera.source", "loop.tif", "symbolic link loop"]),
        (["--source", "replay:gone.tif"], ["camera.source", "gone.tif", "does not exist"]),
        (["--source", "mmconfig:folder.cfg"], ["camera.source", "folder.cfg", "folder"]),
        (["--source", "mmconfig:fifo.cfg"], ["camera.source", "fifo.cfg", "FIFO"]),
        (["--set", "analysis.options={a=" + "[" * 3000 + "]" * 3000 + "}"],
         ["--set", "too deeply"]),
        (["--summary", "loop.keras"], ["run.summary", "symbolic link loop"]),
    ]
    for args, words in cases:
        proc = rt_eda(*args, "--duration", "1", *SMALL, cwd=tmp_path, timeout=60)
        assert_refused(proc, *words)
    # A command-line byte that is not UTF-8 (it reaches Python as a lone surrogate).
    proc = subprocess.run([sys.executable.encode(), b"-m", b"rt_eda.cli", b"run", b"--set",
                           b"camera.source=synthetic\xff", b"--duration", b"1"],
                          cwd=tmp_path, capture_output=True, timeout=60)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "not valid UTF-8" in err and "camera.source" in err
    assert_clean(before)


# -- item 3: sizes that cannot fit ------------------------------------------------------------

def _run_measured(args: list[str], cwd: Path, *, limit_as: int | None = None,
                  env: dict[str, str] | None = None) -> tuple[int, str, int, float]:
    """``rt-eda run ARGS``: (exit code, stderr, peak RSS in KiB of it and its roles, seconds)."""
    def preexec() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rt_eda.cli", "run", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec, env={**os.environ, **(env or {})})
    assert proc.stderr is not None
    try:
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        proc.stderr.close()
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss, time.monotonic() - t0


def test_sizes_that_cannot_fit_are_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    big = ["--set", "camera.synthetic.height=16384", "--set", "camera.synthetic.width=16384"]
    cases: list[tuple[list[str], list[str], int | None]] = [
        (big, ["ring.max_bytes", "5 slots", "1.0 GiB", "camera.synthetic.height"], None),
        ([*big, "--set", "camera.synthetic.z_slices=64", "--set", f"ring.max_bytes={2**50}"],
         ["not enough memory", "synthetic renderer", "available", "camera.synthetic.height"],
         None),
        (["--set", "ring.max_bytes=1048576"],
         ["ring.max_bytes", "1.0 MiB (1048576 bytes)", "5.0 MiB (5242880 bytes)"], None),
        (["--set", "ring.slots=500", "--set", "ring.max_bytes=100000000"],
         ["ring.slots", "500 slots", "ring.max_bytes"], None),
        (["--workers", "20", "--set", "camera.synthetic.height=8192",
          "--set", "camera.synthetic.width=8192"],
         ["ring.max_bytes", "24 slots", "analysis.workers"], None),
        (["--set", "camera.synthetic.height=4096", "--set", "camera.synthetic.width=4096"],
         ["ulimit -v", "synthetic renderer", "camera.synthetic.height"], 3 * 2**30),
    ]
    for args, words, limit_as in cases:
        code, err, peak_kib, seconds = _run_measured(
            [*args, "--worker", "ImageWorker", "--no-viewer", "--duration", "1"], tmp_path,
            limit_as=limit_as)
        assert code == 2, (args, err)
        assert "Traceback" not in err, err
        lines = problem_lines(err)  # one line per limit exceeded (memory, /dev/shm)
        assert 1 <= len(lines) <= 2 and all(x.startswith("rt-eda: ") for x in lines), lines
        for word in words:
            assert word in lines[0], (word, lines[0])
        assert peak_kib < 512 * 1024, (args, peak_kib)  # refused, not allocated
        assert seconds < 60, (args, seconds)
        assert role_processes() == []
    assert_clean(before)


def test_network_images_that_cannot_fit_the_output_ring_are_refused(tmp_path: Path) -> None:
    """A worker declaring 100000 x 100000 network images gets no 37 GiB-per-slot output ring
    (sparse or not): ring.max_bytes holds for the output ring too."""
    before = {n for n, _ in list_blocks()}
    (tmp_path / "huge_workers.py").write_text(textwrap.dedent('''
        from rt_eda.workers import Worker

        class HugeImages(Worker):
            """Declares 100000 x 100000 network images."""
            def network_image_shape(self):
                return (100000, 100000)
    '''))
    code, err, peak_kib, _ = _run_measured(
        ["--worker", "HugeImages", "--set", "analysis.worker_modules=['huge_workers']",
         "--save", str(tmp_path / "run"), "--duration", "2", *SMALL[2:]], tmp_path,
        env={"PYTHONPATH": str(tmp_path)})
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = problem_lines(err)
    assert len(lines) == 1, lines
    for word in ("ring.max_bytes", "100000x100000", "network images", "2 slots"):
        assert word in lines[0], (word, lines[0])
    assert peak_kib < 1024 * 1024
    assert not any(list_blocks_of_dead(before))
    assert_clean(before)


def list_blocks_of_dead(before: set[str]) -> list[str]:
    """Shared-memory blocks left by a process that has exited (not there before)."""
    return [n for n, pid in list_blocks() if n not in before and not Path(f"/proc/{pid}").exists()]
