"""The whole engine in-process: a scripted transport instead of aiohttp, a virtual clock
instead of the loop's. Pauses and backoffs of tens of seconds take none, and what was
sent when is read off the transport's log.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Mapping
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from yarl import URL

from bulkpatch import Credentials, verify
from bulkpatch.client import Response
from bulkpatch.config import RunConfig
from bulkpatch.engine import Engine
from bulkpatch.errors import TransportError
from bulkpatch.jobs import parse_line

# The server's clock, which is not the client's: an HTTP-date Retry-After is read on it.
SERVER_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"


class VirtualClock:
    """Time that moves only when every task is waiting on it: then to the next wake-up."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._ticker: asyncio.Task[None] | None = None

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), wake))
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        await wake

    async def _tick(self) -> None:
        while self._sleepers:
            # Let every runnable task reach its next wait (the transport answers at once).
            for _ in range(50):
                await asyncio.sleep(0)
            at, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            if not wake.done():
                wake.set_result(None)


class ScriptedApi:
    """Offers in memory, answering each request as its script says (then plainly)."""

    def __init__(self, clock: VirtualClock, script: Mapping[int, str]) -> None:
        self.clock = clock
        self.script = dict(script)  # request number (from 1) -> what happens to it
        self.docs: dict[str, dict[str, Any]] = {
            f"o{n}": {"id": f"o{n}", "etag": 1, "name": "n"} for n in range(1, 6)
        }
        self.log: list[tuple[float, str, str, str | None]] = []  # time, method, id, If-Match
        self.latency_s = 0.0  # each answer leaves this long (virtual) after its request
        self.test_status = 409  # the answer to a patch whose `test` fails

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        entity = url.path.rsplit("/", 1)[1]
        self.log.append((self.clock.now, method, entity, headers.get("If-Match")))
        if self.latency_s:
            await self.clock.sleep(self.latency_s)
        fault = self.script.get(len(self.log), "ok")
        if fault.startswith("429"):
            return Response(429, b"{}", fault.removeprefix("429 ") or None, None, SERVER_DATE)
        if fault.startswith("503") and method != "GET":
            retry_after = fault.removeprefix("503").strip() or None
            return Response(503, b'{"title": "Service Unavailable"}', retry_after, None, SERVER_DATE)
        doc = self.docs[entity]
        if method == "GET":
            return Response(200, orjson.dumps(doc), None)
        assert body is not None
        match = headers.get("If-Match")
        if match is not None and match != f'"{doc["etag"]}"':
            return Response(409, b'{"title": "etag mismatch"}', None)
        try:
            new = verify.apply(orjson.loads(body), doc)
        except verify.PatchDoesNotApply as exc:
            return Response(self.test_status, orjson.dumps({"title": str(exc)}), None)
        new["etag"] = doc["etag"] + 1
        self.docs[entity] = new
        if fault == "drop-after":
            raise TransportError("Server disconnected", sent=True)
        return Response(200, orjson.dumps({"etag": new["etag"]}), None)


def _config(**overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "credentials": Credentials(access_token="t"),
        "endpoint": "https://platform.example/data/core/dps",
        "api_key": "k",
        "org_id": "O@AdobeOrg",
        "sandbox": "prod",
        "rate": 0,
        "concurrency": 1,
        "seed": 1,
    }
    settings.update(overrides)
    return RunConfig(**settings)


def _jobs(*ids: str) -> list[Any]:
    return [
        parse_line(orjson.dumps({"id": i, "patch": [{"op": "replace", "path": "/name", "value": f"v{n}"}]}), n)
        for n, i in enumerate(ids, 1)
    ]


async def _run(api: ScriptedApi, clock: VirtualClock, jobs: list[Any], **overrides: Any) -> list[dict[str, Any]]:
    engine = Engine(_config(**overrides), transport=api, clock=clock)
    return [o.to_dict() async for o in engine.run(jobs)]


