"""The simulator's other throttles and its planned outage, over HTTP.

``--throttle fixed|sliding`` are the ``limits`` package's windows, on its own wall clock:
their windows here are an hour long, so none ends between a test's requests. The rate
schedule and the outage run on the simulator's clock, faked as in ``test_sim_gateway``.
"""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from bulkpatch.errors import ConfigError
from bulkpatch.simulator import SimConfig, offer_id, running
from bulkpatch.simulator import app as sim_app
from tests.conftest import api_headers, offer_url, read_json
from tests.test_sim_gateway import FakeClock, gateway_body, ims_token, status_and_body

FIRST = offer_id(1)
RENAME = [{"op": "replace", "path": "/name", "value": "throttle rename"}]
HOUR = 3600


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The simulator's clock only (see ``test_sim_gateway.clock``)."""
    fake = FakeClock()
    monkeypatch.setattr(sim_app, "time", types.SimpleNamespace(monotonic=fake))
    return fake


def per_hour(n: int, **overrides: Any) -> SimConfig:
    """A window throttle letting ``n`` requests through an hour-long window."""
    settings: dict[str, Any] = {"rate_limit": n / HOUR, "throttle_window": HOUR, **overrides}
    return SimConfig(offers=2, **settings)


async def sim_stats(http: aiohttp.ClientSession, base_url: str) -> Any:
    async with http.get(base_url + "/_sim/stats") as r:
        assert r.status == 200
        return await read_json(r)


@pytest.mark.parametrize("model", ["fixed", "sliding"])
async def test_window_throttle_refuses_past_its_limit(
    model: str, http: aiohttp.ClientSession
) -> None:
    async with running(per_hour(3, throttle=model)) as sim:
        url = offer_url(sim, FIRST)
        for _ in range(3):
            status, _ = await status_and_body(http, "GET", url, api_headers(sim))
            assert status == 200
        async with http.get(url, headers=api_headers(sim)) as r:
            assert r.status == 429
            assert await read_json(r) == gateway_body("429050", "Too many requests")
            # The window that opened with the first request closes an hour after it.
            assert HOUR - 60 <= int(r.headers["Retry-After"]) <= HOUR
        stats = await sim_stats(http, sim.base_url)
    assert stats["throttled_429"] == 1
    assert stats["requests"]["GET"] == {"200": 3, "429": 1}


async def test_throttle_answering_503_with_a_date(http: aiohttp.ClientSession) -> None:
    config = per_hour(2, throttle="sliding", throttle_status=503, retry_after="date")
    async with running(config) as sim:
        url = offer_url(sim, FIRST)
        for _ in range(2):
            status, _ = await status_and_body(http, "GET", url, api_headers(sim))
            assert status == 200
        sent = datetime.now(UTC)
        async with http.get(url, headers=api_headers(sim)) as r:
            assert r.status == 503
            assert await read_json(r) == gateway_body("503000", "Service Unavailable")
            when = parsedate_to_datetime(r.headers["Retry-After"])
        assert sent + timedelta(seconds=HOUR - 60) <= when <= sent + timedelta(seconds=HOUR + 1)
        stats = await sim_stats(http, sim.base_url)
    assert stats["throttled_429"] == 1
    assert stats["requests"]["GET"]["503"] == 1


@pytest.mark.usefixtures("clock")
async def test_bucket_answering_503_with_seconds(http: aiohttp.ClientSession) -> None:
    config = SimConfig(offers=2, rate_limit=1.0, burst=1, throttle_status=503)
    async with running(config) as sim:
        url = offer_url(sim, FIRST)
        status, _ = await status_and_body(http, "GET", url, api_headers(sim))
        assert status == 200
        async with http.get(url, headers=api_headers(sim)) as r:
            assert (r.status, r.headers["Retry-After"]) == (503, "1")


async def test_window_count_carries_across_a_schedule_step(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    # 2 an hour, then 4 an hour from 10 s after the first write. The step raises the
    # window's limit; the requests already in the window still count against it.
    schedule = ((0.0, 2 / HOUR), (10.0, 4 / HOUR))
    config = SimConfig(offers=2, throttle="sliding", throttle_window=HOUR, rate_schedule=schedule)
    async with running(config) as sim:
        url = offer_url(sim, FIRST)
        headers = api_headers(sim, **{"Content-Type": "application/json"})
        status, _ = await status_and_body(http, "PATCH", url, headers, RENAME)
        assert status == 200
        codes = [(await status_and_body(http, "GET", url, headers))[0] for _ in range(2)]
        assert codes == [200, 429]
        clock.advance(10)
        codes = [(await status_and_body(http, "GET", url, headers))[0] for _ in range(3)]
        assert codes == [200, 200, 429]


async def test_outage_answers_every_api_request_503_for_its_length(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    config = SimConfig(offers=2, outage=(5.0, 10.0), client_id="cid", client_secret="s3cret")
    async with running(config) as sim:
        url = offer_url(sim, FIRST)
        headers = api_headers(sim, **{"Content-Type": "application/json"})
        # Its clock starts at the first write: before it, time passes without an outage.
        clock.advance(60)
        assert (await status_and_body(http, "GET", url, headers))[0] == 200
        assert (await status_and_body(http, "PATCH", url, headers, RENAME))[0] == 200
        clock.advance(5)
        for method, body in (("GET", None), ("PATCH", RENAME)):
            async with http.request(method, url, headers=headers, json=body) as r:
                assert (r.status, r.headers["Retry-After"]) == (503, "10")
                assert await read_json(r) == gateway_body("503000", "Service Unavailable")
        # Neither IMS nor the inspection endpoints are behind the gateway.
        assert (await ims_token(http, sim))[0] == 200
        clock.advance(9.5)
        async with http.get(url, headers=headers) as r:
            assert (r.status, r.headers["Retry-After"]) == (503, "1")
        clock.advance(0.5)
        assert (await status_and_body(http, "GET", url, headers))[0] == 200
        stats = await sim_stats(http, sim.base_url)
    assert stats["outage_503"] == 3
    assert stats["writes_applied"] == 1
    assert stats["requests"]["PATCH"] == {"200": 1, "503": 1}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"throttle": "fixed"}, "throttle fixed needs a rate"),
        ({"throttle_window": 5, "rate_limit": 1.0}, "throttle_window applies to"),
        ({"throttle": "fixed", "rate_limit": 2.5}, "rate_limit 2.5/s x a 1 s window"),
        (
            {
                "throttle": "sliding",
                "throttle_window": 2,
                "rate_schedule": ((0.0, 1.0), (5.0, 0.25)),
            },
            "rate_schedule 0.25/s x a 2 s window is 0.5 requests",
        ),
        ({"outage": (5.0, 0.0)}, "outage must be START:SECONDS"),
    ],
)
def test_bad_throttle_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SimConfig(**settings)
