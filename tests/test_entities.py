"""The entity registry: the API's kinds as the API notes give them, and the one rule for
server-managed members. And that nothing else in the package compares an entity's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bulkpatch import entities
from bulkpatch.entities import (
    DEFAULT_ENTITY,
    KINDS,
    OFFER_TYPES,
    lane_type,
    server_managed,
    type_query,
    typed,
)
from bulkpatch.errors import InputError
from bulkpatch.jobs import parse_line

PACKAGE = Path(entities.__file__).parent


def test_the_kinds_are_decision_managements_six_then_decisionings_six() -> None:
    # API notes §1: /offers, and "the same five operations" for the other five; then
    # Experience Decisioning's six (Decisioning notes §1).
    assert tuple(KINDS) == (
        "offers",
        "placements",
        "offer-collections",
        "tags",
        "offer-rules",
        "offer-decisions",
        "offer-items",
        "item-collections",
        "selection-strategies",
        "ranking-formulas",
        "eligibility-rules",
        "exd-placements",
    )
    assert all(name == kind.name for name, kind in KINDS.items())
    assert [name for name, kind in KINDS.items() if kind.decisioning] == list(KINDS)[6:]
    assert DEFAULT_ENTITY == "offers"


def test_only_offers_take_an_offer_type() -> None:
    assert [name for name, kind in KINDS.items() if kind.typed] == ["offers"]
    assert OFFER_TYPES == ("personalized", "fallback")
    assert type_query("offers", "fallback") == "offer-type=fallback"
    assert type_query("placements", "personalized") == ""
    assert type_query("offer-items", "personalized") == ""


def test_formulas_rules_and_exd_placements_are_written_whole() -> None:
    # R-U, E-U, P-U: PUT with the whole object; every other kind takes JSON Patch.
    whole = [name for name, kind in KINDS.items() if kind.update == "whole-object"]
    assert whole == ["ranking-formulas", "eligibility-rules", "exd-placements"]
    assert entities.writable("ranking-formulas", {"id": "r", "etag": 3, "lastModifiedByClientId": "c", "name": "n"}) == {
        "name": "n"
    }


def test_only_decision_items_carry_an_extra_header_and_managed_members_below_the_top() -> None:
    # GSD: x-schema-id on every item call; I-G: itemID and fCapConstraintsLastIndex.
    assert {name: kind.headers for name, kind in KINDS.items() if kind.headers} == {
        "offer-items": (("x-schema-id", "schema_id"),)
    }
    assert entities.deep_managed("offer-items", "/_experience/decisioning/decisionitem/itemID") is not None
    assert entities.deep_managed("offer-items", "/_experience/decisioning/decisionitem/itemName") is None
    with pytest.raises(InputError, match="itemID is server-managed"):
        parse_line(
            b'{"id": "i", "entity": "offer-items", "patch": [{"op": "replace", '
            b'"path": "/_experience/decisioning/decisionitem/itemID", "value": "x"}]}',
            1,
        )


def test_eligibility_rules_live_on_offer_rules_told_apart_by_exd_rule() -> None:
    # E-C, E-L: POST /offer-rules with exdRule: true; listed with property=exdRule==true.
    assert entities.collection("eligibility-rules") == "offer-rules"
    assert entities.marker_filter("eligibility-rules") == "exdRule==true"
    assert entities.marker_filter("offer-rules") == "exdRule!=true"
    assert entities.marker_filter("ranking-formulas") == "exdFunction==true"
    assert entities.other_kind("offer-rules", {"exdRule": True}) == "eligibility-rules"
    assert entities.other_kind("eligibility-rules", {"exdRule": False}) == "offer-rules"
    assert entities.other_kind("offer-rules", {}) is None


def test_only_offers_have_a_legacy_schema() -> None:
    assert [name for name, kind in KINDS.items() if kind.xcore] == ["offers"]
    assert entities.translatable("offers")
    assert not entities.translatable("tags")
    assert not entities.translatable("no-such-kind")


def test_the_lane_type_is_the_type_of_a_typed_kind_only() -> None:
    assert lane_type("offers", "fallback") == "fallback"
    assert lane_type("offer-rules", "personalized") == ""
    assert typed("offers")
    assert not typed("no-such-kind")
    # A placement and an offer of the same id are two entities; two placements are one.
    placement = parse_line(b'{"id": "x", "entity": "placements", "patch": [{"op": "remove", "path": "/a"}]}', 1)
    offer = parse_line(b'{"id": "x", "patch": [{"op": "remove", "path": "/a"}]}', 2)
    assert placement.key == ("placements", "", "x")
    assert offer.key == ("offers", "personalized", "x")


@pytest.mark.parametrize(
    "member",
    [
        "id",
        "etag",
        "created",
        "modified",
        "createdBy",
        "lastModifiedBy",
        "schemas",
        "createdByClientId",
        "lastModifiedByClientId",
        "createdClientId",
        "ClientId",
    ],
)
def test_server_managed_members(member: str) -> None:
    assert server_managed(member)
    assert all(member in kind.managed or member.endswith("ClientId") for kind in KINDS.values())


@pytest.mark.parametrize(
    "member", ["name", "status", "Id", "ids", "etags", "createdDate", "clientId", "ClientIds", ""]
)
def test_members_a_client_may_set(member: str) -> None:
    # createdDate and lastModifiedDate come in the receipt (API notes §1) but are not in
    # the documented list of fields a client must not change: the rule keeps to the list.
    assert not server_managed(member)


def _compares_offers(tree: ast.AST) -> list[int]:
    """The lines of comparisons with the literal ``"offers"`` on either side."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value == "offers" for o in operands):
                found.append(node.lineno)
    return found


def test_no_module_but_the_registry_compares_an_entity_name() -> None:
    # The simulator keeps its own lists on purpose: it is the oracle, not the client.
    simulator = PACKAGE / "simulator"
    found = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if simulator not in path.parents and path.name != "entities.py"
        if (lines := _compares_offers(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}


def test_the_scan_finds_a_comparison_where_there_is_one() -> None:
    assert _compares_offers(ast.parse('if job.entity == "offers": pass')) == [1]
    assert _compares_offers(ast.parse('x = "offers" != kind')) == [1]
    assert _compares_offers(ast.parse('settings = {"offers": 200}')) == []
