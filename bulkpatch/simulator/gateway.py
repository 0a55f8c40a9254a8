"""The API gateway in front of the service: throttle, network latency, credentials.

A request meets the token bucket first (its rate optionally following a schedule), then
the latency's jitter, then the credential and header checks; the answer leaves the
latency after the request arrived.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.ims import Tokens
from bulkpatch.simulator.stats import Stats
from bulkpatch.simulator.wire import ClientGone, Handler, gateway_error, too_many


class TokenBucket:
    """A token bucket over all API requests, its rate optionally following a schedule.

    The schedule's clock starts at the first write, so a client's start-up reads do not
    eat into the first phase.
    """

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self._schedule = config.rate_schedule or ((0.0, config.rate_limit or 0.0),)
        self._burst = float(config.burst)
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()
        self.first_write: float | None = None

    def rate(self, now: float) -> float:
        elapsed = 0.0 if self.first_write is None else now - self.first_write
        current = self._schedule[0][1]
        for at, rate in self._schedule:
            if at <= elapsed:
                current = rate
        return current

    def take(self) -> float | None:
        """Take a token; None if granted, else the seconds until one is available."""
        now = self._clock()
        rate = self.rate(now)
        self._tokens = min(self._burst, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate


class Gateway:
    """Lets an API request through to the service, or answers for the gateway."""

    def __init__(
        self, config: SimConfig, stats: Stats, tokens: Tokens, bucket: TokenBucket | None
    ) -> None:
        self._config = config
        self._stats = stats
        self._tokens = tokens
        self._bucket = bucket
        self._latency_rng = random.Random(
            None if config.fault_seed is None else config.fault_seed + 1
        )

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The gateway, then the service, then the network's latency on the way back.

        The answer leaves ``latency_ms`` (plus this request's jitter) after the request
        arrived, however long the work took within that: a fixed-latency network, as
        Little's law assumes. The work is done on arrival, not after the wait, because a
        server that sleeps first wakes every request that arrived together at the same
        instant and then works through them in one turn of its loop, and everything that
        arrives during that turn is read together again: the requests would travel in
        convoys, each one waiting for the whole convoy's work.

        The jitter is waited before the work: requests sent close together can overtake
        each other, as on a real network. A client that goes away during the jitter never
        has its request read; one that goes away during the latency has its write applied
        and misses the answer, the case a client cannot tell from a lost request.
        """
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait is not None:
                self._stats.throttled += 1
                return too_many(self._config.retry_after, wait)
        cfg = self._config
        if not (cfg.latency_ms or cfg.latency_jitter_ms):
            return self.admit(request) or await handler(request)
        loop = asyncio.get_running_loop()
        jitter = self._latency_rng.random() * cfg.latency_jitter_ms / 1000
        due = loop.time() + cfg.latency_ms / 1000 + jitter
        if jitter:
            await asyncio.sleep(jitter)
        try:
            response = self.admit(request) or await handler(request)
        except web.HTTPException:
            await _answer_at(request, due)
            raise
        await _answer_at(request, due)
        return response

    def admit(self, request: web.Request) -> web.Response | None:
        """Credentials and the API's headers: None when the request may go on."""
        cfg = self._config
        headers = request.headers
        api_key = headers.get("x-api-key", "").strip()
        if not api_key:
            return gateway_error(403, "403000", "Api Key is required")
        if cfg.api_key is not None and api_key != cfg.api_key:
            return gateway_error(403, "403003", "Api Key is invalid")
        auth = headers.get("Authorization", "").strip()
        if not auth:
            return gateway_error(403, "403010", "Oauth token is missing.")
        scheme, _, token = auth.partition(" ")
        # The seed pages' curl sends "Bearer  {TOKEN}" (two spaces): tolerate whitespace.
        if scheme.lower() != "bearer" or not self._tokens.valid(token.strip()):
            return gateway_error(401, "401013", "Oauth token is not valid")
        org = headers.get("x-gw-ims-org-id", "").strip()
        if not org:
            return gateway_error(400, "400003", "Missing header: x-gw-ims-org-id")
        if cfg.org_id is not None and org != cfg.org_id:
            return gateway_error(403, "403003", "The organization is not valid for this API key")
        if not headers.get("x-sandbox-name", "").strip():
            return gateway_error(400, "400003", "Missing header: x-sandbox-name")
        return None


async def _answer_at(request: web.Request, due: float) -> None:
    delay = due - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
    if request.transport is None or request.transport.is_closing():
        raise ClientGone
