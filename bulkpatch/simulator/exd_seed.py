"""Realistic decision items, so a Decisioning rehearsal looks like a real sandbox.

Ids are predictable (``offerItem000001`` ...), as the offers' are; the fields are those the
item pages show (Decisioning notes §2.1): ``itemName``, ``itemDescription``,
``itemPriority``, ``itemCatalogID``, ``itemCalendarConstraints``, ``itemConstraints``
under ``_experience/decisioning/decisionitem``, ``lifecycleStatus`` under
``_experience/decisioning/offeritem``, and the server-managed ``itemID`` and
``fCapConstraintsLastIndex``. Items carry no ``schemas`` array.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Final

from bulkpatch.simulator.seed import SEED_CLIENT, SEED_USER
from bulkpatch.simulator.store import Doc, Store

ITEM_CATALOG: Final = "itemCatalog1234"
_NAMES: Final = ("Summer", "Loyalty", "Flash", "Weekend", "VIP", "Welcome", "Holiday")
_THINGS: Final = ("sale", "upgrade", "bundle", "discount", "cashback", "trial", "gift card")
# Mostly approved, as a live catalog is; lifecycle transitions are not enforced.
_STATUSES: Final = ("draft", "approved", "approved", "approved", "archived")


def item_id(index: int) -> str:
    """The id of the ``index``-th seeded decision item (1-based)."""
    return f"offerItem{index:06d}"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def item(entity_id: str, name: str, *, priority: int, status: str, start: datetime) -> Doc:
    """A decision item as a lookup returns it (I-G), written at etag 1 by the seed user."""
    stamp = _iso(start - timedelta(days=30))
    return {
        "id": entity_id,
        "etag": 1,
        "created": stamp,
        "modified": stamp,
        "createdBy": SEED_USER,
        "lastModifiedBy": SEED_USER,
        "createdByClientId": SEED_CLIENT,
        "lastModifiedByClientId": SEED_CLIENT,
        "_experience": {
            "decisioning": {
                "decisionitem": {
                    "itemID": entity_id,
                    "itemName": name,
                    "itemDescription": f"{name}, for every visitor",
                    "itemPriority": priority,
                    "itemCatalogID": ITEM_CATALOG,
                    "itemCalendarConstraints": {
                        "startDate": _iso(start),
                        "endDate": _iso(start + timedelta(days=60)),
                    },
                    "itemConstraints": {"profileConstraintType": "none"},
                    "itemLabels": [],
                    "itemTags": [],
                },
                "offeritem": {
                    "lifecycleStatus": status,
                    "fCapConstraintsLastIndex": 0,
                    "frequencyCappingConstraints": [],
                },
            }
        },
    }


def make_item(index: int, rng: random.Random) -> Doc:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(300))
    name = f"{rng.choice(_NAMES)} {rng.choice(_THINGS)} #{index}"
    return item(
        item_id(index),
        name,
        priority=rng.randrange(0, 100),
        status=rng.choice(_STATUSES),
        start=start,
    )


def seed_items(store: Store, items: int, *, seed: int = 0) -> None:
    """Add ``items`` decision items to ``store``."""
    rng = random.Random(seed)
    for index in range(1, items + 1):
        store.put("offer-items", make_item(index, rng))
