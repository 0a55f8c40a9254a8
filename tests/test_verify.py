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
        ([{"op": "add", "path": "/characteristics/x", "value": "1"}, {"op": "replace", "path": "/name", "value": "y"}], True),
        # A resend's 2xx says nothing of the first attempt's test, and a second remove fails.
        ([{"op": "test", "path": "/status", "value": "draft"}, {"op": "replace", "path": "/status", "value": "approved"}], False),
        ([{"op": "add", "path": "/characteristics/x", "value": "1"}, {"op": "remove", "path": "/rank"}], False),
        ([{"op": "remove", "path": "/name"}], False),
        ([{"op": "add", "path": "/tags/-", "value": "c"}], False),
        ([{"op": "remove", "path": "/tags/0"}], False),
        ([{"op": "copy", "from": "/name", "path": "/description"}], False),
        ([{"op": "move", "from": "/name", "path": "/description"}], False),
        ([{"op": "replace", "path": "/rank", "value": {}}, {"op": "add", "path": "/rank/priority", "value": 1}], False),
    ],
)
def test_which_patches_are_idempotent(patch: list[dict[str, Any]], expected: bool) -> None:
    assert verify.idempotent(patch) is expected


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


def test_a_patch_that_leaves_its_locations_as_they_were_is_never_seen_landing() -> None:
    # The etag moved; the values equal what the patch sets, as they did before it: that
    # proves nothing, and a resend changes nothing either: its 2xx will prove it.
    patch = [{"op": "test", "path": "/status", "value": "draft"}, {"op": "replace", "path": "/name", "value": "Summer sale"}]
    assert verify.landed(patch, {**OFFER, "etag": 5, "rank": {"priority": 9}}, OFFER) is Landed.NO


def test_equality_is_json_equality() -> None:
    patch: list[dict[str, Any]] = [
        {"op": "test", "path": "/status", "value": "draft"},
        {"op": "replace", "path": "/characteristics", "value": {"b": 1, "a": True}},
    ]
    assert verify.landed(patch, {**OFFER, "etag": 5, "characteristics": {"a": True, "b": 1.0}}, OFFER) is Landed.YES
    assert verify.landed(patch, {**OFFER, "etag": 5, "characteristics": {"a": 1, "b": 1}}, OFFER) is Landed.UNCLEAR


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (False, 0, False),
        (None, False, False),
        ({"a": [1, {"b": 2.0}]}, {"a": [1.0, {"b": 2}]}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ([1, 2], [2, 1], False),
        ("1", 1, False),
        (18446744073709551615, 1.8446744073709552e19, False),
    ],
)
def test_json_equal_follows_rfc_6902_section_4_6(a: Any, b: Any, equal: bool) -> None:
    assert verify.json_equal(a, b) is equal
    assert verify.json_equal(b, a) is equal


def test_a_test_op_tells_true_from_1() -> None:
    with pytest.raises(verify.PatchDoesNotApply):
        verify.apply([{"op": "test", "path": "/flag", "value": 1}], {**OFFER, "flag": True})
    assert verify.apply([{"op": "test", "path": "/n", "value": 1}], {**OFFER, "n": 1.0})["n"] == 1.0


def test_changes_skip_a_difference_of_spelling_only() -> None:
    assert verify.changes({"n": 1, "f": 1}, {"n": 1.0, "f": True}) == [{"path": "/f", "old": 1, "new": True}]


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


def _builtin_calls(patch: list[dict[str, Any]]) -> tuple[bool, int]:
    """``verify.idempotent(patch)`` and how many builtin calls (string and set work) it made."""
    import sys

    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "c_call":
            calls += 1

    sys.setprofile(count)
    try:
        verdict = verify.idempotent(patch)
    finally:
        sys.setprofile(None)
    return verdict, calls


@pytest.mark.parametrize("ops", [500, 2_000])
def test_checking_a_long_patch_is_linear_in_its_ops(ops: int) -> None:
    patch = [{"op": "add", "path": f"/characteristics/k{n}", "value": n} for n in range(ops)]
    verdict, calls = _builtin_calls(patch)
    assert verdict is True
    assert calls <= 10 * ops  # a few per op, not one per pair of ops


def test_a_nested_pair_is_still_found_among_many() -> None:
    patch = [{"op": "add", "path": f"/characteristics/k{n}", "value": n} for n in range(500)]
    patch.append({"op": "replace", "path": "/characteristics", "value": {}})
    assert verify.idempotent(patch) is False
