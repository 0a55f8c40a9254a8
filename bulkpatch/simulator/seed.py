"""Realistic seed data, so a rehearsal looks like a real sandbox.

Ids are predictable (``personalizedOffer000001`` ...) so a job file for a rehearsal can be
written before the simulator starts; everything else is drawn from a seeded generator.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Final

import orjson

from bulkpatch.simulator.store import SCHEMAS, Doc, Store, now_iso

PLACEMENTS: Final = (
    (
        "offerPlacement0001",
        "Homepage hero",
        "https://ns.adobe.com/xdm/channel-types/web",
        "html",
        "text/html",
    ),
    (
        "offerPlacement0002",
        "Email banner",
        "https://ns.adobe.com/xdm/channel-types/email",
        "imagelink",
        "image/png",
    ),
    (
        "offerPlacement0003",
        "App card",
        "https://ns.adobe.com/xdm/channel-types/mobile",
        "json",
        "application/json",
    ),
)
_ADJECTIVES: Final = (
    "Summer",
    "Winter",
    "Spring",
    "Loyalty",
    "Flash",
    "Weekend",
    "VIP",
    "Welcome",
    "Holiday",
    "Clearance",
)
_THINGS: Final = (
    "sale",
    "upgrade",
    "bundle",
    "discount",
    "free shipping",
    "cashback",
    "trial",
    "gift card",
    "points boost",
    "bonus",
)
_STATUSES: Final = ("draft", "approved", "approved", "approved", "archived")
_LANGUAGES: Final = ("en-us", "fr-fr", "de-de", "ko-kr", "ja-jp")
SEED_USER: Final = "seed@AdobeID"
SEED_CLIENT: Final = "sim-seed"


def offer_id(index: int) -> str:
    """The id of the ``index``-th seeded personalized offer (1-based)."""
    return f"personalizedOffer{index:06d}"


def _placement(pid: str, name: str, channel: str, ctype: str, fmt: str) -> Doc:
    stamp = now_iso()
    return {
        "id": pid,
        "etag": 1,
        "created": stamp,
        "modified": stamp,
        "schemas": [SCHEMAS["placements"]],
        "createdBy": SEED_USER,
        "lastModifiedBy": SEED_USER,
        "createdByClientId": SEED_CLIENT,
        "lastModifiedByClientId": SEED_CLIENT,
        "name": name,
        "description": f"{name} placement",
        "channel": channel,
        "componentType": ctype,
        "contentTypes": [fmt],
    }


def make_offer(index: int, rng: random.Random) -> Doc:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(300))
    end = start + timedelta(days=rng.randrange(14, 120))
    created = (start - timedelta(days=rng.randrange(1, 60))).isoformat(timespec="milliseconds")
    pid, pname, channel, ctype, fmt = rng.choice(PLACEMENTS)
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_THINGS)} #{index}"
    return {
        "id": offer_id(index),
        "etag": 1,
        "created": created.replace("+00:00", "Z"),
        "modified": created.replace("+00:00", "Z"),
        "schemas": [SCHEMAS["offers/personalized"]],
        "createdBy": SEED_USER,
        "lastModifiedBy": SEED_USER,
        "createdByClientId": SEED_CLIENT,
        "lastModifiedByClientId": SEED_CLIENT,
        "name": name,
        "description": f"{name} for {pname.lower()} visitors",
        "status": rng.choice(_STATUSES),
        "representations": [
            {
                "channel": channel,
                "placement": pid,
                "components": [
                    {
                        "type": ctype,
                        "format": fmt,
                        "language": [rng.choice(_LANGUAGES)],
                        "content": f"<p>{name}</p>" if ctype == "html" else f"offer-{index}",
                    }
                ],
            }
        ],
        "selectionConstraint": {
            "startDate": start.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "endDate": end.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "profileConstraintType": "none",
        },
        "rank": {"priority": rng.randrange(0, 100)},
        "cappingConstraint": {},
        "frequencyCappingConstraints": [],
        "characteristics": {"campaign": f"c{rng.randrange(1, 40):02d}"},
        "tags": [],
    }


def seed(store: Store, offers: int, *, seed: int = 0, size: int = 0) -> None:
    """Add the placements and ``offers`` personalized offers to ``store``; with ``size``,
    each offer padded to about that many bytes of JSON (``padded``)."""
    rng = random.Random(seed)
    for placement in PLACEMENTS:
        store.put("placements", _placement(*placement))
    for index in range(1, offers + 1):
        store.put("offers/personalized", padded(make_offer(index, rng), size))


def padded(offer: Doc, size: int) -> Doc:
    """``offer`` grown to about ``size`` bytes of JSON (an offer of realistic weight: real
    ones carry long content and many characteristics) by a filler characteristic,
    ``simPadding``; as it is when it is that large already."""
    room = size - len(orjson.dumps(offer)) - len(b',"simPadding":""')
    if room > 0:
        offer["characteristics"]["simPadding"] = ("lorem ipsum " * (room // 12 + 1))[:room]
    return offer
