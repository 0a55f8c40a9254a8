"""The xcore dialect: a small pure object, and discovery of the decisioning container."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch.api import XcoreDialect, containers
from bulkpatch.jobs import Job
from tests.test_run_cli import WAIT_S, clean_env, ndjson

CONTAINER_REL = "https://ns.adobe.com/experience/xcore/container"


def test_urls_media_types_and_receipts() -> None:
    dialect = XcoreDialect("https://platform.adobe.io/data/core/xcore/", "e0bd8463-0913")
    job = Job(line=1, id="124e181c8b0d7878", patch=[], type="fallback")
    assert str(dialect.entity_url(job)) == (
        "https://platform.adobe.io/data/core/xcore/e0bd8463-0913/instances/124e181c8b0d7878"
    )
    assert dialect.patch_headers("fallback")["Content-Type"] == (
        "application/vnd.adobe.platform.xcore.patch.hal+json; version=1; "
        'schema="https://ns.adobe.com/experience/offer-management/fallback-offer;version=0.1"'
    )
    assert "personalized-offer;version=0.5" in dialect.read_headers("personalized")["Accept"]
    assert dialect.patch_headers()["Accept"] == (
        "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"
    )
    assert dialect.if_match(3) == '"3"'
    receipt = {"instanceId": "124e", "@id": "xcore:personalized-offer:124e", "repo:etag": 4}
    assert dialect.receipt_etag(receipt) == 4
    assert dialect.receipt_id(receipt) == "124e"
    document = dialect.document({**receipt, "_instance": {"xdm:name": "x"}})
    assert document is not None
    assert document["etag"] == 4
    assert document["_instance"] == {"xdm:name": "x"}
    assert dialect.document({"_instance": {}}) is None  # no repo:etag: not a document


def test_containers_are_read_from_the_home_document() -> None:
    home = {"_embedded": {CONTAINER_REL: [{"instanceId": "a"}, {"instanceId": "b"}, {"x": 1}]}}
    assert containers(home) == ["a", "b"]
    assert containers({}) == []


@pytest.fixture
async def home_server(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A small server that answers only the xcore home, with the containers asked for."""
    found: list[str] = request.param
    seen: list[dict[str, Any]] = []

    async def home(req: web.Request) -> web.Response:
        seen.append({"query": dict(req.query), "accept": req.headers.get("Accept")})
        body = {"_embedded": {CONTAINER_REL: [{"instanceId": c} for c in found]}}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/data/core/xcore/", home)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/data/core/xcore"))


@pytest.mark.parametrize("home_server", [[], ["c1", "c2"]], indirect=True)
async def test_none_or_several_containers_stop_the_run_listing_what_was_found(
    home_server: str,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkpatch", "run", "-", "--dialect", "xcore",
        "--endpoint", home_server, "--rate", "0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(ADOBE_ACCESS_TOKEN="t", ADOBE_API_KEY="k", ADOBE_ORG_ID="o", ADOBE_SANDBOX_NAME="s"),
    )  # fmt: skip
    job = {"id": "i1", "patch": [{"op": "replace", "path": "/_instance/xdm:name", "value": "x"}]}
    out, err = await asyncio.wait_for(proc.communicate(ndjson([job])), WAIT_S)
    assert proc.returncode == 2
    assert out == b""
    text = err.decode()
    assert "expected one decisioning container" in text
    assert ("found 0 (none)" in text) or ("found 2 (c1, c2)" in text)
