"""The report's figures and plot data, from each input line's final outcome (numpy)."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from bulkpatch.report.outcomes import FIRST_REASON, OK, Finals, Reason

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

EXAMPLE_LINES: Final = 5
# The outcome lines' three times, by their names there (README, Outcomes).
MEASURES: Final = ("ms", "server_ms", "wait_ms")
PERCENTILES: Final = ("p50", "p90", "p99")
MAX_POINTS: Final = 1500  # time-series points drawn; longer runs are averaged over wider bins


@dataclass(frozen=True, slots=True)
class FailureRow:
    reason: Reason
    count: int
    lines: tuple[int, ...]


@dataclass(slots=True)
class Report:
    jobs: int
    ok: int
    kinds: Counter[str]
    wall_s: float | None
    start: float | None  # epoch seconds of the first completion
    # Per measure of MEASURES, its p50/p90/p99 in ms (None when no job sent a request).
    percentiles: dict[str, dict[str, float | None]]
    retries: int
    throttled: int
    undated: int  # lines without a usable `at`: counted, not in the time plots
    failures: list[FailureRow]
    records: int
    superseded: int
    skipped: int
    sources: list[str] = field(default_factory=list)
    run: str = ""  # the run's id, or what stands for it (``RunGroup.label``)
    facts: dict[str, str] = field(default_factory=dict)  # from its sidecars, as text
    # Plot data (numpy arrays), filled by ``summarize``: ``latencies`` by measure, in ms.
    bin_s: int = 1
    series: dict[str, Any] = field(default_factory=dict)
    latencies: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.jobs - self.ok

    @property
    def jobs_per_s(self) -> float | None:
        return self.jobs / self.wall_s if self.wall_s else None


@dataclass(frozen=True, slots=True)
class Totals:
    """Several runs' figures added up: the top of a page of several runs."""

    runs: tuple[Report, ...]

    @classmethod
    def of(cls, reports: Sequence[Report]) -> Totals:
        return cls(tuple(reports))

    @property
    def jobs(self) -> int:
        return sum(r.jobs for r in self.runs)

    @property
    def ok(self) -> int:
        return sum(r.ok for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    @property
    def retries(self) -> int:
        return sum(r.retries for r in self.runs)

    @property
    def throttled(self) -> int:
        return sum(r.throttled for r in self.runs)

    @property
    def records(self) -> int:
        return sum(r.records for r in self.runs)

    @property
    def superseded(self) -> int:
        return sum(r.superseded for r in self.runs)


@dataclass(slots=True)
class _Columns:
    """The final figures of the lines present, as numpy columns in line order.

    ``code_all`` has every line, absent ones (code 0) included: a position in it below
    ``dense_n`` is a line number, one past it indexes ``sparse_lines``.
    """

    code: Any
    at: Any
    ms: Any
    server_ms: Any
    wait_ms: Any
    attempts: Any
    throttled: Any
    code_all: Any
    dense_n: int
    sparse_lines: list[int]

    def line(self, position: int) -> int:
        return position if position < self.dense_n else self.sparse_lines[position - self.dense_n]


@dataclass(slots=True)
class _Timing:
    """The time plots' data; empty (``series == {}``) when no line has a time."""

    wall_s: float | None = None
    start: float | None = None
    bin_s: int = 1
    series: dict[str, Any] = field(default_factory=dict)


def summarize(finals: Finals, sources: Sequence[str] = ()) -> Report:
    """The figures and plot data from each line's final outcome (needs numpy)."""
    import numpy as np

    cols = _columns(finals)
    jobs = int(cols.code.size)
    ok = int(np.count_nonzero(cols.code == OK))
    kinds, rows = _failures(finals, cols, ok)
    # As the run summary: the times of jobs that sent a request.
    sent = cols.attempts > 0
    times = {"ms": cols.ms, "server_ms": cols.server_ms, "wait_ms": cols.wait_ms}
    latencies = {m: v[sent & np.isfinite(v)] for m, v in times.items()}
    # Retries per job: write requests past the first (an input error sent none).
    retried = np.maximum(cols.attempts.astype(np.int64) - 1, 0)
    dated = np.isfinite(cols.at)
    undated = int(jobs - np.count_nonzero(dated))
    timing = _timing(cols, retried, dated, every_dated=not undated) if undated < jobs else _Timing()
    return Report(
        jobs=jobs,
        ok=ok,
        kinds=kinds,
        wall_s=timing.wall_s,
        start=timing.start,
        percentiles={m: _percentiles(v) for m, v in latencies.items()},
        retries=int(retried.sum()),
        throttled=int(cols.throttled.sum()),
        undated=undated,
        failures=rows,
        records=finals.records,
        superseded=finals.superseded,
        skipped=finals.skipped,
        sources=list(sources),
        bin_s=timing.bin_s,
        series=timing.series,
        latencies=latencies,
    )


def _columns(finals: Finals) -> _Columns:
    import numpy as np

    sparse = sorted(finals.sparse.items())

    def column(arr: array[Any], dtype: Any, index: int) -> npt.NDArray[Any]:
        dense = np.frombuffer(arr, dtype=dtype) if len(arr) else np.zeros(0, dtype=dtype)
        if not sparse:
            return dense
        return np.concatenate([dense, np.asarray([v[index] for _, v in sparse], dtype=dtype)])

    code_all = column(finals.code, np.int32, 0)
    select = _present(code_all)
    return _Columns(
        code=code_all[select],
        at=column(finals.at, np.float64, 1)[select],
        ms=column(finals.ms, np.float64, 2)[select],
        server_ms=column(finals.server_ms, np.float64, 5)[select],
        wait_ms=column(finals.wait_ms, np.float64, 6)[select],
        attempts=column(finals.attempts, np.uint32, 3)[select],
        throttled=column(finals.throttled, np.uint32, 4)[select],
        code_all=code_all,
        dense_n=len(finals.code),
        sparse_lines=[k for k, _ in sparse],
    )


def _present(code_all: npt.NDArray[Any]) -> slice | npt.NDArray[np.bool_]:
    """What selects the lines present: a slice when they run without a gap.

    The usual case is every line from 1 to the last present: then the columns are views
    of the arrays already held, not copies (a million lines: 30 MB less).
    """
    import numpy as np

    present = code_all > 0
    where = np.flatnonzero(present)
    if where.size and where[-1] - where[0] + 1 == where.size:
        return slice(int(where[0]), int(where[-1]) + 1)
    return present


def _failures(finals: Finals, cols: _Columns, ok: int) -> tuple[Counter[str], list[FailureRow]]:
    """Jobs by kind, and one row per failure reason, most frequent first."""
    import numpy as np

    reason_counts = np.bincount(cols.code, minlength=len(finals.reasons) + FIRST_REASON)
    kinds: Counter[str] = Counter()
    if ok:
        kinds["ok"] = ok
    examples = _example_lines(cols)
    rows: list[FailureRow] = []
    for index, reason in enumerate(finals.reasons):
        count = int(reason_counts[index + FIRST_REASON])
        if count:
            kinds[reason.kind] += count
            rows.append(FailureRow(reason, count, tuple(examples[index + FIRST_REASON])))
    rows.sort(key=lambda r: (-r.count, r.lines[0] if r.lines else 0))
    return kinds, rows


def _example_lines(cols: _Columns) -> dict[int, list[int]]:
    """The first few line numbers of each failure code."""
    import numpy as np

    examples: dict[int, list[int]] = {}
    # Positions in the full column are in line order, so the first few found are the lowest.
    for i in np.flatnonzero(cols.code_all >= FIRST_REASON):
        found = examples.setdefault(int(cols.code_all[i]), [])
        if len(found) < EXAMPLE_LINES:
            found.append(cols.line(int(i)))
    return examples


def _percentiles(spent: npt.NDArray[Any]) -> dict[str, float | None]:
    """p50, p90, p99 of ``spent`` (ms, one decimal), each None when it is empty."""
    import numpy as np

    return {
        name: (
            round(float(np.percentile(spent, int(name[1:]), method="inverted_cdf")), 1)
            if spent.size
            else None
        )
        for name in PERCENTILES
    }


def _timing(
    cols: _Columns, retried: npt.NDArray[Any], dated: npt.NDArray[Any], *, every_dated: bool
) -> _Timing:
    """Wall span, first completion and per-bin rates of the lines with a time."""
    import numpy as np

    # Every line usually has a time: then take views, not copies.
    pick: slice | npt.NDArray[np.bool_] = slice(None) if every_dated else dated
    at, ms = cols.at[pick], cols.ms[pick]
    began = float(np.nanmin(at - np.nan_to_num(ms, nan=0.0) / 1000.0))
    start = float(math.floor(at.min()))
    span = int(math.floor(at.max()) - start) + 1
    bin_s = max(1, math.ceil(span / MAX_POINTS))
    bins = ((at - start) // bin_s).astype(np.int64)
    n = int(bins.max()) + 1
    series = {
        "t": np.arange(n) * bin_s,
        "done": np.bincount(bins, minlength=n) / bin_s,
        "failed": np.bincount(bins[cols.code[pick] != OK], minlength=n) / bin_s,
        "throttled": np.bincount(bins, weights=cols.throttled[pick], minlength=n) / bin_s,
        "retries": np.bincount(bins, weights=retried[pick], minlength=n) / bin_s,
    }
    return _Timing(float(at.max()) - began, start, bin_s, series)
