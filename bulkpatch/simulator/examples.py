"""The entities Adobe's pages use as examples, under their documented ids (``--examples``).

With them, each seed page's curl command, pasted with only the host, token and keys
changed, meets the entity it names: ``personalizedOffer1234`` and ``fallbackOffer1234``
(the DPS pages), the xcore instance ``0f4bc230-13df-11eb-bc55-c11be7252432`` whose ``@id``
is ``xcore:personalized-offer:124e181c8b0d7878`` in the container
``e0bd8463-0913-4ca1-bd84-6309134ca1f6`` and the placement
``xcore:offer-placement:124e0be5699743d3`` (the legacy page; the xcore ids are aliases of
the DPS ones, ``xcore_ids.ALIASES``), and one entity of each Decisioning kind, named as
the Decisioning pages name theirs (``offerItem1234``, ``itemCollection1234``, ...).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from bulkpatch.simulator.exd_seed import item
from bulkpatch.simulator.seed import SEED_CLIENT, SEED_USER
from bulkpatch.simulator.store import SCHEMAS, Doc, Store

STAMP: Final = "2023-05-31T15:09:11.771Z"
WEB: Final = "https://ns.adobe.com/xdm/channel-types/web"
EMAIL: Final = "https://ns.adobe.com/xdm/channel-types/email"
PQL: Final = {"type": "PQL", "format": "pql/text"}


def _entity(key: str, entity_id: str, **fields: Any) -> Doc:
    doc: Doc = {
        "id": entity_id,
        "etag": 1,
        "created": STAMP,
        "modified": STAMP,
        "createdBy": SEED_USER,
        "lastModifiedBy": SEED_USER,
        "createdByClientId": SEED_CLIENT,
        "lastModifiedByClientId": SEED_CLIENT,
    }
    if key in SCHEMAS:
        doc["schemas"] = [SCHEMAS[key]]
    doc.update(fields)
    return doc


def _offer(key: str, entity_id: str, name: str) -> Doc:
    return _entity(
        key,
        entity_id,
        name=name,
        description=f"{name} description",
        status="approved",
        representations=[
            {
                "channel": WEB,
                "placement": "offerPlacement1234",
                "components": [
                    {"type": "text", "format": "text/plain", "language": ["en"], "content": name}
                ],
            }
        ],
        tags=[],
        characteristics={},
    )


def _decision_management() -> list[tuple[str, Doc]]:
    personalized = _offer("offers/personalized", "personalizedOffer1234", "Personalized offer")
    personalized.update(
        selectionConstraint={
            "startDate": "2023-06-01T00:00:00.000Z",
            "endDate": "2030-12-31T00:00:00.000Z",
            "profileConstraintType": "none",
        },
        rank={"priority": 1},
    )
    placement = _entity(
        "placements",
        "offerPlacement1234",
        name="Web text placement",
        description="Web text placement",
        channel=WEB,
        componentType="text",
        contentTypes=["text/plain"],
    )
    return [
        ("placements", placement),
        ("offers/personalized", personalized),
        ("offers/fallback", _offer("offers/fallback", "fallbackOffer1234", "Fallback offer")),
    ]


def _decisioning() -> list[tuple[str, Doc]]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    offer_item = item("offerItem1234", "Offer item", priority=1, status="approved", start=start)
    ui_model = (
        '{"operator":"equals","value":{"left":"_experience.decisioning.decisionitem.itemName",'
        '"right":"Offer item"}}'
    )
    collection = _entity(
        "item-collections",
        "itemCollection1234",
        name="Item collection",
        description="Item collection description",
        constraints=[{"itemCatalogId": "itemCatalog1234", "uiModel": ui_model}],
        tags=[],
    )
    strategy = _entity(
        "selection-strategies",
        "selectionStrategy1234",
        name="Selection strategy",
        description="Selection strategy description",
        rank={"priority": 0, "order": {"orderEvaluationType": "static"}},
        profileConstraint={"profileConstraintType": "none"},
        optionSelection={"filter": "itemCollection1234"},
    )
    return [
        ("offer-items", offer_item),
        ("item-collections", collection),
        ("selection-strategies", strategy),
        ("ranking-formulas", _formula()),
        ("offer-rules", _rule()),
        ("exd-placements", _exd_placement()),
    ]


def _formula() -> Doc:
    return _entity(
        "ranking-formulas",
        "rankingFormula1234",
        name="Ranking formula",
        description="Ranking formula description",
        exdFunction=True,
        returnType={"type": "INTEGER"},
        expression={**PQL, "value": "offer._experience.decisioning.decisionitem.itemPriority"},
        definedOn={"offer": {"schema": {"altId": "_xdm.context.offer", "version": "1"}}},
    )


def _rule() -> Doc:
    return _entity(
        "offer-rules",
        "eligibilityRule1234",
        name="Eligibility rule",
        description="Eligibility rule description",
        exdRule=True,
        condition={**PQL, "value": 'profile.person.name.firstName.equals("John", false)'},
        definedOn={"profile": {"schema": {"altId": "_xdm.context.profile", "version": "1"}}},
    )


def _exd_placement() -> Doc:
    return _entity(
        "exd-placements",
        "exdPlacement1234",
        name="Email placement",
        description="Email placement description",
        tags=[],
        channel=EMAIL,
        channelConfiguration="0c1bd2a4-6f6d-4f1c-9b9e-2a9f0e6c1234",
        status="active",
    )


def seed_examples(store: Store) -> None:
    """Add the example entities to ``store``."""
    for key, doc in (*_decision_management(), *_decisioning()):
        store.put(key, doc)
