"""--prefetch: entities' state from list pages, over loopback to the simulator (or to a
small server built here), the run driven in-process through ``run_jobs``.

Request counts come from the run's own summary (``requests``, ``reads``, ``list_pages``)
and the simulator's ``/_sim/stats``; the state left is read off the simulator's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch import Credentials, RunConfig, prefetch, verify
from bulkpatch.admission import shard_of
from bulkpatch.errors import ConfigError
from bulkpatch.runner import RunOutputs, RunResult, run_jobs
from bulkpatch.simulator import CONCURRENT_FIELD, FaultRates, RunningSimulator, SimConfig, running
from tests.test_run_cli import count, ndjson, offers_of, sim_stats


def oid(n: int) -> str:
    return f"personalizedOffer{n:06d}"


def appends(ids: range, tag: str = "pf") -> list[dict[str, Any]]:
    """One append per offer: a job that needs the entity's state before its write."""
    return [
        {"id": oid(n), "patch": [{"op": "add", "path": "/tags/-", "value": f"{tag}{n}"}]}
        for n in ids
    ]


def config(endpoint: str, token: str, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "credentials": Credentials(access_token=token),
        "endpoint": endpoint,
        "api_key": "prefetch-tests",
        "org_id": "PF00@AdobeOrg",
        "sandbox": "prod",
        "rate": 0,
        "concurrency": 8,
        "timeout": 5,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "seed": 1,
        "preflight": True,
        "prefetch": "auto",
    }
    settings.update(overrides)
    return RunConfig(**settings)


async def run(
    tmp_path: Path, cfg: RunConfig, jobs: list[dict[str, Any]], name: str = "run"
) -> tuple[RunResult, dict[int, dict[str, Any]]]:
    """Run ``jobs`` from a file; the result and every outcome line by line number."""
    source = tmp_path / f"{name}.ndjson"
    source.write_bytes(ndjson(jobs))
    receipts = tmp_path / f"{name}.out.ndjson"
    result = await run_jobs(cfg, source, RunOutputs(receipts=receipts))
    lines = [orjson.loads(line) for line in receipts.read_bytes().splitlines()]
    by_line = {o["line"]: o for o in lines}
    assert sorted(by_line) == list(range(1, len(jobs) + 1))
    return result, by_line


def sim_run_config(sim: RunningSimulator, **overrides: Any) -> RunConfig:
    return config(sim.endpoint, sim.config.access_token or "", **overrides)


def tags_added_once(sim: RunningSimulator, ids: range, tag: str = "pf") -> bool:
    offers = offers_of(sim)
    return all(offers[oid(n)]["tags"].count(f"{tag}{n}") == 1 for n in ids)


async def test_appends_read_their_entities_from_list_pages_not_one_get_each(tmp_path: Path) -> None:
    jobs = appends(range(1, 201))
    async with running(SimConfig(offers=300)) as sim:
        got, _ = await run(tmp_path, sim_run_config(sim, prefetch="get"), jobs, "get")
        listed, lines = await run(
            tmp_path, sim_run_config(sim), appends(range(1, 201), "again"), "auto"
        )
        assert tags_added_once(sim, range(1, 201))
        assert tags_added_once(sim, range(1, 201), "again")
    assert got.summary["requests"] == 1 + 200 + 200  # the preflight, a GET and a PATCH each
    pages = math.ceil(300 / 100)
    assert listed.summary["list_pages"] == pages
    assert listed.summary["reads"] == 0
    assert listed.summary["requests"] == 1 + pages + 200
    assert all(o["ok"] and o["pre"] == "list" for o in lines.values())


