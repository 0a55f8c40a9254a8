"""The faults drawn for each write, and carrying them out.

One draw per write picks at most one of the exclusive faults (server errors, a 429, an
expired token, a dropped connection before or after the write, a late answer, a zombie
write); the concurrent writer is drawn on its own. The draws come from one seeded
generator in a fixed order, so a seed replays the same faults.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.ims import Tokens
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.wire import drop, gateway_error, problem, too_many
from bulkpatch.simulator.writes import Mutate, Writes


class Faults:
    """Draws each write's fault and carries it out; holds the zombie writes still pending."""

    def __init__(self, config: SimConfig, stats: Stats, writes: Writes, tokens: Tokens) -> None:
        self._config = config
        self._stats = stats
        self._writes = writes
        self._tokens = tokens
        self._rng = random.Random(config.fault_seed)
        # Drawn on every write: computed once, not from the dataclass fields each time.
        self._exclusive = config.faults.exclusive()
        self._pending: set[asyncio.Task[Any]] = set()

    async def write(
        self,
        request: web.Request,
        mutate: Mutate,
        concurrent: Callable[[], None] | None = None,
        conflict_status: int | None = None,
    ) -> web.Response:
        """Draw this write's fault and carry it out, or apply the write plainly."""
        rng = self._rng
        draw = rng.random()
        fault: str | None = None
        for name, p in self._exclusive:
            if draw < p:
                fault = name
                break
            draw -= p
        if rng.random() < self._config.faults.concurrent_writer and concurrent is not None:
            self._stats.faults["concurrent_writer"] += 1
            concurrent()
        if fault is None:
            return self._writes.apply(mutate, conflict_status)
        self._stats.faults[fault] += 1
        return await self._carry_out(fault, request, mutate, conflict_status)

    async def _carry_out(
        self, fault: str, request: web.Request, mutate: Mutate, conflict_status: int | None
    ) -> web.Response:
        config = self._config
        if fault in ("error_500", "error_502", "error_503"):
            return _server_error(int(fault[-3:]))
        if fault == "throttle_429":
            form = config.fault_retry_after
            if form == "mixed":
                form = self._rng.choice(("seconds", "date", "none"))
            return too_many(form, float(config.fault_retry_after_s))
        if fault == "token_expiry":
            self._tokens.expire(request)
            return gateway_error(401, "401013", "Oauth token is not valid")
        if fault == "drop_before":
            drop(request)
        if fault == "drop_after":
            self._writes.apply(mutate, conflict_status)
            drop(request)
        if fault == "late_answer":
            response = self._writes.apply(mutate, conflict_status)
            self._stats.pending_late += 1
            try:
                await asyncio.sleep(config.late_ms / 1000)
            finally:
                self._stats.pending_late -= 1
            return response
        # zombie_write: the service holds the write and applies it after the client gave
        # up. It runs in its own task so the client's disconnect cannot cancel it.
        task = asyncio.create_task(self._zombie(mutate, conflict_status))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def _zombie(self, mutate: Mutate, conflict_status: int | None) -> web.Response:
        self._stats.pending_zombies += 1
        try:
            await asyncio.sleep(self._config.zombie_ms / 1000)
            return self._writes.apply(mutate, conflict_status)
        finally:
            self._stats.pending_zombies -= 1

    async def settle(self, within: float, clock: Callable[[], float]) -> bool:
        """Wait until no zombie write is pending, or ``within`` seconds; True if none is."""
        deadline = clock() + within
        while self._pending and (left := deadline - clock()) > 0:
            await asyncio.wait(set(self._pending), timeout=left)
        return not self._pending

    async def cancel_pending(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _server_error(status: int) -> web.Response:
    if status == 500:
        return problem(
            500,
            "Internal Server Error",
            "If making many simultaneous calls, you may be reaching the API limit.",
        )
    reason = "Bad Gateway" if status == 502 else "Service Unavailable"
    return gateway_error(status, f"{status}000", reason)
