"""Injected faults, each at probability 1.0, as a client meets them over HTTP.

For every fault the question a client cares about is answered from the entity itself:
did the write land or not. Delayed writes are waited for with ``/_sim/settle``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from bulkpatch.simulator import (
    CONCURRENT_FIELD,
    FaultRates,
    RunningSimulator,
    SimConfig,
    offer_id,
    running,
)
from tests.conftest import api_headers, offer_url, read_json

FIRST = offer_id(1)


def faulty(**rates: float) -> SimConfig:
    return SimConfig(offers=3, fault_seed=5, faults=FaultRates(**rates))


def json_headers(sim: RunningSimulator, **extra: str) -> dict[str, str]:
    return api_headers(sim, **{"Content-Type": "application/json", **extra})


async def rename(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    *,
    patience: float = 10.0,
    headers: dict[str, str] | None = None,
    value: str = "faulty rename",
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with http.patch(
        offer_url(sim, FIRST),
        json=[{"op": "replace", "path": "/name", "value": value}],
        headers=headers or json_headers(sim),
        timeout=aiohttp.ClientTimeout(total=patience),
    ) as r:
        return r.status, await read_json(r), r.headers


async def get_first(http: aiohttp.ClientSession, sim: RunningSimulator) -> dict[str, Any]:
    async with http.get(offer_url(sim, FIRST), headers=api_headers(sim)) as r:
        assert r.status == 200
        doc: dict[str, Any] = await read_json(r)
    return doc


async def sim_get(http: aiohttp.ClientSession, sim: RunningSimulator, path: str) -> Any:
    async with http.get(sim.base_url + path) as r:
        assert r.status == 200
        return await read_json(r)


@pytest.fixture(autouse=True)
def no_server_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A fault is routine for the simulator: it must never log an error of its own."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# --------------------------------------------------------------------------- error answers


@pytest.mark.parametrize("sim_config", [faulty(error_500=1.0)], ids=["500"])
async def test_500_is_a_problem_document_and_nothing_lands(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await rename(http, sim)
    assert status == 500
    assert body["status"] == 500
    assert "API limit" in body["detail"]
    doc = await get_first(http, sim)
    assert doc["etag"] == 1
    assert doc["name"] != "faulty rename"
    stats = await sim_get(http, sim, "/_sim/stats")
    assert stats["faults"] == {"error_500": 1}
    assert stats["writes_applied"] == 0


@pytest.mark.parametrize(
    ("sim_config", "status", "message"),
    [
        (faulty(error_502=1.0), 502, "Bad Gateway"),
        (faulty(error_503=1.0), 503, "Service Unavailable"),
    ],
    ids=["502", "503"],
)
async def test_gateway_errors_and_nothing_lands(
    sim: RunningSimulator, http: aiohttp.ClientSession, status: int, message: str
) -> None:
    got, body, _ = await rename(http, sim)
    assert got == status
    assert body == {"error_code": f"{status}000", "message": message}
    assert (await get_first(http, sim))["etag"] == 1
    # Reads are not writes: faults are drawn for writes only.
    stats = await sim_get(http, sim, "/_sim/stats")
    assert stats["faults"] == {f"error_{status}": 1}
    assert stats["requests"]["GET"] == {"200": 1}


@pytest.mark.parametrize(
    ("form", "check"),
    [
        ("seconds", lambda v: v == "7"),
        ("date", lambda v: v is not None and v.endswith(" GMT")),
        ("none", lambda v: v is None),
    ],
    ids=["seconds", "date", "none"],
)
async def test_429_fault_with_each_retry_after_form(
    http: aiohttp.ClientSession, form: str, check: Any
) -> None:
    config = SimConfig(
        offers=3,
        faults=FaultRates(throttle_429=1.0),
        fault_retry_after=form,  # type: ignore[arg-type]
        fault_retry_after_s=7,
    )
    async with running(config) as sim:
        status, body, headers = await rename(http, sim)
        assert status == 429
        assert body == {"error_code": "429050", "message": "Too many requests"}
        assert check(headers.get("Retry-After")), headers
        assert (await get_first(http, sim))["etag"] == 1
        assert (await sim_get(http, sim, "/_sim/stats"))["faults"] == {"throttle_429": 1}


# --------------------------------------------------------------------------- slow answers


LATE = SimConfig(offers=3, faults=FaultRates(late_answer=1.0), late_ms=600)


@pytest.mark.parametrize("sim_config", [LATE], ids=["late600"])
async def test_late_answer_arrives_after_late_ms(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    status, body, _ = await rename(http, sim, patience=20)
    assert time.monotonic() - started >= 0.59
    assert status == 200
    assert body["etag"] == 2
    assert (await sim_get(http, sim, "/_sim/stats"))["faults"] == {"late_answer": 1}


@pytest.mark.parametrize("sim_config", [LATE], ids=["late600"])
async def test_late_answer_to_an_impatient_client(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(TimeoutError):
        await rename(http, sim, patience=0.3)
    doc = await get_first(http, sim)
    assert doc["name"] == "faulty rename"
    assert doc["etag"] == 2


ZOMBIE = SimConfig(offers=3, faults=FaultRates(zombie_write=1.0), zombie_ms=1200)


@pytest.mark.parametrize("sim_config", [ZOMBIE], ids=["zombie"])
async def test_zombie_write_lands_after_the_client_gave_up(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(TimeoutError):
        await rename(http, sim, patience=0.3)
    assert (await get_first(http, sim))["etag"] == 1
    not_yet = await sim_get(http, sim, "/_sim/settle?timeout=0")
    assert not_yet["settled"] is False
    assert not_yet["pending_delayed_writes"] == 1
    settled = await sim_get(http, sim, "/_sim/settle?timeout=20")
    assert settled["settled"] is True
    assert settled["pending_delayed_writes"] == 0
    assert settled["writes_applied"] == 1
    assert settled["faults"] == {"zombie_write": 1}
    doc = await get_first(http, sim)
    assert doc["name"] == "faulty rename"
    assert doc["etag"] == 2


# --------------------------------------------------------------------------- dropped connections


@pytest.mark.parametrize(
    ("sim_config", "lands"),
    [(faulty(drop_before=1.0), False), (faulty(drop_after=1.0), True)],
    ids=["drop_before", "drop_after"],
)
async def test_dropped_connection(
    sim: RunningSimulator, http: aiohttp.ClientSession, lands: bool
) -> None:
    with pytest.raises(aiohttp.ClientConnectionError):
        await rename(http, sim)
    doc = await get_first(http, sim)
    assert doc["etag"] == (2 if lands else 1)
    assert (doc["name"] == "faulty rename") is lands
    stats = await sim_get(http, sim, "/_sim/stats")
    assert stats["requests"]["PATCH"] == {"dropped": 1}
    assert stats["faults"] == {"drop_after" if lands else "drop_before": 1}
    assert stats["writes_applied"] == int(lands)


# --------------------------------------------------------------------------- other writers, tokens


@pytest.mark.parametrize("sim_config", [faulty(concurrent_writer=1.0)], ids=["concurrent"])
async def test_concurrent_writer_makes_if_match_stale(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await rename(http, sim, headers=json_headers(sim, **{"If-Match": '"1"'}))
    assert status == 409
    assert body["status"] == 409
    assert "If-Match" in body["detail"]
    doc = await get_first(http, sim)
    assert doc["etag"] == 2
    assert doc["characteristics"][CONCURRENT_FIELD] == "1"
    assert doc["lastModifiedBy"] == "other-writer@AdobeID"
    assert doc["name"] != "faulty rename"
    # Without If-Match both writes land: the other writer's and then this one.
    status, body, _ = await rename(http, sim)
    assert status == 200
    assert body["etag"] == 4
    doc = await get_first(http, sim)
    assert doc["name"] == "faulty rename"
    assert doc["characteristics"][CONCURRENT_FIELD] == "2"
    assert (await sim_get(http, sim, "/_sim/stats"))["faults"] == {"concurrent_writer": 2}


TOKENS = SimConfig(
    offers=3, client_id="cid", client_secret="sec", faults=FaultRates(token_expiry=1.0)
)


@pytest.mark.parametrize("sim_config", [TOKENS], ids=["token_expiry"])
async def test_token_expiry_fault_expires_the_callers_token(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    form = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "sec"}
    async with http.post(sim.ims_url, data=form) as r:
        token = (await read_json(r))["access_token"]
    issued = json_headers(sim, Authorization=f"Bearer {token}")
    async with http.get(offer_url(sim, FIRST), headers=issued) as r:
        assert r.status == 200
    status, body, _ = await rename(http, sim, headers=issued)
    assert (status, body) == (401, {"error_code": "401013", "message": "Oauth token is not valid"})
    async with http.get(offer_url(sim, FIRST), headers=issued) as r:
        assert r.status == 401
        assert (await read_json(r))["error_code"] == "401013"
    assert (await get_first(http, sim))["etag"] == 1
    assert (await sim_get(http, sim, "/_sim/stats"))["faults"] == {"token_expiry": 1}


# --------------------------------------------------------------------------- counting, replaying


MIXED = FaultRates(
    error_500=0.15, error_502=0.15, error_503=0.15, throttle_429=0.15, concurrent_writer=0.2
)
KIND_OF_STATUS = {500: "error_500", 502: "error_502", 503: "error_503", 429: "throttle_429"}


def _retry_after_form(value: str | None) -> str:
    if value is None:
        return "none"
    return "seconds" if value.isdigit() else "date"


async def _fault_sequence(
    http: aiohttp.ClientSession, seed: int
) -> tuple[list[tuple[int, str]], dict[str, Any], int]:
    async with running(SimConfig(offers=3, faults=MIXED, fault_seed=seed)) as sim:
        seen: list[tuple[int, str]] = []
        for n in range(30):
            status, _, headers = await rename(http, sim, value=f"v{n}")
            seen.append((status, _retry_after_form(headers.get("Retry-After"))))
        stats = await sim_get(http, sim, "/_sim/stats")
        etag = (await get_first(http, sim))["etag"]
    return seen, stats, etag


async def test_stats_count_faults_by_kind(http: aiohttp.ClientSession) -> None:
    seen, stats, etag = await _fault_sequence(http, seed=3)
    answered = Counter(KIND_OF_STATUS[s] for s, _ in seen if s != 200)
    # The mix must actually produce each kind, or the count proves little.
    assert set(answered) == set(KIND_OF_STATUS.values())
    concurrent = stats["faults"].pop("concurrent_writer")
    assert stats["faults"] == dict(answered)
    assert stats["faults_total"] == sum(answered.values()) + concurrent
    ok = sum(1 for s, _ in seen if s == 200)
    assert stats["requests"]["PATCH"]["200"] == ok
    assert etag == 1 + ok + concurrent


async def test_same_fault_seed_replays_the_same_faults(http: aiohttp.ClientSession) -> None:
    first, first_stats, first_etag = await _fault_sequence(http, seed=11)
    again, again_stats, again_etag = await _fault_sequence(http, seed=11)
    other, _, _ = await _fault_sequence(http, seed=12)
    assert again == first
    assert again_stats["faults"] == first_stats["faults"]
    assert again_etag == first_etag
    assert len({form for status, form in first if status == 429}) >= 2
    assert other != first


# --------------------------------------------------------------------------- the client goes away


SLOW = SimConfig(offers=3, latency_ms=500)


@pytest.mark.parametrize("sim_config", [SLOW], ids=["latency"])
async def test_a_client_gone_during_the_latency_misses_the_answer_to_a_write_that_stands(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """The latency is the way back: the write was applied on arrival, so a client that
    timed out cannot tell it from a lost request and must find out by reading."""
    with pytest.raises(TimeoutError):
        await rename(http, sim, patience=0.3)
    started = time.monotonic()
    doc = await get_first(http, sim)
    # This read started later and waits the same 500 ms, so by its answer the abandoned
    # PATCH's answer was due too.
    assert time.monotonic() - started >= 0.5
    assert doc["etag"] == 2
    assert doc["name"] == "faulty rename"
    stats = await sim_get(http, sim, "/_sim/stats")
    assert stats["requests"]["PATCH"] == {"client_gone": 1}
    assert stats["client_gone"] == 1
    assert stats["writes_applied"] == 1


async def test_a_client_gone_before_its_body_is_read_is_quiet(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = URL(offer_url(sim, FIRST))
    assert url.host is not None
    assert url.port is not None
    body = orjson.dumps([{"op": "replace", "path": "/name", "value": "never"}])
    head = [
        f"PATCH {url.raw_path_qs} HTTP/1.1",
        f"Host: {url.host}:{url.port}",
        "Content-Type: application/json-patch+json",
        f"Content-Length: {len(body) + 10}",  # ten bytes the server will never get
        *(f"{name}: {value}" for name, value in api_headers(sim).items()),
    ]
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        writer.write_eof()
        # The server closes its side once it has given up on the body: no answer at all.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
    assert (await get_first(http, sim))["etag"] == 1
    stats = await sim_get(http, sim, "/_sim/stats")
    assert stats["requests"]["PATCH"] == {"client_gone": 1}
    assert stats["client_gone"] == 1
    assert stats["writes_applied"] == 0