async def test_an_entity_changed_after_its_page_was_read_is_rebased_not_overwritten(
    tmp_path: Path,
) -> None:
    # Another writer changes an entity just before a write (the listing is older): the
    # listed etag is stale, the write is refused, read again and written on top.
    faults = FaultRates(concurrent_writer=0.3)
    async with running(SimConfig(offers=100, faults=faults, fault_seed=7)) as sim:
        result, lines = await run(
            tmp_path, sim_run_config(sim, prefetch="list"), appends(range(1, 101))
        )
        offers = offers_of(sim)
        stats = await sim_stats(sim.base_url)
        assert tags_added_once(sim, range(1, 101))
    changed = [o for o in offers.values() if CONCURRENT_FIELD in o.get("characteristics", {})]
    assert changed, "the other writer changed nothing: the test tests nothing"
    # Each change of the other writer's met a write of ours, refused and rebased.
    assert result.summary["conflicts_rebased"] == stats["faults"]["concurrent_writer"]
    assert all(o["ok"] for o in lines.values())
    assert result.summary["reads"] == result.summary["conflicts_rebased"]  # a live read per rebase


async def test_an_entity_this_run_wrote_is_read_afresh_not_taken_from_an_older_page(
    tmp_path: Path,
) -> None:
    # A replace needs no state and runs at once; the append after it on the same offer
    # must not be built on the page's older etag (a conflict at best; after an unknown
    # outcome, a settle read that cannot tell).
    renames = [
        {"id": oid(n), "patch": [{"op": "replace", "path": "/name", "value": f"r{n}"}]}
        for n in range(1, 51)
    ]
    async with running(SimConfig(offers=100)) as sim:
        cfg = sim_run_config(sim, prefetch="list")
        result, lines = await run(tmp_path, cfg, renames + appends(range(1, 51)))
        assert tags_added_once(sim, range(1, 51))
    assert result.summary["conflicts_rebased"] == 0
    assert all(lines[n]["ok"] and lines[n]["pre"] == "get" for n in range(51, 101))


async def test_an_unknown_outcome_is_settled_by_a_live_read_never_from_the_listing(
    tmp_path: Path,
) -> None:
    # The write lands and its answer is lost: a settle read must see the entity as it is
    # now; the listed state (before the write) would have it sent again.
    faults = FaultRates(drop_after=0.3)
    async with running(SimConfig(offers=100, faults=faults, fault_seed=3)) as sim:
        result, lines = await run(
            tmp_path, sim_run_config(sim, prefetch="list"), appends(range(1, 101))
        )
        stats = await sim_stats(sim.base_url)
        assert tags_added_once(sim, range(1, 101))
    dropped = stats["faults"]["drop_after"]
    assert dropped > 0
    assert all(o["ok"] and o["pre"] == "list" for o in lines.values())
    assert result.summary["recovered"] == dropped
    assert result.summary["reads"] >= dropped


async def test_a_400_to_the_page_size_halves_it_until_the_server_takes_it(tmp_path: Path) -> None:
    # The simulator refuses a limit over 1000 with a 400: 4000, then 2000, then 1000.
    async with running(SimConfig(offers=1500)) as sim:
        cfg = sim_run_config(sim, prefetch="list", page_size=4000)
        result, lines = await run(tmp_path, cfg, appends(range(1, 11)))
        stats = await sim_stats(sim.base_url)
    assert count(stats, "GET", "400") == 2
    assert result.summary["list_pages"] == 2  # 1000 + 500
    assert all(o["ok"] and o["pre"] == "list" for o in lines.values())


async def test_if_match_ignored_means_one_get_per_entity(tmp_path: Path) -> None:
    async with running(SimConfig(offers=100, ignore_if_match=True)) as sim:
        cfg = sim_run_config(sim, prefetch="list", if_match="ignored")
        result, lines = await run(tmp_path, cfg, appends(range(1, 51)))
    assert result.summary["list_pages"] == 0
    assert result.summary["reads"] == 50
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values())


async def test_fifty_jobs_on_ten_thousand_offers_list_nothing_under_auto(tmp_path: Path) -> None:
    async with running(SimConfig(offers=10_000)) as sim:
        result, lines = await run(tmp_path, sim_run_config(sim), appends(range(1, 51)))
    assert result.summary["list_pages"] == 0
    assert (
        result.summary["requests"] == 1 + 50 + 50
    )  # the preflight read, then a GET and a PATCH each
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values())


