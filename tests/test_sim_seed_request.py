"""The seed pages' own request, sent as their curl sends it, answers as the real service does."""

from __future__ import annotations

import aiohttp

from bulkpatch.simulator import RunningSimulator
from tests.conftest import api_headers, offer_url, read_json

SEED_PATCH = [
    {"op": "replace", "path": "/name", "value": "Updated personalized offer"},
    {"op": "replace", "path": "/description", "value": "Updated personalized offer description"},
]
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


async def test_seed_curl_patch_get_and_stale_if_match(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = offer_url(sim, "personalizedOffer000001")
    # The curl of the page sends "Bearer  {ACCESS_TOKEN}", with two spaces.
    headers = api_headers(sim, **{"Content-Type": "application/json"})
    headers["Authorization"] = f"Bearer  {sim.config.access_token}"
    async with http.get(url, headers=headers) as r:
        before = await read_json(r)
    async with http.patch(url, json=SEED_PATCH, headers=headers) as r:
        assert r.status == 200
        body = await read_json(r)
    assert set(body) == RECEIPT_FIELDS
    assert body["id"] == "personalizedOffer000001"
    assert body["etag"] == before["etag"] + 1
    async with http.get(url, headers=headers) as r:
        after = await read_json(r)
    assert after["name"] == "Updated personalized offer"
    assert after["description"] == "Updated personalized offer description"
    assert after["etag"] == body["etag"]
    stale = {**headers, "If-Match": f'"{before["etag"]}"'}
    async with http.patch(url, json=SEED_PATCH, headers=stale) as r:
        assert r.status == 409
        problem = await read_json(r)
    assert problem["status"] == 409
    assert "If-Match" in problem["detail"]