async def test_a_429_with_retry_after_holds_the_refused_request_that_long() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {2: "429 30"})
    outcomes = await asyncio.wait_for(_run(api, clock, _jobs("o1", "o2", "o3", "o4")), 10)
    assert [o["ok"] for o in outcomes] == [True] * 4
    sent_at = [t for t, *_ in api.log]
    # The first write went at once; after the 429 nothing left for 30 s, then the rest.
    assert sent_at[:2] == [0.0, 0.0]
    assert all(t >= 30.0 for t in sent_at[2:])
    assert len(api.log) == 5  # four writes and the refused one: no read was needed


async def test_a_lost_answer_is_settled_by_a_read_and_a_resend_under_if_match() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {1: "drop-after"})
    outcomes = await asyncio.wait_for(_run(api, clock, _jobs("o1"), backoff_base=2, backoff_cap=2), 10)
    assert outcomes[0]["ok"] is True
    methods = [(m, match) for _, m, _, match in api.log]
    assert methods == [("PATCH", None), ("GET", None), ("PATCH", '"2"')]
    assert api.log[1][0] > 0.0  # the read waited its backoff, on the virtual clock


async def test_503s_back_off_exponentially_and_give_up_after_the_attempts() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, dict.fromkeys(range(1, 20), "503"))  # every write
    outcomes = await asyncio.wait_for(
        _run(api, clock, _jobs("o1"), max_attempts=3, backoff_base=8, backoff_cap=64), 10
    )
    assert outcomes[0]["ok"] is False
    assert outcomes[0]["error"]["kind"] == "exhausted"
    # Unknown outcomes: each retry is settled by a read first, then the write again.
    assert [m for _, m, _, _ in api.log] == ["PATCH", "GET", "PATCH", "GET", "PATCH"]
    assert api.docs["o1"]["etag"] == 1  # a 503 applies nothing, and nothing was claimed
    assert clock.now > 0  # the backoffs were waited, on the virtual clock


async def test_a_503_with_retry_after_is_waited_by_every_request_and_spends_no_attempt() -> None:
    clock = VirtualClock()
    # Two planned-outage answers in a row: with one attempt allowed, only waits that
    # spend no attempt let the job through.
    api = ScriptedApi(clock, {1: "503 20", 3: "503 20"})
    outcomes = await asyncio.wait_for(_run(api, clock, _jobs("o1", "o2"), max_attempts=1), 10)
    assert [o["ok"] for o in outcomes] == [True, True]
    sent_at = [t for t, *_ in api.log]
    assert sent_at[0] == 0.0
    assert all(t >= 20.0 for t in sent_at[1:])  # nothing went out during the outage
    assert api.docs["o1"]["name"] == "v1"  # applied once the outage ended


@pytest.mark.parametrize("retry_after", ["1", "Sun, 06 Nov 1994 08:49:38 GMT"])
async def test_a_503_asking_for_a_second_holds_the_refused_request_not_the_run(retry_after: str) -> None:
    # A throttle answering 503 with Retry-After: 1. Every request held for each of them,
    # the run stopped and started (0.50x to 0.76x of a one-second limit over the wire).
    clock = VirtualClock()
    api = ScriptedApi(clock, {1: f"503 {retry_after}"})
    jobs = _jobs("o1", "o2", "o3", "o4", "o5", "o2", "o3", "o4", "o5")
    outcomes = await asyncio.wait_for(_run(api, clock, jobs, concurrency=2, max_attempts=1), 10)
    assert all(o["ok"] for o in outcomes)  # the wait spent no attempt
    assert api.log[0][2] == "o1"
    resent = [t for t, _, entity, _ in api.log[1:] if entity == "o1"]
    assert len(resent) == 2  # its settling read, and the write again
    assert min(resent) >= 1.0  # both waited what it was told
    others = [t for t, _, entity, _ in api.log if entity != "o1"]
    assert len(others) == 8
    assert max(others) < 1.0  # the others went on meanwhile


