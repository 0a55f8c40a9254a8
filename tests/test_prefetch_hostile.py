"""--prefetch against a hostile server: list pages that lie, loop, go stale or break.

A small aiohttp server on loopback (``Dps``) keeps entities per collection, honours
If-Match on writes (412 on a stale etag) and lists with a cursor of its own; each test
makes it misbehave one way. Each drives the run in-process (``run_jobs``) and checks
the outcome lines, the entities the server ends with and the requests it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch import verify
from tests.test_prefetch import config, run

Doc = dict[str, Any]
BASE = "/data/core/dps"


def tagged(entity_id: str, tag: str = "t", entity: str | None = None) -> dict[str, Any]:
    """An append: a job that needs its entity's state (not idempotent)."""
    job: dict[str, Any] = {"id": entity_id, "patch": [{"op": "add", "path": "/tags/-", "value": tag}]}
    if entity is not None:
        job["entity"] = entity
    return job


class Dps:
    """Entities by collection, each ``{"id", "etag", "name", "tags"}``; the list answers
    ``limit`` entries a page (1000 at most) from a ``start`` cursor. ``seen``: every
    request, as (method, path and query). Hooks a test overrides: ``listed`` (an entry
    as the list shows it), ``page`` (a whole list answer), ``after_page`` (called once a
    page is answered: another writer's chance)."""

    def __init__(self, collection: str = "offers", count: int = 10, prefix: str = "o") -> None:
        self.docs: dict[str, dict[str, Doc]] = {
            collection: {
                f"{prefix}{n}": {"id": f"{prefix}{n}", "etag": 1, "name": f"n{n}", "tags": []}
                for n in range(1, count + 1)
            }
        }
        self.seen: list[tuple[str, str]] = []
        self.drop_after: set[str] = set()  # ids whose next write lands unanswered
        self.after_page: Callable[[int], None] = lambda number: None
        self.pages = 0
        self.created = 0

    def requests(self, method: str, part: str = "") -> list[str]:
        return [path for m, path in self.seen if m == method and part in path]

    def listed(self, doc: Doc) -> Doc:
        return doc

    def page(self, request: web.Request, collection: str) -> web.Response:
        docs = self.docs.setdefault(collection, {})
        order = sorted(docs)
        start = int(request.query.get("start", "0"))
        size = min(int(request.query.get("limit", "100")), 1000)
        chunk = order[start : start + size]
        body: dict[str, Any] = {
            "results": [self.listed(docs[i]) for i in chunk],
            "count": len(chunk),
            "total": len(order),
        }
        if start + size < len(order):
            body["_links"] = {"next": {"href": f"/{collection}?start={start + size}&limit={size}"}}
        return web.json_response(body)

    async def collection(self, request: web.Request) -> web.StreamResponse:
        collection = request.match_info["collection"]
        self.seen.append((request.method, request.path_qs))
        if request.method == "POST":
            return await self.create(request, collection)
        answer = self.page(request, collection)
        self.pages += 1
        self.after_page(self.pages)
        return answer

    async def create(self, request: web.Request, collection: str) -> web.Response:
        doc = orjson.loads(await request.read())
        self.created += 1
        doc.update(id=f"new{self.created}", etag=1)
        self.docs.setdefault(collection, {})[doc["id"]] = doc
        return web.json_response({"id": doc["id"], "etag": 1}, status=201)

    async def entity(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs))
        docs = self.docs.setdefault(request.match_info["collection"], {})
        doc = docs.get(request.match_info["id"])
        if doc is None:
            return web.json_response({"title": "Not Found"}, status=404)
        if request.method == "GET":
            return web.json_response(doc)
        if request.headers.get("If-Match", f'"{doc["etag"]}"') != f'"{doc["etag"]}"':
            return web.json_response({"title": "Precondition Failed"}, status=412)
        if request.method == "DELETE":
            del docs[doc["id"]]
            return web.Response(status=204)
        body = orjson.loads(await request.read())
        new = verify.apply(body, doc) if request.method == "PATCH" else body
        new.update(id=doc["id"], etag=doc["etag"] + 1)
        docs[doc["id"]] = new
        if doc["id"] in self.drop_after:
            self.drop_after.discard(doc["id"])
            assert request.transport is not None
            request.transport.abort()  # landed, and its answer lost
            raise asyncio.CancelledError
        return web.json_response({"id": doc["id"], "etag": new["etag"]})


