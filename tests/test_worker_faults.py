"""Faults of analysis, as a user meets them through ``rt-eda run`` (model-free workers, so no
TensorFlow): hooks that raise, network images that break their declared shape, worker modules
that raise at import. Every run's counts add up; nothing is left behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from engine_helpers import assert_clean, assert_counts_add_up, role_processes, rt_eda, summary

from rt_eda.core.runfolder import open_run
from rt_eda.shm import list_blocks

SMALL = ["--no-viewer", "--set", "camera.synthetic.height=64", "--set",
         "camera.synthetic.width=64"]
FAST = ["--interpreter", "manual", "--interval", "0.02"]


def problem_lines(stderr: str) -> list[str]:
    """What the command said, without its INFO log lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("INFO")]


def module(tmp_path: Path, name: str, text: str) -> dict[str, str]:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    return {"PYTHONPATH": str(tmp_path)}


def run_worker(tmp_path: Path, mod: str, worker: str, *args: str,
               env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "s.json"
    proc = rt_eda("--worker", worker, "--set", f"analysis.worker_modules=['{mod}']",
                  "--summary", str(out), *FAST, *SMALL, *args, cwd=tmp_path, env=env,
                  timeout=240)
    return proc, out


# -- hooks that raise: the stack counts as failed, never as analysed -------------------------
RAISING = """
    import os
    import numpy as np
    from rt_eda.workers import Worker

    MARK = os.path.join(os.path.dirname(__file__), "raised-once")

    def explode(kind):
        if kind == "ZeroDivisionError":
            return 1 / 0
        if kind == "KeyError":
            raise KeyError("no such key")
        raise RuntimeError("hook exploded\\nsecond line")

    class Raising(Worker):
        '''Raises in one hook, on its 3rd call; once per run (FAIL_ALWAYS: every time).'''
        def setup(self, spec):
            super().setup(spec)
            self.calls = 0
        def maybe(self, hook):
            if hook != os.environ["FAIL_HOOK"]:
                return
            self.calls += 1   # the warm-up is call 1
            if self.calls != 3:
                return
            if not os.environ.get("FAIL_ALWAYS"):
                if os.path.exists(MARK):
                    return
                open(MARK, "w").close()
            explode(os.environ["FAIL_KIND"])
        def prepare_images(self, stack):
            self.maybe("prepare_images")
            return super().prepare_images(stack)
        def run_model(self, data):
            self.maybe("run_model")
            return data["pixels"]
        def extract_decision_parameter(self, output):
            self.maybe("extract_decision_parameter")
            return 0.1
        def post_process_output(self, output, data):
            self.maybe("post_process_output")
            return None
"""


@pytest.mark.parametrize(("hook", "kind"), [
    ("prepare_images", "RuntimeError"),
    ("run_model", "ZeroDivisionError"),
    ("extract_decision_parameter", "KeyError"),
    ("post_process_output", "ZeroDivisionError"),
])
def test_a_hook_that_raises_fails_its_stack_and_the_worker_is_restarted(
        tmp_path: Path, hook: str, kind: str) -> None:
    before = {n for n, _ in list_blocks()}
    env = module(tmp_path, "raising_workers", RAISING)
    env.update(FAIL_HOOK=hook, FAIL_KIND=kind)
    proc, out = run_worker(tmp_path, "raising_workers", "Raising", "--duration", "8", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # one line for the failure, naming the exception (the engine's; the child says nothing)
    failed = [line for line in problem_lines(proc.stderr) if f"{kind}" in line
              and "worker 1 failed" in line]
    assert len(failed) == 1, proc.stderr
    s = summary(out)
    assert s["stacks_failed"] == 1 and s["worker_restarts"] == 1
    assert s["stacks_analysed"] > 10
    assert_counts_add_up(s)
    assert_clean(before)


def test_a_hook_that_always_raises_ends_the_run_with_every_failure_counted(
        tmp_path: Path) -> None:
    before = {n for n, _ in list_blocks()}
    env = module(tmp_path, "raising_workers", RAISING)
    env.update(FAIL_HOOK="run_model", FAIL_KIND="RuntimeError", FAIL_ALWAYS="1")
    proc, out = run_worker(tmp_path, "raising_workers", "Raising", "--duration", "60",
                           "--save", str(tmp_path / "run"), env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "giving up" in proc.stderr and "RuntimeError: hook exploded second line" in \
        proc.stderr
    s = summary(out)
    # 4 processes (3 restarts), each analysed one stack and failed on the next
    assert s["worker_restarts"] == 3 and s["stacks_failed"] == 4
    assert s["stacks_analysed"] == 4 == s["decisions"]
    assert_counts_add_up(s)
    assert s["frames_written"] == s["frames_acquired"] and s["frames_lost"] == 0
    assert_clean(before)


# -- network images that break the declared shape ----------------------------------------------
IMAGES = """
    import os
    import numpy as np
    from rt_eda.workers import Worker

    def bad_image(kind, h, w):
        return {
            "row": np.zeros((1, w), np.float32),          # (1, 64): was broadcast to 64x64
            "column": np.zeros((h, 1), np.float32),
            "small": np.zeros((h // 2, w // 2), np.float32),
            "rank3": np.zeros((h, w, 1), np.float32),
            "transposed": np.zeros((w, h), np.float32),
            "complex": np.zeros((h, w), np.complex64),
            "object": np.full((h, w), None, dtype=object),
            "strings": np.full((h, w), "x"),
            "list": [[0.0] * w] * h,
            "nan": np.full((h, w), np.nan, np.float32),
            "inf": np.full((h, w), -np.inf, np.float64),
            "bool": np.ones((h, w), bool),
            "uint16": np.full((h, w), 7, np.uint16),
        }[kind]

    class Images(Worker):
        '''Declares (height, width) network images; every other one is IMAGE_KIND.'''
        def setup(self, spec):
            super().setup(spec)
            self.calls = 0
        def network_image_shape(self):
            return (self.spec.height, self.spec.width)
        def extract_decision_parameter(self, output):
            return 0.1
        def post_process_output(self, output, data):
            self.calls += 1  # the warm-up is call 1, and makes a good image
            h, w = self.spec.height, self.spec.width
            if os.environ.get("BAD_WARM_UP") or self.calls % 2 == 0:
                return bad_image(os.environ["IMAGE_KIND"], h, w)
            return np.ones((h, w), np.float32)
"""

REFUSED = ["row", "column", "small", "rank3", "transposed", "complex", "object", "strings",
           "list"]
STORED = ["nan", "inf", "bool", "uint16"]


@pytest.mark.parametrize("kind", ["row", "rank3", "transposed", "complex", "list"])
def test_a_network_image_that_breaks_its_shape_is_refused_never_stored(
        tmp_path: Path, kind: str) -> None:
    before = {n for n, _ in list_blocks()}
    env = module(tmp_path, "image_workers", IMAGES)
    env["IMAGE_KIND"] = kind
    folder = tmp_path / "run"
    proc, out = run_worker(tmp_path, "image_workers", "Images", "--duration", "3", "--save",
                           str(folder), "--set", "camera.synthetic.width=96", env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "refused, not stored" in line]
    assert len(warnings) == 1, proc.stderr  # once per shape, not once per image
    if kind != "list":
        assert "declares (64, 96)" in warnings[0] or "not a real number" in warnings[0]
    s = summary(out)
    assert s["network_images_refused"] > 3
    assert s["network_images"] > 3
    assert s["network_images"] + s["network_images_refused"] == s["stacks_analysed"]
    assert s["writer"]["network_images_written"] == s["network_images"]
    assert_counts_add_up(s)
    index = (folder / "network_index.csv").read_text().splitlines()
    assert len(index) - 1 == s["network_images"]
    assert open_run(folder).timepoints == s["stacks_published"]
    assert_clean(before)


@pytest.mark.parametrize("kind", ["nan", "inf", "bool"])
def test_network_images_of_any_real_dtype_are_stored_and_nonfinite_ones_counted(
        tmp_path: Path, kind: str) -> None:
    env = module(tmp_path, "image_workers", IMAGES)
    env["IMAGE_KIND"] = kind
    proc, out = run_worker(tmp_path, "image_workers", "Images", "--duration", "3", "--save",
                           str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stderr
    s = summary(out)
    assert s["network_images_refused"] == 0
    assert s["network_images"] == s["stacks_analysed"] == s["writer"]["network_images_written"]
    if kind == "bool":
        assert s["network_images_nonfinite"] == 0
    else:
        assert 0 < s["network_images_nonfinite"] < s["network_images"]
    assert_counts_add_up(s)


@pytest.mark.parametrize("kind", ["row", "strings"])
def test_a_warm_up_image_that_breaks_its_shape_is_bad_input(tmp_path: Path,
                                                            kind: str) -> None:
    before = {n for n, _ in list_blocks()}
    env = module(tmp_path, "image_workers", IMAGES)
    env.update(IMAGE_KIND=kind, BAD_WARM_UP="1")
    proc, _ = run_worker(tmp_path, "image_workers", "Images", "--duration", "3", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "warm-up" in proc.stderr and "network image" in proc.stderr
    assert_clean(before)


# -- worker modules that raise at import -------------------------------------------------------
IMPORT_FAULTS = {
    "zero_div": ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
    "exits_3": ("import sys\nsys.exit(3)\n", "SystemExit: exit code 3"),
    "exits_text": ("import sys\nsys.exit('no GPU here')\n", "SystemExit: no GPU here"),
    "name_err": ("undefined_name_xyz\n", "NameError"),
    "syntax": ("def f(:\n    pass\n", "syntax error"),
    "indent": ("def f():\nreturn 1\n", "syntax error"),
    "runtime": ("raise RuntimeError('line one\\nline two')\n",
                "RuntimeError: line one line two"),
    "nested": ("import nested_helper_xyz\n", "ZeroDivisionError"),
}


@pytest.mark.parametrize("name", sorted(IMPORT_FAULTS))
def test_a_worker_module_that_raises_at_import_is_one_line_and_exit_2(
        tmp_path: Path, name: str) -> None:
    text, words = IMPORT_FAULTS[name]
    (tmp_path / f"{name}.py").write_text(text)
    (tmp_path / "nested_helper_xyz.py").write_text("VALUE = 1\nx = VALUE / 0\n")
    env = {"PYTHONPATH": str(tmp_path)}
    listed = subprocess.run(
        [sys.executable, "-m", "rt_eda.cli", "workers", "--module", name], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, **env})
    ran = rt_eda("--worker", "ImageWorker", "--set", f"analysis.worker_modules=['{name}']",
                 "--duration", "1", *SMALL, cwd=tmp_path, env=env, timeout=120)
    for proc in (listed, ran):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = problem_lines(proc.stderr)
        assert len(lines) == 1, lines
        assert repr(name) in lines[0] and words in lines[0], lines[0]
        if name not in ("syntax", "indent"):
            file = "nested_helper_xyz.py:2" if name == "nested" else f"{name}.py:"
            assert file in lines[0], lines[0]
    assert role_processes() == []


def test_exception_line_cuts_keras_and_tensorflow_texts_to_one_line() -> None:
    from rt_eda.workers._base import exception_line

    tf_text = (
        "in user code:\n\n    File \"/x/_keras.py\", line 277, in None  *\n"
        "        lambda x: model(x, training=False)\n"
        "    File \"/x/traceback_utils.py\", line 122, in error_handler  **\n"
        "        raise e.with_traceback(filtered_tb) from None\n\n"
        "    ValueError: Exception encountered when calling Reshape.call().\n\n"
        "    \x1b[1mThe total size of the tensor must be unchanged.\x1b[0m\n\n"
        "    Arguments received by Reshape.call():\n      • inputs=tf.Tensor(shape=(1, 8))\n")
    assert exception_line(RuntimeError(tf_text)) == (
        "ValueError: in Reshape: The total size of the tensor must be unchanged.")
    assert exception_line(KeyError("k")) == "KeyError: 'k'"
    assert exception_line(ZeroDivisionError()) == "ZeroDivisionError"
    long = exception_line(ValueError("x" * 5000))
    assert len(long) < 420 and long.endswith("...") and "\n" not in long


# -- the preflight probe, with workers that need no TensorFlow ----------------------------------
PROBED = """
    import os
    import sys
    import numpy as np
    from rt_eda.core.errors import ConfigError
    from rt_eda.workers import Worker

    class Probed(Worker):
        '''Probed before start; PROBE_FAULT says how it fails on the real input.'''
        probe_before_start = True
        def setup(self, spec):
            super().setup(spec)
            fault = os.environ.get("PROBE_FAULT")
            if fault == "crash":
                sys.stderr.write("fatal: out of device memory\\n")
                sys.stderr.flush()
                os._exit(7)
            if fault == "config":
                raise ConfigError("analysis.options.sigma must be a number, got 'x'")
        def prepare_images(self, stack):
            if os.environ.get("PROBE_FAULT") == "shape" and stack.shape[-1] != 32:
                raise ValueError(f"cannot take width {stack.shape[-1]}")
            return super().prepare_images(stack)
"""


@pytest.mark.parametrize(("fault", "words"), [
    ("crash", ["probe of worker Probed died (exit code 7) before it reported",
               "fatal: out of device memory"]),
    ("shape", ["worker Probed fails in its warm-up", "(2, 1, 64, 64) uint16",
               "ValueError: cannot take width 64"]),
    ("config", ["analysis.options.sigma must be a number"]),
])
def test_the_probe_refuses_a_worker_that_fails_before_anything_starts(
        tmp_path: Path, fault: str, words: list[str]) -> None:
    before = {n for n, _ in list_blocks()}
    env = module(tmp_path, "probed_workers", PROBED)
    env.update(PROBE_FAULT=fault, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc, out = run_worker(tmp_path, "probed_workers", "Probed", "--duration", "2", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = problem_lines(proc.stderr)
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "source open" not in proc.stderr and not out.exists()  # nothing started
    assert_clean(before)


def test_a_probed_worker_that_fits_runs_and_is_probed_once(tmp_path: Path) -> None:
    env = module(tmp_path, "probed_workers", PROBED)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    for expected in ("in ", "from the probe cache"):
        proc, out = run_worker(tmp_path, "probed_workers", "Probed", "--duration", "1",
                               env=env)
        assert proc.returncode == 0, proc.stderr
        probe = [line for line in proc.stderr.splitlines() if "probe: Probed" in line]
        assert len(probe) == 1 and expected in probe[0], proc.stderr
        assert_counts_add_up(summary(out))
