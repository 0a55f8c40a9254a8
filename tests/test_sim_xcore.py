"""The simulator's legacy xcore endpoints: one store seen through both dialects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bulkpatch.errors import ConfigError
from bulkpatch.simulator import FaultRates, RunningSimulator, SimConfig, running
from bulkpatch.simulator.xcore import FIRST_CONTAINER, container_ids, instance_id
from bulkpatch.translate import load_id_map, translate_job
from tests.conftest import api_headers, offer_url, read_json

OM = "https://ns.adobe.com/experience/offer-management/"
PERSONALIZED = OM + "personalized-offer;version=0.5"
FALLBACK = OM + "fallback-offer;version=0.1"
CONTAINER_REL = "https://ns.adobe.com/experience/xcore/container"
RECEIPT_ACCEPT = "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"
RECEIPT_FIELDS = {
    "instanceId",
    "@id",
    "repo:etag",
    "repo:createdDate",
    "repo:lastModifiedDate",
    "repo:createdBy",
    "repo:lastModifiedBy",
    "repo:createdByClientId",
    "repo:lastModifiedByClientId",
}
OFFER1 = "personalizedOffer000001"
# The legacy page's own patch (seed 003); only its placement @id is the simulator's.
SEED_PLACEMENT = "xcore:offer-placement:124e0be5699743d3"
SEED_PATCH: list[dict[str, Any]] = [
    {
        "op": "add",
        "path": "/_instance/xdm:representations/-",
        "value": {
            "xdm:placement": SEED_PLACEMENT,
            "xdm:components": [
                {
                    "@type": OM + "content-component-text",
                    "dc:format": "text/plain",
                    "dc:language": ["en"],
                    "xdm:content": "Here is your first sale offer!",
                }
            ],
        },
    }
]


def patch_headers(
    sim: RunningSimulator, schema: str = PERSONALIZED, **extra: str
) -> dict[str, str]:
    content_type = (
        f'application/vnd.adobe.platform.xcore.patch.hal+json; version=1; schema="{schema}"'
    )
    return api_headers(sim, **{"Content-Type": content_type, "Accept": RECEIPT_ACCEPT, **extra})


def read_headers(sim: RunningSimulator, schema: str = PERSONALIZED, **extra: str) -> dict[str, str]:
    accept = f'application/vnd.adobe.platform.xcore.hal+json; schema="{schema}"'
    return api_headers(sim, Accept=accept, **extra)


def instance_url(sim: RunningSimulator, dps_id: str, container: str = FIRST_CONTAINER) -> str:
    return f"{sim.xcore_endpoint}/{container}/instances/{instance_id(dps_id)}"


async def id_lines(http: aiohttp.ClientSession, sim: RunningSimulator) -> list[dict[str, str]]:
    async with http.get(f"{sim.base_url}/_sim/xcore-ids") as r:
        assert r.status == 200
        assert r.content_type == "application/x-ndjson"
        return [orjson.loads(line) for line in (await r.read()).splitlines()]


async def xcore_of(http: aiohttp.ClientSession, sim: RunningSimulator, dps_id: str) -> str:
    """The @id the simulator gives a DPS entity (a placement, say)."""
    for pair in await id_lines(http, sim):
        if pair["dps"] == dps_id and pair["xcore"].startswith("xcore:"):
            return pair["xcore"]
    raise AssertionError(f"{dps_id} has no @id")


async def dps_get(http: aiohttp.ClientSession, sim: RunningSimulator, dps_id: str) -> Any:
    async with http.get(offer_url(sim, dps_id), headers=api_headers(sim)) as r:
        assert r.status == 200, await r.text()
        return await read_json(r)


async def xpatch(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    ops: Any,
    dps_id: str = OFFER1,
    **headers: str,
) -> tuple[int, Any]:
    async with http.patch(
        instance_url(sim, dps_id), data=orjson.dumps(ops), headers=patch_headers(sim, **headers)
    ) as r:
        return r.status, await read_json(r)


# --------------------------------------------------------------------------- seed request


async def test_seed_request_of_the_legacy_page(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    placement = await xcore_of(http, sim, "offerPlacement0001")
    ops = orjson.loads(
        orjson.dumps(SEED_PATCH).replace(SEED_PLACEMENT.encode(), placement.encode())
    )
    before = await dps_get(http, sim, OFFER1)
    # The page's curl sets no Content-Type (curl -d then sends a form type): the patch
    # media type documented for xcore (API notes §5, seed 002's header table) is required.
    url = instance_url(sim, OFFER1)
    async with http.patch(url, data=orjson.dumps(ops), headers=api_headers(sim)) as r:
        assert r.status == 400
        refusal = await read_json(r)
    assert refusal["detail"] == "A valid content-type must be specified"
    # The page's URL names this container, which is the simulator's first.
    assert url.startswith(f"{sim.xcore_endpoint}/e0bd8463-0913-4ca1-bd84-6309134ca1f6/instances/")
    headers = patch_headers(sim, Authorization=f"Bearer  {sim.config.access_token}")
    async with http.patch(url, data=orjson.dumps(ops), headers=headers) as r:
        assert r.status == 200
        assert r.content_type == "application/vnd.adobe.platform.xcore.xdm.receipt+json"
        receipt = await read_json(r)
    assert set(receipt) == RECEIPT_FIELDS
    assert receipt["instanceId"] == instance_id(OFFER1)
    assert receipt["@id"] == f"xcore:personalized-offer:{instance_id(OFFER1)}"
    assert receipt["repo:etag"] == before["etag"] + 1
    assert receipt["repo:lastModifiedBy"] == "test-client@AdobeID"
    after = await dps_get(http, sim, OFFER1)
    assert after["etag"] == before["etag"] + 1
    assert after["representations"] == [
        *before["representations"],
        {
            "placement": "offerPlacement0001",
            "components": [
                {
                    "type": "text",
                    "format": "text/plain",
                    "language": ["en"],
                    "content": "Here is your first sale offer!",
                }
            ],
        },
    ]
    assert {
        k: v
        for k, v in after.items()
        if k
        not in ("representations", "etag", "modified", "lastModifiedBy", "lastModifiedByClientId")
    } == {
        k: v
        for k, v in before.items()
        if k
        not in ("representations", "etag", "modified", "lastModifiedBy", "lastModifiedByClientId")
    }


# --------------------------------------------------------------------------- home


@pytest.mark.parametrize("count", [0, 1, 2])
async def test_container_home_and_discovery(count: int, http: aiohttp.ClientSession) -> None:
    async with running(SimConfig(offers=2, xcore_containers=count)) as sim:
        accept = {"Accept": "application/vnd.adobe.platform.xcore.home.hal+json"}
        url = f"{sim.xcore_endpoint}/?product=acp&property=_instance.containerType%3D%3Ddecisioning"
        async with http.get(url, headers=api_headers(sim, **accept)) as r:
            assert r.status == 200
            assert r.content_type == "application/vnd.adobe.platform.xcore.home.hal+json"
            home = await read_json(r)
        listed = home["_embedded"][CONTAINER_REL]
        ids = [c["instanceId"] for c in listed]
        assert ids == container_ids(count)
        assert len(set(ids)) == count
        for c in listed:
            assert c["_instance"]["containerType"] == "decisioning"
            assert c["_links"]["self"]["href"] == f"/data/core/xcore/{c['instanceId']}"
        if count:
            assert ids[0] == FIRST_CONTAINER
        # Deterministic: a second simulator lists the same ids.
        assert container_ids(count) == ids
        # Without the slash, and with a product nobody has or a filter nobody matches.
        for query, expected in (
            ("?product=acp", count),
            ("?product=other", 0),
            ("?property=_instance.containerType==campaign", 0),
        ):
            async with http.get(sim.xcore_endpoint + query, headers=api_headers(sim)) as r:
                assert len((await read_json(r))["_embedded"][CONTAINER_REL]) == expected
        async with http.get(sim.xcore_endpoint + "/?product=acp") as r:
            assert r.status == 403  # behind the gateway: no credentials, no answer
            assert (await read_json(r))["error_code"] == "403000"
        # Offers are in the first container only.
        async with http.get(instance_url(sim, OFFER1), headers=read_headers(sim)) as r:
            assert r.status == (200 if count else 404)
        if count == 2:
            async with http.get(instance_url(sim, OFFER1, ids[1]), headers=read_headers(sim)) as r:
                assert r.status == 404
                assert (await read_json(r))["status"] == 404


# --------------------------------------------------------------------------- read


async def test_get_instance_is_the_xcore_view_of_the_dps_offer(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    dps = await dps_get(http, sim, OFFER1)
    iid = instance_id(OFFER1)
    async with http.get(instance_url(sim, OFFER1), headers=read_headers(sim)) as r:
        assert r.status == 200
        view = await read_json(r)
    assert view["instanceId"] == iid
    assert view["@id"] == f"xcore:personalized-offer:{iid}"
    assert view["schemas"] == [PERSONALIZED]
    assert view["repo:etag"] == dps["etag"]
    assert view["repo:createdDate"] == dps["created"]
    assert view["repo:lastModifiedDate"] == dps["modified"]
    assert view["repo:createdBy"] == dps["createdBy"]
    assert view["repo:lastModifiedByClientId"] == dps["lastModifiedByClientId"]
    assert view["_links"]["self"]["href"] == f"/data/core/xcore/{FIRST_CONTAINER}/instances/{iid}"
    content = view["_instance"]
    rep = dps["representations"][0]
    component = rep["components"][0]
    assert content["xdm:name"] == dps["name"]
    assert content["xdm:status"] == dps["status"]
    assert content["xdm:rank"] == {"xdm:priority": dps["rank"]["priority"]}
    # Characteristics are the customer's own keys: verbatim, as translate reads them.
    assert content["xdm:characteristics"] == dps["characteristics"]
    assert content["xdm:representations"] == [
        {
            "xdm:channel": rep["channel"],
            "xdm:placement": await xcore_of(http, sim, rep["placement"]),
            "xdm:components": [
                {
                    "@type": OM + "content-component-" + component["type"],
                    "dc:format": component["format"],
                    "dc:language": component["language"],
                    "xdm:content": component["content"],
                }
            ],
        }
    ]
    assert not {"xdm:id", "xdm:etag", "xdm:created", "xdm:schemas"} & set(content)

    for etag in (f'"{dps["etag"]}"', str(dps["etag"])):
        async with http.get(
            instance_url(sim, OFFER1), headers=read_headers(sim, **{"If-None-Match": etag})
        ) as r:
            assert r.status == 304
            assert await r.read() == b""
    stale = read_headers(sim, **{"If-None-Match": '"999"'})
    async with http.get(instance_url(sim, OFFER1), headers=stale) as r:
        assert r.status == 200
    # A personalized offer is not an instance of the fallback schema.
    async with http.get(instance_url(sim, OFFER1), headers=read_headers(sim, FALLBACK)) as r:
        assert r.status == 404
        assert "personalized-offer" in (await read_json(r))["detail"]
    for unknown in ("0f4bc230-13df-11eb-bc55-c11be7252432", instance_id("offerPlacement0001")):
        url = f"{sim.xcore_endpoint}/{FIRST_CONTAINER}/instances/{unknown}"
        async with http.get(url, headers=read_headers(sim)) as r:
            assert r.status == 404
            body = await read_json(r)
        assert body["status"] == 404
        assert unknown in body["detail"]
    async with http.get(
        instance_url(sim, OFFER1, "not-a-container"), headers=read_headers(sim)
    ) as r:
        assert r.status == 404


# --------------------------------------------------------------------------- write errors


@pytest.mark.parametrize("sim_config", [SimConfig(offers=3, conflict_status=412)])
async def test_stale_if_match_is_409_even_when_dps_says_412(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": "n"}]
    status, receipt = await xpatch(http, sim, ops, **{"If-Match": '"1"'})
    assert status == 200
    assert receipt["repo:etag"] == 2
    status, body = await xpatch(http, sim, ops, **{"If-Match": '"1"'})
    assert status == 409
    assert body["title"] == "Conflict"
    assert instance_id(OFFER1) in body["detail"]
    assert (await dps_get(http, sim, OFFER1))["etag"] == 2
    # The DPS endpoint keeps its configured status for the same conflict.
    async with http.patch(
        offer_url(sim, OFFER1), json=[], headers=api_headers(sim, **{"If-Match": "1"})
    ) as r:
        assert r.status == 412


@pytest.mark.parametrize("sim_config", [SimConfig(offers=3, ignore_if_match=True)])
async def test_ignore_if_match_applies_to_xcore(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": "n"}]
    status, receipt = await xpatch(http, sim, ops, **{"If-Match": '"77"'})
    assert status == 200
    assert receipt["repo:etag"] == 2


async def test_refused_patches_name_the_op_and_change_nothing(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    name = [{"op": "replace", "path": "/_instance/xdm:name", "value": "ok"}]
    cases: list[tuple[Any, int, str]] = [
        (
            [*name, {"op": "test", "path": "/_instance/xdm:status", "value": "nope"}],
            409,
            "operation 1",
        ),
        ([*name, {"op": "replace", "path": "/repo:etag", "value": 9}], 422, "operation 1"),
        ([{"op": "replace", "path": "/instanceId", "value": "x"}], 422, "read-only"),
        ([{"op": "replace", "path": "/xdm:name", "value": "x"}], 422, "outside /_instance/"),
        ([{"op": "add", "path": "/_instance/repo:note", "value": "x"}], 422, "repo:note"),
        ([{"op": "add", "path": "/_instance/name", "value": "x"}], 422, "'name'"),
        ([{"op": "add", "path": "/_instance/xdm:id", "value": "x"}], 422, "read-only"),
        (
            [
                *name,
                {
                    "op": "replace",
                    "path": "/_instance/xdm:representations/0/xdm:placement",
                    "value": "xcore:offer-placement:0000000000000000",
                },
            ],
            422,
            "xcore:offer-placement:0000000000000000",
        ),
        (
            [
                {
                    "op": "replace",
                    "path": "/_instance/xdm:representations/0/xdm:components/0/@type",
                    "value": "https://example.com/content-component-html",
                }
            ],
            422,
            "component type",
        ),
        ([*name, {"path": "/_instance/xdm:name", "value": "x"}], 400, "operation 1"),
        ([{"op": "remove", "path": "/_instance/xdm:nothing"}], 400, "operation 0"),
        ([{"op": "move", "from": "/repo:etag", "path": "/_instance/xdm:x"}], 422, "from"),
        ({"op": "replace"}, 400, "array"),
    ]
    before = await dps_get(http, sim, OFFER1)
    for ops, status, words in cases:
        got, body = await xpatch(http, sim, ops)
        assert (got, words in body["detail"]) == (status, True), (ops, body)
        assert body["status"] == status
    # Not the xcore patch media type, or not JSON.
    url = instance_url(sim, OFFER1)
    async with http.patch(url, json=name, headers=api_headers(sim)) as r:
        assert r.status == 400
        assert (await read_json(r))["detail"] == "A valid content-type must be specified"
    async with http.patch(url, data=b"[{", headers=patch_headers(sim)) as r:
        assert r.status == 400
    # A schema of the other offer type does not find the instance.
    async with http.patch(url, json=name, headers=patch_headers(sim, FALLBACK)) as r:
        assert r.status == 404
    assert await dps_get(http, sim, OFFER1) == before


# --------------------------------------------------------------------------- create, delete


async def test_create_and_delete_through_either_dialect(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    placement = await xcore_of(http, sim, "offerPlacement0002")
    content = {
        "xdm:name": "Legacy offer",
        "xdm:status": "draft",
        "xdm:representations": [
            {
                "xdm:channel": "https://ns.adobe.com/xdm/channel-types/email",
                "xdm:placement": placement,
                "xdm:components": [
                    {
                        "@type": OM + "content-component-imagelink",
                        "dc:format": "image/png",
                        "xdm:content": "a.png",
                    }
                ],
            }
        ],
        "xdm:characteristics": {"dc:kept": "as is"},
    }
    create_type = f'application/schema-instance+json; version=1; schema="{FALLBACK}"'
    url = f"{sim.xcore_endpoint}/{FIRST_CONTAINER}/instances"
    headers = api_headers(sim, **{"Content-Type": create_type, "Accept": RECEIPT_ACCEPT})
    async with http.post(url, data=orjson.dumps(content), headers=headers) as r:
        assert r.status == 201
        receipt = await read_json(r)
    assert set(receipt) == RECEIPT_FIELDS
    assert receipt["repo:etag"] == 1
    assert receipt["@id"] == f"xcore:fallback-offer:{receipt['instanceId']}"
    dps_id = {p["xcore"]: p["dps"] for p in await id_lines(http, sim)}[receipt["instanceId"]]
    async with http.get(offer_url(sim, dps_id, "fallback"), headers=api_headers(sim)) as r:
        assert r.status == 200
        created = await read_json(r)
    assert created["name"] == "Legacy offer"
    assert created["representations"][0]["placement"] == "offerPlacement0002"
    assert created["representations"][0]["components"][0] == {
        "type": "imagelink",
        "format": "image/png",
        "content": "a.png",
    }
    assert created["characteristics"] == {"dc:kept": "as is"}
    assert instance_id(dps_id) == receipt["instanceId"]
    # Seen through xcore, with the fallback schema.
    xurl = f"{url}/{receipt['instanceId']}"
    async with http.get(xurl, headers=read_headers(sim, FALLBACK)) as r:
        assert r.status == 200
        assert (await read_json(r))["_instance"] == content
    # Deleted through xcore: gone for both.
    async with http.delete(xurl, headers=api_headers(sim)) as r:
        assert r.status == 200
        assert await r.read() == b""
    async with http.get(xurl, headers=read_headers(sim, FALLBACK)) as r:
        assert r.status == 404
    async with http.get(offer_url(sim, dps_id, "fallback"), headers=api_headers(sim)) as r:
        assert r.status == 404

    # The other way: created through DPS, read and deleted through xcore... and back.
    async with http.post(
        f"{sim.endpoint}/offers?offer-type=personalized",
        json={"name": "DPS offer", "status": "draft"},
        headers=api_headers(sim, **{"Content-Type": "application/json"}),
    ) as r:
        new_id = (await read_json(r))["id"]
    async with http.get(instance_url(sim, new_id), headers=read_headers(sim)) as r:
        assert r.status == 200
        assert (await read_json(r))["_instance"] == {"xdm:name": "DPS offer", "xdm:status": "draft"}
    async with http.delete(offer_url(sim, new_id), headers=api_headers(sim)) as r:
        assert r.status == 200
    async with http.get(instance_url(sim, new_id), headers=read_headers(sim)) as r:
        assert r.status == 404
    async with http.delete(instance_url(sim, new_id), headers=api_headers(sim)) as r:
        assert r.status == 404


@pytest.mark.parametrize("sim_config", [SimConfig(offers=2, xcore_containers=2, create_status=200)])
async def test_create_refusals_and_configured_status(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    second = container_ids(2)[1]
    body = orjson.dumps({"xdm:name": "x", "xdm:status": "draft"})
    create = f'application/schema-instance+json; version=1; schema="{PERSONALIZED}"'
    for container, content_type, status in (
        (FIRST_CONTAINER, create, 200),
        (second, create, 403),
        (FIRST_CONTAINER, "application/json", 400),
        (FIRST_CONTAINER, create.replace("personalized-offer", "offer-placement"), 400),
    ):
        url = f"{sim.xcore_endpoint}/{container}/instances"
        headers = api_headers(sim, **{"Content-Type": content_type})
        async with http.post(url, data=body, headers=headers) as r:
            assert r.status == status, await r.text()
    headers = api_headers(sim, **{"Content-Type": create})
    url = f"{sim.xcore_endpoint}/{FIRST_CONTAINER}/instances"
    bad = orjson.dumps({"xdm:name": "x", "xdm:placement": "xcore:offer-placement:ffff"})
    async with http.post(url, data=bad, headers=headers) as r:
        assert r.status == 422
        assert "xcore:offer-placement:ffff" in (await read_json(r))["detail"]
    assert sim.store.count("offers/personalized") == 3


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "sim_config", [SimConfig(offers=2, faults=FaultRates(drop_after=1.0), fault_seed=3)]
)
async def test_drop_after_applies_the_xcore_patch_then_drops(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": "applied anyway"}]
    with pytest.raises(aiohttp.ClientError):
        await xpatch(http, sim, ops)
    doc = sim.store.get("offers/personalized", OFFER1)
    assert doc is not None
    assert (doc["name"], doc["etag"]) == ("applied anyway", 2)
    assert sim.simulator.stats.faults["drop_after"] == 1


@pytest.mark.parametrize(
    "sim_config", [SimConfig(offers=2, faults=FaultRates(error_503=1.0), fault_seed=3)]
)
async def test_server_error_fault_leaves_the_offer_alone(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": "never"}]
    status, body = await xpatch(http, sim, ops)
    assert status == 503
    assert body["error_code"] == "503000"
    assert (await dps_get(http, sim, OFFER1))["etag"] == 1


# --------------------------------------------------------------------------- ids


async def test_xcore_ids_feed_translate_id_map(
    sim: RunningSimulator, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lines = await id_lines(http, sim)
    offers = sim.store.count("offers/personalized")
    assert len(lines) == 2 * offers + 3
    assert {"xcore": instance_id(OFFER1), "dps": OFFER1} in lines
    assert {"xcore": f"xcore:personalized-offer:{instance_id(OFFER1)}", "dps": OFFER1} in lines
    placement = {
        "xcore": f"xcore:offer-placement:{instance_id('offerPlacement0003')}",
        "dps": "offerPlacement0003",
    }
    assert placement in lines
    path = tmp_path / "ids.ndjson"
    async with http.get(f"{sim.base_url}/_sim/xcore-ids") as r:
        path.write_bytes(await r.read())
    ids = load_id_map(path)
    assert ids[instance_id(OFFER1)] == OFFER1
    assert len(ids) == len(lines)


# --------------------------------------------------------------------------- equivalence


def _jobs(placement: str, doc: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [
        [
            {"op": "replace", "path": "/_instance/xdm:name", "value": "Renamed"},
            {"op": "replace", "path": "/_instance/xdm:status", "value": "approved"},
        ],
        [{**SEED_PATCH[0], "value": {**SEED_PATCH[0]["value"], "xdm:placement": placement}}],
        [
            {"op": "test", "path": "/_instance/xdm:tags/0", "value": "offerTag1"},
            {"op": "remove", "path": "/_instance/xdm:tags/0"},
        ],
        [
            {"op": "test", "path": "/_instance/xdm:name", "value": doc["name"]},
            {
                "op": "replace",
                "path": "/_instance/xdm:representations/0/xdm:components/0/dc:language",
                "value": ["fr-fr"],
            },
            {"op": "add", "path": "/_instance/xdm:characteristics/dc:odd", "value": "kept"},
            {"op": "copy", "from": "/_instance/xdm:name", "path": "/_instance/xdm:description"},
        ],
        [  # refused by both: a failed test
            {"op": "test", "path": "/_instance/xdm:status", "value": "no such status"},
            {"op": "replace", "path": "/_instance/xdm:name", "value": "never"},
        ],
    ]


async def test_xcore_patch_equals_translated_dps_patch(http: aiohttp.ClientSession) -> None:
    """An xcore job sent to xcore leaves the offer exactly as translate + DPS does."""
    config = SimConfig(offers=5)
    async with running(config) as legacy, running(config) as current:
        ids = {p["xcore"]: p["dps"] for p in await id_lines(http, legacy)}
        assert ids == {p["xcore"]: p["dps"] for p in await id_lines(http, current)}
        placement = await xcore_of(http, legacy, "offerPlacement0003")
        for n in range(1, 6):
            dps_id = f"personalizedOffer{n:06d}"
            ops = _jobs(placement, await dps_get(http, legacy, dps_id))[n - 1]
            tags = [{"op": "replace", "path": "/tags", "value": ["offerTag1", "offerTag2"]}]
            for sim in (legacy, current):  # the same starting point on both
                async with http.patch(
                    offer_url(sim, dps_id), json=tags, headers=api_headers(sim)
                ) as r:
                    assert r.status == 200
            job = translate_job({"id": instance_id(dps_id), "patch": ops}, ids)
            assert job["id"] == dps_id
            status, _ = await xpatch(http, legacy, ops, dps_id)
            async with http.patch(
                offer_url(current, dps_id), json=job["patch"], headers=api_headers(current)
            ) as r:
                assert r.status == status
            a = legacy.store.get("offers/personalized", dps_id)
            b = current.store.get("offers/personalized", dps_id)
            assert a is not None
            assert b is not None
            assert {**a, "modified": None} == {**b, "modified": None}, ops
            assert a["etag"] == (3 if status == 200 else 2)


# --------------------------------------------------------------------------- CLI


async def test_sim_flag_sets_the_container_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import bulkpatch.simulator
    from bulkpatch.cli import build_parser

    seen: list[SimConfig] = []

    async def fake_serve(config: SimConfig, *, host: str, port: int) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(bulkpatch.simulator, "serve", fake_serve)
    for argv, expected in ((["sim"], 1), (["sim", "--xcore-containers", "3"], 3)):
        args = build_parser().parse_args(argv)
        assert await args.func(args) == 0
        assert seen.pop().xcore_containers == expected
    args = build_parser().parse_args(["sim", "--xcore-containers", "-1"])
    with pytest.raises(ConfigError, match="xcore_containers"):
        args.func(args)
