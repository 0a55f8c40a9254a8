"""The one request path: every API request of every command leaves through a ``Gateway``.

::

    exchange(): the schedule (pace, holds) ─► token ─► request id ─► client ─► heard
    absorb():   429 ─► the pace drops to the server's grant (``pace.RateControl``); the
                       request waits its Retry-After (or a backoff), and every request
                       does when the server keeps refusing for a long Retry-After
                503 + Retry-After ─► as a 429 when it asks for a second or two (a
                       throttle answering 503); longer, or once the server has refused
                       everything for 1.25 s, every request waits (an outage)
                401 ─► the token is renewed once, by one caller (the others wait for it)
    read():     the retry loop of a read: absorb, back off on 408/5xx/transport errors

A gateway sends one request at a time and decides nothing about a job: what an answer
means for *this* request (done, unknown, conflict) is the caller's; what it means for
the run (pause, rate, token, a systemic stop) is the gateway's. Nothing here imports
aiohttp: the transport is ``client.HttpClient``.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog
from yarl import URL

from bulkpatch.auth import TokenProvider
from bulkpatch.client import Response, Transport
from bulkpatch.errors import BulkpatchError, ErrorKind, RequestError, TransportError
from bulkpatch.longwindow import LONG_WAIT_S
from bulkpatch.pace import TICK_S, RateControl, Schedule
from bulkpatch.repeat import Exchange, Given, Tally, repeated
from bulkpatch.retry import (
    RetryPolicy,
    ServerSeconds,
    Verdict,
    classify_read,
    classify_status,
    classify_transport,
    parse_retry_after,
)
from bulkpatch.summary import Traffic

log = structlog.get_logger()

# New tokens refused one after another before the credentials are declared rejected: a
# token renewed because it expired is routine, two renewals whose tokens are refused at
# once are not.
MAX_RENEWALS_REFUSED: Final = 2
AUTO_START: Final = 10.0  # requests/s where --rate auto starts


# Answers that, when they rise, say the server is overloaded (API notes §3: "you may be
# reaching the API limit"); a 503 with Retry-After is waited out instead (``_asked_to_wait``).
_CONGESTION: Final = frozenset((500, 502, 503, 504))
# Refusing everything for longer than this is an outage: a spent window of a second refuses
# for the rest of it and a round trip, and longer refusals would be read as a long window's.
_OUTAGE_S: Final = 1.25


def resend_cause(status: int) -> str | None:
    """Why a request answered ``status`` may be sent again (``Traffic.resends``): ``429``,
    ``5xx`` (408 too), ``conflict`` (409, 412: sent again rebased); None for any other."""
    if status == 429:
        return "429"
    if status >= 500 or status == 408:
        return "5xx"
    if status in (409, 412):
        return "conflict"
    return None


class Clock(Protocol):
    """Time as the gateway sees it (seconds): the event loop's, or a virtual one in tests."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's clock."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Halted(BulkpatchError):
    """The run stops for a systemic failure (credentials rejected, endpoint unreachable);
    the request that met it ends as ``aborted``, and so does every request after it."""


@dataclass(frozen=True, slots=True)
class Pacing:
    """Requests per second for every request together: ``rate_per_s`` (0: no limit), or
    found from the server's 429s when ``adaptive`` (up to ``max_rate_per_s``)."""

    rate_per_s: float = 0.0
    adaptive: bool = False
    max_rate_per_s: float = 1000.0

    @property
    def paced(self) -> bool:
        """Whether requests wait for a rate of our own from the start."""
        return self.adaptive or self.rate_per_s > 0

    def control(self) -> RateControl:
        """The controller for this mode: ``--rate R`` is a ceiling it starts at, ``auto``
        starts low and doubles, ``0`` is unpaced until the server refuses."""
        if self.adaptive:
            return RateControl(ceiling=self.max_rate_per_s, start=AUTO_START, doubling=True)
        if self.rate_per_s > 0:
            return RateControl(ceiling=self.rate_per_s, start=self.rate_per_s)
        return RateControl(ceiling=math.inf, start=None)


