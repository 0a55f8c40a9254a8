"""The simulator's DPS API over HTTP: the five operations, listing, and optimistic locking.

What is asserted is what a client of the real service would see (API notes §1 and §2):
status, body and the entity as a later GET returns it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl

from bulkpatch.simulator import RunningSimulator, SimConfig, offer_id
from tests.conftest import api_headers, offer_url, read_json

RECEIPT_FIELDS = {
    "etag",
    "createdBy",
    "lastModifiedBy",
    "id",
    "sandboxId",
    "createdDate",
    "lastModifiedDate",
    "createdByClientId",
    "lastModifiedByClientId",
}
OFFER_FIELDS = {
    "id",
    "etag",
    "created",
    "modified",
    "schemas",
    "createdBy",
    "lastModifiedBy",
    "name",
    "description",
    "status",
    "representations",
    "selectionConstraint",
    "rank",
    "cappingConstraint",
    "frequencyCappingConstraints",
    "characteristics",
    "tags",
}
FIRST = offer_id(1)
GENERIC_KINDS = {
    "placements": "offerPlacement",
    "offer-collections": "offerCollection",
    "tags": "offerTag",
    "offer-rules": "offerRule",
    "offer-decisions": "offerActivity",
}


def json_headers(sim: RunningSimulator, **extra: str) -> dict[str, str]:
    return api_headers(sim, **{"Content-Type": "application/json", **extra})


async def get_doc(
    http: aiohttp.ClientSession, sim: RunningSimulator, entity_id: str = FIRST
) -> dict[str, Any]:
    async with http.get(offer_url(sim, entity_id), headers=api_headers(sim)) as r:
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = await read_json(r)
    return doc


async def patch(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    ops: Any,
    entity_id: str = FIRST,
    **headers: str,
) -> tuple[int, Any]:
    async with http.patch(
        offer_url(sim, entity_id), json=ops, headers=json_headers(sim, **headers)
    ) as r:
        return r.status, await read_json(r)


def assert_problem(body: Any, status: int, *fragments: str) -> None:
    assert body["status"] == status
    assert body["type"].endswith(str(status))
    assert isinstance(body["title"], str)
    assert isinstance(body["report"], dict)
    for fragment in fragments:
        assert fragment in body["detail"], body


# --------------------------------------------------------------------------- create


NEW_OFFER = {
    "name": "Brand new offer",
    "description": "made by a test",
    "status": "draft",
    "representations": [],
    "tags": ["offerTag1"],
    # A client cannot choose these: the server manages them.
    "id": "myOwnId",
    "etag": 99,
    "createdBy": "mallory@AdobeID",
    "createdByClientId": "mallory",
}


async def _create(
    http: aiohttp.ClientSession, sim: RunningSimulator, offer_type: str
) -> tuple[int, Any]:
    async with http.post(
        f"{sim.endpoint}/offers?offer-type={offer_type}", json=NEW_OFFER, headers=json_headers(sim)
    ) as r:
        return r.status, await read_json(r)


async def test_create_answers_201_receipt_with_etag_1_and_server_fields(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await _create(http, sim, "personalized")
    assert status == 201
    assert set(body) == RECEIPT_FIELDS
    assert body["etag"] == 1
    assert body["id"].startswith("personalizedOffer")
    assert body["id"] != "myOwnId"
    assert body["createdBy"] == body["lastModifiedBy"] == "test-client@AdobeID"
    assert body["createdByClientId"] == body["lastModifiedByClientId"] == "test-client"
    assert body["createdDate"] == body["lastModifiedDate"]
    doc = await get_doc(http, sim, body["id"])
    assert doc["name"] == "Brand new offer"
    assert doc["tags"] == ["offerTag1"]
    assert doc["etag"] == 1
    assert doc["created"] == body["createdDate"]
    assert doc["schemas"] == [
        "https://ns.adobe.com/experience/offer-management/personalized-offer;version=0.15"
    ]


@pytest.mark.parametrize("sim_config", [SimConfig(create_status=200)], ids=["create200"])
async def test_create_status_200_when_configured(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await _create(http, sim, "personalized")
    assert status == 200
    assert body["etag"] == 1
    assert set(body) == RECEIPT_FIELDS


async def test_fallback_offers_are_their_own_collection(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await _create(http, sim, "fallback")
    assert status == 201
    new_id = body["id"]
    assert new_id.startswith("fallbackOffer")
    async with http.get(offer_url(sim, new_id, "fallback"), headers=api_headers(sim)) as r:
        assert r.status == 200
        assert (await read_json(r))["name"] == "Brand new offer"
    async with http.get(offer_url(sim, new_id, "personalized"), headers=api_headers(sim)) as r:
        assert r.status == 404
        assert_problem(await read_json(r), 404, new_id)


# --------------------------------------------------------------------------- read


async def test_get_returns_whole_offer_with_etag(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    doc = await get_doc(http, sim)
    assert set(doc) >= OFFER_FIELDS
    assert doc["id"] == FIRST
    assert doc["etag"] == 1
    assert doc["status"] in ("draft", "approved", "archived")
    assert doc["representations"][0]["components"][0]["content"]


async def test_get_with_wrong_or_missing_offer_type(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(offer_url(sim, FIRST, "fallback"), headers=api_headers(sim)) as r:
        assert r.status == 404
        assert_problem(await read_json(r), 404, FIRST)
    async with http.get(f"{sim.endpoint}/offers/{FIRST}", headers=api_headers(sim)) as r:
        assert r.status == 400
        assert_problem(await read_json(r), 400, "offer-type")
    async with http.get(offer_url(sim, "personalizedOfferNope"), headers=api_headers(sim)) as r:
        assert r.status == 404
        assert_problem(await read_json(r), 404, "personalizedOfferNope")


# --------------------------------------------------------------------------- update / delete


async def test_patch_answers_receipt_not_the_offer(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    before = await get_doc(http, sim)
    status, body = await patch(http, sim, [{"op": "replace", "path": "/name", "value": "Renamed"}])
    assert status == 200
    assert set(body) == RECEIPT_FIELDS
    assert "name" not in body
    assert body["etag"] == before["etag"] + 1
    assert body["lastModifiedByClientId"] == "test-client"
    assert body["createdByClientId"] == "sim-seed"
    after = await get_doc(http, sim)
    assert after["name"] == "Renamed"
    assert after["etag"] == body["etag"]
    assert after["modified"] == body["lastModifiedDate"]
    assert after["created"] == before["created"]


async def test_delete_then_get_is_404(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async with http.delete(offer_url(sim, FIRST), headers=api_headers(sim)) as r:
        assert r.status == 200
        assert await r.read() == b""
    async with http.get(offer_url(sim, FIRST), headers=api_headers(sim)) as r:
        assert r.status == 404
        assert_problem(await read_json(r), 404, FIRST)
    async with http.delete(offer_url(sim, FIRST), headers=api_headers(sim)) as r:
        assert r.status == 404
    listing = f"{sim.endpoint}/offers?offer-type=personalized&limit=100"
    async with http.get(listing, headers=api_headers(sim)) as r:
        body = await read_json(r)
    assert body["total"] == 19
    assert FIRST not in {d["id"] for d in body["results"]}


# --------------------------------------------------------------------------- listing


async def _list(http: aiohttp.ClientSession, sim: RunningSimulator, query: str) -> Any:
    async with http.get(f"{sim.endpoint}/{query}", headers=api_headers(sim)) as r:
        assert r.status == 200, await r.text()
        return await read_json(r)


async def test_paging_follows_next_links_to_every_offer_once(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    page = await _list(http, sim, "offers?offer-type=personalized&limit=7")
    seen: list[str] = []
    counts: list[int] = []
    for _ in range(10):
        assert page["total"] == 20
        assert page["count"] == len(page["results"])
        counts.append(page["count"])
        seen.extend(d["id"] for d in page["results"])
        href = page["_links"].get("next", {}).get("href")
        if href is None:
            break
        # Adobe's documented shape: a path relative to the DPS base, offer-type last
        # and in upper case, the cursor the server's own.
        assert href.startswith("/offers?")
        assert "limit=7" in href
        assert "&start=" in href
        assert href.endswith("&offer-type=PERSONALIZED")
        async with http.get(
            yarl.URL(sim.endpoint + href, encoded=True), headers=api_headers(sim)
        ) as r:
            assert r.status == 200
            page = await read_json(r)
    else:
        pytest.fail("paging did not end within 10 pages")
    assert counts == [7, 7, 6]
    assert sorted(seen) == [offer_id(i) for i in range(1, 21)]


async def test_paging_is_stable_while_offers_are_deleted(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    first = await _list(http, sim, "offers?offer-type=personalized&limit=5")
    first_ids = [d["id"] for d in first["results"]]
    # Deleting an offer already listed must not shift the next page (keyset paging).
    async with http.delete(offer_url(sim, first_ids[0]), headers=api_headers(sim)) as r:
        assert r.status == 200
    second = await _list(http, sim, first["_links"]["next"]["href"].lstrip("/"))
    assert [d["id"] for d in second["results"]] == [offer_id(i) for i in range(6, 11)]


@pytest.mark.parametrize("spelling", ["PERSONALIZED", "Personalized", "personalized"])
async def test_offer_type_in_any_case(
    sim: RunningSimulator, http: aiohttp.ClientSession, spelling: str
) -> None:
    page = await _list(http, sim, f"offers?offer-type={spelling}&limit=3")
    assert page["total"] == 20
    assert [d["id"] for d in page["results"]] == [offer_id(1), offer_id(2), offer_id(3)]
    async with http.get(offer_url(sim, FIRST, spelling), headers=api_headers(sim)) as r:
        assert r.status == 200
        assert (await read_json(r))["id"] == FIRST


async def test_filters_are_anded(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    everything = sim.store.dump()["offers/personalized"]
    approved = {d["id"] for d in everything if d["status"] == "approved"}
    high = {d["id"] for d in everything if d["rank"]["priority"] >= 50}
    expected = approved & high
    # The seeded data must make each filter matter, or the test proves nothing.
    assert expected
    assert expected != approved
    assert expected != high
    query = (
        "offers?offer-type=personalized&limit=100"
        f"&property={quote('status==approved')}&property={quote('rank.priority>=50')}"
    )
    page = await _list(http, sim, query)
    assert {d["id"] for d in page["results"]} == expected
    assert page["total"] == len(expected)
    regex = await _list(
        http, sim, f"offers?offer-type=personalized&limit=100&property={quote('id~0000(1|2)$')}"
    )
    assert [d["id"] for d in regex["results"]] == [offer_id(1), offer_id(2)]


async def test_bad_filter_and_limit_are_400(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    for query, fragment in (
        ("offers?offer-type=personalized&property=status", "property filter"),
        ("offers?offer-type=personalized&limit=0", "limit"),
        ("offers?offer-type=personalized&start=garbage!!", "cursor"),
    ):
        async with http.get(f"{sim.endpoint}/{query}", headers=api_headers(sim)) as r:
            assert r.status == 400, query
            assert_problem(await read_json(r), 400, fragment)


async def test_orderby_sorts_and_pages_in_that_order(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    whole = await _list(
        http, sim, "offers?offer-type=personalized&limit=100&orderby=-rank.priority"
    )
    priorities = [d["rank"]["priority"] for d in whole["results"]]
    assert priorities == sorted(priorities, reverse=True)
    assert priorities[0] > priorities[-1]
    by_name = await _list(http, sim, "offers?offer-type=personalized&limit=100&orderby=name")
    names = [d["name"] for d in by_name["results"]]
    assert names == sorted(names)
    paged: list[str] = []
    page = await _list(http, sim, "offers?offer-type=personalized&limit=6&orderby=-rank.priority")
    for _ in range(10):
        paged.extend(d["id"] for d in page["results"])
        href = page["_links"].get("next", {}).get("href")
        if href is None:
            break
        assert href.startswith("/offers?orderby=-rank.priority&")
        page = await _list(http, sim, href.lstrip("/"))
    assert paged == [d["id"] for d in whole["results"]]


# --------------------------------------------------------------------------- other entities


@pytest.mark.parametrize("kind", sorted(GENERIC_KINDS))
async def test_generic_entity_lifecycle(
    sim: RunningSimulator, http: aiohttp.ClientSession, kind: str
) -> None:
    base = f"{sim.endpoint}/{kind}"
    async with http.post(base, json={"name": f"a {kind}"}, headers=json_headers(sim)) as r:
        assert r.status == 201
        created = await read_json(r)
    assert set(created) == RECEIPT_FIELDS
    entity_id = created["id"]
    assert entity_id.startswith(GENERIC_KINDS[kind])
    url = f"{base}/{entity_id}"
    ops = [{"op": "add", "path": "/description", "value": "described"}]
    async with http.patch(url, json=ops, headers=json_headers(sim, **{"If-Match": '"1"'})) as r:
        assert r.status == 200
        assert (await read_json(r))["etag"] == 2
    async with http.get(url, headers=api_headers(sim)) as r:
        doc = await read_json(r)
    assert doc["name"] == f"a {kind}"
    assert doc["description"] == "described"
    assert doc["etag"] == 2
    listing = await _list(http, sim, f"{kind}?limit=100")
    assert entity_id in {d["id"] for d in listing["results"]}
    async with http.delete(url, headers=api_headers(sim)) as r:
        assert r.status == 200
        assert await r.read() == b""
    async with http.get(url, headers=api_headers(sim)) as r:
        assert r.status == 404


async def test_seeded_placements_and_unknown_kind(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    placements = await _list(http, sim, "placements")
    assert placements["total"] == 3
    assert {d["id"] for d in placements["results"]} == {
        "offerPlacement0001",
        "offerPlacement0002",
        "offerPlacement0003",
    }
    async with http.get(f"{sim.endpoint}/widgets", headers=api_headers(sim)) as r:
        assert r.status == 404
        assert_problem(await read_json(r), 404, "widgets")


@pytest.mark.parametrize("entity_id", ["offer x+y", "a/b", "q?&#=%é", "semi;colon", "~t'"])
async def test_ids_needing_percent_encoding(
    sim: RunningSimulator, http: aiohttp.ClientSession, entity_id: str
) -> None:
    doc = {**sim.store.dump()["offers/personalized"][0], "id": entity_id}
    sim.store.put("offers/personalized", doc)
    url = yarl.URL(
        f"{sim.endpoint}/offers/{quote(entity_id, safe='')}?offer-type=personalized", encoded=True
    )
    async with http.get(url, headers=api_headers(sim)) as r:
        assert r.status == 200
        assert (await read_json(r))["id"] == entity_id
    ops = [{"op": "replace", "path": "/name", "value": "encoded"}]
    async with http.patch(url, json=ops, headers=json_headers(sim)) as r:
        assert r.status == 200
        assert (await read_json(r))["id"] == entity_id
    stored = sim.store.get("offers/personalized", entity_id)
    assert stored is not None
    assert stored["name"] == "encoded"


# --------------------------------------------------------------------------- If-Match


RENAME = [{"op": "replace", "path": "/name", "value": "Locked rename"}]


@pytest.mark.parametrize("form", ['"1"', "1", 'W/"1"'])
async def test_if_match_current_etag_in_any_form(
    sim: RunningSimulator, http: aiohttp.ClientSession, form: str
) -> None:
    status, body = await patch(http, sim, RENAME, **{"If-Match": form})
    assert status == 200
    assert body["etag"] == 2
    assert (await get_doc(http, sim))["name"] == "Locked rename"


@pytest.mark.parametrize(
    ("sim_config", "status", "title"),
    [
        (SimConfig(offers=2), 409, "Conflict"),
        (SimConfig(offers=2, conflict_status=412), 412, "Precondition Failed"),
    ],
    ids=["409", "412"],
)
async def test_stale_if_match_is_refused_and_changes_nothing(
    sim: RunningSimulator, http: aiohttp.ClientSession, status: int, title: str
) -> None:
    first, _ = await patch(http, sim, [{"op": "replace", "path": "/status", "value": "draft"}])
    assert first == 200
    before = await get_doc(http, sim)
    got, body = await patch(http, sim, RENAME, **{"If-Match": '"1"'})
    assert got == status
    assert_problem(body, status, "If-Match", FIRST)
    assert body["title"] == title
    after = await get_doc(http, sim)
    assert after == before


async def test_if_match_that_is_not_a_number_is_400(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await patch(http, sim, RENAME, **{"If-Match": '"abc"'})
    assert status == 400
    assert_problem(body, 400, "If-Match")


async def test_without_if_match_a_write_goes_through(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    for n in range(3):
        status, body = await patch(http, sim, [{"op": "replace", "path": "/name", "value": n}])
        assert status == 200
        assert body["etag"] == n + 2
    assert (await get_doc(http, sim))["name"] == 2


@pytest.mark.parametrize("sim_config", [SimConfig(offers=2, ignore_if_match=True)], ids=["ignore"])
async def test_ignore_if_match_accepts_stale_header(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await patch(http, sim, RENAME, **{"If-Match": '"41"'})
    assert status == 200
    assert body["etag"] == 2
    assert (await get_doc(http, sim))["name"] == "Locked rename"
    async with http.delete(
        offer_url(sim, FIRST), headers=api_headers(sim, **{"If-Match": "7"})
    ) as r:
        assert r.status == 200


async def test_stale_if_match_on_delete_keeps_the_offer(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.delete(
        offer_url(sim, FIRST), headers=api_headers(sim, **{"If-Match": "5"})
    ) as r:
        assert r.status == 409
        assert_problem(await read_json(r), 409, "If-Match")
    assert (await get_doc(http, sim))["etag"] == 1


# --------------------------------------------------------------------------- patch semantics


@pytest.mark.parametrize(
    ("sim_config", "status"),
    [
        (SimConfig(offers=2), 409),
        (SimConfig(offers=2, test_failed_status=400), 400),
        (SimConfig(offers=2, test_failed_status=422), 422),
    ],
    ids=["409", "400", "422"],
)
async def test_failed_test_op_names_its_index_and_applies_nothing(
    sim: RunningSimulator, http: aiohttp.ClientSession, status: int
) -> None:
    before = await get_doc(http, sim)
    ops = [
        {"op": "replace", "path": "/description", "value": "must not land"},
        {"op": "test", "path": "/name", "value": "not the name"},
    ]
    got, body = await patch(http, sim, ops)
    assert got == status
    assert_problem(body, status, "operation 1", "/name")
    assert body["report"]["operation"] == 1
    assert await get_doc(http, sim) == before


async def test_all_six_operations(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    before = await get_doc(http, sim)
    ops = [
        {"op": "test", "path": "/name", "value": before["name"]},
        {"op": "add", "path": "/tags/-", "value": "t1"},
        {"op": "add", "path": "/characteristics/color", "value": "red"},
        {"op": "replace", "path": "/status", "value": "archived"},
        {"op": "copy", "from": "/name", "path": "/characteristics/oldName"},
        {"op": "move", "from": "/characteristics/color", "path": "/characteristics/colour"},
        {"op": "remove", "path": "/cappingConstraint"},
        {"op": "add", "path": "/tags/0", "value": "t0"},
    ]
    status, body = await patch(http, sim, ops)
    assert status == 200
    assert body["etag"] == 2
    after = await get_doc(http, sim)
    assert after["tags"] == ["t0", "t1"]
    assert after["status"] == "archived"
    assert after["characteristics"] == {
        **before["characteristics"],
        "oldName": before["name"],
        "colour": "red",
    }
    assert "cappingConstraint" not in after
    assert after["name"] == before["name"]


READ_ONLY_OPS = [
    {"op": "replace", "path": "/id", "value": "x"},
    {"op": "replace", "path": "/etag", "value": 9},
    {"op": "replace", "path": "/created", "value": "x"},
    {"op": "replace", "path": "/modified", "value": "x"},
    {"op": "replace", "path": "/createdBy", "value": "x"},
    {"op": "replace", "path": "/lastModifiedBy", "value": "x"},
    {"op": "add", "path": "/schemas/-", "value": "x"},
    {"op": "replace", "path": "/createdByClientId", "value": "x"},
    {"op": "remove", "path": "/lastModifiedByClientId"},
    {"op": "move", "from": "/createdBy", "path": "/description"},
    {"op": "copy", "from": "/name", "path": "/etag"},
    {"op": "replace", "path": "", "value": {}},
]


@pytest.mark.parametrize("op", READ_ONLY_OPS, ids=lambda op: f"{op['op']}{op['path'] or '/'}")
async def test_read_only_fields_are_422(
    sim: RunningSimulator, http: aiohttp.ClientSession, op: dict[str, Any]
) -> None:
    before = await get_doc(http, sim)
    ops = [{"op": "replace", "path": "/name", "value": "must not land"}, op]
    status, body = await patch(http, sim, ops)
    assert status == 422
    assert_problem(body, 422, "operation 1", "read-only")
    assert body["report"]["operation"] == 1
    assert await get_doc(http, sim) == before


async def test_reading_a_read_only_field_is_allowed(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ops = [
        {"op": "test", "path": "/id", "value": FIRST},
        {"op": "copy", "from": "/createdBy", "path": "/characteristics/author"},
    ]
    status, _ = await patch(http, sim, ops)
    assert status == 200
    assert (await get_doc(http, sim))["characteristics"]["author"] == "seed@AdobeID"


@pytest.mark.parametrize(
    ("ops", "index", "fragment"),
    [
        ({"op": "replace", "path": "/name", "value": "x"}, None, "JSON array"),
        ([{"op": "replace", "path": "/name", "value": "x"}, {"op": "frobnicate"}], 1, "unknown op"),
        ([{"op": "replace", "path": "/name", "value": "x"}, "replace"], 1, "JSON object"),
        ([{"op": "replace", "path": "name", "value": "x"}], 0, "name"),
        ([{"op": "add", "path": "/tags/9", "value": "x"}], 0, "/tags/9"),
        ([{"op": "replace", "path": "/name", "value": "x"}, {"op": "add", "path": "/x"}], 1, "/x"),
        ([{"op": "replace", "path": "/nope", "value": "x"}], 0, "/nope"),
        ([{"op": "remove"}], 0, "path"),
        ([{"op": "move", "from": "/nope", "path": "/name"}], 0, "/name"),
    ],
    ids=[
        "object",
        "unknown-op",
        "op-not-object",
        "no-slash",
        "index-past-end",
        "missing-value",
        "replace-missing",
        "missing-path",
        "move-missing-from",
    ],
)
async def test_malformed_patch_is_400_naming_the_op(
    sim: RunningSimulator,
    http: aiohttp.ClientSession,
    ops: Any,
    index: int | None,
    fragment: str,
) -> None:
    before = await get_doc(http, sim)
    status, body = await patch(http, sim, ops)
    assert status == 400
    assert_problem(body, 400, fragment)
    assert body["report"]["operation"] == index
    if index is not None:
        assert f"operation {index}" in body["detail"]
    assert await get_doc(http, sim) == before


async def test_body_that_is_not_json_is_400(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.patch(
        offer_url(sim, FIRST), data=b"[{'op': 'replace'", headers=json_headers(sim)
    ) as r:
        assert r.status == 400
        assert_problem(await read_json(r), 400, "not valid JSON")


async def test_concurrent_appends_all_land_once(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async def append(n: int) -> Any:
        status, body = await patch(http, sim, [{"op": "add", "path": "/tags/-", "value": f"t{n}"}])
        assert status == 200
        return body["etag"]

    etags = await asyncio.gather(*(append(n) for n in range(50)))
    # Each write saw a distinct etag: none was lost, none interleaved with another.
    assert sorted(etags) == list(range(2, 52))
    doc = await get_doc(http, sim)
    assert doc["etag"] == 51
    assert sorted(doc["tags"]) == sorted(f"t{n}" for n in range(50))


async def test_dump_lists_every_entity_by_collection(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, _ = await patch(http, sim, [{"op": "replace", "path": "/name", "value": "dumped"}])
    assert status == 200
    async with http.get(sim.base_url + "/_sim/dump") as r:
        assert r.status == 200
        dump = await read_json(r)
    assert set(dump) == {"offers/personalized", "placements"}
    offers = dump["offers/personalized"]
    assert [d["id"] for d in offers] == [offer_id(i) for i in range(1, 21)]
    assert offers[0]["name"] == "dumped"
    assert offers[0]["etag"] == 2
    assert len(dump["placements"]) == 3
