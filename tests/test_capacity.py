"""The capacity check before the start (issue 19): a run that asks more of the disk or the
cores than was measured is told so before it starts, with both figures and the settings to
change, and starts anyway, or is refused (exit 2, nothing started) with ``--strict``.

The targets are throttled for real: a 16 MiB tmpfs for the space case, and for the bandwidth
case an ext4 file system on a loop device whose writes the run's blkio cgroup (v1
``blkio.throttle.write_bps_device``) limits to 8 MB/s. Both need root; the tests skip, saying
why, where the machine does not allow them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_helpers import assert_clean, assert_summary_schema, rt_eda, summary

from rt_eda.core.config import all_keys, load_config
from rt_eda.engine.capacity import check_capacity, describe, probe_disk
from rt_eda.shm import StackSpec, list_blocks

SMALL = ["--worker", "ImageWorker", "--no-viewer", "--interpreter", "manual"]
KEY = re.compile(r"(?<![\w.])((?:camera|ring|analysis|interpreter|writer|viewer|run)"
                 r"(?:\.[A-Za-z_]\w*)+)")
BLKIO = Path("/sys/fs/cgroup/blkio")
THROTTLE = 8_000_000  # bytes/s the slow disk takes


def _root_or_skip(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs."""
    _root_or_skip("mounting a tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def slow_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mount point, cgroup.procs): ext4 on a loop device, writes throttled to THROTTLE
    bytes/s for the processes of a blkio cgroup."""
    _root_or_skip("a loop device and a blkio cgroup")
    if not (BLKIO / "blkio.throttle.write_bps_device").exists() or not shutil.which("losetup"):
        pytest.skip("no cgroup v1 blkio throttling or no losetup here")
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(256 * 2**20)
    done = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot attach a loop device: {done.stderr.strip()}")
    loop = done.stdout.strip()
    mnt = tmp_path / "slow"
    mnt.mkdir()
    group = BLKIO / f"rt-eda-test-{os.getpid()}"
    try:
        subprocess.run(["mkfs.ext4", "-q", loop], check=True, capture_output=True)
        subprocess.run(["mount", loop, str(mnt)], check=True, capture_output=True)
        group.mkdir()
        st = os.stat(loop)
        (group / "blkio.throttle.write_bps_device").write_text(
            f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} {THROTTLE}\n")
        yield mnt, group / "cgroup.procs"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            group.rmdir()


def run_throttled(procs: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``rt-eda run ARGS`` in the throttled cgroup (every process it starts too)."""
    return subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "run", *args], cwd=cwd, capture_output=True,
        text=True, timeout=180, preexec_fn=lambda: procs.write_text(str(os.getpid())))


