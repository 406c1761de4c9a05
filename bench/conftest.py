"""Benchmark-suite plumbing: ``--quick``, and a table of every measurement at the end.

Each benchmark times one operation with pytest-benchmark's own machinery (``benchmark.pedantic``
over several rounds, or ``benchmark(fn)``), so its statistics, which ``--benchmark-save`` keeps
and ``--benchmark-compare`` compares, are seconds per operation. Its baseline is timed the same
way in the same test (:mod:`bench_timing`); whole runs that give a target (an engine run's
rates and latency percentiles) are fixtures whose figures go into ``benchmark.extra_info``
beside the ratios. The tables printed at the end are those figures, readable.
"""

from __future__ import annotations

from typing import Any

import pytest

_TABLES: dict[str, list[dict[str, Any]]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick", action="store_true", default=False,
        help="short runs (CI checks the suite still works; figures are rougher)",
    )


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    """True with ``--quick`` (session-scoped, so module-scoped run fixtures can use it)."""
    return bool(request.config.getoption("--quick"))


@pytest.fixture
def report() -> Any:
    """``report(table, row_dict)``: add a row to a printed table."""

    def add(table: str, row: dict[str, Any]) -> None:
        _TABLES.setdefault(table, []).append(row)

    return add


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, rows in _TABLES.items():
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        terminalreporter.write_sep("=", title)
        for r in [columns, *cells]:
            line = "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True))
            terminalreporter.write_line(line)