@contextlib.asynccontextmanager
async def serving(server: Dps) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", BASE + "/{collection}", server.collection)
    app.router.add_route("*", BASE + "/{collection}/{id}", server.entity)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield f"http://127.0.0.1:{test_server.port}{BASE}"
    finally:
        await test_server.close()


async def against(
    tmp_path: Path, server: Dps, jobs: list[dict[str, Any]], name: str = "run", **settings: Any
) -> tuple[Any, dict[int, dict[str, Any]]]:
    settings.setdefault("prefetch", "list")
    async with serving(server) as endpoint:
        return await run(tmp_path, config(endpoint, "t", **settings), jobs, name)


def tags(server: Dps, collection: str = "offers") -> dict[str, list[str]]:
    return {i: d.get("tags", []) for i, d in server.docs[collection].items()}


# --------------------------------------------------------------------------- stale pages


async def test_an_entity_another_writer_changed_after_its_page_is_rebased_not_overwritten(
    tmp_path: Path,
) -> None:
    server = Dps(count=5)

    def other_writer(number: int) -> None:
        # After the listing's only page: each entity gains a tag and a new etag.
        if number == 2:  # the preflight's probe is the first list request
            for doc in server.docs["offers"].values():
                doc["tags"].append("theirs")
                doc["etag"] += 1

    server.after_page = other_writer
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 6)])
    assert all(o["ok"] and o["pre"] == "list" for o in lines.values())
    assert all(t == ["theirs", "t"] for t in tags(server).values())
    assert result.summary["conflicts_rebased"] == 5
    assert len(server.requests("PATCH")) == 10  # each refused once (412), then written
    assert len(server.requests("GET", "/offers/")) == 5  # one live read per rebase


async def test_an_entity_listed_twice_with_different_etags_is_written_once(tmp_path: Path) -> None:
    # An entity moves while the list is read: page 2 shows it again, with an older etag.
    server = Dps(count=4)
    server.docs["offers"]["o1"]["etag"] = 3
    real_page = server.page

    def page(request: web.Request, collection: str) -> web.Response:
        answer = real_page(request, collection)
        if request.query.get("start") == "2":
            body = orjson.loads(answer.body)  # type: ignore[arg-type]
            body["results"].append({**server.docs["offers"]["o1"], "etag": 2})
            return web.json_response(body)
        return answer

    server.page = page  # type: ignore[method-assign]
    _, lines = await against(
        tmp_path, server, [tagged(f"o{n}") for n in range(1, 5)], page_size=2
    )
    assert all(o["ok"] for o in lines.values())
    assert all(t == ["t"] for t in tags(server).values())
    assert server.docs["offers"]["o1"]["etag"] == 4


async def test_an_entity_deleted_after_the_listing_fails_its_job_with_a_404(tmp_path: Path) -> None:
    server = Dps(count=3)

    def deleter(number: int) -> None:
        if number == 2:
            del server.docs["offers"]["o2"]

    server.after_page = deleter
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 4)])
    assert [lines[n]["ok"] for n in (1, 2, 3)] == [True, False, True]
    assert lines[2]["status"] == 404
    assert "o2" not in server.docs["offers"]
    assert result.summary["outcomes"] == {"ok": 2, "http": 1}
    assert len(server.requests("PATCH")) == 3


# --------------------------------------------------------------------------- entries that lie


async def test_a_partial_list_entry_is_no_pre_image_an_unknown_outcome_could_be_settled_on(
    tmp_path: Path,
) -> None:
    # Selection strategies' list entries are not whole (the registry says so): an entry
    # without ``tags`` would settle a lost answer as "did not land", and send it again.
    server = Dps("selection-strategies", count=3, prefix="s")
    server.listed = lambda doc: {k: doc[k] for k in ("id", "etag", "name")}  # type: ignore[method-assign]
    server.drop_after = {"s1", "s2", "s3"}
    jobs = [tagged(f"s{n}", entity="selection-strategies") for n in range(1, 4)]
    result, lines = await against(tmp_path, server, jobs)
    assert all(t == ["t"] for t in tags(server, "selection-strategies").values())
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values())
    assert result.summary["recovered"] == 3


