"""A 2xx proves a write only with a receipt of it (``api.receipt``): PATCH and PUT, an
etag (and this entity's id, if it names one); POST, a new id and an etag; DELETE, a 204
or a 200 with an empty or JSON body. Any other 2xx leaves the outcome unknown, and it is
settled by reading: a create by its look-up by key, a delete by a read whose 404 proves it.

The wire tests put a small aiohttp server on loopback in front of a dict of offers; its
``login`` methods are answered by a proxy's 200 HTML login page instead of the API's.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest
from aiohttp import web

from bulkpatch.api import DpsDialect, Receipt, XcoreDialect, receipt
from tests.test_wire_rules import config, message, run_one, server

LOGIN_PAGE = b"<!doctype html><html><body><form>Sign in</form></body></html>"
DPS = DpsDialect("https://example.test/dps")
XCORE = XcoreDialect("https://example.test/xcore", "c1")


@pytest.mark.parametrize(
    ("dialect", "method", "status", "body", "proves"),
    [
        (DPS, "PATCH", 200, b'{"id": "o1", "etag": 3}', (3, "o1")),
        (DPS, "PATCH", 200, b'{"etag": 3}', (3, None)),
        (DPS, "PUT", 200, b'{"id": "o1", "etag": 3}', (3, "o1")),
        (DPS, "PATCH", 200, b'{"id": "o2", "etag": 3}', None),  # another entity's
        (DPS, "PATCH", 200, b'{"id": "o1", "etag": "3"}', None),
        (DPS, "PATCH", 200, b'{"id": "o1", "etag": true}', None),
        (DPS, "PATCH", 204, b"", None),
        (DPS, "PATCH", 200, LOGIN_PAGE, None),
        (DPS, "PATCH", 200, b"[3]", None),
        (XCORE, "PATCH", 200, b'{"instanceId": "o1", "repo:etag": 4}', (4, "o1")),
        (XCORE, "PATCH", 200, b'{"instanceId": "o1", "etag": 4}', None),
        (DPS, "POST", 201, b'{"id": "new1", "etag": 1}', (1, "new1")),
        (DPS, "POST", 200, b'{"id": "new1", "etag": 1}', (1, "new1")),
        (DPS, "POST", 201, b'{"etag": 1}', None),
        (DPS, "POST", 201, b'{"id": "", "etag": 1}', None),
        (DPS, "POST", 201, b'{"id": "new1"}', None),
        (DPS, "POST", 201, b"", None),
        (DPS, "POST", 200, LOGIN_PAGE, None),
        (DPS, "DELETE", 204, b"", (None, None)),
        (DPS, "DELETE", 200, b"", (None, None)),
        (DPS, "DELETE", 200, b"{}", (None, None)),
        (DPS, "DELETE", 200, LOGIN_PAGE, None),
        (DPS, "DELETE", 202, b"", None),  # accepted, not done
    ],
)
def test_what_a_2xx_to_each_write_proves(
    dialect: DpsDialect | XcoreDialect, method: str, status: int, body: bytes, proves: Receipt | None
) -> None:
    assert receipt(dialect, method, status, body, "o1") == proves


class Offers:
    """The API behind a proxy: offers by id, the list API's ``property`` filter, and the
    writes; ``login``: the methods the proxy answers with its login page (after passing
    them on when ``forwards``); ``created``: what each POST answers when not a login page."""

    def __init__(
        self, *, login: frozenset[str], forwards: bool, created: dict[str, Any] | None = None
    ) -> None:
        self.docs: dict[str, dict[str, Any]] = {"offer-1": {"id": "offer-1", "name": "one", "etag": 1}}
        self.login, self.forwards, self.created = login, forwards, created
        self.ids = (f"new-{n}" for n in itertools.count(1))
        self.posts = 0

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/dps/offers"): self.list,
            ("POST", "/dps/offers"): self.create,
            ("GET", "/dps/offers/{id}"): self.read,
            ("DELETE", "/dps/offers/{id}"): self.delete,
        }

    def _proxied(self, request: web.Request) -> bool:
        """Whether the proxy answers this request itself; whether it passes it on is
        ``forwards``."""
        return request.method in self.login

    async def list(self, request: web.Request) -> web.Response:
        name, _, value = request.query["property"].partition("==")
        found = [d for d in self.docs.values() if str(d.get(name)) == value]
        return web.json_response({"results": found})

    async def read(self, request: web.Request) -> web.Response:
        doc = self.docs.get(request.match_info["id"])
        return web.json_response(doc) if doc else web.json_response({"title": "Not Found"}, status=404)

    async def create(self, request: web.Request) -> web.Response:
        self.posts += 1
        proxied = self._proxied(request)
        doc: dict[str, Any] = {}
        if self.forwards or not proxied:
            doc = {**orjson.loads(await request.read()), "id": next(self.ids), "etag": 1}
            self.docs[doc["id"]] = doc
        if proxied:
            self.login -= {"POST"}  # the next one reaches the API
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.json_response(doc if self.created is None else self.created, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        if self.forwards or not self._proxied(request):
            self.docs.pop(request.match_info["id"], None)
        if self._proxied(request):
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.Response(status=200)


CREATE = {"create": {"name": "Banner", "status": "draft"}}
DELETE = {"id": "offer-1", "delete": True}


async def run_against(offers: Offers, job: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    async with server(offers.routes()) as (api, seen):
        outcome = await asyncio.wait_for(run_one(job, config(api, allow_delete=True)), 30)
    return outcome, seen.requests


async def test_a_create_answered_by_a_login_page_that_reached_the_api_is_found_not_sent_again() -> None:
    offers = Offers(login=frozenset({"POST"}), forwards=True)
    outcome, requests = await run_against(offers, CREATE)
    assert outcome["ok"], outcome
    assert outcome["recovered"] is True  # proven by the look-up, not by the page
    assert outcome["id"] == "new-1"
    assert offers.posts == 1
    assert [d["name"] for d in offers.docs.values()].count("Banner") == 1
    assert [m for m, _ in requests] == ["GET", "POST", "GET"]  # look-up, create, look-up


async def test_a_create_answered_by_a_login_page_that_reached_nothing_is_sent_again() -> None:
    offers = Offers(login=frozenset({"POST"}), forwards=False)
    outcome, _ = await run_against(offers, CREATE)
    assert outcome["ok"], outcome
    assert outcome["id"] == "new-1"
    assert offers.posts == 2
    assert [d["name"] for d in offers.docs.values()].count("Banner") == 1


@pytest.mark.parametrize("answer", [{"name": "Banner"}, {"id": "new-1"}, {"etag": 1}])
async def test_a_create_whose_2xx_lacks_an_id_or_etag_is_found_by_its_key_never_created_twice(
    answer: dict[str, Any],
) -> None:
    offers = Offers(login=frozenset(), forwards=True, created=answer)
    outcome, requests = await run_against(offers, CREATE)
    assert outcome["ok"], outcome
    assert outcome["recovered"] is True
    assert outcome["id"] == "new-1"
    assert offers.posts == 1
    assert len(offers.docs) == 2
    assert [m for m, _ in requests] == ["GET", "POST", "GET"]


async def test_a_delete_answered_by_a_login_page_is_proven_by_the_404_of_a_read() -> None:
    offers = Offers(login=frozenset({"DELETE"}), forwards=True)
    outcome, requests = await run_against(offers, DELETE)
    assert outcome["ok"], outcome
    assert outcome["recovered"] is True
    assert outcome["deleted"] is True
    assert [m for m, _ in requests] == ["GET", "DELETE", "GET"]  # read, delete, settle


async def test_a_delete_answered_by_a_login_page_that_deleted_nothing_is_not_ok() -> None:
    offers = Offers(login=frozenset({"DELETE"}), forwards=False)
    outcome, requests = await run_against(offers, DELETE)
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "exhausted"
    assert "still there" in message(outcome)
    assert "offer-1" in offers.docs
    assert [m for m, _ in requests].count("DELETE") == 3  # --max-attempts 3