@pytest.mark.parametrize(
    ("retry_after", "wait_s"),
    [
        ("Sun, 06 Nov 1994 08:50:07 GMT", 30.0),  # 30 s after the server's Date
        ("Sun, 06 Nov 1994 08:49:07 GMT", 0.0),  # in the past: now
        ("Sunday, 06-Nov-94 08:50:07 GMT", 30.0),  # the obsolete forms (RFC 9110 §5.6.7)
        ("Sun Nov  6 08:50:07 1994", 30.0),
        ("soon", None),  # unreadable: a backoff instead, not a wait it did not ask for
        # Numbers only to Python: "inf" stopped the run as a wait past --max-wait.
        ("inf", None),
        ("1e3", None),
        ("\u0663\u0660", None),  # digits of another script
    ],
)
async def test_a_retry_after_is_read_as_rfc_9110_defines_it(retry_after: str, wait_s: float | None) -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {1: f"429 {retry_after}"})
    outcomes = await asyncio.wait_for(
        _run(api, clock, _jobs("o1"), backoff_base=0.5, backoff_cap=0.5), 10
    )
    assert outcomes[0]["ok"] is True
    resent_at = api.log[1][0]
    if wait_s is None:
        assert 0.0 <= resent_at <= 0.5
    else:
        assert resent_at == pytest.approx(wait_s, abs=0.01)


class DatedApi(ScriptedApi):
    """Every answer dated (whole seconds) on a server clock ``offset_s`` ahead of the
    virtual clock's start at ``SERVER_DATE``; each answers ``latency_s`` after its request."""

    def __init__(self, clock: VirtualClock, script: Mapping[int, str], offset_s: float) -> None:
        super().__init__(clock, script)
        self.offset_s = offset_s
        self.latency_s = 0.1

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        answer = await super().send(method, url, headers, body)
        server_now = parsedate_to_datetime(SERVER_DATE) + timedelta(seconds=self.offset_s + self.clock.now)
        return answer._replace(date=format_datetime(server_now.replace(microsecond=0), usegmt=True))


@pytest.mark.parametrize("status", ["429", "503"])
async def test_an_http_date_retry_after_ends_where_the_servers_second_says_not_a_second_late(
    status: str,
) -> None:
    # The server's clock reads 08:49:37.35 at the start: its 38th second begins at 0.65 s on
    # ours, and the answer at 0.7 s is the first dated :38. The 12th request, answered at
    # 1.2 s (08:49:38.55, dated :38), is told to come back at 08:49:40: 1.45 s later.
    # Read against the whole second its answer is dated, the wait was 2 s: back at 3.2 s.
    clock = VirtualClock()
    api = DatedApi(clock, {12: f"{status} Sun, 06 Nov 1994 08:49:40 GMT"}, offset_s=0.35)
    jobs = _jobs(*(f"o{n % 5 + 1}" for n in range(12)))
    outcomes = await asyncio.wait_for(_run(api, clock, jobs), 10)
    assert all(o["ok"] for o in outcomes)
    resent_at = api.log[12][0]
    assert 2.65 <= resent_at <= 2.75  # at the server's 08:49:40, within one answer's latency


async def test_a_wait_longer_than_max_wait_stops_the_run_instead() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {1: "429 900"})
    engine = Engine(_config(max_wait=600), transport=api, clock=clock)
    outcomes = [o.to_dict() async for o in engine.run(_jobs("o1", "o2"))]
    assert engine.systemic is not None
    assert "asked to wait 900 s" in engine.systemic
    assert all(o["ok"] is False and o["error"]["kind"] == "aborted" for o in outcomes)
    assert len(api.log) == 1  # nothing sent after the answer that asked for it
    assert clock.now < 900  # and it did not wait


async def test_waits_that_add_up_past_max_wait_with_nothing_accepted_stop_the_run() -> None:
    clock = VirtualClock()
    api = ScriptedApi(clock, {1: "429 250", 2: "429 250", 3: "429 250"})
    engine = Engine(_config(max_wait=600), transport=api, clock=clock)
    outcomes = [o.to_dict() async for o in engine.run(_jobs("o1"))]
    assert engine.systemic is not None
    assert "asked to wait 750 s" in engine.systemic
    assert outcomes[0]["error"]["kind"] == "aborted"
    assert len(api.log) == 3
    assert clock.now <= 500  # two waits of 250 s, not the third


