"""The simulator's HTTP application: its parts put together, and the path of a request.

It answers as the real service does where that is documented (the API notes and the
seed pages) and as its settings say where it is not. The order of checks follows a real
request's path: the planned outage, the throttle and the latency's jitter at the gateway
(``gateway``, ``throttles``), then credentials and headers, then the service (``dps``,
``xcore``: content type, body, offer type), then the fault drawn for a write
(``faults``), then the store (``writes``); the answer leaves the latency after the
request arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.dps import DpsService
from bulkpatch.simulator.faults import Faults
from bulkpatch.simulator.gateway import Gateway
from bulkpatch.simulator.ims import Tokens
from bulkpatch.simulator.inspection import Inspection
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.store import Store
from bulkpatch.simulator.throttles import Outage, TokenBucket, make_throttle
from bulkpatch.simulator.wire import (
    DPS_BASE,
    IMS_PATH,
    XCORE_BASE,
    ClientGone,
    Dropped,
    Handler,
)
from bulkpatch.simulator.writes import Writes
from bulkpatch.simulator.xcore import XcoreService

# TokenBucket is named here too: the gateway's tests reach it through this module.
__all__ = ["SIMULATOR", "Simulator", "TokenBucket", "create_app"]


class Simulator:
    """One simulated Offer Library: its store, its gateway state and its handlers."""

    def __init__(self, config: SimConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else Store()
        # Read from this module's `time` once, here, and handed to every part that tells
        # time: a test fakes the gateway's clock by swapping `app.time` before it starts a
        # simulator, without moving the event loop's clock.
        clock: Callable[[], float] = time.monotonic
        self.stats = Stats(clock)
        throttle = make_throttle(config, clock)
        outage = Outage(config.outage, self.stats, clock) if config.outage else None
        self.tokens = Tokens(config, self.stats, clock)
        self.gateway = Gateway(config, self.stats, self.tokens, throttle, outage)
        self.writes = Writes(config, self.store, self.stats, throttle, clock)
        self.faults = Faults(config, self.stats, self.writes, self.tokens)
        self.dps = DpsService(config, self.store, self.faults, self.writes)
        self.xcore = XcoreService(config, self.store, self.faults, self.writes)
        self.inspection = Inspection(self.store, self.stats, self.faults, clock)

    @property
    def write_observers(self) -> list[Callable[[int], None]]:
        """Called with the count of applied writes after each one (see ``Writes``)."""
        return self.writes.observers

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app[SIMULATOR] = self
        app.router.add_post(IMS_PATH, self.tokens.ims_token)
        self.inspection.add_routes(app.router)
        self.dps.add_routes(app.router)
        self.xcore.add_routes(app.router)
        app.on_shutdown.append(self._cancel_pending)
        return app

    async def _cancel_pending(self, _app: web.Application) -> None:
        await self.faults.cancel_pending()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        api = request.path.startswith((DPS_BASE, XCORE_BASE))
        try:
            if api:
                response = await self.gateway.handle(request, handler)
            else:
                response = await handler(request)
        except Dropped:
            self.stats.requests[(request.method, "dropped")] += 1
            raise asyncio.CancelledError from None
        except ClientGone:
            # Quietly: a client that timed out (during --latency-ms, say) is routine, and
            # aiohttp would otherwise log a traceback for each one.
            self.stats.requests[(request.method, "client_gone")] += 1
            self.stats.client_gone += 1
            raise asyncio.CancelledError from None
        except web.HTTPException as exc:
            self.stats.requests[(request.method, str(exc.status))] += 1
            raise
        self.stats.requests[(request.method, str(response.status))] += 1
        request_id = request.headers.get("x-request-id")
        if request_id:
            response.headers["x-request-id"] = request_id
        return response


SIMULATOR: Final = web.AppKey("simulator", Simulator)


def create_app(config: SimConfig, store: Store | None = None) -> web.Application:
    """The simulator as an aiohttp application (its ``Simulator`` is ``app[SIMULATOR]``)."""
    return Simulator(config, store).app()
