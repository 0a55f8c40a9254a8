"""Deciding whether a write landed, from the entity read back: the core of exactly-once."""

from __future__ import annotations

from typing import Any

import pytest

from bulkpatch import verify
from bulkpatch.verify import Landed

OFFER: dict[str, Any] = {
    "id": "o1",
    "etag": 4,
    "name": "Summer sale",
    "status": "draft",
    "tags": ["a", "b"],
    "rank": {"priority": 3},
    "characteristics": {"campaign": "c1"},
}


def written(doc: dict[str, Any], patch: list[dict[str, Any]], *, by_other: dict[str, Any] | None = None) -> dict[str, Any]:
    """``doc`` after ``patch`` landed (and, optionally, another writer's top-level change)."""
    out = verify.apply(patch, doc)
    out["etag"] = doc["etag"] + 1
    if by_other:
        out.update(by_other)
        out["etag"] += 1
    return out


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ([{"op": "replace", "path": "/name", "value": "x"}], True),
        ([{"op": "test", "path": "/status", "value": "draft"}, {"op": "replace", "path": "/status", "value": "approved"}], True),
        ([{"op": "add", "path": "/characteristics/x", "value": "1"}, {"op": "remove", "path": "/rank"}], True),
        ([{"op": "add", "path": "/tags/-", "value": "c"}], False),
        ([{"op": "remove", "path": "/tags/0"}], False),
        ([{"op": "copy", "from": "/name", "path": "/description"}], False),
        ([{"op": "move", "from": "/name", "path": "/description"}], False),
        ([{"op": "replace", "path": "/rank", "value": {}}, {"op": "add", "path": "/rank/priority", "value": 1}], False),
    ],
)
def test_which_patches_verify_themselves(patch: list[dict[str, Any]], expected: bool) -> None:
    assert verify.self_verifying(patch) is expected


APPEND = [{"op": "add", "path": "/tags/-", "value": "c"}]
NON_IDEMPOTENT = [
    APPEND,
    [{"op": "remove", "path": "/tags/0"}],
    [{"op": "copy", "from": "/name", "path": "/description"}],
    [{"op": "move", "from": "/characteristics/campaign", "path": "/characteristics/old"}],
    [{"op": "add", "path": "/tags/0", "value": "z"}],
]


@pytest.mark.parametrize("patch", NON_IDEMPOTENT)
def test_a_landed_write_is_recognised_even_after_another_writer_changed_other_fields(
    patch: list[dict[str, Any]],
) -> None:
    after = written(OFFER, patch, by_other={"rank": {"priority": 99}})
    assert verify.landed(patch, after, OFFER) is Landed.YES


@pytest.mark.parametrize("patch", NON_IDEMPOTENT)
def test_a_write_that_did_not_land_is_recognised_even_if_the_etag_moved(patch: list[dict[str, Any]]) -> None:
    other = {**OFFER, "rank": {"priority": 99}, "etag": 5}
    assert verify.landed(patch, other, OFFER) is Landed.NO
    assert verify.landed(patch, OFFER, OFFER) is Landed.NO  # nothing was written at all


def test_another_writer_on_the_same_location_makes_it_unclear() -> None:
    other = {**OFFER, "tags": ["a", "b", "x"], "etag": 5}
    assert verify.landed(APPEND, other, OFFER) is Landed.UNCLEAR


def test_without_a_pre_image_the_values_set_decide() -> None:
    patch = [
        {"op": "test", "path": "/status", "value": "draft"},
        {"op": "replace", "path": "/status", "value": "approved"},
        {"op": "remove", "path": "/rank"},
    ]
    assert verify.landed(patch, written(OFFER, patch), None) is Landed.YES
    assert verify.landed(patch, OFFER, None) is Landed.NO
    half = {**OFFER, "status": "approved"}
    assert verify.landed(patch, half, None) is Landed.NO


def test_equality_is_json_equality() -> None:
    patch = [{"op": "replace", "path": "/characteristics", "value": {"b": 1, "a": True}}]
    assert verify.landed(patch, {**OFFER, "characteristics": {"a": True, "b": 1}}, None) is Landed.YES
    assert verify.landed(patch, {**OFFER, "characteristics": {"a": 1, "b": 1}}, None) is Landed.NO


def test_apply_reports_why_a_patch_does_not_apply_and_leaves_the_input_alone() -> None:
    with pytest.raises(verify.PatchDoesNotApply, match="not equal"):
        verify.apply([{"op": "test", "path": "/status", "value": "approved"}], OFFER)
    with pytest.raises(verify.PatchDoesNotApply):
        verify.apply([{"op": "remove", "path": "/nope"}], OFFER)
    out = verify.apply(APPEND, OFFER)
    assert out["tags"] == ["a", "b", "c"]
    assert OFFER["tags"] == ["a", "b"]


def test_touched_locations_are_the_arrays_for_array_slots() -> None:
    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/tags/-", "value": "c"},
        {"op": "move", "from": "/a/b", "path": "/c"},
        {"op": "test", "path": "/x", "value": 1},
    ]
    assert verify.touched(patch) == ["/tags", "/c", "/a/b"]