async def test_a_long_job_file_is_judged_by_its_first_window_scaled_to_its_length(
    tmp_path: Path,
) -> None:
    # 640 jobs, one in 16 an append: the first window of 64 names 4 entities that need
    # their state, fewer than the 10 pages of 1,000 offers; the file as a whole, 40.
    jobs = [
        appends(range(n, n + 1))[0]
        if n % 16 == 0
        else {"id": oid(n), "patch": [{"op": "replace", "path": "/name", "value": f"N{n}"}]}
        for n in range(1, 641)
    ]
    async with running(SimConfig(offers=1000)) as sim:
        result, lines = await run(tmp_path, sim_run_config(sim, window=64), jobs)
    assert result.summary["list_pages"] == 10
    assert result.summary["reads"] == 0
    assert result.summary["requests"] == 1 + 10 + 640
    assert all(o["ok"] for o in lines.values())


def test_xcore_cannot_list_for_pre_images() -> None:
    with pytest.raises(ConfigError) as refused:
        config("https://platform.example/data/core/xcore", "t", dialect="xcore", prefetch="list")
    assert refused.value.setting == "prefetch"


async def test_xcore_with_prefetch_list_exits_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulkpatch", "run", "--dialect", "xcore", "--prefetch", "list",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | {
            "ADOBE_ACCESS_TOKEN": "t", "ADOBE_API_KEY": "k", "ADOBE_ORG_ID": "O@AdobeOrg",
            "ADOBE_SANDBOX_NAME": "prod",
        },
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err.decode()
    assert b"--prefetch" in err


# --------------------------------------------------------------------------- a server of its own


class PagingServer:
    """Offers o1..oN; its list answers ``shown`` entries a page whatever ``limit`` asks
    (a server that caps or ignores it), linking the next page by a cursor of its own."""

    def __init__(self, entities: int, shown: int) -> None:
        self.docs: dict[str, dict[str, Any]] = {
            f"o{n}": {"id": f"o{n}", "etag": 1, "name": f"offer {n}", "tags": []}
            for n in range(1, entities + 1)
        }
        self.shown = shown
        self.requests: list[str] = []

    async def list(self, request: web.Request) -> web.Response:
        self.requests.append("list")
        order = sorted(self.docs)
        start = int(request.query.get("start", "0"))
        page = order[start : start + self.shown]
        body: dict[str, Any] = {
            "results": [self.docs[i] for i in page],
            "count": len(page),
            "total": len(order),
        }
        if start + self.shown < len(order):
            body["_links"] = {
                "next": {"href": f"/offers?start={start + self.shown}&offer-type=personalized"}
            }
        return web.json_response(body)

    async def entity(self, request: web.Request) -> web.Response:
        doc = self.docs[request.match_info["id"]]
        if request.method == "GET":
            self.requests.append("get")
            return web.json_response(doc)
        self.requests.append("patch")
        if request.headers.get("If-Match", f'"{doc["etag"]}"') != f'"{doc["etag"]}"':
            return web.json_response({"title": "etag mismatch"}, status=409)
        new = verify.apply(orjson.loads(await request.read()), doc)
        new["etag"] = doc["etag"] + 1
        self.docs[doc["id"]] = new
        return web.json_response({"id": doc["id"], "etag": new["etag"]})


@contextlib.asynccontextmanager
async def serving(server: PagingServer) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/data/core/dps/offers", server.list)
    app.router.add_route("*", "/data/core/dps/offers/{id}", server.entity)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield f"http://127.0.0.1:{test_server.port}/data/core/dps"
    finally:
        await test_server.close()