class Gateway:
    """The run's one request path (see the module docstring)."""

    def __init__(
        self,
        client: Transport,
        auth: TokenProvider,
        *,
        policy: RetryPolicy,
        pacing: Pacing,
        traffic: Traffic,
        rng: random.Random,
        on_halt: Callable[[str], None],
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.clock = clock or LoopClock()
        self.auth = auth
        self.policy = policy
        self.traffic = traffic
        self.halted: str | None = None
        self._rng = rng
        self._on_halt = on_halt
        self._control = pacing.control()
        self._schedule = Schedule(self._control.pace)
        # Told to wait since, and ``accepted`` then: a stretch with nothing accepted.
        self._waiting_from: tuple[float, int] | None = None
        self._outage_at: int | None = None  # ``accepted`` when an outage was seen to begin
        self._refused: dict[str, int] = {}  # 401s per token since it was last accepted
        self._seconds = ServerSeconds()  # where the server's seconds begin, on our clock
        self._renewals = 0  # tokens refused in a row, with no answer but 401 in between
        self._bearer = ("", "")  # the last token and its Authorization header
        # x-request-id: the run's random prefix and a sequence number, so a request in the
        # service's logs is found from its outcome line.
        self._request_prefix = f"bulkpatch-{secrets.token_hex(4)}-"
        self._request_seq = 0

    # ------------------------------------------------------------------ the run

    def halt(self, reason: str) -> Halted:
        """Stop the run for a systemic failure; the error that ends the current request."""
        if self.halted is None:
            self.halted = reason
            self._on_halt(reason)
        return Halted(reason)

    async def adapt(self) -> None:
        """Move the rate with the server's answers, every tick, for ever."""
        clock = self.clock
        while True:
            if self._control.tick(clock.time()):
                self._set_rate()
            await clock.sleep(TICK_S)

    def _set_rate(self) -> None:
        rate = self._control.pace
        if rate is not None:
            self._schedule.set_rate(rate, self.clock.time())
            log.debug("run.rate", rate=round(rate, 1))

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds``; after it they leave one slot apart."""
        until = self.clock.time() + seconds
        if until > self._schedule.held_until:
            self._schedule.hold(until)
            log.debug("run.throttled", pause_s=round(seconds, 3))

    # ------------------------------------------------------------------ one request

    def express_token(self) -> str | None:
        """The token in hand when a request may leave at once (no pause, no limit, not
        halted): the fast path's test, with no coroutine for it."""
        schedule = self._schedule
        if schedule.interval or self.halted is not None:
            return None
        if schedule.held_until != -math.inf and schedule.held_until > self.clock.time():
            return None
        return self.auth.current

    async def exchange(
        self,
        tally: Tally,
        method: str,
        url: URL,
        headers: Any,
        body: bytes | None = None,
    ) -> Exchange:
        """Send one request (``headers`` is a fresh mutable copy: the token and the request
        id go in it); its answer or transport error, classified. Raises ``Halted``."""
        if self.halted is not None:
            raise Halted(f"the run stopped: {self.halted}")
        schedule, clock = self._schedule, self.clock
        if schedule.interval or schedule.held_until != -math.inf:
            begun = clock.time()
            await self._gate()
            tally.wait_s += clock.time() - begun
        token = self.auth.current
        if token is None:
            try:
                token = await self.auth.token()
            except RequestError as exc:
                raise self.halt(f"no access token: {exc}") from exc
        tally.request_id = self.stamp(method, headers, token)
        if tally.resend is not None and tally.resend[0] == method:
            self.traffic.resends[tally.resend[1]] += 1
            tally.resend = None
        sent = clock.time()
        try:
            response = await self.client.send(method, url, headers, body)
        except TransportError as exc:
            tally.server_s += clock.time() - sent
            tally.last_error = str(exc)
            tally.connect_failures += not exc.sent
            tally.resend = (method, "transport")
            return Exchange(exc, classify_transport(exc), token)
        tally.server_s += clock.time() - sent
        self.heard(response, token)
        if (cause := resend_cause(response.status)) is not None:
            tally.resend = (method, cause)
        # A 3xx that reaches a read is one the client refused to follow: permanent.
        classify = classify_read if method == "GET" else classify_status
        return Exchange(response, classify(response.status), token)

    async def _gate(self) -> None:
        """Wait for this request's slot in the schedule."""
        clock, schedule = self.clock, self._schedule
        while True:
            now = clock.time()
            at, booked = schedule.reserve(now)
            if at <= now:
                return
            version = schedule.version
            await clock.sleep(at - now)
            if booked and schedule.version == version:
                return
            # Not booked yet, or a hold or a slower rate came while it waited: ask again.

    def stamp(self, method: str, headers: Any, token: str) -> str:
        """Put the token and a new request id on a request about to leave; count it.
        Returns the request id."""
        bearer = self._bearer
        if bearer[0] != token:
            bearer = self._bearer = (token, f"Bearer {token}")
        headers["Authorization"] = bearer[1]
        self._request_seq = seq = self._request_seq + 1
        headers["x-request-id"] = request_id = f"{self._request_prefix}{seq}"
        self._control.sent += 1
        traffic = self.traffic
        traffic.requests += 1
        if method != "GET":
            traffic.writes += 1
        return request_id

    def heard(self, response: Response, token: str) -> None:
        """What an answer tells the run as a whole: its status, the pace, the token."""
        status = response.status
        self.traffic.statuses[status] += 1
        date = response.date
        if date is not None and date != self._seconds.date:
            self._seconds.heard(date, self.clock.time())
        if status in _CONGESTION:
            # A 503 that asks to wait is absorbed (``_asked_to_wait``); one whose
            # Retry-After is unusable is congestion, as a 503 without one.
            if not (status == 503 and parse_retry_after(response.retry_after) is not None):
                self._control.errors += 1
        elif status != 429:
            control = self._control
            control.accepted += 1
            if control.shut and control.reopened(self.clock.time()):
                self._set_rate()
        if self._refused and response.status != 401:
            self._refused.pop(token, None)  # accepted again: its refusals were passing
            self._renewals = 0

    # ------------------------------------------------------------------ 429 and 401

    async def absorb(self, exchange: Exchange, tally: Tally) -> bool:
        """Deal with a 429 (slow down, wait), a 401 (renew the token) or a 503 with
        ``Retry-After`` (a throttle's or an outage's): True when it was one of them, and the wait
        counts as no attempt. Raises ``Given`` after too many 429s, ``Halted`` when the
        credentials are rejected or the server asks to wait longer than ``--max-wait``."""
        if exchange.verdict is Verdict.THROTTLED:
            await self._throttled(exchange, tally)
            return True
        if exchange.verdict is Verdict.UNAUTHORIZED:
            await self._renew(exchange.token)
            return True
        return await self._asked_to_wait(exchange, tally)

    async def _throttled(self, exchange: Exchange, tally: Tally) -> None:
        """A 429 (RFC 6585 §4): the pace drops to what the server grants; this request
        waits its ``Retry-After`` (RFC 9110 §10.2.3; without one, a backoff), and so does
        every request when the server has refused everything for a while and asks for
        more than a second (its window ran out)."""
        answer = exchange.answer
        assert isinstance(answer, Response)
        tally.throttled += 1
        self.traffic.throttled += 1
        if tally.throttled > self.policy.max_throttled:
            raise Given(ErrorKind.EXHAUSTED, "throttled (429) too many times", 429)
        now = self.clock.time()
        into = self._seconds.into(answer.date, now)
        asked = self.policy.asked_wait_s(answer.retry_after, answer.date, into)
        delay = self.policy.throttle_delay_s(
            answer.retry_after, tally.throttled, self._rng, date=answer.date, into_s=into
        )
        await self._refusal(tally, now, asked, delay)

    async def _asked_to_wait(self, exchange: Exchange, tally: Tally) -> bool:
        """A 503 with ``Retry-After`` (RFC 9110 §10.2.3, §15.6.4): the wait spends no
        attempt (True). Longer than ``LONG_WAIT_S``, an outage: every request waits as
        long as it says. Shorter, a throttle answering 503, as gateways in front of some
        Adobe APIs do (API notes §3): a refusal, as a 429's (``_throttled``); every request
        held for each of them, the run landed 0.50x to 0.76x of a one-second limit. Raises
        ``Given`` after as many such waits as 429s are allowed."""
        answer = exchange.answer
        if not isinstance(answer, Response) or answer.status != 503:
            return False
        now = self.clock.time()
        into = self._seconds.into(answer.date, now)
        delay = self.policy.asked_wait_s(answer.retry_after, answer.date, into)
        if delay is None:
            return False
        tally.throttled += 1
        if tally.throttled > self.policy.max_throttled:
            raise Given(ErrorKind.EXHAUSTED, "told to wait (503) too many times", 503)
        if self._outage(now, delay):
            self._wait(delay)
        else:
            await self._refusal(tally, now, delay, delay)
        return True

    async def _refusal(self, tally: Tally, now: float, asked: float | None, delay: float) -> None:
        """A throttle's refusal, asking to wait ``asked`` s (None: it did not say): the pace
        drops to what the server grants, and this request waits ``delay`` s; every request
        does when the server has refused everything for a tick and asks for more than
        ``LONG_WAIT_S`` (``RateControl.holds_everyone``)."""
        if self._control.refused(now, asked):
            self._set_rate()
        if self._control.holds_everyone(now, asked):
            self._wait(delay)
        else:
            self._bound_wait(delay)
        tally.wait_s += delay
        await self.clock.sleep(delay)

    def _outage(self, now: float, asked: float) -> bool:
        """Whether a 503 asking to wait ``asked`` s is an outage's: it asks for more than
        ``LONG_WAIT_S``, or the server has refused everything for longer than a window of a
        second can (``_OUTAGE_S``), or since an outage began. Taken for a throttle's, an
        outage answering ``Retry-After: 1`` drew 319 requests in 20 s instead of 19, and
        the pace read it as a long window's turn: 0.2x of the rate after it."""
        control = self._control
        if self._outage_at == control.accepted:
            return True
        if asked <= LONG_WAIT_S and control.refusing_for(now) <= _OUTAGE_S:
            return False
        self._outage_at = control.accepted
        control.unavailable()
        return True

    def _wait(self, seconds: float) -> None:
        """Hold every request as the server asked (``_bound_wait`` first)."""
        self._bound_wait(seconds)
        self.pause(seconds)

    def _bound_wait(self, seconds: float) -> None:
        """``--max-wait``: a wait longer than it, or one that would make a stretch with
        nothing accepted longer than it, stops the run instead (exit 3)."""
        now = self.clock.time()
        accepted = self._control.accepted
        if self._waiting_from is None or self._waiting_from[1] != accepted:
            self._waiting_from = (now, accepted)  # a new stretch: something was accepted
        total = now + seconds - self._waiting_from[0]
        limit = self.policy.max_wait_s
        if seconds > limit or total > limit:
            raise self.halt(
                f"the server asked to wait {max(seconds, total):.0f} s (more than --max-wait {limit:g} s)"
            )

    async def _renew(self, token: str) -> None:
        if not self.auth.renewable:
            # Nothing to renew: the token was refused, and every request after this one
            # would be too.
            raise self.halt("the access token was rejected (401)")
        if token == self.auth.current:
            # Refused without a success since: an expired token is routine, but a token
            # refused again and again (a static one), or token after new token refused
            # with nothing accepted in between (IMS issues tokens this API rejects),
            # means bad credentials.
            refused = self._refused.get(token, 0) + 1
            self._refused[token] = refused
            self._renewals += 1
            if refused > self.policy.max_refusals or self._renewals > MAX_RENEWALS_REFUSED:
                raise self.halt("the credentials are rejected (401) even after renewing the token")
        # Single-flight: the first caller refused with this token fetches a new one; the
        # others refused with it wait for that one instead of asking again.
        try:
            await self.auth.renew(token)
        except RequestError as exc:
            raise self.halt(f"renewing the access token failed: {exc}") from exc

    async def back_off(self, attempt: int, tally: Tally) -> None:
        """Wait before retry number ``attempt`` of a request that failed transiently (the
        wait counts in ``tally.wait_s``)."""
        self.traffic.retries += 1
        delay = self.policy.backoff_s(attempt, self._rng)
        tally.wait_s += delay
        await self.clock.sleep(delay)

    # ------------------------------------------------------------------ reads

    async def read(self, tally: Tally, url: URL, headers: Mapping[str, str], what: str) -> Response:
        """GET ``url`` until it answers 2xx (``repeat.repeated``): every read of every
        command (an entity, a list page, a look-up). Raises ``Given`` (a 4xx, or out of
        attempts) or ``Halted`` (the endpoint is unreachable)."""
        refused_before = tally.connect_failures
        try:
            return await repeated(
                lambda: self.exchange(tally, "GET", url, dict(headers)),
                tally=tally,
                policy=self.policy,
                absorb=self.absorb,
                back_off=lambda attempt: self.back_off(attempt, tally),
                what=what,
            )
        except Given as exc:
            unreachable = tally.connect_failures - refused_before >= self.policy.max_attempts
            if exc.kind == ErrorKind.EXHAUSTED and unreachable:
                # Not this entity: the endpoint. Every other job would only spend its own
                # retries finding the same.
                self.halt(f"the endpoint is unreachable: {tally.last_error}")
            raise