async def test_long_waits_between_accepted_answers_never_stop_a_run() -> None:
    clock = VirtualClock()
    script = dict.fromkeys(range(1, 12, 2), "429 250")  # every other request: 1,500 s in all
    api = ScriptedApi(clock, script)
    outcomes = await asyncio.wait_for(
        _run(api, clock, _jobs("o1", "o2", "o3", "o4", "o5", "o1"), max_wait=600), 10
    )
    assert [o["ok"] for o in outcomes] == [True] * 6
    assert clock.now >= 1500


class BucketApi(ScriptedApi):
    """The offers behind a token bucket on the virtual clock: ``rate`` a second, ``burst``
    at most; a refusal is a 429 with ``Retry-After: retry_after``."""

    def __init__(
        self, clock: VirtualClock, rate: float, burst: float, retry_after: str, offers: int
    ) -> None:
        super().__init__(clock, {})
        self.docs = {f"o{n}": {"id": f"o{n}", "etag": 1, "name": "n"} for n in range(1, offers + 1)}
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, 0.0
        self.retry_after = retry_after
        self.refused: list[float] = []

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        now = self.clock.now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            self.refused.append(now)
            self.log.append((now, method, url.path.rsplit("/", 1)[1], None))
            return Response(429, b"{}", self.retry_after, None, SERVER_DATE)
        self.tokens -= 1
        return await super().send(method, url, headers, body)


@pytest.mark.parametrize("rate", [0, 200])
async def test_after_a_throttle_requests_come_back_paced_not_in_a_burst(rate: int) -> None:
    clock = VirtualClock()
    api = BucketApi(clock, rate=50, burst=5, retry_after="3", offers=40)
    jobs = _jobs(*(f"o{n % 40 + 1}" for n in range(200)))
    outcomes = await asyncio.wait_for(_run(api, clock, jobs, rate=rate, concurrency=16), 30)
    assert all(o["ok"] for o in outcomes)
    # Once refused, the run keeps to what the bucket grants: in no tenth of a second do
    # more requests arrive than it refills (5) plus its burst (5), and few are refused.
    first = api.refused[0]
    sent = sorted(t for t, *_ in api.log if t > first)
    busiest = max(sum(1 for t in sent[i:] if t < start + 0.1) for i, start in enumerate(sent))
    assert busiest <= 10
    assert len(api.refused) <= 0.1 * len(api.log)


class OutageApi(ScriptedApi):
    """The offers, with every request from ``start`` to ``end`` (virtual seconds) answered
    503 (+ ``Retry-After: retry_after``, if any), reads included."""

    def __init__(
        self, clock: VirtualClock, offers: int, start: float, end: float, retry_after: str | None = "1"
    ) -> None:
        super().__init__(clock, {})
        self.docs = {f"o{n}": {"id": f"o{n}", "etag": 1, "name": "n"} for n in range(1, offers + 1)}
        self.start, self.end, self.retry_after = start, end, retry_after

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        now = self.clock.now
        if self.start <= now < self.end:
            self.log.append((now, method, url.path.rsplit("/", 1)[1], None))
            return Response(503, b"{}", self.retry_after, None, SERVER_DATE)
        return await super().send(method, url, headers, body)


async def test_an_outage_asking_a_second_at_a_time_is_waited_out_and_the_pace_comes_back() -> None:
    # 20 s of 503 + Retry-After: 1. Taken for a throttle's refusals, they drew 319 requests
    # into the outage instead of 19, and the pace read the outage as a long window's
    # turn: 0.2x of the set rate after it.
    clock = VirtualClock()
    api = OutageApi(clock, offers=50, start=3.0, end=23.0)
    api.latency_s = 0.02
    jobs = _jobs(*(f"o{n % 50 + 1}" for n in range(3500)))
    outcomes = await asyncio.wait_for(_run(api, clock, jobs, rate=100, concurrency=16), 60)
    assert all(o["ok"] for o in outcomes)
    into = [t for t, *_ in api.log if 3.0 <= t < 23.0]
    assert len(into) <= 50  # about a second of a quarter of the rate, then every request held
    after = [t for t, method, *_ in api.log if 25.0 <= t < 30.0 and method == "PATCH"]
    assert len(after) >= 0.9 * 100 * 5


