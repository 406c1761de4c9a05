"""Every configuration key a message names is a key the configuration accepts.

The messages are collected by triggering them (fit checks for every kind of source, worker
options, discovery, model files, configuration values), not by reading the source, and every
dotted key in them is checked against :func:`rt_eda.core.config.all_keys`. A message that advises
"set camera.height" (no such key) fails here.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rt_eda.core.config import Config, all_keys, load_config
from rt_eda.core.errors import ConfigError, ModelError, RtEdaError
from rt_eda.core.messages import Result
from rt_eda.interpreters import BinaryFrameRateInterpreter
from rt_eda.shm import StackSpec
from rt_eda.workers import (
    ImageWorker,
    KerasRescaleWorker,
    KerasTilingWorker,
    KerasWorker,
    ModelInfo,
    WorkerSettings,
    check_fit,
    configure_threads,
    discover_workers,
    inspect_model,
)

SECTIONS = ("camera", "ring", "analysis", "interpreter", "writer", "viewer", "run")
KEY = re.compile(r"(?<![\w.])((?:" + "|".join(SECTIONS) + r")(?:\.[A-Za-z_]\w*)+)")
#: The options the built-in workers read from [analysis.options] (free-form table).
OPTIONS = {"inference", "sigma", "background_sigma", "marker_channels", "crop_multiple",
           "pixel_size_nm", "model_pixel_size_nm", "tile_size", "min_overlap"}
SOURCES = ("synthetic", "mm-demo", "mmconfig", "replay")


def keys_in(message: str) -> list[str]:
    return KEY.findall(message)


def invalid_keys(message: str) -> list[str]:
    valid = set(all_keys())
    bad = []
    for key in keys_in(message):
        if key in valid:
            continue
        head, _, option = key.partition("analysis.options.")
        if not head and option in OPTIONS:
            continue
        bad.append(key)
    return bad


def test_the_checker_catches_the_reported_example() -> None:
    assert invalid_keys("set camera.height/width to give 64x64") == ["camera.height"]
    assert invalid_keys("set camera.synthetic.height = 64 and camera.synthetic.width = 64") == []
    assert invalid_keys("analysis.options.tile_size and analysis.options.nope") == [
        "analysis.options.nope"]


def raised(fn: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The message of the RtEdaError ``fn(*args, **kwargs)`` raises."""
    try:
        fn(*args, **kwargs)
    except RtEdaError as exc:
        return str(exc)
    raise AssertionError(f"{fn}{args} did not raise")


def info(shape: tuple[int | None, ...], name: str = "m.keras") -> ModelInfo:
    window = 3 if "_n3_f" in name else 1
    return ModelInfo(f"/models/{name}", "keras", shape, None, time_window=window,
                     time_window_from_name=window > 1)


def fit_messages() -> Iterator[str]:
    """Every kind of misfit check_fit reports, for every kind of source."""
    cases: list[tuple[ModelInfo, StackSpec, int, tuple[int, ...], bool]] = [
        (info((None, 64, 64, 2)), StackSpec(2, 1, 128, 128), 1, (), False),  # fixed size
        (info((None, 128, 128, 2)), StackSpec(2, 1, 64, 64), 1, (), True),  # tiles too big
        (info((None, None, None, 3)), StackSpec(2, 1, 64, 64), 1, (), False),  # channels
        (info((None, None, None, 1)), StackSpec(2, 1, 64, 64), 1, (), False),  # fewer
        (info((None, None, None, 2)), StackSpec(2, 1, 64, 64), 1, (5,), False),  # bad index
        (info((None, None, None, 2)), StackSpec(2, 3, 64, 64), 1, (), False),  # z, 4-D
        (info((None, None, None, 2)), StackSpec(2, 1, 64, 64), 2, (), False),  # window, 4-D
        (info((None, None, None, 2, 4)), StackSpec(2, 3, 64, 64), 1, (), False),  # slices
        (info((None, None, None, 2, 6)), StackSpec(2, 2, 64, 64), 2, (), False),  # slices x T
        (info((None, None, None, 3, 1)), StackSpec(2, 1, 64, 64), 1, (), False),  # channels 5-D
        (info((None, None, None, 6), "m_n3_f.keras"), StackSpec(2, 1, 64, 64), 1, (), False),
    ]
    for (model, spec, n_t, channels, tiled), source in itertools.product(cases, SOURCES):
        yield raised(check_fit, model, spec, n_t, channels, tiled=tiled, source=source)


