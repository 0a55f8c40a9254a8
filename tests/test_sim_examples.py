"""Each seed page's request, sent as its curl sends it, against a fresh ``sim --examples``.

The requests are restated here as curl puts them on the wire: the page's method, URL
path and ``-H`` headers, curl's own ``Accept: */*`` and ``User-Agent``, and the ``-d``
body byte for byte (with the ``Content-Type`` curl adds when the page names none). Only
the host, the token and the keys differ from the page. Each must get a 2xx (200: no page
states another), an answer with every key of the page's example response, and a later
GET that shows the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bulkpatch.simulator import SimConfig, offer_id, running
from bulkpatch.simulator.xcore import instance_id
from tests.conftest import read_json

DPS_RECEIPT_KEYS = {
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
XCORE_RECEIPT_KEYS = {
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
CONTAINER = "e0bd8463-0913-4ca1-bd84-6309134ca1f6"
INSTANCE = "0f4bc230-13df-11eb-bc55-c11be7252432"
PLACEMENT_AT_ID = "xcore:offer-placement:124e0be5699743d3"

# The -d bodies of the pages, as printed (indentation included).
PERSONALIZED_BODY = """[
    {
        "op": "replace",
        "path": "/name",
        "value": "Updated personalized offer"
    },
    {
        "op": "replace",
        "path": "/description",
        "value": "Updated personalized offer description"
    }
]"""
FALLBACK_BODY = PERSONALIZED_BODY.replace("personalized", "fallback")
LEGACY_BODY = """[
        {
            "op": "add",
            "path": "/_instance/xdm:representations/-",
            "value": {
                "xdm:placement": "xcore:offer-placement:124e0be5699743d3",
                "xdm:components": [
                    {
                        "@type": "https://ns.adobe.com/experience/offer-management/content-component-text",
                        "dc:format": "text/plain",
                        "dc:language": ["en"],
                        "xdm:content": "Here is your first sale offer!"
                    }
                ]
            }
        }
    ]"""


@dataclass(frozen=True)
class PageRequest:
    """One page's curl request, the keys of its example answer, and how to see the change."""

    page: str
    path: str  # under the host, with the query
    headers: dict[str, str]  # the -H headers, with the DPS pages' "Bearer  " (two spaces)
    body: str
    answer_keys: set[str]
    answer_values: dict[str, Any]
    shows_change: Callable[[Any], bool]


def _dps_headers() -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Authorization": "Bearer  {ACCESS_TOKEN}",
        "x-api-key": "{API_KEY}",
        "x-gw-ims-org-id": "{IMS_ORG}",
        "x-sandbox-name": "{SANDBOX_NAME}",
    }


def _legacy_headers() -> dict[str, str]:
    # No -H 'Content-Type': with -d, curl sends its form type.
    return {
        "Authorization": "Bearer {ACCESS_TOKEN}",
        "x-api-key": "{API_KEY}",
        "x-gw-ims-org-id": "{IMS_ORG}",
        "x-sandbox-name": "{SANDBOX_NAME}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def _renamed(name: str) -> Callable[[Any], bool]:
    return lambda doc: doc["name"] == name and doc["description"] == name + " description"


def _has_legacy_representation(doc: Any) -> bool:
    last = doc["_instance"]["xdm:representations"][-1]
    component = last["xdm:components"][0]
    shown = (last["xdm:placement"], component["xdm:content"])
    return bool(shown == (PLACEMENT_AT_ID, "Here is your first sale offer!"))


def _update_personalized(page: str) -> PageRequest:
    return PageRequest(
        page,
        "/data/core/dps/offers/personalizedOffer1234?offer-type=personalized",
        _dps_headers(),
        PERSONALIZED_BODY,
        DPS_RECEIPT_KEYS,
        {"id": "personalizedOffer1234", "etag": 2},
        _renamed("Updated personalized offer"),
    )


PAGES = [
    _update_personalized("000 update a personalized offer (French)"),
    _update_personalized("001 update a personalized offer (Korean)"),
    _update_personalized("002 update a personalized offer (English)"),
    PageRequest(
        "003 update a personalized offer (legacy xcore)",
        f"/data/core/xcore/{CONTAINER}/instances/{INSTANCE}",
        _legacy_headers(),
        LEGACY_BODY,
        XCORE_RECEIPT_KEYS,
        {"instanceId": INSTANCE, "@id": "xcore:personalized-offer:124e181c8b0d7878"},
        _has_legacy_representation,
    ),
    PageRequest(
        "004 fallback offer (its example request is a PATCH)",
        "/data/core/dps/offers/fallbackOffer1234?offer-type=fallback",
        _dps_headers(),
        FALLBACK_BODY,
        DPS_RECEIPT_KEYS,
        {"id": "fallbackOffer1234", "etag": 2},
        _renamed("Updated fallback offer"),
    ),
]


def _filled(headers: dict[str, str], token: str) -> dict[str, str]:
    """The page's headers with its placeholders filled, and what curl adds of its own."""
    values = {
        "{ACCESS_TOKEN}": token,
        "{API_KEY}": "my-api-key",
        "{IMS_ORG}": "ABC123@AdobeOrg",
        "{SANDBOX_NAME}": "prod",
    }
    filled = {}
    for name, value in headers.items():
        for placeholder, real in values.items():
            value = value.replace(placeholder, real)
        filled[name] = value
    return {"User-Agent": "curl/8.5.0", "Accept": "*/*", **filled}


@pytest.mark.parametrize("request_", PAGES, ids=lambda r: r.page.split(" ")[0])
async def test_each_seed_page_request_gets_its_documented_answer(request_: PageRequest) -> None:
    async with running(SimConfig(examples=True)) as sim, aiohttp.ClientSession() as http:
        headers = _filled(request_.headers, sim.config.access_token)
        url = sim.base_url + request_.path
        async with http.patch(url, data=request_.body.encode(), headers=headers) as r:
            answer = await read_json(r)
            assert r.status == 200, answer
        assert request_.answer_keys <= set(answer)
        assert {k: answer[k] for k in request_.answer_values} == request_.answer_values
        reading = {k: v for k, v in headers.items() if k != "Content-Type"}
        async with http.get(url, headers=reading) as r:
            assert r.status == 200
            assert request_.shows_change(await read_json(r))


@pytest.mark.parametrize(
    ("settings", "instance", "status"),
    [
        ({"offers": 1}, instance_id(offer_id(1)), 400),
        ({"examples": True, "strict_xcore_content_type": True}, INSTANCE, 400),
        ({"examples": True}, INSTANCE, 200),
    ],
    ids=["without-examples", "strict", "examples"],
)
async def test_an_xcore_patch_without_its_media_type_is_a_json_patch_only_under_examples(
    settings: dict[str, Any], instance: str, status: int
) -> None:
    legacy = PAGES[3]
    async with running(SimConfig(**settings)) as sim, aiohttp.ClientSession() as http:
        headers = _filled(legacy.headers, sim.config.access_token)
        url = f"{sim.xcore_endpoint}/{CONTAINER}/instances/{instance}"
        untyped = {k: v for k, v in headers.items() if k != "Content-Type"}
        for sent in (headers, untyped):
            async with http.patch(
                url, data=legacy.body.encode(), headers=sent, skip_auto_headers=["Content-Type"]
            ) as r:
                body = await read_json(r)
                assert r.status == status, body
            if status == 400:
                assert "content-type" in body["detail"]
