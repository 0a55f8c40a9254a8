"""Applying a write to the store, as DPS and xcore both do once a request gets that far.

The store's refusals become the service's answers here, every applied write is counted
(the first starts the clock of the rate schedule and of the outage), and the simulated
concurrent writer lives here too: it is one more writer on the same store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.store import (
    Doc,
    NotFound,
    PatchRejected,
    PreconditionFailed,
    Refused,
    Store,
)
from bulkpatch.simulator.throttles import Throttle
from bulkpatch.simulator.wire import problem

# The field the simulated concurrent writer changes: a test of the final state leaves it
# aside, everything else must match exactly.
CONCURRENT_FIELD: Final = "simConcurrentWriter"
# The member it lives in: Decision Management offers have `characteristics`; Decisioning
# entities have none (Decisioning notes §2.1), so there it is a custom-attribute
# namespace of the simulator's own, as a tenant's `_<tenant>` would be.
CONCURRENT_HOME: Final = "characteristics"
EXD_CONCURRENT_HOME: Final = "_sim"
CONCURRENT_HOMES: Final = (CONCURRENT_HOME, EXD_CONCURRENT_HOME)
EXD_COLLECTIONS: Final = frozenset(
    {
        "offer-items",
        "item-collections",
        "selection-strategies",
        "ranking-formulas",
        "exd-placements",
    }
)

Mutate = Callable[[], web.Response]


class Writes:
    """Carries out writes on one store and keeps the count of those applied."""

    def __init__(
        self,
        config: SimConfig,
        store: Store,
        stats: Stats,
        throttle: Throttle | None,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._store = store
        self._stats = stats
        self._throttle = throttle
        self._clock = clock
        # Called with the count of applied writes after each one: lets a test act at an
        # exact point of a run (stop a client, say) without polling.
        self.observers: list[Callable[[int], None]] = []

    def apply(self, mutate: Mutate, conflict_status: int | None = None) -> web.Response:
        """Apply a write now, mapping the store's refusals to answers.

        ``conflict_status`` overrides the configured one: xcore documents its 409.
        """
        cfg = self._config
        conflict = conflict_status or cfg.conflict_status
        try:
            response = mutate()
        except NotFound as exc:
            return problem(404, "Not Found", f"no entity with id {str(exc)!r}")
        except PreconditionFailed as exc:
            title = "Conflict" if conflict == 409 else "Precondition Failed"
            return problem(conflict, title, f"If-Match does not match the current etag of {exc}")
        except Refused as exc:
            return problem(exc.status, exc.title, exc.detail)
        except PatchRejected as exc:
            if exc.kind == "test":
                status = cfg.test_failed_status
            elif exc.kind in ("read-only", "unprocessable"):
                status = 422
            else:
                status = 400
            return problem(status, "Patch rejected", str(exc), operation=exc.index)
        self._note()
        return response

    def _note(self) -> None:
        now = self._clock()
        first = self._stats.first_write
        if first is None:
            first = self._stats.first_write = now
            if self._throttle is not None:
                self._throttle.first_write = now
        self._stats.writes_by_second[int(now - first)] += 1
        for observer in self.observers:
            observer(self._store.writes_applied)

    def concurrent_write(self, key: str, entity_id: str) -> None:
        """Another writer changes a field of its own on the same entity, bumping the etag."""
        doc = self._store.get(key, entity_id)
        if doc is None:
            return
        home = EXD_CONCURRENT_HOME if key in EXD_COLLECTIONS else CONCURRENT_HOME
        if doc.get("exdRule") is True:
            home = EXD_CONCURRENT_HOME
        holder = doc.get(home)
        if isinstance(holder, dict):
            count = int(holder.get(CONCURRENT_FIELD, "0")) + 1
            ops: list[Doc] = [
                {"op": "add", "path": f"/{home}/{CONCURRENT_FIELD}", "value": str(count)}
            ]
        else:
            ops = [{"op": "add", "path": f"/{home}", "value": {CONCURRENT_FIELD: "1"}}]
        self._store.patch(
            key, entity_id, ops, if_match=None, client_id="sim-other", user="other-writer@AdobeID"
        )
