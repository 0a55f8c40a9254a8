"""Parsing one input line into a job: what is accepted, and how a bad line is named."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkpatch.errors import InputError
from bulkpatch.jobs import RAW_CUT, Job, bad_line, parse_line, strip_line

REPLACE = [{"op": "replace", "path": "/name", "value": "x"}]


def line(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_minimal_job_takes_the_documented_defaults() -> None:
    job = parse_line(line({"id": "personalizedOffer1234", "patch": REPLACE}), 7)
    assert job == Job(line=7, id="personalizedOffer1234", patch=REPLACE)
    assert job.key == ("offers", "personalized", "personalizedOffer1234")


def test_every_optional_key_is_read() -> None:
    job = parse_line(
        line({"id": "f1", "patch": REPLACE, "type": "fallback", "etag": 3, "ref": {"ticket": 9}}), 1
    )
    assert (job.type, job.etag, job.ref, job.has_ref) == ("fallback", 3, {"ticket": 9}, True)
    assert job.as_line() == {"id": "f1", "patch": REPLACE, "type": "fallback", "etag": 3, "ref": {"ticket": 9}}


def test_failure_log_keys_are_ignored_so_a_failure_log_is_valid_input() -> None:
    job = parse_line(
        line({"id": "a", "patch": REPLACE, "line": 4, "error": {"kind": "http"}, "_note": 1}), 2
    )
    assert job.id == "a"
    assert job.line == 2


def test_members_rfc6902_does_not_define_are_ignored() -> None:
    patch = [{"op": "remove", "path": "/description", "value": "ignored", "comment": "x"}]
    assert parse_line(line({"id": "a", "patch": patch}), 1).patch == patch


@pytest.mark.parametrize(
    ("obj", "field", "fragment"),
    [
        ({"id": "a", "pacth": REPLACE}, "pacth", "unknown key"),
        ({"patch": REPLACE}, "id", "required"),
        ({"id": 42, "patch": REPLACE}, "id", "string"),
        ({"id": "", "patch": REPLACE}, "id", "non-empty"),
        ({"id": "a"}, "patch", "required"),
        ({"id": "a", "patch": []}, "patch", "empty"),
        ({"id": "a", "patch": {"op": "add"}}, "patch", "array"),
        ({"id": "a", "patch": ["x"]}, "patch", "operation 0 is not an object"),
        ({"id": "a", "patch": [{"op": "frob", "path": "/a"}]}, "patch", "unknown op 'frob'"),
        ({"id": "a", "patch": [{"op": "add", "path": "name", "value": 1}]}, "patch", "not a JSON pointer"),
        ({"id": "a", "patch": [{"op": "add", "path": "/a~2", "value": 1}]}, "patch", "not a JSON pointer"),
        ({"id": "a", "patch": [{"op": "add", "path": "/r/-/x", "value": 1}]}, "patch", "'-' before"),
        ({"id": "a", "patch": [REPLACE[0], {"op": "replace", "path": "/a"}]}, "patch", "operation 1: replace needs a 'value'"),
        ({"id": "a", "patch": [{"op": "copy", "path": "/a"}]}, "patch", "'from' must be a string"),
        ({"id": "a", "patch": [{"op": "move", "from": "/a", "path": "/a/b"}]}, "patch", "own child"),
        ({"id": "a", "patch": [{"op": "replace", "path": "/etag", "value": 9}]}, "patch", "server-managed"),
        ({"id": "a", "patch": [{"op": "remove", "path": "/lastModifiedByClientId"}]}, "patch", "server-managed"),
        ({"id": "a", "patch": [{"op": "replace", "path": "", "value": {}}]}, "patch", "server-managed"),
        ({"id": "a", "patch": REPLACE, "type": "promo"}, "type", "personalized"),
        ({"id": "a", "patch": REPLACE, "entity": "widgets"}, "entity", "one of"),
        ({"id": "a", "patch": REPLACE, "entity": "tags", "type": "fallback"}, "type", "offers only"),
        ({"id": "a", "patch": REPLACE, "etag": True}, "etag", "integer"),
        ({"id": "a", "patch": REPLACE, "etag": -1}, "etag", "integer"),
    ],
)
def test_bad_job_names_the_line_and_field(obj: object, field: str, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_line(line(obj), 12)
    assert caught.value.line == 12
    assert caught.value.field == field
    assert str(caught.value).startswith(f"line 12, field {field!r}: ")
    assert fragment in str(caught.value)


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'"s"', b"null", b"\xff\xfe{}", b'{"id": "a", "patch": ['])
def test_lines_that_are_not_json_objects_are_named(raw: bytes) -> None:
    with pytest.raises(InputError) as caught:
        parse_line(raw, 3)
    assert str(caught.value).startswith("line 3: ")


def test_bad_line_keeps_the_id_and_cuts_the_raw_text() -> None:
    raw = line({"id": "offer-9", "pacth": [], "pad": "x" * 10})
    kept = bad_line(raw, 5, InputError("unknown key", line=5, field="pacth"))
    assert kept.id == "offer-9"
    big = b"x" * (RAW_CUT + 10)
    kept = bad_line(big, 6, InputError("bad", line=6))
    assert len(kept.raw) == RAW_CUT
    assert kept.size == RAW_CUT + 10


def test_line_endings_and_bom() -> None:
    assert strip_line(b'\xef\xbb\xbf{"a":1}\r\n', first=True) == b'{"a":1}'
    assert strip_line(b'\xef\xbb\xbf{"a":1}\n', first=False) == b'\xef\xbb\xbf{"a":1}'
    assert strip_line(b"{}", first=False) == b"{}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)


# The machine is shared: generation speed is not what these tests are about.
RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=150)


@RELAXED
@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_input_error(raw: bytes) -> None:
    try:
        job = parse_line(raw, 1)
    except InputError as exc:
        assert exc.line == 1
    else:
        assert job.patch


@RELAXED
@given(st.dictionaries(st.sampled_from(["id", "patch", "type", "entity", "etag", "ref", "x"]), json_values))
def test_any_object_either_parses_or_names_a_field(obj: dict[str, object]) -> None:
    try:
        parse_line(orjson.dumps(obj), 4)
    except InputError as exc:
        assert exc.field in {"id", "patch", "type", "entity", "etag", "x"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        # Flat lines (settled by counting quote marks), whatever the spacing.
        (b'{"id":"a","patch":[{"op":"replace","path":"/name","value":1}],"id":"b"}', "id"),
        (b'{"id" : "a", "id":"b", "patch":[{"op":"remove","path":"/x"}]}', "id"),
        (b'{"id":"a","patch":[{"op":"replace","path":"/n","path":"/m","value":true}]}', "path"),
        (b'{"id":"a","patch":[{"op":"replace","path":"/n","value":"x","value":null}]}', "value"),
        # Quotes escaped inside a value, and nested values: the slower look.
        (b'{"id":"a","patch":[{"op":"replace","path":"/n","value":"say \\"hi\\"","value":"x"}]}', "value"),
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"k":1},"op":"remove"}]}', "op"),
    ],
)
def test_a_key_given_twice_is_named_flat_or_nested(raw: bytes, field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_line(raw, 3)
    assert (caught.value.field, caught.value.line) == (field, 3)
    assert "twice" in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"a","patch":[{"op":"replace","path":"/name","value":"say \\"id\\": \\"b\\""}]}',
        b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"id":"x","patch":[]}}]}',
        b'{"id":"a","ref":{"id":"b"},"patch":[{"op":"remove","path":"/x"}]}',
    ],
)
def test_a_key_spelled_inside_a_value_is_not_a_duplicate(raw: bytes) -> None:
    assert parse_line(raw, 1).id == "a"
