"""The entity kinds of the Offer Library API: the one place their facts are written. Pure.

Every fact here is from the API notes (``../shared/design/offer-library-api.md``, which
gathers Adobe's Experience League pages "Getting started with the Offer Library API",
"Update a personalized offer", "Create a fallback offer" and "Look up / list / delete
offers"); Experience Decisioning's six kinds are from the Decisioning notes
(``../shared/design/experience-decisioning.md``, §1 and §2, which name each page). The rest of the package asks this registry what a kind does, and never compares
an entity's name itself, so a new kind (or a new fact about one) is one entry here.

The simulator keeps its own lists on purpose (it is the independent oracle the client is
tested against) and does not import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

# How an update is written. JSON Patch (RFC 6902) for every Decision Management kind:
# ``PATCH /{entity}/{ID}``, the body an array of operations (API notes §1, "Update a
# personalized offer"), and for decision items, item collections and selection strategies
# (Decisioning notes §1: I-U, C-U, S-U). Ranking formulas, eligibility rules and
# exd-placements are written whole: the pages say ``PUT`` with the whole object (R-U, E-U,
# P-U), so bulkpatch reads the entity, applies the job's patch locally and sends the result.
UpdateForm = Literal["json-patch", "whole-object"]

# The query parameter a typed kind takes on every call (API notes §1: ``offer-type=``).
TYPE_PARAM: Final = "offer-type"
# Its values (API notes §1: "?offer-type=personalized (or fallback)").
OFFER_TYPES: Final = ("personalized", "fallback")
DEFAULT_OFFER_TYPE: Final = "personalized"

# Members a client must not change (API notes §1, "Fields a client must not change"):
# the service answers 422 (§2, documented for the legacy API), so they are refused
# before anything is sent. The ``*ClientId`` members are a family (``createdByClientId``,
# ``lastModifiedByClientId`` in the receipt, §1), matched by their suffix.
SERVER_MANAGED: Final = frozenset(
    {"id", "etag", "created", "modified", "createdBy", "lastModifiedBy", "schemas"}
)
_CLIENT_ID_SUFFIX: Final = "ClientId"


def server_managed(member: str) -> bool:
    """Whether a top-level member is the server's to set (API notes §1): the one rule."""
    return member in SERVER_MANAGED or member.endswith(_CLIENT_ID_SUFFIX)


@dataclass(frozen=True, slots=True)
class EntityKind:
    """One kind of entity and how the API speaks it (API notes §1).

    - ``name``: a job's ``entity``;
    - ``path``: the collection's path, ``{endpoint}/{path}`` (``name`` when empty);
    - ``typed``: every call carries ``offer-type`` (offers only: "no ``offer-type``
      parameter there" for the others);
    - ``headers``: headers beyond the ones every call carries, as (header, the setting
      that gives its value): ``x-schema-id`` on decision items (Decisioning notes §1, GSD);
    - ``managed``: its server-managed members (besides any ``*ClientId``);
    - ``deep_managed``: server-managed members below the top level, as JSON Pointers
      (Decisioning notes §2.1: an item's ``itemID`` and ``fCapConstraintsLastIndex``);
    - ``update``: how it is updated;
    - ``xcore``: the legacy (xcore) API's schemas, and ``xcore_map``'s field rules, cover
      it (API notes §5: the personalized and fallback offer schemas only);
    - ``marker``: on a path two kinds share (``/offer-rules``), the boolean member that
      is ``true`` on this kind's entities (``exdRule``, E-L) and not on the other's;
      ``marked``: whether this kind's entities carry it (False: the other kind does);
    - ``decisioning``: one of Experience Decisioning's kinds;
    - ``listed_whole``: a list page's entry is the whole entity, as a GET answers it
      (Decisioning notes §1: I-L "each result is the full item", C-L "full entities";
      the other Decisioning list pages say only "list envelope"), so a pre-image may
      be taken from it (``prefetch``); else its collection is not listed and every
      pre-image is a GET.
    """

    name: str
    typed: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    managed: frozenset[str] = SERVER_MANAGED
    update: UpdateForm = "json-patch"
    xcore: bool = False
    path: str = ""
    deep_managed: tuple[str, ...] = ()
    marker: str = ""
    marked: bool = True
    decisioning: bool = False
    listed_whole: bool = True

    @property
    def collection(self) -> str:
        return self.path or self.name


