"""The simulator's entity store: plain data and plain functions, no HTTP.

Every mutation runs synchronously inside one event loop turn, so two writes to the same
entity can never interleave: that is the atomicity the real service gives per offer.
A PATCH is applied to a private copy of the one entity it targets and swapped in only if
every operation succeeded (RFC 6902 §5: a patch that fails leaves the document unchanged).
"""

from __future__ import annotations

import base64
import operator
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import jsonpatch
import jsonpointer
import orjson

from bulkpatch.errors import BulkpatchError

Doc = dict[str, Any]

# The entity kinds of the DPS API. Offers are split by their ``offer-type``.
ENTITY_KINDS: Final = (
    "offers",
    "placements",
    "offer-collections",
    "tags",
    "offer-rules",
    "offer-decisions",
    # Experience Decisioning's kinds, on the same base (Decisioning notes §1); its
    # eligibility rules live on /offer-rules, told apart by `exdRule`.
    "offer-items",
    "item-collections",
    "selection-strategies",
    "ranking-formulas",
    "exd-placements",
)
OFFER_TYPES: Final = ("personalized", "fallback")

# Fields the server manages (API notes §1); a patch touching one is refused with 422.
READ_ONLY_FIELDS: Final = frozenset(
    {"id", "etag", "created", "modified", "createdBy", "lastModifiedBy", "schemas"}
)
# What a receipt adds: not entity fields, but a client may send them back in a whole object.
RECEIPT_ONLY_FIELDS: Final = frozenset({"sandboxId", "createdDate", "lastModifiedDate"})
# Server-managed fields below the top level, by collection (Decisioning notes §2.1): the
# server sets them on create and a patch may not change them.
DEEP_READ_ONLY: Final = {
    "offer-items": (
        ("_experience", "decisioning", "decisionitem", "itemID"),
        ("_experience", "decisioning", "offeritem", "fCapConstraintsLastIndex"),
    ),
}
PATCH_OPS: Final = frozenset({"add", "remove", "replace", "move", "copy", "test"})

_ID_PREFIX: Final = {
    "offers/personalized": "personalizedOffer",
    "offers/fallback": "fallbackOffer",
    "placements": "offerPlacement",
    "offer-collections": "offerCollection",
    "tags": "offerTag",
    "offer-rules": "offerRule",
    "offer-decisions": "offerActivity",
    "offer-items": "offerItem",
    "item-collections": "itemCollection",
    "selection-strategies": "selectionStrategy",
    "ranking-formulas": "rankingFormula",
    "exd-placements": "exdPlacement",
}
SCHEMAS: Final = {
    "offers/personalized": "https://ns.adobe.com/experience/offer-management/personalized-offer;version=0.15",
    "offers/fallback": "https://ns.adobe.com/experience/offer-management/fallback-offer;version=0.3",
    "placements": "https://ns.adobe.com/experience/offer-management/offer-placement;version=0.4",
    "offer-collections": "https://ns.adobe.com/experience/offer-management/offer-filter;version=0.3",
    "tags": "https://ns.adobe.com/experience/offer-management/tag;version=0.1",
    "offer-rules": "https://ns.adobe.com/experience/offer-management/eligibility-rule;version=0.3",
    "offer-decisions": "https://ns.adobe.com/experience/offer-management/offer-activity;version=0.5",
    # Decision items carry no `schemas` array (Decisioning notes §2.1): none here.
    "item-collections": "https://ns.adobe.com/experience/decisioning/item-collection;version=1.2",
    "selection-strategies": "https://ns.adobe.com/experience/offer-management/selection-strategy;version=0.2",
    "ranking-formulas": "https://ns.adobe.com/experience/offer-management/ranking-function;version=0.3",
    "exd-placements": "exd-placement",
}
SANDBOX_ID: Final = "a0d8f9e0-sim0-4c6a-98f9-e0b0d5c6a0f1"


def collection_key(kind: str, offer_type: str | None) -> str:
    """``offers`` + ``personalized`` → ``offers/personalized``; other kinds stand alone."""
    return f"{kind}/{offer_type}" if kind == "offers" else kind


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- errors


class StoreError(BulkpatchError):
    """A request the store refuses; the HTTP layer maps each kind to a status."""


class NotFound(StoreError):
    pass


class PreconditionFailed(StoreError):
    """``If-Match`` named an etag that is not the current one."""


@dataclass
class Refused(StoreError):
    """A write the service refuses for a rule of its own (a cap, an approved item)."""

    status: int
    title: str
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class PatchRejected(StoreError):
    """One operation of a patch could not be applied."""

    index: int | None
    reason: str
    # "invalid" (400), "test" (failed test op), "read-only" and "unprocessable" (422:
    # e.g. an xcore value with no DPS counterpart)
    kind: str

    def __str__(self) -> str:
        at = f"operation {self.index}" if self.index is not None else "patch"
        return f"{at}: {self.reason}"


# --------------------------------------------------------------------------- patches


