"""The endpoints a test or an operator reads the simulator through, outside the API.

``/_sim/stats`` (the counters), ``/_sim/settle`` (wait out the delayed writes, then the
counters) and ``/_sim/dump`` (the whole store). They sit behind no gateway: no
credentials, no throttle, no latency. ``/_sim/xcore-ids`` belongs to the xcore endpoints.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from bulkpatch.simulator.faults import Faults
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.store import Store
from bulkpatch.simulator.wire import json_answer


class Inspection:
    """The handlers of ``/_sim/stats``, ``/_sim/settle`` and ``/_sim/dump``."""

    def __init__(
        self, store: Store, stats: Stats, faults: Faults, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._stats = stats
        self._faults = faults
        self._clock = clock

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_sim/stats", self.stats)
        router.add_get("/_sim/settle", self.settle)
        router.add_get("/_sim/dump", self.dump)

    async def stats(self, _request: web.Request) -> web.Response:
        return json_answer(self._stats.as_dict(self._store))

    async def settle(self, request: web.Request) -> web.Response:
        """Answer once no delayed write is pending (or after ``timeout`` seconds)."""
        timeout = float(request.query.get("timeout", "30"))
        settled = await self._faults.settle(timeout, self._clock)
        return json_answer({"settled": settled, **self._stats.as_dict(self._store)})

    async def dump(self, _request: web.Request) -> web.Response:
        return json_answer(self._store.dump())