@pytest.mark.parametrize("shown", [3, 1000])
async def test_a_server_that_caps_or_ignores_limit_is_followed_by_its_own_links(
    tmp_path: Path, shown: int
) -> None:
    server = PagingServer(entities=20, shown=shown)
    jobs = [
        {"id": f"o{n}", "patch": [{"op": "add", "path": "/tags/-", "value": "t"}]}
        for n in range(1, 21)
    ]
    async with serving(server) as endpoint:
        result, lines = await run(
            tmp_path, config(endpoint, "t", prefetch="list", page_size=10), jobs
        )
    pages = math.ceil(20 / shown)
    assert result.summary["list_pages"] == pages
    assert server.requests.count("get") == 0
    assert server.requests.count("patch") == 20
    assert all(doc["tags"] == ["t"] for doc in server.docs.values())
    assert all(o["ok"] and o["pre"] == "list" for o in lines.values())


async def test_the_simulator_seeds_offers_of_the_size_asked() -> None:
    async with running(SimConfig(offers=5, offer_size=4096)) as sim:
        sizes = [len(orjson.dumps(doc)) for doc in offers_of(sim).values()]
    assert len(sizes) == 5
    assert all(4000 <= size <= 4096 for size in sizes)


async def test_a_plan_reads_its_entities_off_the_pages_however_far_apart_their_jobs_are(
    tmp_path: Path,
) -> None:
    # A window of 16: each offer's second job comes long after its first has left the
    # window, and a plan still reads it off the listing (it writes nothing).
    jobs = appends(range(1, 101)) + appends(range(1, 101), "second")
    async with running(SimConfig(offers=100)) as sim:
        cfg = sim_run_config(sim, plan=True, window=16, concurrency=2)
        result, lines = await run(tmp_path, cfg, jobs)
    assert result.summary["requests"] == 1 + 1  # the preflight, one page of 100
    assert all(o["ok"] and o["plan"] == "change" and o["pre"] == "list" for o in lines.values())


# --------------------------------------------------------------------------- partial list entries

SCHEMA = "https://ns.adobe.com/acme/schemas/offer-items"
# The entity's own members, not what the server sets at each write.
SERVER_SET = frozenset({"etag", "modified", "lastModifiedBy", "lastModifiedByClientId"})


def unchanged_but_name(before: dict[str, Any], after: dict[str, Any]) -> bool:
    keep = set(before) - SERVER_SET - {"name"}
    return {k: after.get(k) for k in keep} == {k: before[k] for k in keep}


async def test_kinds_whose_list_entries_are_summaries_take_their_pre_images_from_a_get(
    tmp_path: Path,
) -> None:
    # Against a list that answers summaries, a whole-object write built on an entry
    # would drop what the entry lacks, and a test would be judged on a missing member:
    # these kinds are not listed, their entities are read.
    ids = {
        "selection-strategies": "selectionStrategy1234",
        "ranking-formulas": "rankingFormula1234",
        "eligibility-rules": "eligibilityRule1234",
        "exd-placements": "exdPlacement1234",
    }
    async with running(
        SimConfig(examples=True, schema_id=SCHEMA, partial_list=True)
    ) as sim:
        before = {e: sim.store.get(entity_key(e), i) for e, i in ids.items()}
        jobs = [
            {"id": i, "entity": e, "patch": [
                {"op": "test", "path": "/description", "value": before[e]["description"]},  # type: ignore[index]
                {"op": "replace", "path": "/name", "value": f"renamed {e}"},
            ]}
            for e, i in ids.items()
        ]  # fmt: skip
        cfg = sim_run_config(sim, prefetch="list", schema_id=SCHEMA)
        result, lines = await run(tmp_path, cfg, jobs)
        after = {e: sim.store.get(entity_key(e), i) for e, i in ids.items()}
    assert all(o["ok"] and o["pre"] == "get" for o in lines.values()), lines
    assert result.summary["list_pages"] == 0
    for entity in ids:
        doc = after[entity]
        assert doc is not None
        assert doc["name"] == f"renamed {entity}"
        assert unchanged_but_name(before[entity] or {}, doc), entity


def entity_key(entity: str) -> str:
    """The simulator store's key of ``entity``'s collection."""
    return "offer-rules" if entity == "eligibility-rules" else entity


# --------------------------------------------------------------------------- only the jobs this run runs


