"""Experience Decisioning's kinds on the DPS base: the rules they add to a DPS request.

The six kinds share the DPS endpoints (``dps``) and store; this module holds what sets
them apart (Decisioning notes §1, §2, §4), and the simulator's answer wherever the pages
are silent (§7), each a setting:

- every decision-item call (``/offer-items``) needs ``x-schema-id`` (GSD); a missing one,
  or one other than ``schema_id`` when that is set, is a 400;
- ranking formulas, eligibility rules (on ``/offer-rules``) and exd-placements are
  written whole (R-U, E-U, P-U: ``PUT``, and their curl sends ``PATCH`` with an object):
  both verbs take an object that replaces every field but the server-managed ones, which
  are ignored in the body (``refuse_managed_fields``: a 422); a ``PATCH`` with an array is
  a JSON Patch there as everywhere;
- creates and updates answer the receipt; an exd-placement's has no
  ``createdByClientId`` (P-C);
- a decision item gets its server-managed ``itemID`` (its id) and
  ``fCapConstraintsLastIndex`` on create (I-G); ``lifecycleStatus`` changes freely;
- at most 10,000 decision items (GR-sv), a create past that refused
  (``item_limit_status``); an ``approved`` item cannot be deleted (ITEMS: the UI's rule,
  ``approved_delete_status``); exd-placements have no delete page (P-*): a DELETE is
  refused (``exd_placement_delete_status``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from bulkpatch.simulator.config import SimConfig
from bulkpatch.simulator.store import Doc, Refused, Store, is_managed, receipt
from bulkpatch.simulator.wire import problem

ITEMS: Final = "offer-items"
EXD_PLACEMENTS: Final = "exd-placements"
# Kinds a whole object may be written to, with PUT or with PATCH and an object body.
WHOLE_OBJECT_KINDS: Final = frozenset({"ranking-formulas", "offer-rules", EXD_PLACEMENTS})
MAX_ITEMS: Final = 10_000
DECISION_ITEM: Final = ("_experience", "decisioning", "decisionitem")
OFFER_ITEM: Final = ("_experience", "decisioning", "offeritem")
SCHEMA_HEADER: Final = "x-schema-id"


def _parent(doc: Doc, path: tuple[str, ...]) -> Doc | None:
    """The object at ``path``, made where missing; None when a non-object is in the way."""
    node = doc
    for part in path:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return None
        node = child
    return node


def lifecycle_status(doc: Mapping[str, Any]) -> Any:
    node: Any = doc
    for part in (*OFFER_ITEM, "lifecycleStatus"):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


class Decisioning:
    """The Decisioning rules of one simulator's settings, over its store."""

    def __init__(self, config: SimConfig, store: Store) -> None:
        self._config = config
        self._store = store

    # -- before the write: answers that need no store

    def schema_refusal(self, request: web.Request, kind: str) -> web.Response | None:
        """The 400 of an item call without the schema id required; None otherwise."""
        if kind != ITEMS:
            return None
        given = request.headers.get(SCHEMA_HEADER, "").strip()
        if not given:
            return problem(400, "Bad Request", f"Missing header: {SCHEMA_HEADER}")
        wanted = self._config.schema_id
        if wanted is not None and given != wanted:
            return problem(
                400, "Bad Request", f"{SCHEMA_HEADER} {given!r} is not the item catalog's schema"
            )
        return None

    def body_refusal(self, body: Any) -> web.Response | None:
        """The answer to a whole object that cannot be written; None when it can."""
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "The request body must be a JSON object")
        managed = sorted(k for k in body if is_managed(k))
        if managed and self._config.refuse_managed_fields:
            return problem(
                422,
                "Unprocessable Entity",
                "server-managed field(s) in the body: " + ", ".join(managed),
                fields=managed,
            )
        return None

    def delete_refusal(self, kind: str) -> web.Response | None:
        status = self._config.exd_placement_delete_status
        if kind != EXD_PLACEMENTS or status is None:
            return None
        titles = {403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
        answer = problem(
            status,
            titles[status],
            "exd-placements cannot be deleted through the API; set status to archived",
        )
        if status == 405:
            answer.headers["Allow"] = "GET, PUT, PATCH"
        return answer

    # -- inside the write (raise Refused, which the write maps to its answer)

    def check_create(self, key: str, body: Doc) -> None:
        if key != ITEMS:
            return
        if self._store.count(ITEMS) >= MAX_ITEMS:
            raise Refused(
                self._config.item_limit_status,
                "Bad Request" if self._config.item_limit_status == 400 else "Refused",
                f"the sandbox holds {MAX_ITEMS:,} decision items, the most it may",
            )
        probe: Doc = {"_experience": body.get("_experience", {})}
        if _parent(probe, DECISION_ITEM) is None or _parent(probe, OFFER_ITEM) is None:
            raise Refused(400, "Bad Request", "_experience.decisioning must hold objects")

    def finish_create(self, key: str, doc: Doc) -> None:
        """Set the server-managed fields of a new item (checked by ``check_create``)."""
        if key != ITEMS:
            return
        item = _parent(doc, DECISION_ITEM)
        offer = _parent(doc, OFFER_ITEM)
        if item is None or offer is None:  # refused by check_create before the store
            return
        item["itemID"] = doc["id"]
        item.setdefault("itemLabels", [])
        item.setdefault("itemTags", [])
        offer["fCapConstraintsLastIndex"] = 0

    def check_delete(self, key: str, doc: Doc | None) -> None:
        status = self._config.approved_delete_status
        if key != ITEMS or doc is None or status is None:
            return
        if lifecycle_status(doc) == "approved":
            raise Refused(
                status,
                "Bad Request" if status == 400 else "Refused",
                f"decision item {doc['id']!r} is approved: set its lifecycleStatus to draft "
                "(or archived) before deleting it",
            )

    # -- the answer

    @staticmethod
    def receipt(key: str, doc: Doc) -> Doc:
        answer = receipt(doc)
        if key == EXD_PLACEMENTS:
            del answer["createdByClientId"]
        return answer
