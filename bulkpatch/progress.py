"""The live progress line on a terminal: jobs done / total, ok / failed, rate, 429s, ETA.

Drawn by tqdm on stderr, never stdout, refreshed from the run's counters a few times a
second (not per job, so it costs the same at 10 or 10,000 jobs/s), and erased when the
run ends, leaving the terminal as the summary finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bulkpatch.summary import RunStats

_CHUNK = 1 << 20


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


class Progress:
    def __init__(self, total: int | None, stream: TextIO) -> None:
        self._bar = tqdm(
            total=total,
            unit=" jobs",
            file=stream,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
            desc="bulkpatch",
        )

    def update(self, stats: RunStats) -> None:
        outcomes = stats.outcomes
        done = sum(outcomes.values()) + stats.skipped
        ok = outcomes.get("ok", 0)
        self._bar.set_postfix_str(
            f"ok {ok:,} failed {done - stats.skipped - ok:,} 429s {stats.throttled:,} "
            f"retries {stats.retries:,}",
            refresh=False,
        )
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