async def test_a_whole_object_kind_is_written_on_a_get_not_on_its_partial_list_entry(
    tmp_path: Path,
) -> None:
    server = Dps("exd-placements", count=2, prefix="p")
    for doc in server.docs["exd-placements"].values():
        doc["description"] = "kept"
    server.listed = lambda doc: {k: doc[k] for k in ("id", "etag", "name")}  # type: ignore[method-assign]
    jobs = [
        {"id": f"p{n}", "entity": "exd-placements",
         "patch": [{"op": "replace", "path": "/name", "value": "x"}]}
        for n in (1, 2)
    ]  # fmt: skip
    _, lines = await against(tmp_path, server, jobs)
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values())
    docs = server.docs["exd-placements"].values()
    assert all(d["description"] == "kept" and d["name"] == "x" for d in docs)
    assert len(server.requests("PUT")) == 2


async def test_list_entries_with_an_etag_that_is_no_integer_are_read_with_a_get(
    tmp_path: Path,
) -> None:
    # "1" would go out as If-Match "1" and match; null would send no If-Match at all.
    server = Dps(count=4)
    odd: dict[str, Any] = {"o1": "1", "o2": None, "o3": 1.0, "o4": [1]}
    server.listed = lambda doc: {**doc, "etag": odd[doc["id"]]}  # type: ignore[method-assign]
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 5)])
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values())
    assert all(t == ["t"] for t in tags(server).values())
    assert sorted(server.requests("GET", "/offers/")) == [
        f"{BASE}/offers/o{n}?offer-type=personalized" for n in range(1, 5)
    ]
    assert all(doc["etag"] == 2 for doc in server.docs["offers"].values())
    assert result.summary["reads"] == 4


async def test_entries_without_an_id_or_etag_are_read_with_a_get(tmp_path: Path) -> None:
    server = Dps(count=3)
    drop = {"o1": "id", "o2": "etag"}
    server.listed = lambda doc: {k: v for k, v in doc.items() if k != drop.get(doc["id"])}  # type: ignore[method-assign]
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 4)])
    assert [lines[n]["pre"] for n in (1, 2, 3)] == ["get", "get", "list"]
    assert all(o["ok"] for o in lines.values())
    assert all(t == ["t"] for t in tags(server).values())
    assert result.summary["reads"] == 2


async def test_an_entry_of_the_other_kind_on_a_shared_path_is_not_taken_for_this_kind(
    tmp_path: Path,
) -> None:
    # /offer-rules holds decision rules and eligibility rules (``exdRule: true``). A
    # server that ignores the filter lists both: a job naming an eligibility rule as an
    # offer rule must be refused as a GET would have it refused, not written.
    server = Dps("offer-rules", count=2, prefix="r")
    server.docs["offer-rules"]["r2"]["exdRule"] = True
    jobs = [tagged(f"r{n}", entity="offer-rules") for n in (1, 2)]
    _, lines = await against(tmp_path, server, jobs)
    assert lines[1]["ok"]
    assert (lines[2]["ok"], lines[2]["error"]["kind"]) == (False, "input")
    assert tags(server, "offer-rules") == {"r1": ["t"], "r2": []}
    assert server.requests("PATCH") == [f"{BASE}/offer-rules/r1"]


# --------------------------------------------------------------------------- pages that misbehave


def paged(server: Dps, change: Callable[[int, dict[str, Any]], dict[str, Any] | web.Response]) -> None:
    """Make ``server``'s list answers ``change(n, body)`` (n: the listing's page, from 1;
    the preflight's probe is left alone)."""
    real_page = server.page
    number = 0

    def page(request: web.Request, collection: str) -> web.Response:
        nonlocal number
        answer = real_page(request, collection)
        if request.query.get("limit") == "1" and "start" not in request.query:
            return answer  # the preflight's probe
        number += 1
        changed = change(number, orjson.loads(answer.body))  # type: ignore[arg-type]
        return changed if isinstance(changed, web.Response) else web.json_response(changed)

    server.page = page  # type: ignore[method-assign]


