"""The entity kinds of the Offer Library API: the one place their facts are written. Pure.

Every fact here is from the API notes (``../shared/design/offer-library-api.md``, which
gathers Adobe's Experience League pages "Getting started with the Offer Library API",
"Update a personalized offer", "Create a fallback offer" and "Look up / list / delete
offers"). The rest of the package asks this registry what a kind does, and never compares
an entity's name itself, so a new kind (or a new fact about one) is one entry here.

The simulator keeps its own lists on purpose (it is the independent oracle the client is
tested against) and does not import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

# How an update is written. JSON Patch (RFC 6902) for every Decision Management kind:
# ``PATCH /{entity}/{ID}``, the body an array of operations (API notes §1, "Update a
# personalized offer"). Experience Decisioning's kinds update by PUT; none is spoken yet.
UpdateForm = Literal["json-patch"]

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

    - ``name``: a job's ``entity`` and the collection's path, ``{endpoint}/{name}``;
    - ``typed``: every call carries ``offer-type`` (offers only: "no ``offer-type``
      parameter there" for the others);
    - ``headers``: headers beyond the ones every call carries (none documented);
    - ``managed``: its server-managed members (besides any ``*ClientId``);
    - ``update``: how it is updated;
    - ``xcore``: the legacy (xcore) API's schemas, and ``xcore_map``'s field rules, cover
      it (API notes §5: the personalized and fallback offer schemas only).
    """

    name: str
    typed: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    managed: frozenset[str] = SERVER_MANAGED
    update: UpdateForm = "json-patch"
    xcore: bool = False


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
        EntityKind("offer-rules"),
        EntityKind("offer-decisions"),
    )
}
ENTITIES: Final = tuple(KINDS)
# What a job names when it names no entity: the API's own examples are all offers.
DEFAULT_ENTITY: Final = "offers"
# Asked once per job and per request (``lane_type``, ``type_query``): a set, and the
# queries made once, not the registry's objects and a new string each time.
_TYPED: Final = frozenset(kind.name for kind in KINDS.values() if kind.typed)
_TYPE_QUERY: Final = {t: f"{TYPE_PARAM}={t}" for t in OFFER_TYPES}


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
