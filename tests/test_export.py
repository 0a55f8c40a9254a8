"""bulkpatch export: every entity exactly once, page by page, and the loop back through run."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch import Credentials, RunConfig
from bulkpatch.export import ExportError, export_entities, next_url
from bulkpatch.simulator import FaultRates, SimConfig, running
from tests.test_run_cli import CLI, WAIT_S, count, offers_of, sim_env, sim_stats


async def export(*args: str, env: dict[str, str]) -> tuple[int, list[dict[str, object]], bytes]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "export", *args, "--rate", "0",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, [orjson.loads(line) for line in out.splitlines()], err


def test_next_links_resolve_whatever_base_they_are_written_against() -> None:
    endpoint = "https://platform.adobe.io/data/core/dps"
    relative = "/offers?limit=2&start=abc&offer-type=PERSONALIZED"
    assert str(next_url(endpoint, relative)) == endpoint + relative
    assert str(next_url(endpoint, "/data/core/dps" + relative)) == endpoint + relative
    absolute = "https://platform.adobe.io:443/data/core/dps" + relative
    assert str(next_url(endpoint, absolute)) == endpoint + relative


def test_a_next_link_to_another_origin_is_refused_naming_it() -> None:
    endpoint = "https://platform.adobe.io/data/core/dps"
    for other in (
        "https://other.example",
        "http://platform.adobe.io",
        "https://platform.adobe.io:8443",
    ):
        with pytest.raises(ExportError, match=other.replace(".", r"\.")):
            next_url(endpoint, f"{other}/data/core/dps/offers?start=abc")
    with pytest.raises(ExportError, match=r"https://other\.example"):
        next_url(endpoint, "//other.example/data/core/dps/offers?start=abc")


async def test_ten_thousand_offers_in_pages_of_a_hundred_each_exactly_once() -> None:
    async with running(SimConfig(offers=10_000)) as sim:
        code, docs, err = await export("--endpoint", sim.endpoint, "--page-size", "100", env=sim_env(sim))
        stats = await sim_stats(sim.base_url)
        expected = offers_of(sim)
    assert code == 0, err.decode()[-1500:]
    ids = [d["id"] for d in docs]
    assert len(ids) == 10_000
    assert set(ids) == set(expected)
    assert all(isinstance(d["etag"], int) and d["type"] == "personalized" for d in docs)
    assert count(stats, "GET") == 100


async def test_filters_and_order_and_transient_faults() -> None:
    # The simulator draws its faults on writes only: a throttle is what a read meets.
    config = SimConfig(offers=300, rate_limit=200, burst=2, retry_after="none")
    async with running(config) as sim:
        approved = {k for k, v in offers_of(sim).items() if v["status"] == "approved"}
        code, docs, err = await export(
            "--endpoint", sim.endpoint, "--page-size", "7", "--filter", "status==approved",
            "--order=-modified", env=sim_env(sim),
        )  # fmt: skip
        throttled = (await sim_stats(sim.base_url))["throttled_429"]
    assert code == 0, err.decode()[-1500:]
    assert throttled > 0  # pages were refused, and asked for again
    assert {d["id"] for d in docs} == approved
    assert len(docs) == len(approved)
    modified = [str(d["modified"]) for d in docs]
    assert modified == sorted(modified, reverse=True)


async def test_export_transform_run_export_round_trip_through_pipes(tmp_path: Path) -> None:
    # 503s apply nothing, so a pinned job's resend under its pin proves it. (A pinned job
    # whose answer is lost after it applied cannot be proven: tests/test_proof.py.)
    config = SimConfig(offers=50, faults=FaultRates(error_503=0.08), fault_seed=9)
    async with running(config) as sim:
        env = {**sim_env(sim), "PYTHONPATH": os.getcwd()}
        bulkpatch = " ".join(shlex.quote(c) for c in CLI)
        # Jobs built from the export, pinned to the etag each offer was exported at.
        transform = (
            "import sys, json\n"
            "for line in sys.stdin:\n"
            "    o = json.loads(line)\n"
            "    print(json.dumps({'id': o['id'], 'etag': o['etag'], 'patch': ["
            "{'op': 'replace', 'path': '/name', 'value': o['name'].upper()}]}))\n"
        )
        script = tmp_path / "transform.py"
        script.write_text(transform)
        pipeline = (
            f"{bulkpatch} export --endpoint {sim.endpoint} --rate 0 -q"
            f" | {shlex.quote(sys.executable)} {script}"
            f" | {bulkpatch} run - --endpoint {sim.endpoint} --rate 0 -q > {tmp_path / 'out.ndjson'}"
        )
        proc = await asyncio.create_subprocess_exec("bash", "-o", "pipefail", "-c", pipeline, env=env)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
        code, after, _ = await export("--endpoint", sim.endpoint, env=sim_env(sim))
    assert code == 0
    outcomes = [orjson.loads(line) for line in (tmp_path / "out.ndjson").read_bytes().splitlines()]
    assert len(outcomes) == 50
    assert all(o["ok"] for o in outcomes)
    assert all(d["name"] == str(d["name"]).upper() for d in after)
    assert len(after) == 50


async def test_a_page_answered_429_with_retry_after_waits_and_a_401_renews_the_token_once() -> None:
    """The first page is refused (401), then throttled (429, ``Retry-After: 1``), then
    served; the second page is served at once. One attempt is allowed: neither a 401 nor
    a 429 is an attempt, as in ``run``."""
    loop = asyncio.get_running_loop()
    tokens = iter(["token-1", "token-2"])
    fetched: list[str] = []
    seen: list[tuple[str, str, float]] = []  # (Authorization, start, when)

    async def ims(request: web.Request) -> web.Response:
        fetched.append(next(tokens))
        return web.json_response({"access_token": fetched[-1], "expires_in": 86399})

    async def offers(request: web.Request) -> web.Response:
        seen.append((request.headers["Authorization"], request.query.get("start", ""), loop.time()))
        if len(seen) == 1:
            return web.json_response({"error_code": "401013", "message": "Oauth token is not valid"}, status=401)
        if len(seen) == 2:
            return web.json_response(
                {"error_code": "429050", "message": "Too many requests"},
                status=429,
                headers={"Retry-After": "1"},
            )
        if request.query.get("start") == "2":
            return web.json_response({"results": [{"id": "offer-2", "etag": 1}], "total": 2})
        link = {"next": {"href": "/dps/offers?start=2&offer-type=PERSONALIZED"}}
        return web.json_response({"results": [{"id": "offer-1", "etag": 1}], "total": 2, "_links": link})

    app = web.Application()
    app.router.add_post("/ims/token/v3", ims)
    app.router.add_get("/dps/offers", offers)
    async with TestServer(app, host="127.0.0.1") as srv:
        config = RunConfig(
            credentials=Credentials(
                client_id="export-client",
                client_secret="export-secret",
                ims_url=str(srv.make_url("/ims/token/v3")),
            ),
            endpoint=str(srv.make_url("/dps")),
            org_id="EXPORT0@AdobeOrg",
            sandbox="prod",
            rate=0,
            timeout=5,
            max_attempts=1,
            backoff_base=0.001,
            backoff_cap=1.0,  # a Retry-After is kept to four times this: 1 s is honoured
            seed=1,
        )
        totals: list[int] = []

        async def export_all() -> list[dict[str, object]]:
            return [doc async for doc in export_entities(config, totals=totals)]

        docs = await asyncio.wait_for(export_all(), WAIT_S)
    assert [(d["id"], d["type"]) for d in docs] == [("offer-1", "personalized"), ("offer-2", "personalized")]
    assert totals == [2]
    assert fetched == ["token-1", "token-2"]  # renewed once, not once per request
    assert [(auth, start) for auth, start, _ in seen] == [
        ("Bearer token-1", ""),
        ("Bearer token-2", ""),
        ("Bearer token-2", ""),
        ("Bearer token-2", "2"),
    ]
    # Asked again no sooner than the server said (the pause ends on the same clock).
    assert seen[2][2] - seen[1][2] >= 0.99
