"""The gateway in front of the simulated API: credentials, headers, IMS tokens, throttling.

Error bodies are the gateway's ``{"error_code", "message"}`` (API notes §3). Time is
faked where the behaviour depends on it (token expiry, the token bucket), so nothing here
waits for the clock.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from bulkpatch.simulator import RunningSimulator, SimConfig, offer_id, running
from bulkpatch.simulator import app as sim_app
from bulkpatch.simulator.app import TokenBucket
from tests.conftest import api_headers, offer_url, read_json

FIRST = offer_id(1)
RENAME = [{"op": "replace", "path": "/name", "value": "gateway rename"}]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Fake ``time.monotonic`` for the simulator's HTTP layer only.

    ``app`` does ``import time`` and calls ``time.monotonic()``, so its module attribute
    ``time`` is swapped for a stand-in: patching the real ``time.monotonic`` would also
    move the event loop's clock and fire every timeout in the test at once.
    """
    fake = FakeClock()
    monkeypatch.setattr(sim_app, "time", types.SimpleNamespace(monotonic=fake))
    return fake


async def status_and_body(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], json: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, json=json) as r:
        return r.status, await read_json(r)


def gateway_body(code: str, message: str) -> dict[str, str]:
    return {"error_code": code, "message": message}


async def current_etag(http: aiohttp.ClientSession, sim: RunningSimulator) -> int:
    status, body = await status_and_body(http, "GET", offer_url(sim, FIRST), api_headers(sim))
    assert status == 200
    etag: int = body["etag"]
    return etag


# --------------------------------------------------------------------------- credentials