async def test_a_next_link_back_to_a_page_read_ends_the_listing_and_the_rest_are_read(
    tmp_path: Path,
) -> None:
    server = Dps(count=6)

    def loop(number: int, body: dict[str, Any]) -> dict[str, Any]:
        if number == 2:
            body["_links"] = {"next": {"href": "/offers?start=0&limit=2"}}
        return body

    paged(server, loop)
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 7)], page_size=2)
    assert all(o["ok"] for o in lines.values())
    assert [lines[n]["pre"] for n in range(1, 7)] == ["list"] * 4 + ["get"] * 2
    assert all(t == ["t"] for t in tags(server).values())
    # The first page's own URL is spelled otherwise: read once more, then caught.
    assert result.summary["list_pages"] == 3


async def test_a_next_link_to_another_origin_is_not_followed(tmp_path: Path) -> None:
    server = Dps(count=4)

    def away(number: int, body: dict[str, Any]) -> dict[str, Any]:
        body["_links"] = {"next": {"href": "http://127.0.0.2:9/data/core/dps/offers?start=2"}}
        return body

    paged(server, away)
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 5)], page_size=2)
    assert [lines[n]["pre"] for n in range(1, 5)] == ["list", "list", "get", "get"]
    assert all(t == ["t"] for t in tags(server).values())
    assert result.summary["list_pages"] == 1


async def test_a_cursor_that_never_ends_ends_the_listing(tmp_path: Path) -> None:
    # Each page links a fresh cursor and shows the same entries again, for ever (the
    # server stops after 200 pages only so that this test ends either way).
    server = Dps(count=4)

    def endless(number: int, body: dict[str, Any]) -> dict[str, Any]:
        body["results"] = [server.docs["offers"][f"o{n}"] for n in (1, 2)]
        if number < 200:
            body["_links"] = {"next": {"href": f"/offers?cursor={number}&limit=2"}}
        return body

    paged(server, endless)
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 5)], page_size=2)
    assert all(o["ok"] for o in lines.values())
    assert all(t == ["t"] for t in tags(server).values())
    assert result.summary["list_pages"] <= 3


async def test_pages_with_links_or_results_of_the_wrong_shape_are_no_traceback(
    tmp_path: Path,
) -> None:
    server = Dps(count=6)
    shapes: dict[int, Any] = {1: {"_links": {"next": "/offers?start=2&limit=2"}}}

    def odd(number: int, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, **shapes.get(number, {})}

    paged(server, odd)
    odd_links: list[Any] = [{"next": "/offers?start=2"}, [], None, {"next": {"href": 7}}, "x"]
    for n, links in enumerate(odd_links):
        shapes[1] = {"_links": links}
        jobs = [tagged(f"o{n}", str(links)) for n in (1, 4)]
        _, lines = await against(tmp_path, server, jobs, f"run{n}", page_size=2)
        assert all(o["ok"] for o in lines.values()), links
        assert lines[1]["pre"] == "list"


async def test_export_of_a_page_whose_next_link_is_no_object_ends_in_an_error_not_a_traceback() -> None:
    server = Dps(count=4)
    paged(server, lambda number, body: {**body, "_links": {"next": "/offers?start=2"}})
    async with serving(server) as endpoint:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bulkpatch", "export", "--endpoint", endpoint, "--rate", "0",
            "--page-size", "2", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=os.environ | {
                "ADOBE_ACCESS_TOKEN": "t", "ADOBE_API_KEY": "k", "ADOBE_ORG_ID": "O@AdobeOrg",
                "ADOBE_SANDBOX_NAME": "prod",
            },
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err
    assert b"next link is not an object" in err
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["o1", "o2"]


async def test_list_pages_answered_429_and_503_mid_listing_are_waited_for_and_read_again(
    tmp_path: Path,
) -> None:
    server = Dps(count=6)
    refusals = {2: 429, 3: 503}  # the listing's second and third requests

    def busy(number: int, body: dict[str, Any]) -> dict[str, Any] | web.Response:
        if (status := refusals.pop(number, None)) is not None:
            return web.json_response({"title": "busy"}, status=status, headers={"Retry-After": "0"})
        return body

    paged(server, busy)
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 7)], page_size=2)
    assert all(o["ok"] and o["pre"] == "list" for o in lines.values())
    assert all(t == ["t"] for t in tags(server).values())
    assert result.summary["list_pages"] == 3
    assert len(server.requests("GET", "/offers?")) == 1 + 5  # the probe, 3 pages, 2 refused
    assert result.summary["reads"] == 0