def _first_token(pointer: str) -> str | None:
    """The top-level member a JSON pointer names; None for the whole document."""
    if pointer == "":
        return None
    head = pointer[1:].split("/", 1)[0]
    return head.replace("~1", "/").replace("~0", "~")


def _is_read_only(pointer: str) -> bool:
    head = _first_token(pointer)
    return head is None or head in READ_ONLY_FIELDS or head.endswith("ClientId")


def is_managed(name: str) -> bool:
    """Whether a top-level member is the server's: ignored in a body, refused in a patch."""
    return name in READ_ONLY_FIELDS or name in RECEIPT_ONLY_FIELDS or name.endswith("ClientId")


def _deep(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = doc
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _check_deep_read_only(key: str, before: Doc, after: Doc) -> None:
    for path in DEEP_READ_ONLY.get(key, ()):
        if _deep(before, path) != _deep(after, path):
            pointer = "/" + "/".join(path)
            raise PatchRejected(None, f"{pointer} is read-only (server-managed)", "read-only")


def _copy(doc: Doc) -> Doc:
    # An orjson round trip copies a JSON document several times faster than deepcopy.
    copied: Doc = orjson.loads(orjson.dumps(doc))
    return copied


def apply_patch(doc: Doc, ops: Any) -> Doc:
    """Apply an RFC 6902 patch to a copy of ``doc``; raise PatchRejected naming the op."""
    if not isinstance(ops, list):
        raise PatchRejected(None, "the body must be a JSON array of operations", "invalid")
    result = _copy(doc)
    for index, op in enumerate(ops):
        if not isinstance(op, dict):
            raise PatchRejected(index, "an operation must be a JSON object", "invalid")
        name = op.get("op")
        if name not in PATCH_OPS:
            raise PatchRejected(index, f"unknown op {name!r}", "invalid")
        path = op.get("path")
        if not isinstance(path, str):
            raise PatchRejected(index, "'path' must be a string", "invalid")
        # Only the locations an operation changes are guarded: `test` and the source of
        # `copy` read a read-only field, which is harmless.
        targets = [path] if name != "test" else []
        if name == "move":
            source = op.get("from")
            if isinstance(source, str):
                targets.append(source)
        for target in targets:
            if (target.startswith("/") or target == "") and _is_read_only(target):
                raise PatchRejected(
                    index, f"{target or '/'} is read-only (server-managed)", "read-only"
                )
        try:
            result = jsonpatch.JsonPatch([op]).apply(result, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise PatchRejected(index, f"test failed at {path}: {exc}", "test") from exc
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise PatchRejected(index, f"{name} {path}: {exc}", "invalid") from exc
    return result


# --------------------------------------------------------------------------- listing

_FILTER = re.compile(r"^(?P<field>[^=!<>~]+?)(?P<op>==|!=|<=|>=|<|>|~)(?P<value>.*)$")
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


def _field(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``property=FIELD<op>VALUE`` condition of the list API."""

    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        match = _FILTER.match(text)
        if not match:
            raise ValueError(
                f"property filter {text!r} is not FIELD==VALUE (or !=, <=, >=, <, >, ~)"
            )
        return cls(match["field"].strip(), match["op"], match["value"])

    def matches(self, doc: Mapping[str, Any]) -> bool:
        actual = _field(doc, self.field)
        if self.op == "~":
            return actual is not None and re.search(self.value, str(actual)) is not None
        if actual is None:
            return self.op == "!="
        expected: Any = self.value
        if isinstance(actual, bool):
            actual = str(actual).lower()
        elif isinstance(actual, int | float):
            try:
                expected = float(self.value)
            except ValueError:
                actual = str(actual)
        else:
            actual = str(actual)
        try:
            return _COMPARE[self.op](actual, expected)
        except TypeError:
            return False


def _sort_key(value: Any) -> tuple[int, Any]:
    # Missing values sort first, numbers before strings: a total order for any JSON.
    if value is None:
        return (0, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (1, value)
    return (2, str(value))


def encode_cursor(value: Any, entity_id: str) -> str:
    raw = orjson.dumps([value, entity_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    padded = cursor + "=" * (-len(cursor) % 4)
    value, entity_id = orjson.loads(base64.urlsafe_b64decode(padded))
    return value, str(entity_id)


# --------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class Page:
    results: list[Doc]
    total: int
    next_cursor: str | None


class Store:
    """All entities, keyed by collection (``offers/personalized``, ``placements``, ...)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Doc]] = {key: {} for key in _ID_PREFIX}
        self.writes_applied = 0

    # -- reading

    def collections(self) -> Iterable[str]:
        return self._data.keys()

    def get(self, key: str, entity_id: str) -> Doc | None:
        return self._data[key].get(entity_id)

    def count(self, key: str) -> int:
        return len(self._data[key])

    def find(self, entity_id: str) -> tuple[str, Doc] | None:
        for key, docs in self._data.items():
            if entity_id in docs:
                return key, docs[entity_id]
        return None

    def page(
        self,
        key: str,
        *,
        filters: Iterable[Filter] = (),
        orderby: str | None = None,
        limit: int = 20,
        start: str | None = None,
    ) -> Page:
        """One page of a keyset-paged listing: the cursor is the last item's sort key.

        Keyset paging (rather than an offset) keeps a listing consistent while entities
        are written or deleted between pages, which is what an exporting client needs.
        """
        conditions = tuple(filters)
        field = (orderby or "id").lstrip("-+")
        descending = bool(orderby) and orderby is not None and orderby.startswith("-")
        docs = [d for d in self._data[key].values() if all(c.matches(d) for c in conditions)]
        docs.sort(key=lambda d: (_sort_key(_field(d, field)), d["id"]), reverse=descending)
        total = len(docs)
        if start is not None:
            value, last_id = decode_cursor(start)
            after = (_sort_key(value), last_id)
            if descending:
                docs = [d for d in docs if (_sort_key(_field(d, field)), d["id"]) < after]
            else:
                docs = [d for d in docs if (_sort_key(_field(d, field)), d["id"]) > after]
        page = docs[:limit]
        cursor = None
        if len(docs) > limit and page:
            last = page[-1]
            cursor = encode_cursor(_field(last, field), last["id"])
        return Page(page, total, cursor)

    # -- writing

    def put(self, key: str, doc: Doc) -> None:
        """Insert an entity as given (seeding and loading state)."""
        self._data[key][doc["id"]] = doc

    def create(self, key: str, body: Mapping[str, Any], *, client_id: str, user: str) -> Doc:
        stamp = now_iso()
        doc: Doc = {k: v for k, v in body.items() if k not in READ_ONLY_FIELDS}
        doc.pop("createdByClientId", None)
        doc.pop("lastModifiedByClientId", None)
        entity_id = _ID_PREFIX[key] + secrets.token_hex(8)
        doc.update(
            id=entity_id,
            etag=1,
            created=stamp,
            modified=stamp,
            createdBy=user,
            lastModifiedBy=user,
            createdByClientId=client_id,
            lastModifiedByClientId=client_id,
        )
        if key in SCHEMAS:
            doc["schemas"] = [SCHEMAS[key]]
        self._data[key][entity_id] = doc
        self.writes_applied += 1
        return doc

    def _current(self, key: str, entity_id: str, if_match: int | None) -> Doc:
        doc = self._data[key].get(entity_id)
        if doc is None:
            raise NotFound(entity_id)
        if if_match is not None and doc["etag"] != if_match:
            raise PreconditionFailed(entity_id)
        return doc

    def patch(
        self, key: str, entity_id: str, ops: Any, *, if_match: int | None, client_id: str, user: str
    ) -> Doc:
        doc = self._current(key, entity_id, if_match)
        updated = apply_patch(doc, ops)
        _check_deep_read_only(key, doc, updated)
        return self._swap(key, doc, updated, client_id=client_id, user=user)

    def replace(
        self,
        key: str,
        entity_id: str,
        body: Mapping[str, Any],
        *,
        if_match: int | None,
        client_id: str,
        user: str,
    ) -> Doc:
        """A whole-object write: ``body`` replaces every field but the server-managed ones,
        which keep their values whatever the body says."""
        doc = self._current(key, entity_id, if_match)
        updated = {k: v for k, v in _copy(dict(body)).items() if not is_managed(k)}
        updated.update((k, v) for k, v in doc.items() if is_managed(k))
        return self._swap(key, doc, updated, client_id=client_id, user=user)

    def _swap(self, key: str, doc: Doc, updated: Doc, *, client_id: str, user: str) -> Doc:
        updated["etag"] = doc["etag"] + 1
        updated["modified"] = now_iso()
        updated["lastModifiedBy"] = user
        updated["lastModifiedByClientId"] = client_id
        self._data[key][doc["id"]] = updated
        self.writes_applied += 1
        return updated

    def delete(self, key: str, entity_id: str, *, if_match: int | None) -> None:
        self._current(key, entity_id, if_match)
        del self._data[key][entity_id]
        self.writes_applied += 1

    # -- persistence

    def dump(self) -> dict[str, list[Doc]]:
        """Every entity, sorted by id within its collection: stable, so it diffs well."""
        return {key: [docs[i] for i in sorted(docs)] for key, docs in self._data.items() if docs}

    def load(self, data: Mapping[str, Iterable[Doc]]) -> None:
        for key, docs in data.items():
            if key not in self._data:
                raise ValueError(f"unknown collection {key!r} in state file")
            for doc in docs:
                self.put(key, doc)


def receipt(doc: Mapping[str, Any]) -> Doc:
    """What create and update answer: the nine receipt fields, not the entity."""
    return {
        "etag": doc["etag"],
        "createdBy": doc.get("createdBy"),
        "lastModifiedBy": doc.get("lastModifiedBy"),
        "id": doc["id"],
        "sandboxId": SANDBOX_ID,
        "createdDate": doc.get("created"),
        "lastModifiedDate": doc.get("modified"),
        "createdByClientId": doc.get("createdByClientId"),
        "lastModifiedByClientId": doc.get("lastModifiedByClientId"),
    }