async def test_after_an_outage_of_5xx_without_retry_after_the_pace_comes_back() -> None:
    # 20 s of 503s with no Retry-After: congestion, for as long as it lasts. Read as a
    # long window's turn when it ended, it held --rate 100 to 20/s for the 15 s after it.
    clock = VirtualClock()
    api = OutageApi(clock, offers=50, start=5.0, end=25.0, retry_after=None)
    api.latency_s = 0.02
    jobs = _jobs(*(f"o{n % 50 + 1}" for n in range(4000)))
    outcomes = await asyncio.wait_for(
        _run(api, clock, jobs, rate=100, concurrency=16, max_attempts=50), 60
    )
    assert all(o["ok"] for o in outcomes)
    after = [t for t, method, *_ in api.log if 30.0 <= t < 40.0 and method == "PATCH"]
    assert len(after) >= 0.8 * 100 * 10


class FixedWindowApi(ScriptedApi):
    """The offers behind a fixed window of a second that takes ``limit`` requests (its
    seconds start at ``offset``); a refusal is a 429 without ``Retry-After``."""

    def __init__(self, clock: VirtualClock, limit: int, offers: int, offset: float = 0.37) -> None:
        super().__init__(clock, {})
        self.docs = {f"o{n}": {"id": f"o{n}", "etag": 1, "name": "n"} for n in range(1, offers + 1)}
        self.limit, self.offset, self.window, self.count = limit, offset, -1, 0
        self.refused: list[float] = []

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        now = self.clock.now
        window = int((now - self.offset) // 1.0)
        if window != self.window:
            self.window, self.count = window, 0
        if self.count >= self.limit:
            self.refused.append(now)
            self.log.append((now, method, url.path.rsplit("/", 1)[1], None))
            return Response(429, b"{}", None, None, SERVER_DATE)
        self.count += 1
        return await super().send(method, url, headers, body)


async def test_while_a_window_of_a_second_refuses_everything_few_requests_are_sent_into_it() -> None:
    # A fixed window that fills early refuses everything until its second turns: the run
    # sends a quarter of its rate into it, and its rate again from the first answer the
    # window accepts. Sent at the full rate, a fifth of the requests were refused, and
    # the 400 writes took 12 s where the window lets them through in 8.
    clock = VirtualClock()
    api = FixedWindowApi(clock, limit=50, offers=40)
    jobs = _jobs(*(f"o{n % 40 + 1}" for n in range(400)))
    outcomes = await asyncio.wait_for(_run(api, clock, jobs, rate=200, concurrency=16), 60)
    assert all(o["ok"] for o in outcomes)
    assert len(api.refused) <= 0.1 * len(api.log)
    assert clock.now <= 9.0


class RefusesEveryToken:
    """IMS issues tokens; the API refuses every one of them (401)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.api_requests = 0

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        await asyncio.sleep(0)  # a real transport yields: so a run that never ends times out
        if url.path.endswith("/ims/token/v3"):
            self.tokens += 1
            return Response(200, orjson.dumps({"access_token": f"t{self.tokens}", "expires_in": 86399}), None)
        self.api_requests += 1
        return Response(401, b'{"error_code": "401013", "message": "Oauth token is not valid"}', None)


async def test_tokens_refused_one_after_another_stop_the_run() -> None:
    transport = RefusesEveryToken()
    credentials = Credentials(
        client_id="c", client_secret="s", ims_url="https://ims.example/ims/token/v3"
    )
    engine = Engine(_config(credentials=credentials, concurrency=4), transport=transport, clock=VirtualClock())
    outcomes = await asyncio.wait_for(_collect(engine, _jobs("o1", "o2", "o3")), 10)
    assert engine.systemic == "the credentials are rejected (401) even after renewing the token"
    assert all(o["error"]["kind"] == "aborted" for o in outcomes)
    assert transport.tokens <= 5  # a few renewals, not one per request
    assert transport.api_requests <= 3 * 5


async def _collect(engine: Engine, jobs: list[Any]) -> list[dict[str, Any]]:
    return [o.to_dict() async for o in engine.run(jobs)]


class AcceptsShortLivedTokens:
    """IMS says every token expires at once (or has already); the API accepts them."""

    def __init__(self, expires_in: object) -> None:
        self.expires_in = expires_in
        self.tokens = 0

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        if url.path.endswith("/ims/token/v3"):
            self.tokens += 1
            return Response(200, orjson.dumps({"access_token": f"t{self.tokens}", "expires_in": self.expires_in}), None)
        return Response(200, b'{"etag": 2}', None)


@pytest.mark.parametrize("expires_in", [0, -5, "soon", None])
async def test_a_token_with_no_usable_lifetime_stops_the_run(expires_in: object) -> None:
    """Fetching a token for every request is what such a token would cost: stop instead."""
    transport = AcceptsShortLivedTokens(expires_in)
    credentials = Credentials(client_id="c", client_secret="s", ims_url="https://ims.example/ims/token/v3")
    engine = Engine(_config(credentials=credentials, concurrency=4), transport=transport, clock=VirtualClock())
    outcomes = await asyncio.wait_for(_collect(engine, _jobs("o1", "o2", "o3", "o4", "o5")), 10)
    assert engine.systemic is not None
    assert "no usable lifetime" in engine.systemic
    assert all(o["error"]["kind"] == "aborted" for o in outcomes)
    assert transport.tokens == 1


async def test_a_short_positive_lifetime_is_honoured() -> None:
    transport = AcceptsShortLivedTokens(30)
    credentials = Credentials(client_id="c", client_secret="s", ims_url="https://ims.example/ims/token/v3")
    engine = Engine(_config(credentials=credentials), transport=transport, clock=VirtualClock())
    outcomes = await asyncio.wait_for(_collect(engine, _jobs("o1", "o2", "o3")), 10)
    assert all(o["ok"] for o in outcomes)
    assert transport.tokens == 1  # renewed at half its life, not per request


class StaticRefused:
    """The API refuses the one static token."""

    def __init__(self) -> None:
        self.requests = 0

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        self.requests += 1
        return Response(401, b'{"error_code": "401013", "message": "Oauth token is not valid"}', None)


async def test_a_refused_static_token_stops_the_run_at_that_answer() -> None:
    transport = StaticRefused()
    engine = Engine(_config(), transport=transport, clock=VirtualClock())
    outcomes = await asyncio.wait_for(_collect(engine, _jobs("o1", "o2", "o3")), 10)
    assert engine.systemic == "the access token was rejected (401)"
    assert transport.requests == 1  # nothing sent after the refusal
    assert all(o["error"]["kind"] == "aborted" for o in outcomes)


TOKEN = "eyJhbGciOi.secret-token+/=value"


class EchoesTheToken:
    """An API that quotes the request's Authorization header back in its error body, in
    one of the forms a server may use."""

    def __init__(self, form: str) -> None:
        self.form = form

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        token = headers["Authorization"].removeprefix("Bearer ")
        quoted = {
            "raw": token,
            "json-escaped": orjson.dumps(token).decode()[1:-1],
            "percent-encoded": quote(token, safe=""),
        }[self.form]
        return Response(400, orjson.dumps({"title": f"bad request with token {quoted}"}), None)


@pytest.mark.parametrize("form", ["raw", "json-escaped", "percent-encoded"])
async def test_a_secret_a_server_echoes_never_reaches_an_outcome(form: str) -> None:
    engine = Engine(_config(credentials=Credentials(access_token=TOKEN)), transport=EchoesTheToken(form), clock=VirtualClock())
    outcomes = await asyncio.wait_for(_collect(engine, _jobs("o1")), 10)
    line = orjson.dumps(outcomes[0]).decode()
    assert outcomes[0]["error"]["kind"] == "http"
    assert "[secret]" in outcomes[0]["error"]["message"]
    for shown in (TOKEN, orjson.dumps(TOKEN).decode()[1:-1], quote(TOKEN, safe=""), "secret-token"):
        assert shown not in line


class LoginPage(ScriptedApi):
    """A proxy in front of the API: every write is answered 200 with its HTML login page;
    ``applies`` says whether the write reached the API behind it anyway."""

    def __init__(self, clock: VirtualClock, *, applies: bool) -> None:
        super().__init__(clock, {})
        self.applies = applies

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        answer = await super().send(method, url, headers, body)
        if method == "GET":
            return answer
        if not self.applies:
            entity = url.path.rsplit("/", 1)[1]
            self.docs[entity]["etag"] -= 1  # undo: nothing reached the API
            self.docs[entity] = {**self.docs[entity], "name": "n"}
        return Response(200, b"<html><body>Sign in</body></html>", None)


async def test_a_200_without_a_receipt_is_no_proof() -> None:
    clock = VirtualClock()
    api = LoginPage(clock, applies=False)
    outcomes = await asyncio.wait_for(_run(api, clock, _jobs("o1"), max_attempts=3), 10)
    assert outcomes[0]["ok"] is False
    assert "without a receipt" in outcomes[0]["error"]["message"]


async def test_a_write_that_applied_behind_a_200_without_receipt_is_proven_by_its_pre_image() -> None:
    clock = VirtualClock()
    api = LoginPage(clock, applies=True)
    append = parse_line(b'{"id": "o1", "patch": [{"op": "add", "path": "/tags", "value": ["t"]}, {"op": "remove", "path": "/tags"}, {"op": "add", "path": "/name", "value": "v"}]}', 1)
    outcomes = await asyncio.wait_for(_run(api, clock, [append]), 10)
    assert outcomes[0]["ok"] is True
    assert outcomes[0]["recovered"] is True  # a read proved it: no second write
    assert [m for _, m, _, _ in api.log].count("PATCH") == 1


class HoldingApi(ScriptedApi):
    """Holds the first PATCH past the client's timeout, then applies it (under the If-Match
    it carried, RFC 9110 §13.1.1) just before the next PATCH arrives: a delayed write that
    lands while the client's resend is on its way."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, {})
        self.holds = True  # the next PATCH is held
        self.held: tuple[URL, Mapping[str, str], bytes | None] | None = None

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response:
        if method == "PATCH" and self.holds:
            self.holds = False
            self.log.append((self.clock.now, method, url.path.rsplit("/", 1)[1], headers.get("If-Match")))
            self.held = (url, dict(headers), body)
            raise TransportError("Timeout on reading data from socket", sent=True)
        if method == "PATCH" and self.held is not None:
            await super().send("PATCH", *self.held)
            self.held = None
            self.log.pop()  # the server's own late apply, not a request of the client's
        return await super().send(method, url, headers, body)