# "The same five operations exist, same shape, for /placements, /offer-collections,
# /tags (collection qualifiers), /offer-rules (eligibility rules) and /offer-decisions
# (no offer-type parameter there)" (API notes §1).
KINDS: Final[dict[str, EntityKind]] = {
    kind.name: kind
    for kind in (
        EntityKind("offers", typed=True, xcore=True),
        EntityKind("placements"),
        EntityKind("offer-collections"),
        EntityKind("tags"),
        # Decision Management's rules share /offer-rules with eligibility rules: they are
        # the ones without ``exdRule: true`` (Decisioning notes §1, E-C, E-L).
        EntityKind("offer-rules", marker="exdRule", marked=False),
        EntityKind("offer-decisions"),
        # Experience Decisioning (Decisioning notes §1).
        EntityKind(
            "offer-items",
            headers=(("x-schema-id", "schema_id"),),
            deep_managed=(
                "/_experience/decisioning/decisionitem/itemID",
                "/_experience/decisioning/offeritem/fCapConstraintsLastIndex",
            ),
            decisioning=True,
        ),
        EntityKind("item-collections", decisioning=True),
        EntityKind("selection-strategies", decisioning=True, listed_whole=False),
        EntityKind(
            "ranking-formulas",
            update="whole-object",
            marker="exdFunction",
            decisioning=True,
            listed_whole=False,
        ),
        EntityKind(
            "eligibility-rules",
            path="offer-rules",
            update="whole-object",
            marker="exdRule",
            decisioning=True,
            listed_whole=False,
        ),
        EntityKind("exd-placements", update="whole-object", decisioning=True, listed_whole=False),
    )
}
ENTITIES: Final = tuple(KINDS)
# What a job names when it names no entity: the API's own examples are all offers.
DEFAULT_ENTITY: Final = "offers"
# Asked once per job and per request (``lane_type``, ``type_query``): a set, and the
# queries made once, not the registry's objects and a new string each time.
_TYPED: Final = frozenset(kind.name for kind in KINDS.values() if kind.typed)
_TYPE_QUERY: Final = {t: f"{TYPE_PARAM}={t}" for t in OFFER_TYPES}


# Kinds a request needs more than the dialect's headers for: extra headers, another path.
_PATHS: Final = {kind.name: kind.collection for kind in KINDS.values()}
# The exd-placement pages have no delete (Decisioning notes §1, P-*).
UNDELETABLE: Final = {"exd-placements": "exd-placements cannot be deleted through the API; set status to archived"}
# What stands for a delete where there is none: the member and value that archive an
# entity of the kind (P-U's example archives an exd-placement with ``status: archived``).
# A rollback writes it to the entities of these kinds its run created.
ARCHIVE: Final = {"exd-placements": ("status", "archived")}


def collection(entity: str) -> str:
    """The path segment of ``entity``'s collection (``eligibility-rules``: ``offer-rules``)."""
    return _PATHS.get(entity, entity)


def kind(entity: str) -> EntityKind:
    """The registry's entry (raises ``KeyError`` for a name a job could not have named)."""
    return KINDS[entity]


def whole_object(entity: str) -> bool:
    """Whether ``entity`` is updated by writing the whole object (see ``UpdateForm``)."""
    found = KINDS.get(entity)
    return found is not None and found.update == "whole-object"


def listed_whole(entity: str) -> bool:
    """Whether a list page's entry of ``entity`` is the whole entity (``EntityKind``)."""
    found = KINDS.get(entity)
    return found is not None and found.listed_whole


def deep_managed(entity: str, pointer: str) -> str | None:
    """The server-managed pointer ``pointer`` is or is below, on ``entity``; else None."""
    found = KINDS.get(entity)
    for managed in found.deep_managed if found is not None else ():
        if pointer == managed or pointer.startswith(managed + "/"):
            return managed
    return None


def writable(entity: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` minus what the server manages on ``entity`` (top-level members): the body
    of a whole-object write (Decisioning notes §1: the server sets them)."""
    managed = KINDS[entity].managed
    return {k: v for k, v in doc.items() if k not in managed and not k.endswith(_CLIENT_ID_SUFFIX)}


def other_kind(entity: str, doc: dict[str, Any]) -> str | None:
    """On a shared path: the kind ``doc`` is of when it is not ``entity``; else None."""
    found = KINDS.get(entity)
    if found is None or not found.marker:
        return None
    if (doc.get(found.marker) is True) == found.marked:
        return None
    for other in KINDS.values():
        if other.collection == found.collection and other.marker == found.marker and other is not found:
            return other.name
    return None


def marker_filter(entity: str) -> str:
    """The list filter that keeps ``entity``'s own entities on a shared path, as a
    ``property`` value (E-L, R-L: ``exdRule==true``); "" when none is needed."""
    found = KINDS.get(entity)
    if found is None or not found.marker:
        return ""
    return f"{found.marker}{'==' if found.marked else '!='}true"


def typed(entity: str) -> bool:
    """Whether ``entity``'s calls carry ``offer-type`` (an unknown name: no)."""
    return entity in _TYPED


def lane_type(entity: str, offer_type: str) -> str:
    """The type part of an entity's key: ``offer_type`` for a typed kind, ``""`` for the
    others (a placement has no type, whatever a job line defaulted it to)."""
    return offer_type if entity in _TYPED else ""


def type_query(entity: str, offer_type: str) -> str:
    """The query that names an entity's type, ``offer-type=...``, or ``""`` if untyped."""
    if entity not in _TYPED:
        return ""
    return _TYPE_QUERY.get(offer_type) or f"{TYPE_PARAM}={offer_type}"


def translatable(entity: str) -> bool:
    """Whether a job on ``entity`` written for the legacy API can be translated to DPS."""
    found = KINDS.get(entity)
    return found is not None and found.xcore
