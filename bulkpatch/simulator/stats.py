"""What the simulator saw: the counters served at ``/_sim/stats`` and printed at exit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bulkpatch.simulator.store import Store


class Stats:
    """What the simulator saw; served at ``/_sim/stats`` and printed at exit."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        # The throttle's refusals, whichever status it answers (429 or 503).
        self.throttled = 0
        self.outage = 0
        # When the first write was applied (the clock's reading): the outage's origin.
        self.first_write: float | None = None
        self.client_gone = 0
        self.tokens_issued = 0
        self.pending_zombies = 0
        self.pending_late = 0
        # Applied writes per whole second since the first write: what a throttle
        # benchmark compares with the limit.
        self.writes_by_second: Counter[int] = Counter()
        self._clock = clock
        self.started = clock()

    def as_dict(self, store: Store) -> dict[str, Any]:
        by_method: dict[str, dict[str, int]] = {}
        for (method, status), n in sorted(self.requests.items()):
            by_method.setdefault(method, {})[status] = n
        return {
            "requests": by_method,
            "requests_total": sum(self.requests.values()),
            "throttled_429": self.throttled,
            "outage_503": self.outage,
            "client_gone": self.client_gone,
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "pending_delayed_writes": self.pending_zombies,
            "pending_late_answers": self.pending_late,
            "writes_applied": store.writes_applied,
            "writes_by_second": {str(k): v for k, v in sorted(self.writes_by_second.items())},
            "tokens_issued": self.tokens_issued,
            "entities": {key: store.count(key) for key in store.collections()},
            "uptime_s": round(self._clock() - self.started, 3),
        }
