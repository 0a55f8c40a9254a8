"""What a run did, in figures: counters, and job latencies in a histogram of fixed size.

Latencies go into logarithmic buckets (each 2 % wider than the one before) rather than a
list, so a run of a million jobs summarises in the same few kilobytes as one of ten, and
a percentile is read off to within 1 %.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from bulkpatch.outcomes import Outcome

# Why a request was sent again, in the order the summary names them.
RESEND_CAUSES: Final = ("429", "5xx", "transport", "conflict")
_GROWTH: Final = 1.02
_FLOOR_MS: Final = 0.01  # latencies below this share the first bucket
_LOG_FLOOR: Final = math.log(_FLOOR_MS)
_PER_LOG: Final = 1 / math.log(_GROWTH)
# Enough buckets for a day: a longer latency shares the last one (max_ms stays exact).
_BUCKETS: Final = int((math.log(86_400_000) - _LOG_FLOOR) * _PER_LOG) + 2
_log = math.log


class LatencyHistogram:
    __slots__ = ("_buckets", "count", "max_ms")

    def __init__(self) -> None:
        self._buckets = [0] * _BUCKETS
        self.count = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        # Once per job: a list index and one logarithm (a Counter costs twice this).
        self.count += 1
        if ms > self.max_ms:
            self.max_ms = ms
        if ms <= _FLOOR_MS:
            self._buckets[0] += 1
        else:
            self._buckets[min(int((_log(ms) - _LOG_FLOOR) * _PER_LOG) + 1, _BUCKETS - 1)] += 1

    def percentile(self, p: float) -> float | None:
        """The latency under which ``p`` percent of jobs finished (to within 1 %)."""
        if not self.count:
            return None
        rank = math.ceil(self.count * p / 100)
        seen = 0
        for bucket, count in enumerate(self._buckets):
            seen += count
            if seen >= rank:
                # The bucket's geometric middle: within 1 % of any latency in it.
                middle: float = _FLOOR_MS * _GROWTH ** max(0.0, bucket - 0.5)
                return round(min(middle, self.max_ms), 1)
        return round(self.max_ms, 1)  # pragma: no cover - the ranks add up to count

    def as_dict(self) -> dict[str, float | None]:
        return {
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": round(self.max_ms, 1) if self.count else None,
        }


def of_run(stats: RunStats, wall_s: float) -> dict[str, Any]:
    """The summary of a run: jobs, wall time (s), jobs/s and the counters of ``stats``;
    what ``--summary`` writes and ``render`` prints."""
    counters = stats.as_dict()
    jobs = sum(counters["outcomes"].values())
    # The rate of work done: jobs aborted by a stop did none, and counting them makes a
    # run stopped at once look fast.
    finished = jobs - counters["outcomes"].get("aborted", 0)
    return {
        "jobs": jobs,
        "finished": finished,
        "wall_s": round(wall_s, 3),
        "jobs_per_s": round(finished / wall_s, 1) if wall_s > 0 and finished else None,
        **counters,
    }


def render(summary: dict[str, Any]) -> str:
    """The summary as a few lines for a person at a terminal."""
    outcomes = summary["outcomes"]
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    statuses = ", ".join(f"{k}: {v:,}" for k, v in summary["statuses"].items()) or "none"
    failed_before = summary.get("skipped_failed", 0)
    resends = summary.get("resends", {})
    return "\n".join(
        [
            _headline(summary),
            f"  outcomes  {kinds or 'none'}",
            f"  answers   {statuses}",
            f"  reads     {summary.get('reads', 0):,} GETs, {summary.get('list_pages', 0):,} list pages",
            "  re-sends  " + ", ".join(f"{cause} {resends.get(cause, 0):,}" for cause in RESEND_CAUSES),
            f"  retries {summary['retries']:,}, conflicts rebased {summary['conflicts_rebased']:,}, "
            f"recovered {summary['recovered']:,}, 429s {summary['throttled']:,}, "
            f"skipped (done before) {summary['skipped']:,}"
            + (f" ({failed_before:,} failed)" if failed_before else ""),
            # The outcome lines' three times, by their names there.
            f"  ms        {_percentiles(summary['latency_ms'])} (each job, start to outcome)",
            f"  server_ms {_percentiles(summary.get('server_ms'))} (with the server)",
            f"  wait_ms   {_percentiles(summary.get('wait_ms'))} (waiting on the pace and lanes)",
        ]
    )


def _headline(summary: dict[str, Any]) -> str:
    """Jobs, wall time, and the rate of the finished ones (an aborted job is no work done)."""
    jobs, rate = summary["jobs"], summary["jobs_per_s"]
    aborted = summary["outcomes"].get("aborted", 0)
    finished = f" ({aborted:,} aborted)" if aborted else ""
    shown = f", {rate:,.1f} finished jobs/s" if rate is not None else ""
    return f"bulkpatch: {jobs:,} jobs{finished} in {summary['wall_s']:.1f} s{shown}"


def _percentiles(figures: dict[str, Any] | None) -> str:
    if not figures or figures["p50"] is None:
        return "n/a"
    return (
        f"p50 {figures['p50']} ms, p90 {figures['p90']} ms, p99 {figures['p99']} ms, "
        f"max {figures['max']} ms"
    )


_INDEX = re.compile(r"/(\d+|-)(?=/|$)")
_FIRST_FAILURES: Final = 5


class PlanTally:
    """What ``bulkpatch plan`` tells a person: counts, the first failures, the fields most
    changed (array positions folded into ``*``, so 10,000 appends are one line)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.fields: Counter[str] = Counter()
        self.failures: list[str] = []

    def add(self, outcome: Outcome) -> None:
        kind = str(outcome.extra.get("plan", "fail"))
        self.kinds[kind] += 1
        if kind == "fail" and len(self.failures) < _FIRST_FAILURES:
            message = (outcome.error or {}).get("message", "")
            self.failures.append(f"line {outcome.line} ({outcome.id}): {message}")
        for change in outcome.extra.get("changes", ()):
            self.fields[_INDEX.sub("/*", change["path"])] += 1

    def render(self, wall_s: float) -> str:
        total = sum(self.kinds.values())
        lines = [
            f"bulkpatch plan: {total:,} jobs in {wall_s:.1f} s: "
            + ", ".join(f"{self.kinds[k]:,} {k}" for k in ("change", "noop", "fail")),
        ]
        if self.fields:
            top = ", ".join(f"{path} ({n:,})" for path, n in self.fields.most_common(8))
            lines.append(f"  most changed  {top}")
        if self.failures:
            lines.append("  first failures:")
            lines.extend(f"    {failure}" for failure in self.failures)
        return "\n".join(lines)


