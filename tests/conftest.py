"""Shared fixtures: rings that are always unlinked, and a leak check around every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rt_eda.shm import StackRing, StackSpec, list_blocks


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False,
        help="run the long soak/stress tests (their short versions always run)",
    )


@pytest.fixture
def run_slow(request: pytest.FixtureRequest) -> bool:
    """True when the long versions of soak/stress tests were asked for."""
    return bool(request.config.getoption("--run-slow"))


@pytest.fixture(autouse=True)
def no_leaked_blocks() -> Iterator[None]:
    """Fail a test that leaves an rt-eda shared-memory block created by this process."""
    before = {name for name, _ in list_blocks()}
    yield
    leaked = [name for name, pid in list_blocks() if name not in before and pid == os.getpid()]
    assert not leaked, f"test leaked shared-memory blocks: {leaked}"


@pytest.fixture
def make_ring() -> Iterator[object]:
    """Factory for rings owned by the test; every ring is unlinked at the end."""
    rings: list[StackRing] = []

    def make(spec: StackSpec | None = None, n_slots: int = 4, positions: int = 1) -> StackRing:
        ring = StackRing.create(spec or StackSpec(2, 1, 32, 32), n_slots, positions=positions)
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close()
        ring.unlink()
