"""xcore's ids for the store's entities, and its containers.

An entity's xcore instance id is derived from its DPS id (16 hex characters of blake2b),
so it is stable across restarts and state files; its ``@id`` is
``xcore:<kind>:<instance id>``. ``/_sim/xcore-ids`` lists the pairs in the ``--id-map``
format of ``bulkpatch translate``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Final

from bulkpatch.simulator.store import Store
from bulkpatch.xcore_map import XCORE_ID

# The container id of the legacy page's own example, so its curl URL works as written.
FIRST_CONTAINER: Final = "e0bd8463-0913-4ca1-bd84-6309134ca1f6"

# The documented ids of the legacy page's example (``--examples``): DPS id → (instance id,
# @id), outside the derivation below, so the page's curl names a real entity.
ALIASES: Final = {
    "personalizedOffer1234": (
        "0f4bc230-13df-11eb-bc55-c11be7252432",
        "xcore:personalized-offer:124e181c8b0d7878",
    ),
    "offerPlacement1234": (None, "xcore:offer-placement:124e0be5699743d3"),
}

# The middle part of an entity's @id, by store collection.
KINDS: Final = {
    "offers/personalized": "personalized-offer",
    "offers/fallback": "fallback-offer",
    "placements": "offer-placement",
    "tags": "tag",
}


def instance_id(dps_id: str) -> str:
    """The xcore instance id of a DPS entity: derived, so it needs no table to persist."""
    alias = ALIASES.get(dps_id, (None, None))[0]
    return alias or hashlib.blake2b(dps_id.encode(), digest_size=8).hexdigest()


def at_id(key: str, dps_id: str) -> str:
    """``xcore:personalized-offer:<instanceId>`` and the like."""
    alias = ALIASES.get(dps_id, (None, None))[1]
    return alias or f"{XCORE_ID}{KINDS[key]}:{instance_id(dps_id)}"


def container_ids(count: int) -> list[str]:
    """Deterministic container ids: the documented example first, then derived ones."""
    ids = [FIRST_CONTAINER][:count]
    for index in range(1, count):
        digest = hashlib.blake2b(f"sim-xcore-container-{index}".encode(), digest_size=16)
        ids.append(str(uuid.UUID(bytes=digest.digest())))
    return ids


class Ids:
    """Both directions between xcore ids (instance ids and ``@id`` values) and DPS ids.

    DPS → xcore is a hash. xcore → DPS needs a table: it is rebuilt from the store on a
    miss, because entities also come and go through the DPS endpoints, which do not
    tell this module.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, tuple[str, str]] = {}

    def add(self, key: str, dps_id: str) -> None:
        self._known[instance_id(dps_id)] = (key, dps_id)
        self._known[at_id(key, dps_id)] = (key, dps_id)

    def _rebuild(self) -> None:
        for key in KINDS:
            for doc in self._store.page(key, limit=max(1, self._store.count(key))).results:
                self.add(key, doc["id"])

    def resolve(self, xcore: str) -> tuple[str, str] | None:
        """The (collection, DPS id) of a live entity, or None."""
        for attempt in range(2):
            found = self._known.get(xcore)
            if found is not None and self._store.get(*found) is not None:
                return found
            if attempt == 0:
                self._rebuild()
        return None

    def entries(self) -> Iterator[tuple[str, str, str]]:
        """(xcore id, DPS id, collection) of every entity that has an xcore id."""
        for key in KINDS:
            for doc in self._store.page(key, limit=max(1, self._store.count(key))).results:
                if key.startswith("offers/"):
                    yield instance_id(doc["id"]), doc["id"], key
                yield at_id(key, doc["id"]), doc["id"], key

    def as_mapping(self) -> Mapping[str, str]:
        return _DpsIds(self)


class _DpsIds(Mapping[str, str]):
    """The id map translate's ``IdMap`` reads, resolved from the live store."""

    def __init__(self, ids: Ids) -> None:
        self._ids = ids

    def __getitem__(self, xcore: str) -> str:
        found = self._ids.resolve(xcore) if xcore.startswith(XCORE_ID) else None
        if found is None:
            raise KeyError(xcore)
        return found[1]

    def __iter__(self) -> Iterator[str]:
        return (xcore for xcore, _, _ in self._ids.entries())

    def __len__(self) -> int:
        return sum(1 for _ in self._ids.entries())
