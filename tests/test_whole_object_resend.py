"""A whole-object write whose connection drops after the server applied it.

aiohttp sends a PUT again by itself over a dropped connection (it counts PUT as
idempotent), and that resend meets If-Match of the etag the first one moved: a 412. The
job must end ok with its change made once, not rebased and applied again, nor failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch import Credentials
from bulkpatch.config import RunConfig
from bulkpatch.runner import RunOutputs, run_jobs

PATH = "/dps/ranking-formulas/rankingFormula1234"


class Formula:
    """One ranking formula, GET and PUT; the first PUT is applied and its connection cut
    before any answer."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {
            "id": "rankingFormula1234", "etag": 1, "name": "Formula", "exdFunction": True,
            "labels": ["a"],
        }  # fmt: skip
        self.puts: list[str] = []  # the If-Match of each PUT received

    async def get(self, _request: web.Request) -> web.Response:
        return web.json_response(self.doc)

    async def put(self, request: web.Request) -> web.Response:
        body = await request.json()
        if_match = request.headers.get("If-Match", "")
        self.puts.append(if_match)
        if if_match != f'"{self.doc["etag"]}"':
            return web.json_response({"title": "Precondition Failed"}, status=412)
        self.doc = {**body, "id": self.doc["id"], "etag": self.doc["etag"] + 1}
        if len(self.puts) == 1:
            assert request.transport is not None
            request.transport.abort()  # applied, never answered
        return web.json_response({"id": self.doc["id"], "etag": self.doc["etag"]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PATH, self.get)
        app.router.add_put(PATH, self.put)
        return app


@pytest.mark.parametrize(
    "patch",
    [
        [{"op": "add", "path": "/labels/-", "value": "b"}],
        [
            {"op": "test", "path": "/name", "value": "Formula"},
            {"op": "replace", "path": "/name", "value": "New"},
        ],
    ],
    ids=["append", "test+replace"],
)
async def test_a_put_applied_then_resent_by_aiohttp_is_done_once(
    patch: list[dict[str, Any]], tmp_path: Path
) -> None:
    formula = Formula()
    job = {"id": "rankingFormula1234", "entity": "ranking-formulas", "patch": patch}
    source = tmp_path / "jobs.ndjson"
    source.write_bytes(orjson.dumps(job) + b"\n")
    receipts = tmp_path / "out.ndjson"
    async with TestServer(formula.app(), host="127.0.0.1") as server:
        config = RunConfig(
            credentials=Credentials(access_token="t"),
            endpoint=str(server.make_url("/dps")),
            api_key="k",
            org_id="O@AdobeOrg",
            sandbox="prod",
            rate=0,
            backoff_base=0.01,
            backoff_cap=0.05,
        )
        await run_jobs(config, source, RunOutputs(receipts=receipts, overwrite=True))
    outcome = orjson.loads(receipts.read_bytes())
    assert formula.puts[:2] == ['"1"', '"1"']  # the write, and aiohttp's resend of it
    assert len(formula.puts) == 2, formula.puts  # nothing sent after the resend's 412
    assert (outcome["ok"], outcome.get("recovered")) == (True, True), outcome
    expected = {"labels": ["a", "b"]} if patch[0]["op"] == "add" else {"name": "New"}
    assert {k: formula.doc[k] for k in expected} == expected