def worker_messages(tmp_path: Path) -> Iterator[str]:
    spec = StackSpec(2, 1, 64, 64)

    def settings(**options: object) -> WorkerSettings:
        return WorkerSettings(model="x.keras", options=tuple(options.items()))

    yield raised(lambda: KerasWorker(settings(inference="fast")))
    yield raised(lambda: KerasRescaleWorker(settings(sigma=-1)))
    yield raised(lambda: KerasRescaleWorker(settings(crop_multiple=0)))
    yield raised(lambda: KerasRescaleWorker(settings(marker_channels="a,b")))
    yield raised(lambda: KerasTilingWorker(settings(tile_size=-1)))
    yield raised(lambda: KerasTilingWorker(settings(pixel_size_nm=0)))
    yield raised(lambda: KerasWorker(WorkerSettings()).model_path())
    yield raised(lambda: configure_threads(0, tensorflow=False))
    yield raised(lambda: ImageWorker(WorkerSettings()).setup(StackSpec(2, 1, 8, 8)))
    yield raised(lambda: ImageWorker(WorkerSettings(channels_to_use=(4,))).check(spec))
    for source in SOURCES:
        tiling = KerasTilingWorker(WorkerSettings(model="x.keras", source=source,
                                                  options=(("min_overlap", 40),)))
        for model in (info((None, None, None, 2)), info((None, 100, 100, 2))):
            yield raised(tiling.check_model, model, spec)
        overlap = KerasTilingWorker(WorkerSettings(model="x.keras", source=source,
                                                   options=(("min_overlap", 128),)))
        yield raised(overlap.check_model, info((None, None, None, 2)),
                     StackSpec(2, 1, 512, 512))
    for name, text in [("missing_mod_xyz", None), ("broken_imp", "import no_such_pkg_xyz\n"),
                       ("bad_syntax", "def f(:\n"), ("zero_div", "x = 1 / 0\n"),
                       ("exits", "import sys\nsys.exit(3)\n")]:
        if text is not None:
            (tmp_path / f"{name}.py").write_text(text)
        yield raised(discover_workers, [name])
    for path, data in [("empty.keras", b""), ("junk.keras", b"junk"),
                       ("zip.keras", b"PK\x03\x04 not a zip")]:
        (tmp_path / path).write_bytes(data)
        yield raised(inspect_model, tmp_path / path)
    yield raised(lambda: inspect_model(tmp_path / "missing.keras"))


def config_messages() -> Iterator[str]:
    """Every key given a value of the wrong kind, and the checks between keys."""
    base = load_config(None)
    for key in all_keys():
        for value in ({"a": 1}, -1, math.nan):
            try:
                base.with_overrides({key: value})
            except ConfigError as exc:
                yield str(exc)
    for changes in ({"interpreter.lower_threshold": 0.9, "interpreter.upper_threshold": 0.1},
                    {"interpreter.fast_interval": 2.0, "interpreter.slow_interval": 1.0},
                    {"camera.synthetic.event_every_s": 1.0,
                     "camera.synthetic.event_duration_s": 5.0},
                    {"camera.nope": 1}, {"analysis.wokers": 2}):
        with pytest.raises(ConfigError) as caught:
            base.with_overrides(changes)
        text = str(caught.value)
        for given in ("camera.nope", "analysis.wokers"):  # the user's own (unknown) key
            text = text.replace(given, "<the key given>")
        yield text


def other_messages() -> Iterator[str]:
    interp = BinaryFrameRateInterpreter(Config().interpreter)
    for seq in range(interp.settings.max_nonfinite_in_a_row):
        interp.on_result(Result(seq=seq, worker=1, decision=math.nan, t_exposure=0.0,
                                t_published=0.0, t_claimed=0.0, t_done=0.0))
    why = interp.broken()
    assert why is not None
    yield why
    from rt_eda.engine.watchdog import Watchdog

    for dog in (Watchdog(), Watchdog(fixed_s=1.0)):
        for late in dog.observe([(3, 10, 50.0)], 500.0):
            yield late.message()


def test_every_key_named_in_a_message_is_a_valid_key(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    messages = [*fit_messages(), *worker_messages(tmp_path), *config_messages(),
                *other_messages()]
    assert len(messages) > 150
    named = [key for m in messages for key in keys_in(m)]
    assert len(set(named)) > 25  # the messages do name settings
    bad = {(key, m) for m in messages for key in invalid_keys(m)}
    assert not bad, "\n".join(f"{key!r} in: {m}" for key, m in sorted(bad))


@pytest.mark.parametrize("source", SOURCES)
def test_fit_advice_names_the_setting_of_that_source(source: str) -> None:
    spec = StackSpec(2, 1, 128, 128)
    size = raised(lambda: check_fit(info((None, 64, 64, 2)), spec, source=source))
    z = raised(lambda: check_fit(info((None, None, None, 2)), StackSpec(2, 3, 64, 64),
                                 source=source))
    more = raised(lambda: check_fit(info((None, None, None, 3)), spec, source=source))
    expected = {
        "synthetic": ("camera.synthetic.height = 64 and camera.synthetic.width = 64",
                      "camera.synthetic.z_slices = 1", "synthetic source makes 2 channel(s)"),
        "mm-demo": ("region of interest to 64x64", "camera.z_positions 1 position",
                    "acquire 3 channels (camera.channels"),
        "mmconfig": ("region of interest to 64x64", "camera.z_positions 1 position",
                     "acquire 3 channels (camera.channels"),
        "replay": ("recording's frames are 128x128", "recording has 3 z-slice",
                   "recording has 2 channel"),
    }[source]
    for text, message in zip(expected, (size, z, more), strict=True):
        assert text in message, (text, message)
    for message in (size, z, more):
        assert "(input (None" in message  # the model's shape is named beside the advice
        with pytest.raises(ModelError):
            raise ModelError(message)
