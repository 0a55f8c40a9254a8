"""The live progress line: jobs done / total, ok / failed, 429s, retries, rate, ETA.

On a terminal, drawn by tqdm on stderr, never stdout, refreshed from the run's counters a
few times a second (not per job, so it costs the same at 10 or 10,000 jobs/s), and erased
when the run ends, leaving the terminal as the summary finds it. Where the line is too
narrow for a bar beside the counters (80 columns, say), the bar goes and the counters
stay. Before any log message the line is erased (``before_message``), so a warning (the
one Ctrl-C brings, say) starts on a clean line, not glued to the bar or to the ``^C`` the
terminal echoed.

Off a terminal (CI, a pod's log), ``\\r`` frames would make one ever-growing line: there,
one plain status line every ``PLAIN_EVERY_S`` instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

from tqdm import tqdm

from bulkpatch.summary import RunStats

_CHUNK = 1 << 20
PLAIN_EVERY_S: Final = 10.0
MIN_BAR: Final = 10  # columns: a narrower bar says nothing the percentage does not
ERASE_LINE: Final = "\r\x1b[K"  # to the start of the line, and clear all of it
# The line drawn now, if any: what ``before_message`` erases.
_live: list[Progress] = []


def count_lines(path: Path) -> int | None:
    """The lines in a job file (a last line without a newline counts), None if unreadable."""
    lines = 0
    last = b"\n"
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    return lines + (last != b"\n")


class _Bar(tqdm):  # type: ignore[type-arg]
    # No monitor thread: the run's flush loop refreshes the line, and a second writer
    # would race with ``before_message``.
    monitor_interval = 0


class Progress:
    """The progress of a run of ``total`` jobs (None: not known) on ``stream``.

    ``clock``: seconds, for the plain lines' pace (a test's clock, else the monotonic one).
    """

    def __init__(
        self,
        total: int | None,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = PLAIN_EVERY_S,
    ) -> None:
        self._total, self._stream, self._clock, self._every_s = total, stream, clock, every_s
        self._started = self._last_line = clock()
        self._bar: Any = None
        if _is_terminal(stream):
            self._bar = _Bar(
                total=total,
                unit=" jobs",
                file=stream,
                leave=False,
                dynamic_ncols=True,
                mininterval=0.2,
                smoothing=0.1,
                bar_format=_narrow(total, _counters(RunStats())[1]),  # fits any width
                desc="bulkpatch",
            )
            _live.append(self)

    def update(self, stats: RunStats) -> None:
        done, counters = _counters(stats)
        if self._bar is None:
            self._plain_line(done, counters)
            return
        self._bar.bar_format = self._format(counters)
        self._bar.update(done - self._bar.n)

    def _format(self, counters: str) -> str:
        """The wide form (with a bar) if it leaves the bar ``MIN_BAR`` columns, else the
        narrow one: counters first, so a terminal too narrow for all cuts the ETA."""
        narrow = _narrow(self._total, counters)
        if self._total is None:
            return narrow
        wide = f"{{desc}} {{n_fmt}}/{{total_fmt}} {{percentage:3.0f}}%|{{bar}}| {counters}  {{rate_fmt}} ETA {{remaining}}"
        shown = {**self._bar.format_dict, "bar_format": wide.replace("{bar}", ""), "ncols": None}
        text = self._bar.format_meter(**shown)
        return wide if _columns(self._stream) - len(text) >= MIN_BAR else narrow

    def _plain_line(self, done: int, counters: str) -> None:
        now = self._clock()
        if now - self._last_line < self._every_s:
            return
        self._last_line = now
        elapsed = now - self._started
        of = f"/{self._total:,}" if self._total is not None else ""
        rate = f"{done / elapsed:,.1f} jobs/s" if elapsed > 0 else "-"
        print(
            f"bulkpatch: {done:,}{of} jobs, {counters}, {rate}, {elapsed:,.0f} s",
            file=self._stream,
            flush=True,
        )

    def erase(self) -> None:
        """Clear the drawn line (it comes back at the next update)."""
        if self._bar is not None:
            with self._bar.get_lock():
                self._stream.write(ERASE_LINE)
                self._stream.flush()

    def close(self) -> None:
        if self in _live:
            _live.remove(self)
        if self._bar is not None:
            self._bar.close()


def before_message() -> None:
    """Erase the progress line, if one is drawn, before a message is written below it."""
    for progress in _live:
        progress.erase()


def _narrow(total: int | None, counters: str) -> str:
    """The line without a bar: the counters first, so a terminal too narrow for it all
    cuts the rate and ETA."""
    if total is None:
        return f"{{desc}} {{n_fmt}} jobs  {counters}  {{rate_fmt}}"
    return f"{{n_fmt}}/{{total_fmt}} {{percentage:3.0f}}%  {counters}  {{rate_fmt}} ETA {{remaining}}"


def _counters(stats: RunStats) -> tuple[int, str]:
    outcomes = stats.outcomes
    done = sum(outcomes.values()) + stats.skipped
    ok = outcomes.get("ok", 0)
    failed = done - stats.skipped - ok
    text = f"ok {ok:,} failed {failed:,} 429s {stats.throttled:,} retries {stats.retries:,}"
    return done, text


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a file at all
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 80