async def test_auto_counts_only_its_own_shards_jobs(tmp_path: Path) -> None:
    # 40 appends on 1,000 offers (10 pages) would be worth listing; a quarter of them
    # is not: this shard reads its entities one by one.
    shard = (0, 4)
    mine = [n for n in range(1, 41) if shard_of(("offers", "personalized", oid(n)), 4) == 0]
    assert 0 < len(mine) < 10
    source, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    source.write_bytes(ndjson(appends(range(1, 41))))
    async with running(SimConfig(offers=1000)) as sim:
        result = await run_jobs(sim_run_config(sim, shard=shard), source, RunOutputs(receipts))
        offers = offers_of(sim)
    lines = [orjson.loads(line) for line in receipts.read_bytes().splitlines()]
    assert sorted(o["line"] for o in lines) == mine
    assert all(o["ok"] and o["pre"] == "get" for o in lines)
    assert result.summary["list_pages"] == 0
    assert result.summary["reads"] == len(mine)
    assert all(offers[oid(n)]["tags"].count(f"pf{n}") == (n in mine) for n in range(1, 41))


async def test_auto_on_resume_counts_only_the_lines_left_to_run(tmp_path: Path) -> None:
    # 12 lines done by the first run; 4 more added: 4 entities to read, not 10 pages.
    source, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    async with running(SimConfig(offers=1000)) as sim:
        source.write_bytes(ndjson(appends(range(1, 13))))
        await run_jobs(sim_run_config(sim, prefetch="get"), source, RunOutputs(receipts))
        source.write_bytes(ndjson(appends(range(1, 17))))
        again = await run_jobs(sim_run_config(sim), source, RunOutputs(receipts, resume=True))
        assert tags_added_once(sim, range(1, 17))
    assert again.summary["list_pages"] == 0
    assert again.summary["reads"] == 4
    assert again.summary["skipped"] == 12


# --------------------------------------------------------------------------- a listing that stalls


class StallingServer(PagingServer):
    """``PagingServer`` whose pages after the first hang (until ``release``), answer
    500, or answer 429 with ``Retry-After: 1``, as ``trouble`` says."""

    def __init__(self, trouble: str) -> None:
        super().__init__(entities=20, shown=5)
        self.trouble = trouble
        self.release = asyncio.Event()

    async def list(self, request: web.Request) -> web.Response:
        if request.query.get("start", "0") == "0":
            return await super().list(request)
        self.requests.append("list")
        if self.trouble == "hang":
            await self.release.wait()
        if self.trouble == "429":
            return web.json_response({"title": "Too Many Requests"}, status=429, headers={"Retry-After": "1"})
        return web.json_response({"title": "Internal Server Error"}, status=500)


@pytest.mark.parametrize("trouble", ["hang", "500", "429"])
async def test_jobs_waiting_for_a_listing_that_stalls_read_their_entities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trouble: str
) -> None:
    # The first page comes, then none: jobs wait no longer than the stall limit, the
    # listed ones take their page's entry, the others are read one by one.
    monkeypatch.setattr(prefetch, "STALL_S", 0.5)
    server = StallingServer(trouble)
    jobs = [
        {"id": f"o{n}", "patch": [{"op": "add", "path": "/tags/-", "value": "t"}]}
        for n in range(1, 21)
    ]
    async with serving(server) as endpoint:
        try:
            cfg = config(endpoint, "t", prefetch="list", page_size=5)
            result, lines = await asyncio.wait_for(run(tmp_path, cfg, jobs), 20)
        finally:
            server.release.set()
    assert all(doc["tags"] == ["t"] for doc in server.docs.values())
    first_page = sorted(server.docs)[:5]  # the server's order: o1, o10, o11, ...
    assert {n for n in range(1, 21) if lines[n]["pre"] == "list"} == {
        int(i[1:]) for i in first_page
    }
    assert all(o["ok"] for o in lines.values())
    assert result.summary["list_pages"] == 1
    assert result.summary["reads"] == 15