@dataclass(slots=True)
class Traffic:
    """The run's requests, by kind and by answer, for the summary."""

    requests: int = 0
    writes: int = 0
    throttled: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # Requests sent again, by why the one before was not the last (``gateway.resend_cause``).
    resends: Counter[str] = field(default_factory=Counter)


@dataclass
class RunStats:
    """Counters of a run, for the summary."""

    outcomes: Counter[str] = field(default_factory=Counter)
    traffic: Traffic = field(default_factory=Traffic)  # the gateway's counts of requests
    reads: int = 0  # GETs of one entity, and create-key look-ups
    list_pages: int = 0  # pages read to prefetch entities' state (``prefetch``)
    conflicts_rebased: int = 0
    recovered: int = 0
    skipped: int = 0  # done in an earlier run of the same journal
    skipped_failed: int = 0  # of those, the ones that failed
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # ms per job
    server: LatencyHistogram = field(default_factory=LatencyHistogram)  # server_ms per job
    waiting: LatencyHistogram = field(default_factory=LatencyHistogram)  # wait_ms per job

    @property
    def statuses(self) -> Counter[int]:
        return self.traffic.statuses

    @property
    def requests(self) -> int:
        return self.traffic.requests

    @property
    def writes(self) -> int:
        return self.traffic.writes

    @property
    def retries(self) -> int:
        return self.traffic.retries

    @property
    def throttled(self) -> int:
        return self.traffic.throttled

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(self.outcomes),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "requests": self.requests,
            "writes": self.writes,
            "reads": self.reads,
            "list_pages": self.list_pages,
            "retries": self.retries,
            "resends": {cause: self.traffic.resends[cause] for cause in RESEND_CAUSES},
            "conflicts_rebased": self.conflicts_rebased,
            "recovered": self.recovered,
            "throttled": self.throttled,
            "skipped": self.skipped,
            "skipped_failed": self.skipped_failed,
            "latency_ms": self.latency.as_dict(),
            "server_ms": self.server.as_dict(),
            "wait_ms": self.waiting.as_dict(),
        }