def warnings_before_start(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = next((i for i, x in enumerate(lines) if "acquisition started" in x), len(lines))
    return [x for x in lines[:start] if x.startswith("WARNING")]


def assert_keys_valid(text: str) -> None:
    valid = set(all_keys())
    named = KEY.findall(text)
    assert named, text
    assert set(named) <= valid, (set(named) - valid, text)


def test_the_probe_measures_a_throttled_disk_and_leaves_nothing(
        slow_disk: tuple[Path, Path]) -> None:
    mnt, procs = slow_disk
    code = ("import sys; from rt_eda.engine.capacity import probe_disk; "
            "p = probe_disk(sys.argv[1]); print(p.rate, p.bytes_written, p.seconds)")
    done = subprocess.run([sys.executable, "-c", code, str(mnt)], capture_output=True,
                          text=True, timeout=60,
                          preexec_fn=lambda: procs.write_text(str(os.getpid())))
    assert done.returncode == 0, done.stderr
    rate, written, seconds = (float(x) for x in done.stdout.split())
    assert written > 0 and 0.5 < seconds < 3.0, done.stdout
    assert rate < 1.5 * THROTTLE, f"{rate / 1e6:.1f} MB/s through an 8 MB/s throttle"
    assert sorted(p.name for p in mnt.iterdir()) == ["lost+found"]  # the file is gone
    free = probe_disk(mnt)  # outside the cgroup: the same disk, not throttled
    assert free.rate > 2 * rate


def test_a_disk_too_slow_is_said_before_the_start_with_figures(
        tmp_path: Path, slow_disk: tuple[Path, Path]) -> None:
    """1 MiB stacks every 50 ms: 21 MB/s to a disk that takes 8."""
    mnt, procs = slow_disk
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    args = [*SMALL, "--interval", "0.05", "--duration", "2", "--summary", str(out),
            "--set", "camera.synthetic.height=512",
            "--set", "camera.synthetic.width=512", "--save", str(mnt / "run")]
    proc = run_throttled(procs, *args, cwd=tmp_path)
    warned = [w for w in warnings_before_start(proc.stderr) if "disk:" in w]
    assert len(warned) == 1, proc.stderr
    line = warned[0]
    need, took = (float(x.replace(",", "")) for x in re.findall(r"([\d,.]+) MB/s", line)[:2])
    assert need == pytest.approx(2 * 512 * 512 * 2 / 0.05 / 1e6, rel=0.01), line
    assert took < 1.5 * THROTTLE / 1e6, line
    assert "interpreter.manual_interval = 0.05 s" in line and "written and fsync'd" in line
    assert_keys_valid(line)
    s = summary(out)
    assert_summary_schema(s)
    c = s["capacity"]
    assert c["verdict"] == "exceeds" and c["problems"][0] == line.removeprefix("WARNING: ")
    assert c["disk_bytes_per_s"] == pytest.approx(need * 1e6, rel=0.01)
    assert c["disk_write_bytes_per_s"] < c["disk_bytes_per_s"]
    assert c["save_target"] == str(mnt / "run")
    # It started anyway; the writer's buffered writes may or may not keep up with the
    # throttled disk (the page cache takes them first): either it did, or the loss is counted.
    assert proc.returncode in (0, 1), proc.stderr
    assert s["started"] and (s["frames_lost"] > 0) == (proc.returncode == 1), s
    assert "capacity (checked before the start): " in proc.stdout
    assert_clean(before)


def test_strict_refuses_a_disk_too_slow(tmp_path: Path, slow_disk: tuple[Path, Path]) -> None:
    mnt, procs = slow_disk
    before = {n for n, _ in list_blocks()}
    proc = run_throttled(
        procs, *SMALL, "--interval", "0.05", "--duration", "2", "--strict",
        "--set", "camera.synthetic.height=512",
        "--set", "camera.synthetic.width=512", "--save", str(mnt / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
    assert len(errors) == 1 and "run.strict: disk: the run saves" in errors[0], proc.stderr
    assert "acquisition started" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (mnt / "run").exists()  # refused before the run folder is made
    assert proc.stdout == ""
    assert_clean(before)


def test_too_little_space_is_said_before_the_start_and_then_happens(
        tmp_path: Path, small_tmpfs: Path) -> None:
    """256 KiB stacks every 20 ms for 4 s: 52 MB into 16 MiB. Warned, started, and the disk
    fills as said: frames lost, exit 1, the summary written elsewhere."""
    before = {n for n, _ in list_blocks()}
    out = tmp_path / "s.json"
    proc = rt_eda(*SMALL, "--interval", "0.02", "--duration", "4", "--summary", str(out),
                  "--set", "camera.synthetic.height=256", "--set", "camera.synthetic.width=256",
                  "--save", str(small_tmpfs / "run"), cwd=tmp_path)
    warned = [w for w in warnings_before_start(proc.stderr) if "disk space:" in w]
    assert len(warned) == 1, proc.stderr
    assert "52.4 MB of frames" in warned[0] and "16.8 MB free" in warned[0], warned[0]
    assert_keys_valid(warned[0])
    assert proc.returncode == 1, proc.stderr
    s = summary(out)
    c = s["capacity"]
    assert c["verdict"] == "exceeds" and c["run_bytes"] > c["disk_free_bytes"]
    assert c["disk_free_bytes"] <= 16 * 2**20
    assert s["frames_lost"] > 0 and s["frames_written"] < s["frames_acquired"], s
    assert_clean(before)


def test_strict_refuses_too_little_space(tmp_path: Path, small_tmpfs: Path) -> None:
    proc = rt_eda(*SMALL, "--interval", "0.02", "--duration", "4", "--strict",
                  "--set", "camera.synthetic.height=256", "--set", "camera.synthetic.width=256",
                  "--save", str(small_tmpfs / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
    assert len(errors) == 1 and "run.strict: disk space:" in errors[0], proc.stderr
    assert list(small_tmpfs.iterdir()) == []  # no run folder, no probe file


def test_strict_refuses_more_threads_than_cores(tmp_path: Path) -> None:
    n = len(os.sched_getaffinity(0))
    proc = rt_eda(*SMALL, "--interval", "0.05", "--duration", "1", "--strict",
                  "--threads-per-worker", str(n + 1), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("rt-eda:")]
    assert f"= 1 x {n + 1} = {n + 1} compute threads on {n} core" in line, line
    assert "acquisition started" not in proc.stderr


def test_a_run_that_fits_says_nothing_and_records_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    proc = rt_eda(*SMALL, "--interval", "0.05", "--duration", "1", "--strict",
                  "--summary", str(out),
                  "--set", "camera.synthetic.height=64", "--set", "camera.synthetic.width=64",
                  "--save", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "capacity" not in proc.stdout, proc.stderr
    c = summary(out)["capacity"]
    assert c["verdict"] == "fits" and c["problems"] == [] and c["notes"] == []
    assert c["stack_bytes"] == 2 * 64 * 64 * 2
    assert c["fastest_interval_s"] == 0.05 and c["stacks_per_s"] == pytest.approx(20)
    assert c["ring_bytes_per_s"] == pytest.approx(c["stack_bytes"] * 20)
    assert c["disk_bytes_per_s"] == c["ring_bytes_per_s"]
    # The probe stopped as soon as the disk had shown 4x what the run needs.
    assert 0 < c["disk_probe_bytes"] <= 8 * 2**20 and c["disk_probe_s"] < 1.0
    assert c["disk_write_bytes_per_s"] >= 4 * c["disk_bytes_per_s"]
    assert c["compute_threads"] == 1 and c["cores"] == len(os.sched_getaffinity(0))
    assert c["ring_seconds"] == pytest.approx(c["ring_slots"] * 0.05)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rt-eda-disk-probe")]


def test_free_run_rates_are_not_checked_but_the_cores_are(tmp_path: Path) -> None:
    config = load_config(None).with_overrides({
        "interpreter.kind": "manual", "interpreter.manual_interval": 0.0,
        "run.save": str(tmp_path / "run")})
    c = check_capacity(config, StackSpec(2, 1, 64, 64))
    assert c["verdict"] == "fits" and c["stacks_per_s"] == 0.0 and c["disk_probe_bytes"] == 0
    assert c["notes"] and "free-run" in c["notes"][0]
    assert_keys_valid(c["notes"][0])
    assert "free-run stacks" in describe(c)
