"""What ``rt-eda run`` shows while it runs: a live display on a terminal, plain lines elsewhere.

::

    stderr is a terminal        log lines (rich's logging handler) print above one live
                                display (rich.live), redrawn at every status (twice a second):
                                  a progress bar with the time left (--duration), or the time
                                  since the start
                                  acquired / analysed / skipped per second, and their counts
                                  the interval and state, decisions, switches
                                  decision latency p50 / p99 (every decision so far)
                                  camera jitter, frames lost (coloured when they matter),
                                  workers alive and restarted
                                its last state stays on screen: the final status, whose
                                figures are the summary's
    otherwise (a pipe, CI)      the usual log lines, and the status as one INFO line every
                                PLAIN_PERIOD_S

The figures are :class:`~rt_eda.engine.status.Status` (see :mod:`rt_eda.engine.status` for
where each comes from); nothing here computes one. The display runs in the engine's thread
(no refresh thread of its own); log records from every process reach it through the engine's
log listener, which prints through the same console, so a line never tears the display.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rt_eda.engine.status import RATE_WINDOW_S, Status

__all__ = ["PLAIN_PERIOD_S", "StatusDisplay", "render", "status_display"]

log = logging.getLogger("rt_eda.status")

PLAIN_PERIOD_S = 10.0
"""How often the status is logged as a line without a terminal."""


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} ms"


def _jitter_style(st: Status) -> str:
    """Yellow once the camera's jitter is 1 % of the interval (1 ms when free-running), red
    from 10 %."""
    if math.isnan(st.jitter_ms):
        return "dim"
    scale = st.interval_s * 1e3 if st.interval_s > 0 else 100.0
    share = st.jitter_ms / scale
    return "bold red" if share >= 0.1 else "yellow" if share >= 0.01 else "green"


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render(st: Status) -> RenderableType:
    """The live display of one status."""
    head = Table.grid(padding=(0, 2))
    if st.duration_s is not None:
        left = st.left_s or 0.0
        head.add_row(
            ProgressBar(total=st.duration_s, completed=min(st.elapsed_s, st.duration_s),
                        width=50, complete_style="green" if st.final else "cyan"),
            Text(f"{st.elapsed_s:5.1f} s of {st.duration_s:g} s"),
            Text("finished" if st.final else f"{_clock(left)} left", style="bold"))
    else:
        head.add_row(Text(f"{_clock(st.elapsed_s)} since the start", style="bold"),
                     Text("finished" if st.final else "Ctrl-C stops the run", style="dim"))
    per = "over the run" if st.final else f"over {RATE_WINDOW_S:g} s"
    rows = Table.grid(padding=(0, 3))
    interval = "-" if math.isnan(st.interval_s) else f"{st.interval_s:g} s"
    rows.add_row(
        Text.assemble("acquired ", (f"{st.acquired_per_s:6.1f}/s", "bold"),
                      f" ({st.published} stacks)"),
        Text.assemble("analysed ", (f"{st.analysed_per_s:6.1f}/s", "bold"),
                      f" ({st.analysed})"),
        Text.assemble("skipped ", f"{st.skipped_per_s:6.1f}/s ({st.skipped})")
        + (Text(f"  failed {st.failed}", style="bold red") if st.failed else Text("")),
        Text(per, style="dim"),
    )
    rows.add_row(
        Text.assemble("interval ", (interval, "bold"), f" {st.state}"),
        Text(f"decisions {st.decisions} (switches {st.interval_switches})"),
        Text.assemble("latency p50 ", (_ms(st.p2d_p50_ms), "bold"), " p99 ",
                      (_ms(st.p2d_p99_ms), "bold")),
        Text("publish -> decision", style="dim"),
    )
    rows.add_row(
        Text.assemble("camera jitter ", (_ms(st.jitter_ms), _jitter_style(st))),
        Text.assemble("frames lost ", (str(st.frames_lost),
                                       "bold red" if st.frames_lost else "green")),
        Text.assemble(f"workers {st.workers}",
                      (f" (restarts {st.restarts})", "yellow") if st.restarts else ""),
        Text("jitter over the run" if st.final else "jitter over 0.5 s", style="dim"),
    )
    return Group(head, rows)


class StatusDisplay:
    """Shows each :class:`Status` (pass :meth:`show` as the engine's ``on_status``)."""

    def __init__(self, console: Console | None) -> None:
        self._console = console
        self._live: Live | None = None
        self._next_line = 0.0
        self.last: Status | None = None

    @property
    def live(self) -> bool:
        """Whether statuses are shown as a live display (a terminal)."""
        return self._console is not None

    def show(self, status: Status) -> None:
        """Show one status: redraw the display, or log a line every :data:`PLAIN_PERIOD_S`."""
        self.last = status
        if self._console is None:
            now = time.monotonic()
            if status.final or now < self._next_line:
                return
            if self._next_line:  # not the first status: a line every period from here
                log.info("%s", status.line())
            self._next_line = now + PLAIN_PERIOD_S
            return
        if self._live is None:
            self._live = Live(render(status), console=self._console, auto_refresh=False,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        self._live.update(render(status), refresh=True)

    def close(self) -> None:
        """Leave the display as it last was (a run's final status) and stop redrawing."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def _terminal() -> Console | None:
    console = Console(file=sys.stderr, stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:
        return None
    return console


@contextmanager
def status_display(debug: bool) -> Iterator[StatusDisplay]:
    """The status display for one run; on a terminal, log records are printed through its
    console meanwhile (time, level, message; with ``debug`` also the process and logger),
    and put back as they were afterwards."""
    console = _terminal()
    display = StatusDisplay(console)
    if console is None:
        yield display
        return
    root = logging.getLogger()
    saved = list(root.handlers)
    handler = RichHandler(console=console, show_path=False, markup=False,
                          rich_tracebacks=False, log_time_format="[%X]")
    handler.setFormatter(logging.Formatter(
        "%(processName)s %(name)s: %(message)s" if debug else "%(message)s"))
    for h in saved:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        yield display
    finally:
        display.close()
        root.removeHandler(handler)
        for h in saved:
            root.addHandler(h)
