"""The stimulation device (rt_eda.sources._slm): a VirtualDMD driven through pymmcore-plus's
real device layer (a UniMMCore, loadPyDevice, setSLMImage, displaySLMImage, getSLMImage)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from rt_eda.core.errors import SourceError

pytest.importorskip("pymmcore_plus")

from pymmcore_plus import CMMCorePlus, DeviceType
from pymmcore_plus.experimental.unicore import UniMMCore

from rt_eda.sources._slm import SLM, VirtualDMD, open_slm

SHAPE = (48, 64)  # height, width: not square, so a transposition would show


@pytest.fixture
def slm() -> Iterator[SLM]:
    handle = open_slm(SHAPE)
    try:
        yield handle
    finally:
        handle.close()


def test_show_then_read_back_through_the_core(slm: SLM) -> None:
    core = slm.core
    assert isinstance(core, UniMMCore)
    assert slm.label in core.getLoadedDevicesOfType(DeviceType.SLM)
    assert core.getSLMDevice() == slm.label
    assert (core.getSLMHeight(slm.label), core.getSLMWidth(slm.label)) == SHAPE == slm.shape
    assert core.getSLMBytesPerPixel(slm.label) == 1
    shown = slm.shown()
    assert shown is not None and shown.shape == SHAPE and not shown.any()  # dark at first

    rng = np.random.default_rng(3)
    before = time.monotonic()
    times = []
    for _ in range(5):
        mask = rng.random(SHAPE) < 0.3
        times.append(slm.show(mask))
        np.testing.assert_array_equal(slm.shown(), mask)
        image = core.getSLMImage(slm.label)
        assert image.dtype == np.uint8 and set(np.unique(image)) <= {0, 255}
    assert before < times[0] and np.all(np.diff(times) > 0) and times[-1] <= time.monotonic()

    dmd = slm.device
    assert isinstance(dmd, VirtualDMD)
    assert dmd.displays == 5 and len(dmd.display_times) == 5
    # the device displayed each image before show() returned
    assert all(d <= t for d, t in zip(dmd.display_times, times, strict=True))
    np.testing.assert_array_equal(dmd.displayed > 0, mask)
    stats = slm.statistics()
    assert stats["shows"] == 5 and stats["show_ms_mean"] > 0


def test_loaded_image_is_displayed_only_on_display(slm: SLM) -> None:
    core = slm.core
    dmd = slm.device
    assert dmd is not None
    on = np.full(SHAPE, 255, np.uint8)
    core.setSLMImage(slm.label, on)  # loaded, not displayed
    assert not dmd.displayed.any() and dmd.displays == 0
    core.displaySLMImage(slm.label)
    assert dmd.displayed.all() and dmd.displays == 1
    core.setSLMExposure(slm.label, 12.5)
    assert core.getSLMExposure(slm.label) == 12.5


def test_wrong_mask_shape_is_refused(slm: SLM) -> None:
    with pytest.raises(SourceError, match=r"mask of shape \(64, 48\), the SLM is 48 x 64"):
        slm.show(np.zeros(SHAPE[::-1], bool))


def test_into_a_given_core_and_close_unloads_only_the_dmd() -> None:
    core = UniMMCore()
    try:
        slm = open_slm(SHAPE, core=core, label="dmd")
        with pytest.raises(SourceError, match="label is taken"):
            open_slm(SHAPE, core=core, label="dmd")
        # an SLM already loaded, given by label, is used as it is
        again = open_slm(SHAPE, core=core, device="dmd")
        mask = np.eye(*SHAPE, dtype=bool)
        again.show(mask)
        np.testing.assert_array_equal(slm.shown(), mask)
        again.close()
        assert "dmd" in core.getLoadedDevices()  # not its device to unload
        with pytest.raises(SourceError, match=r"is 48 x 64 px, the sensor 64 x 48"):
            open_slm(SHAPE[::-1], core=core, device="dmd")
        with pytest.raises(SourceError, match=r"'nope' is not an SLM loaded .*\['dmd'\]"):
            open_slm(SHAPE, core=core, device="nope")
        slm.close()
        slm.close()  # twice is fine
        assert "dmd" not in core.getLoadedDevices()
        with pytest.raises(SourceError, match="closed"):
            slm.show(mask)
    finally:
        core.unloadAllDevices()


def test_a_plain_core_cannot_take_a_virtual_dmd() -> None:
    core = CMMCorePlus()
    with pytest.raises(SourceError, match="needs a UniMMCore, not a CMMCorePlus"):
        open_slm(SHAPE, core=core)
    with pytest.raises(SourceError, match="needs the core holding it"):
        open_slm(SHAPE, device="dmd")


def test_virtual_dmd_alone() -> None:
    with pytest.raises(ValueError, match="at least 1 x 1"):
        VirtualDMD((0, 4))
    dmd = VirtualDMD(SHAPE)
    assert dmd.shape() == SHAPE and np.dtype(dmd.dtype()) == np.uint8
    assert dmd.last_display_t is None and not dmd.get_image().any()