async def test_a_page_that_is_not_json_or_too_big_ends_the_listing_not_the_run(
    tmp_path: Path,
) -> None:
    bodies = (b"<html>oops</html>", b"[" + b"1," * 600_000 + b"1]")
    for n, odd in enumerate(bodies):
        server = Dps(count=4)

        def broken(number: int, body: dict[str, Any], odd: bytes = odd) -> Any:
            return web.Response(body=odd) if number >= 2 else body

        paged(server, broken)
        jobs = [tagged(f"o{i}") for i in range(1, 5)]
        _, lines = await against(
            tmp_path, server, jobs, f"run{n}", page_size=2, max_response_bytes=1_000_000
        )
        assert [lines[i]["pre"] for i in range(1, 5)] == ["list", "list", "get", "get"]
        assert all(o["ok"] for o in lines.values())
        assert all(t == ["t"] for t in tags(server).values())


async def test_a_total_that_lies_costs_requests_never_a_write(tmp_path: Path) -> None:
    # auto: the probe says 3 entities (worth listing for 6 named); the pages go on.
    for n, total in enumerate((3, 10**9, "many")):
        server = Dps(count=30)
        real = server.page

        def lying(
            request: web.Request, collection: str, total: Any = total, real: Any = real
        ) -> web.Response:
            body = orjson.loads(real(request, collection).body)
            return web.json_response({**body, "total": total})

        server.page = lying  # type: ignore[method-assign]
        jobs = [tagged(f"o{i}") for i in range(1, 31)]
        _, lines = await against(tmp_path, server, jobs, f"run{n}", prefetch="auto", page_size=10)
        assert all(o["ok"] for o in lines.values())
        assert all(t == ["t"] for t in tags(server).values())
        assert len(server.requests("PATCH")) == 30


# --------------------------------------------------------------------------- creates


def creating(name: str) -> dict[str, Any]:
    return {"create": {"name": name, "tags": []}}


async def test_a_create_key_listed_in_another_case_is_created_with_no_look_up(
    tmp_path: Path,
) -> None:
    # The list filter's == is exact: "N1" is not "n1", and the listing says so.
    server = Dps(count=3)
    result, lines = await against(tmp_path, server, [creating("N1"), creating("n2")])
    assert lines[1]["ok"]
    assert not lines[2]["ok"]
    assert lines[2]["error"]["kind"] == "conflict"
    assert sorted(d["name"] for d in server.docs["offers"].values()) == ["N1", "n1", "n2", "n3"]
    assert server.requests("GET", "property=") == []  # no look-up: the listing answered
    assert result.summary["list_pages"] == 1


@pytest.mark.parametrize("key", ["name", "/name"])
async def test_the_same_create_twice_in_a_run_creates_one_entity(tmp_path: Path, key: str) -> None:
    # The listing knows nothing of what this run created: the second create's key must
    # not be taken as absent on its word (a key named by a JSON Pointer too).
    server = Dps(count=3)
    _, lines = await against(tmp_path, server, [creating("fresh"), creating("fresh")], create_key=key)
    names = [d["name"] for d in server.docs["offers"].values()]
    assert names.count("fresh") == 1
    assert lines[1]["ok"]
    assert (lines[2]["ok"], lines[2]["error"]["kind"]) == (False, "input")
    assert "another create in this run has the same" in lines[2]["error"]["message"]
    assert len(server.requests("POST")) == 1


async def test_a_server_that_refuses_every_page_size_leaves_the_jobs_to_gets(tmp_path: Path) -> None:
    server = Dps(count=3)
    probe = server.page
    server.page = lambda request, collection: (  # type: ignore[method-assign]
        probe(request, collection)
        if server.pages == 0  # the preflight's probe
        else web.json_response({"title": "bad limit"}, status=400)
    )
    result, lines = await against(tmp_path, server, [tagged(f"o{n}") for n in range(1, 4)], page_size=8)
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values())
    assert all(t == ["t"] for t in tags(server).values())
    limits = [p.split("limit=")[1].split("&")[0] for p in server.requests("GET", "/offers?")[1:]]
    assert limits == ["8", "4", "2", "1"]  # halved down to one, then given up
    assert result.summary["list_pages"] == 0
