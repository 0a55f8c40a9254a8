"""The simulator's Experience Decisioning kinds: one request per operation, as the pages
write them (Decisioning notes §1, §2), and each setting of what the pages leave open."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bulkpatch.simulator import FaultRates, RunningSimulator, SimConfig, Store, running
from tests.conftest import api_headers, read_json
from tests.test_sim_examples import DPS_RECEIPT_KEYS


def item_id(index: int) -> str:
    """The id ``--items`` gives its ``index``-th item, as the README states it."""
    return f"offerItem{index:06d}"


SCHEMA = "https://ns.adobe.com/acme/schemas/offer-item-catalog"
ITEM = "/_experience/decisioning/decisionitem"


@contextlib.asynccontextmanager
async def served(
    config: SimConfig,
) -> AsyncIterator[tuple[RunningSimulator, aiohttp.ClientSession]]:
    async with running(config) as sim, aiohttp.ClientSession() as http:
        yield sim, http


async def call(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    method: str,
    path: str,
    body: Any = None,
    **extra: str,
) -> tuple[int, Any]:
    """One DPS request with the four headers, ``x-schema-id`` on items unless given."""
    headers = api_headers(sim, **extra)
    if path.startswith("/offer-items"):
        headers.setdefault("x-schema-id", SCHEMA)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    async with http.request(method, sim.endpoint + path, json=body, headers=headers) as r:
        text = await r.read()
        return r.status, (await read_json(r)) if text else None


NEW_ITEM = {
    "_experience": {
        "decisioning": {
            "offeritem": {"lifecycleStatus": "draft"},
            "decisionitem": {
                "itemCalendarConstraints": {
                    "startDate": "2025-01-01T00:00:00.000Z",
                    "endDate": "2025-12-31T00:00:00.000Z",
                },
                "itemCatalogID": "itemCatalog1234",
                "itemConstraints": {"profileConstraintType": "none"},
                "itemDescription": "Spring item description",
                "itemName": "Spring item",
                "itemPriority": 1,
                # Server-managed: the server's values win.
                "itemID": "mine",
            },
        }
    },
    "_acme": {"tier": "gold"},
}
# (path, create body, list filter on the created one, JSON Patch, whole object)
KINDS: dict[str, tuple[str, dict[str, Any], str, list[Any] | None, dict[str, Any] | None]] = {
    "items": (
        "/offer-items",
        NEW_ITEM,
        "_experience.decisioning.decisionitem.itemName==Spring item",
        [{"op": "replace", "path": ITEM + "/itemPriority", "value": 7}],
        None,
    ),
    "collections": (
        "/item-collections",
        {"name": "Spring items", "description": "d", "constraints": []},
        "name==Spring items",
        [{"op": "replace", "path": "/description", "value": "changed"}],
        None,
    ),
    "strategies": (
        "/selection-strategies",
        {
            "name": "Spring strategy",
            "description": "d",
            "rank": {"priority": 0, "order": {"orderEvaluationType": "static"}},
            "profileConstraint": {"profileConstraintType": "none"},
            "optionSelection": {"filter": "itemCollection1234"},
        },
        "name==Spring strategy",
        [{"op": "replace", "path": "/rank/priority", "value": 3}],
        None,
    ),
    "formulas": (
        "/ranking-formulas",
        {
            "name": "Spring formula",
            "description": "d",
            "exdFunction": True,
            "returnType": {"type": "integer"},
            "expression": {"type": "PQL", "format": "pql/text", "value": "1"},
        },
        "exdFunction==true",
        None,
        {"name": "Spring formula", "description": "changed", "exdFunction": True, "isPure": True},
    ),
    "rules": (
        "/offer-rules",
        {
            "name": "Spring rule",
            "description": "d",
            "exdRule": True,
            "condition": {"type": "PQL", "format": "pql/text", "value": "true"},
        },
        "exdRule==true",
        None,
        {"name": "Spring rule", "description": "changed", "exdRule": True},
    ),
    "exd-placements": (
        "/exd-placements",
        {
            "name": "Spring placement",
            "channel": "https://ns.adobe.com/xdm/channel-types/email",
            "tags": [],
            "channelConfiguration": "1d2c3b4a-0000-4000-8000-000000000001",
            "description": "d",
            "status": "active",
        },
        "status==active",
        None,
        {"description": "changed", "status": "archived"},
    ),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_each_decisioning_operation_in_the_shape_the_pages_document(kind: str) -> None:
    path, body, prop, patch, whole = KINDS[kind]
    async with served(SimConfig(examples=True)) as (sim, http):
        status, receipt = await call(http, sim, "POST", path, body)
        assert status == 201
        new = receipt["id"]
        expected = DPS_RECEIPT_KEYS - ({"createdByClientId"} if kind == "exd-placements" else set())
        assert set(receipt) == expected
        assert receipt["etag"] == 1
        status, listed = await call(http, sim, "GET", f"{path}?property={prop}&limit=50")
        assert status == 200
        assert new in [d["id"] for d in listed["results"]]
        assert listed["count"] == len(listed["results"]) <= listed["total"]
        if patch is not None:
            status, receipt = await call(http, sim, "PATCH", f"{path}/{new}", patch)
        else:
            # The pages say PUT, and their curl sends PATCH with the object: both write it.
            status, receipt = await call(http, sim, "PATCH", f"{path}/{new}", whole)
            assert status == 200
            assert receipt["etag"] == 2
            status, receipt = await call(http, sim, "PUT", f"{path}/{new}", whole)
        assert status == 200
        status, doc = await call(http, sim, "GET", f"{path}/{new}")
        assert status == 200
        assert doc["etag"] == receipt["etag"]
        if whole is not None:
            assert {k: doc[k] for k in whole} == whole
            assert "name" in whole or "name" not in doc  # a whole object: what is not sent goes
        status, _ = await call(http, sim, "DELETE", f"{path}/{new}")
        assert status == (405 if kind == "exd-placements" else 200)
        status, _ = await call(http, sim, "GET", f"{path}/{new}")
        assert status == (200 if kind == "exd-placements" else 404)


async def test_a_created_item_gets_its_server_managed_fields() -> None:
    async with served(SimConfig()) as (sim, http):
        _, receipt = await call(http, sim, "POST", "/offer-items", NEW_ITEM)
        _, doc = await call(http, sim, "GET", f"/offer-items/{receipt['id']}")
        decision = doc["_experience"]["decisioning"]
        assert decision["decisionitem"]["itemID"] == receipt["id"]
        assert decision["offeritem"]["fCapConstraintsLastIndex"] == 0
        assert doc["_acme"] == {"tier": "gold"}
        assert "schemas" not in doc
        # A patch may not change them; lifecycleStatus changes freely, back and forth.
        for pointer in ("/decisionitem/itemID", "/offeritem/fCapConstraintsLastIndex"):
            op = {"op": "replace", "path": "/_experience/decisioning" + pointer, "value": 9}
            status, problem = await call(http, sim, "PATCH", f"/offer-items/{doc['id']}", [op])
            assert status == 422
            assert pointer in problem["detail"]
        lifecycle = "/_experience/decisioning/offeritem/lifecycleStatus"
        for value in ("approved", "archived", "draft"):
            op = {"op": "replace", "path": lifecycle, "value": value}
            status, _ = await call(http, sim, "PATCH", f"/offer-items/{doc['id']}", [op])
            assert status == 200


@pytest.mark.parametrize("schema_id", [None, SCHEMA])
async def test_every_item_call_needs_the_schema_id(schema_id: str | None) -> None:
    async with running(SimConfig(items=2, schema_id=schema_id)) as sim:
        assert sim.ready_line()["schema_id"] == schema_id
        async with aiohttp.ClientSession() as http:
            one = f"/offer-items/{item_id(1)}"
            calls: list[tuple[str, str, Any]] = [("GET", one, None), ("GET", "/offer-items", None)]
            calls += [("PATCH", one, []), ("DELETE", one, None), ("POST", "/offer-items", {})]
            for method, path, body in calls:
                status, problem = await call(http, sim, method, path, body, **{"x-schema-id": ""})
                assert (status, problem["detail"]) == (400, "Missing header: x-schema-id")
            status, _ = await call(http, sim, "GET", one, **{"x-schema-id": "another"})
            assert status == (200 if schema_id is None else 400)
            status, _ = await call(http, sim, "GET", one)
            assert status == 200
            # Other kinds need none.
            status, _ = await call(http, sim, "GET", "/item-collections")
            assert status == 200


async def test_seeded_items_look_like_a_catalog() -> None:
    async with served(SimConfig(items=3)) as (sim, http):
        status, listed = await call(http, sim, "GET", "/offer-items?orderby=id")
        assert status == 200
        assert [d["id"] for d in listed["results"]] == [item_id(i) for i in (1, 2, 3)]
        first = listed["results"][0]["_experience"]["decisioning"]
        assert {"itemName", "itemPriority", "itemCalendarConstraints", "itemID"} <= set(
            first["decisionitem"]
        )
        assert set(first["decisionitem"]["itemCalendarConstraints"]) == {"startDate", "endDate"}
        assert first["offeritem"]["lifecycleStatus"] in ("draft", "approved", "archived")


@pytest.mark.parametrize("refuse", [False, True])
async def test_server_managed_fields_in_a_whole_object(refuse: bool) -> None:
    config = SimConfig(examples=True, refuse_managed_fields=refuse)
    async with served(config) as (sim, http):
        url = "/ranking-formulas/rankingFormula1234"
        _, before = await call(http, sim, "GET", url)
        sent = {**before, "name": "renamed", "etag": 40, "created": "2000-01-01T00:00:00Z"}
        status, answer = await call(http, sim, "PUT", url, sent)
        _, after = await call(http, sim, "GET", url)
        if refuse:
            assert status == 422
            assert "created" in answer["detail"]
            assert after == before
        else:
            assert status == 200
            assert (after["name"], after["etag"], after["created"]) == (
                "renamed",
                2,
                before["created"],
            )


async def test_whole_object_writes_honour_if_match_and_meet_the_concurrent_writer() -> None:
    async with served(SimConfig(examples=True)) as (sim, http):
        url = "/exd-placements/exdPlacement1234"
        _, doc = await call(http, sim, "GET", url)
        body = {"name": "n", "status": "archived"}
        status, _ = await call(http, sim, "PUT", url, body, **{"If-Match": '"7"'})
        assert status == 409
        status, _ = await call(http, sim, "PUT", url, body, **{"If-Match": str(doc["etag"])})
        assert status == 200
    faults = FaultRates(concurrent_writer=1.0)
    async with served(SimConfig(examples=True, faults=faults, fault_seed=1)) as (sim, http):
        url = "/offer-rules/eligibilityRule1234"
        _, doc = await call(http, sim, "GET", url)
        status, _ = await call(http, sim, "PUT", url, doc, **{"If-Match": str(doc["etag"])})
        assert status == 409
        _, now = await call(http, sim, "GET", url)
        assert now["_sim"] == {"simConcurrentWriter": "1"}
    async with served(SimConfig(examples=True, ignore_if_match=True)) as (sim, http):
        status, _ = await call(http, sim, "PUT", url, {"n": 1}, **{"If-Match": '"99"'})
        assert status == 200


@pytest.mark.parametrize("status", [400, 422])
async def test_items_past_ten_thousand_are_refused(status: int) -> None:
    async with served(SimConfig(items=10_000, item_limit_status=status)) as (sim, http):
        answer, problem = await call(http, sim, "POST", "/offer-items", NEW_ITEM)
        assert answer == status
        assert "10,000" in problem["detail"]
        await call(http, sim, "DELETE", f"/offer-items/{_draft(sim.store)}")
        answer, _ = await call(http, sim, "POST", "/offer-items", NEW_ITEM)
        assert answer == 201


def _draft(store: Store) -> str:
    for doc in store.dump()["offer-items"]:
        if doc["_experience"]["decisioning"]["offeritem"]["lifecycleStatus"] == "draft":
            return str(doc["id"])
    raise AssertionError("no draft item")


@pytest.mark.parametrize("status", [400, 409, None])
async def test_an_approved_item_cannot_be_deleted(status: int | None) -> None:
    config = SimConfig(examples=True, approved_delete_status=status)
    async with served(config) as (sim, http):
        answer, problem = await call(http, sim, "DELETE", "/offer-items/offerItem1234")
        if status is None:
            assert answer == 200
            return
        assert answer == status
        assert "approved" in problem["detail"]
        lifecycle = "/_experience/decisioning/offeritem/lifecycleStatus"
        op = {"op": "replace", "path": lifecycle, "value": "draft"}
        await call(http, sim, "PATCH", "/offer-items/offerItem1234", [op])
        answer, _ = await call(http, sim, "DELETE", "/offer-items/offerItem1234")
        assert answer == 200


@pytest.mark.parametrize("status", [405, 404, None])
async def test_an_exd_placement_delete(status: int | None) -> None:
    config = SimConfig(examples=True, exd_placement_delete_status=status)
    async with served(config) as (sim, http):
        answer, problem = await call(http, sim, "DELETE", "/exd-placements/exdPlacement1234")
        assert answer == (status or 200)
        if status is not None:
            assert "archived" in problem["detail"]
        left = sim.store.get("exd-placements", "exdPlacement1234")
        assert (left is None) == (status is None)


async def test_patch_kinds_take_no_whole_object_and_decision_management_no_put() -> None:
    async with served(SimConfig(examples=True)) as (sim, http):
        status, _ = await call(http, sim, "PATCH", "/item-collections/itemCollection1234", {})
        assert status == 400
        status, _ = await call(http, sim, "PUT", "/selection-strategies/selectionStrategy1234", {})
        assert status == 405
        # A Decision Management rule on the shared path still takes a JSON Patch.
        op = {"op": "replace", "path": "/name", "value": "n"}
        status, _ = await call(http, sim, "PATCH", "/offer-rules/eligibilityRule1234", [op])
        assert status == 200


async def test_the_state_file_and_the_dump_hold_the_decisioning_kinds() -> None:
    async with served(SimConfig(examples=True, items=2)) as (sim, http):
        response = await http.get(sim.base_url + "/_sim/dump")
        dumped = await read_json(response)
    for key in ("offer-items", "item-collections", "selection-strategies"):
        assert dumped[key]
    for key in ("ranking-formulas", "exd-placements"):
        assert dumped[key]
    restored = Store()
    restored.load(dumped)
    assert restored.dump() == dumped