def _without(name: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda h: {k: v for k, v in h.items() if k != name}


def _with(name: str, value: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda h: {**h, name: value}


@pytest.mark.parametrize(
    ("change", "status", "body"),
    [
        (_without("Authorization"), 403, gateway_body("403010", "Oauth token is missing.")),
        (
            _with("Authorization", "Bearer wrong"),
            401,
            gateway_body("401013", "Oauth token is not valid"),
        ),
        (_with("Authorization", "Bearer"), 401, gateway_body("401013", "Oauth token is not valid")),
        (
            _with("Authorization", "Basic abc"),
            401,
            gateway_body("401013", "Oauth token is not valid"),
        ),
        (_without("x-api-key"), 403, gateway_body("403000", "Api Key is required")),
        (_with("x-api-key", "  "), 403, gateway_body("403000", "Api Key is required")),
        (
            _without("x-gw-ims-org-id"),
            400,
            gateway_body("400003", "Missing header: x-gw-ims-org-id"),
        ),
        (
            _without("x-sandbox-name"),
            400,
            gateway_body("400003", "Missing header: x-sandbox-name"),
        ),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "empty-bearer",
        "basic-scheme",
        "no-api-key",
        "blank-api-key",
        "no-org",
        "no-sandbox",
    ],
)
async def test_gateway_refuses_bad_credentials_before_any_write(
    sim: RunningSimulator,
    http: aiohttp.ClientSession,
    change: Callable[[dict[str, str]], dict[str, str]],
    status: int,
    body: dict[str, str],
) -> None:
    headers = change(api_headers(sim, **{"Content-Type": "application/json"}))
    for method, json in (("GET", None), ("PATCH", RENAME)):
        got, answer = await status_and_body(http, method, offer_url(sim, FIRST), headers, json)
        assert got == status, method
        assert answer == body
    assert await current_etag(http, sim) == 1


@pytest.mark.parametrize(
    "sim_config", [SimConfig(offers=2, api_key="the-key", org_id="ORG1@AdobeOrg")], ids=["strict"]
)
async def test_configured_api_key_and_org_must_match(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = offer_url(sim, FIRST)
    good = api_headers(sim, **{"x-api-key": "the-key", "x-gw-ims-org-id": "ORG1@AdobeOrg"})
    status, body = await status_and_body(http, "GET", url, good)
    assert status == 200
    assert body["id"] == FIRST
    status, body = await status_and_body(http, "GET", url, {**good, "x-api-key": "other"})
    assert (status, body) == (403, gateway_body("403003", "Api Key is invalid"))
    # Another org: the integration is not entitled for it; not an org id: no region
    # (Adobe's codes, API notes §3).
    status, body = await status_and_body(
        http, "GET", url, {**good, "x-gw-ims-org-id": "ORG2@AdobeOrg"}
    )
    assert (status, body) == (403, gateway_body("403025", "Profile is not valid"))
    status, body = await status_and_body(http, "GET", url, {**good, "x-gw-ims-org-id": "ORG1"})
    assert (status, body) == (403, gateway_body("403027", "User region is missing"))


@pytest.mark.parametrize(
    "sim_config", [SimConfig(offers=2, sandboxes=("prod", "dev"), sandbox_status=404)], ids=["sandboxes"]
)
async def test_an_unknown_sandbox_is_answered_with_the_set_status(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = offer_url(sim, FIRST)
    status, _ = await status_and_body(http, "GET", url, api_headers(sim, **{"x-sandbox-name": "dev"}))
    assert status == 200
    status, body = await status_and_body(http, "GET", url, api_headers(sim, **{"x-sandbox-name": "stage"}))
    assert status == 404
    assert "stage" in body["detail"]


@pytest.mark.parametrize(
    "authorization", ["bearer {t}", "Bearer  {t}", "BEARER {t}", "  Bearer {t}  "]
)
async def test_bearer_scheme_spelling_is_tolerated(
    sim: RunningSimulator, http: aiohttp.ClientSession, authorization: str
) -> None:
    headers = api_headers(sim, Authorization=authorization.format(t=sim.config.access_token))
    status, body = await status_and_body(http, "GET", offer_url(sim, FIRST), headers)
    assert status == 200
    assert body["id"] == FIRST


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_writes_need_json_content_type(
    sim: RunningSimulator, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    headers = api_headers(sim)
    if content_type is not None:
        headers["Content-Type"] = content_type
    data = b'[{"op": "replace", "path": "/name", "value": "x"}]'
    for method, url in (
        ("PATCH", offer_url(sim, FIRST)),
        ("POST", f"{sim.endpoint}/offers?offer-type=personalized"),
    ):
        async with http.request(method, url, headers=headers, data=data) as r:
            assert r.status == 400, method
            body = await read_json(r)
        assert body["status"] == 400
        assert body["detail"] == "A valid content-type must be specified"
        assert {"type", "title", "report"} <= set(body)
    assert await current_etag(http, sim) == 1
    assert sim.store.count("offers/personalized") == 20


async def test_json_patch_content_type_is_accepted(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    headers = api_headers(sim, **{"Content-Type": "application/json-patch+json"})
    status, body = await status_and_body(http, "PATCH", offer_url(sim, FIRST), headers, RENAME)
    assert status == 200
    assert body["etag"] == 2


async def test_x_request_id_is_echoed(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    headers = api_headers(sim, **{"x-request-id": "trace-123"})
    async with http.get(offer_url(sim, FIRST), headers=headers) as r:
        assert r.status == 200
        assert r.headers["x-request-id"] == "trace-123"


# --------------------------------------------------------------------------- IMS


IMS_CONFIG = SimConfig(offers=2, client_id="cid", client_secret="s3cret", token_ttl_s=3600)


async def ims_token(
    http: aiohttp.ClientSession, sim: RunningSimulator, **form: str
) -> tuple[int, Any]:
    data = {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "s3cret",
        "scope": "openid,session,AdobeID,read_organizations",
        **form,
    }
    async with http.post(sim.ims_url, data=data) as r:
        return r.status, await read_json(r)


def bearer(sim: RunningSimulator, token: str) -> dict[str, str]:
    return api_headers(sim, Authorization=f"Bearer {token}")


@pytest.mark.parametrize("sim_config", [IMS_CONFIG], ids=["ims"])
async def test_ims_client_credentials_grant(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await ims_token(http, sim)
    assert status == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    token = body["access_token"]
    assert token != sim.config.access_token
    status, offer = await status_and_body(http, "GET", offer_url(sim, FIRST), bearer(sim, token))
    assert status == 200
    assert offer["id"] == FIRST
    async with http.get(sim.base_url + "/_sim/stats") as r:
        assert (await read_json(r))["tokens_issued"] == 1


@pytest.mark.parametrize("sim_config", [IMS_CONFIG], ids=["ims"])
@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 400, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
    ids=["wrong-secret", "wrong-client", "wrong-grant"],
)
async def test_ims_refuses_bad_grants(
    sim: RunningSimulator,
    http: aiohttp.ClientSession,
    form: dict[str, str],
    status: int,
    error: str,
) -> None:
    got, body = await ims_token(http, sim, **form)
    assert got == status
    assert body["error"] == error
    assert "access_token" not in body
    async with http.get(sim.base_url + "/_sim/stats") as r:
        assert (await read_json(r))["tokens_issued"] == 0


async def test_issued_tokens_expire_and_the_static_one_does_not(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    async with running(IMS_CONFIG) as sim:
        _, body = await ims_token(http, sim)
        token = body["access_token"]
        url = offer_url(sim, FIRST)
        clock.advance(3599)
        status, _ = await status_and_body(http, "GET", url, bearer(sim, token))
        assert status == 200
        clock.advance(2)
        status, answer = await status_and_body(http, "GET", url, bearer(sim, token))
        assert (status, answer) == (401, gateway_body("401013", "Oauth token is not valid"))
        status, _ = await status_and_body(http, "GET", url, api_headers(sim))
        assert status == 200
        _, fresh = await ims_token(http, sim)
        status, _ = await status_and_body(http, "GET", url, bearer(sim, fresh["access_token"]))
        assert status == 200


# --------------------------------------------------------------------------- throttling


def throttled(**overrides: Any) -> SimConfig:
    return SimConfig(offers=2, **{"rate_limit": 1.0, "burst": 3, **overrides})


async def test_burst_then_429_with_retry_after_seconds(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    async with running(throttled()) as sim:
        url = offer_url(sim, FIRST)
        for _ in range(3):
            status, _ = await status_and_body(http, "GET", url, api_headers(sim))
            assert status == 200
        async with http.get(url, headers=api_headers(sim)) as r:
            assert r.status == 429
            assert await read_json(r) == gateway_body("429050", "Too many requests")
            assert r.headers["Retry-After"] == "1"
        # A throttled request spends no token: one second later exactly one more passes.
        clock.advance(1.0)
        status, _ = await status_and_body(http, "GET", url, api_headers(sim))
        assert status == 200
        status, _ = await status_and_body(http, "GET", url, api_headers(sim))
        assert status == 429
        async with http.get(sim.base_url + "/_sim/stats") as r:
            stats = await read_json(r)
        assert stats["throttled_429"] == 2
        assert stats["requests"]["GET"]["429"] == 2


# The clock is frozen so the bucket does not refill between the requests.
@pytest.mark.usefixtures("clock")
async def test_throttle_checks_precede_credentials(http: aiohttp.ClientSession) -> None:
    async with running(throttled(burst=1)) as sim:
        status, _ = await status_and_body(http, "GET", offer_url(sim, FIRST), api_headers(sim))
        assert status == 200
        status, body = await status_and_body(http, "GET", offer_url(sim, FIRST), {})
        assert (status, body["error_code"]) == (429, "429050")


@pytest.mark.usefixtures("clock")
async def test_429_retry_after_as_http_date(http: aiohttp.ClientSession) -> None:
    async with running(throttled(rate_limit=0.1, burst=1, retry_after="date")) as sim:
        url = offer_url(sim, FIRST)
        status, _ = await status_and_body(http, "GET", url, api_headers(sim))
        assert status == 200
        sent = datetime.now(UTC)
        async with http.get(url, headers=api_headers(sim)) as r:
            assert r.status == 429
            assert (await read_json(r))["error_code"] == "429050"
            when = parsedate_to_datetime(r.headers["Retry-After"])
        # One token at 0.1/s is 10 s away; the date, of one-second resolution, is rounded
        # up: a client that waits until it does not come back before the token is there.
        assert sent + timedelta(seconds=10) <= when <= sent + timedelta(seconds=12)


@pytest.mark.usefixtures("clock")
async def test_429_without_retry_after(http: aiohttp.ClientSession) -> None:
    async with running(throttled(burst=1, retry_after="none")) as sim:
        url = offer_url(sim, FIRST)
        await status_and_body(http, "GET", url, api_headers(sim))
        async with http.get(url, headers=api_headers(sim)) as r:
            assert r.status == 429
            assert await read_json(r) == gateway_body("429050", "Too many requests")
            assert "Retry-After" not in r.headers


async def test_rate_schedule_over_http(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    config = SimConfig(offers=2, rate_schedule=((0.0, 1.0), (10.0, 100.0)), burst=1)
    async with running(config) as sim:
        url = offer_url(sim, FIRST)
        headers = api_headers(sim, **{"Content-Type": "application/json"})
        # The schedule's clock starts at the first write, not at the first request.
        clock.advance(50)
        status, _ = await status_and_body(http, "PATCH", url, headers, RENAME)
        assert status == 200
        clock.advance(0.02)
        status, _ = await status_and_body(http, "GET", url, headers)
        assert status == 429
        clock.advance(10)
        for _ in range(3):
            status, _ = await status_and_body(http, "GET", url, headers)
            assert status == 200
            clock.advance(0.011)
        status, _ = await status_and_body(http, "GET", url, headers)
        assert status == 200
        status, _ = await status_and_body(http, "GET", url, headers)
        assert status == 429


def test_token_bucket_follows_schedule_on_a_fake_clock() -> None:
    clock = FakeClock(0.0)
    config = SimConfig(rate_schedule=((0.0, 2.0), (5.0, 10.0), (8.0, 1.0)), burst=2)
    bucket = TokenBucket(config, clock)
    assert bucket.take() is None
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(0.5)
    # Before any write the schedule stays in its first phase however long it has been.
    clock.advance(100)
    assert bucket.rate(clock()) == 2.0
    bucket.first_write = clock()
    assert bucket.take() is None
    clock.advance(5.0)
    assert bucket.rate(clock()) == 10.0
    assert bucket.take() is None
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(0.1)
    clock.advance(3.0)
    assert bucket.rate(clock()) == 1.0
    assert bucket.take() is None
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(1.0)
    clock.advance(0.5)
    assert bucket.take() == pytest.approx(0.5)


@pytest.fixture
async def strict_sim() -> AsyncIterator[RunningSimulator]:
    async with running(SimConfig(offers=1, api_key="k")) as sim:
        yield sim


async def test_stats_count_requests_by_method_and_status(
    strict_sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = offer_url(strict_sim, FIRST)
    await status_and_body(http, "GET", url, api_headers(strict_sim, **{"x-api-key": "k"}))
    await status_and_body(http, "GET", url, api_headers(strict_sim, **{"x-api-key": "no"}))
    await status_and_body(http, "GET", url, api_headers(strict_sim, **{"x-api-key": "no"}))
    async with http.get(strict_sim.base_url + "/_sim/stats") as r:
        stats = await read_json(r)
    assert stats["requests"]["GET"] == {"200": 1, "403": 2}
    assert stats["requests_total"] == 3
    assert stats["entities"]["offers/personalized"] == 1