@pytest.mark.parametrize(
    ("patch", "after"),
    [
        # Applied twice, an append appends twice.
        ([{"op": "add", "path": "/tags/-", "value": "t"}], {"tags": ["t"]}),
        # Rebased on its own write, the test fails: the job would be reported failed.
        (
            [{"op": "test", "path": "/name", "value": "n"}, {"op": "replace", "path": "/name", "value": "v"}],
            {"name": "v"},
        ),
    ],
    ids=["append", "test-then-replace"],
)
async def test_a_held_write_that_lands_before_its_resend_is_applied_once(
    patch: list[dict[str, Any]], after: dict[str, Any]
) -> None:
    clock = VirtualClock()
    api = HoldingApi(clock)
    api.docs["o1"]["tags"] = []
    job = parse_line(orjson.dumps({"id": "o1", "patch": patch}), 1)
    outcomes = await asyncio.wait_for(_run(api, clock, [job], guard="always"), 10)
    assert {k: api.docs["o1"][k] for k in after} == after
    assert outcomes[0]["ok"] is True, outcomes[0]
    assert outcomes[0]["recovered"] is True
    sent = [(m, match) for _, m, _, match in api.log]
    # Read, write (held), settle read, resend (refused: the held write landed), read.
    assert sent == [("GET", None), ("PATCH", '"1"'), ("GET", None), ("PATCH", '"1"'), ("GET", None)]
