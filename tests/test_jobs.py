"""Parsing one input line into a job: what is accepted, and how a bad line is named."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
        # Flat lines, whatever the spacing.
        (b'{"id":"a","patch":[{"op":"replace","path":"/name","value":1}],"id":"b"}', "id"),
        (b'{"id" : "a", "id":"b", "patch":[{"op":"remove","path":"/x"}]}', "id"),
        (b'{"id":"a","patch":[{"op":"replace","path":"/n","path":"/m","value":true}]}', "patch[0].path"),
        (b'{"id":"a","patch":[{"op":"replace","path":"/n","value":"x","value":null}]}', "patch[0].value"),
        # Quotes escaped inside a value, and nested values.
        (b'{"id":"a","patch":[{"op":"replace","path":"/n","value":"say \\"hi\\"","value":"x"}]}', "patch[0].value"),
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"k":1},"op":"remove"}]}', "patch[0].op"),
        # Inside a value, at any depth.
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"channel":"email","channel":"sms"}}]}', "patch[0].value.channel"),
        (b'{"id": "a", "patch": [{"op": "add", "path": "/c", "value": [1, {"k": {"x": 1, "x": 1}}]}]}', "patch[0].value[1].k.x"),
        # One op of a two-op patch: the first op is sound, the second has a member twice.
        (b'{"id":"a","patch":[{"op":"remove","path":"/x"},{"op":"replace","path":"/n","value":"a","value":"b"}]}', "patch[1].value"),
        (b'{"id":"a","patch":[{"op":"remove","path":"/x"},{"op":"copy","from":"/a","path":"/n","from":"/b"}]}', "patch[1].from"),
        (b'{"id":"a","patch":[{"op":"remove","path":"/x"},{"op":"move","from":"/a","path":"/n","from":"/b"}]}', "patch[1].from"),
        # The job's own members.
        (b'{"id":"a","ref":"r1","patch":[{"op":"remove","path":"/x"}],"ref":"r2"}', "ref"),
        (b'{"id":"a","ref":{"t":1,"t":2},"patch":[{"op":"remove","path":"/x"}]}', "ref.t"),
        (b'{"create":{"name":"a","status":"draft"},"create":{"name":"b","status":"draft"}}', "create"),
        (b'{"create":{"name":"a","status":"draft","name":"b"}}', "create.name"),
        (b'{"id":"X","delete":false,"delete":true}', "delete"),
        (b'{"id": "X", "delete": true, "delete": true}', "delete"),
        (b'{"id":"a","type":"fallback","patch":[{"op":"remove","path":"/x"}],"type":"personalized"}', "type"),
        (b'{"id":"a","etag":1,"patch":[{"op":"remove","path":"/x"}],"etag":2}', "etag"),
        (b'{"id":"a","patch":[{"op":"remove","path":"/x"}],"_note":{"a":1,"a":2}}', "_note.a"),
        # The same name spelt two ways is the same name (RFC 8259 § 7).
        (b'{"id":"a","\\u0069d":"b","patch":[{"op":"remove","path":"/x"}]}', "id"),
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"a":1,"\\u0061":2}}]}', "patch[0].value.a"),
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"a b":1,"a b":2}}]}', 'patch[0].value["a b"]'),
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"a b": 1, "a\\u0020b": 2}}]}', 'patch[0].value["a b"]'),
        (b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"a b": 1, "a b": 2, "ab": 3}}]}', 'patch[0].value["a b"]'),
    ],
)
def test_a_key_given_twice_is_named_flat_or_nested(raw: bytes, field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_line(raw, 3)
    assert (caught.value.field, caught.value.line) == (field, 3)
    assert "twice" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"a","patch":[{"op":"replace","path":"/name","value":"say \\"id\\": \\"b\\""}]}',
        b'{"id":"a","patch":[{"op":"add","path":"/c","value":{"id":"x","patch":[]}}]}',
        b'{"id":"a","ref":{"id":"b"},"patch":[{"op":"remove","path":"/x"}]}',
        b'{"id": "a", "ref": {"a b": 1, "ab": 2, "a\\u0020c": 3}, "patch": [{"op": "remove", "path": "/x"}]}',
    ],
)
def test_a_key_spelled_inside_a_value_is_not_a_duplicate(raw: bytes) -> None:
    assert parse_line(raw, 1).id == "a"


# ------------------------------------------------------------------ numbers (RFC 8259 § 6)

OUT_OF_RANGE = [
    "123456789012345678901234567890",
    "18446744073709551616",  # 2**64
    "18446744073709551617",
    "-9223372036854775809",  # -2**63 - 1
    "-18446744073709551616",
    "1" * 400,  # beyond any double, too
]
REMOVE = '[{"op":"remove","path":"/x"}]'


@pytest.mark.parametrize("number", OUT_OF_RANGE)
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ('{"id":"a","patch":[{"op":"replace","path":"/rank","value":%s}]}', "patch[0].value"),
        ('{"id": "a", "patch": [{"op": "replace", "path": "/rank", "value": %s}]}', "patch[0].value"),
        ('{"id":"a","patch":[{"op":"add","path":"/c","value":{"deep":[1,{"n":%s}]}}]}', "patch[0].value.deep[1].n"),
        ('{"id":"a","patch":[{"op":"remove","path":"/x"},{"op":"test","path":"/r","value":%s}]}', "patch[1].value"),
        ('{"create":{"name":"n","rank":{"priority":%s}}}', "create.rank.priority"),
        ('{"id":"a","ref":%s,"patch":' + REMOVE + "}", "ref"),
        ('{"id":"a","ref":{"ticket":[%s]},"patch":' + REMOVE + "}", "ref.ticket[0]"),
        ('{"id":"a","etag":%s,"patch":' + REMOVE + "}", "etag"),
        ('{"id":"a","patch":' + REMOVE + ',"_note":%s}', "_note"),
    ],
)
def test_an_integer_outside_64_bits_is_refused_naming_line_and_field(
    template: str, field: str, number: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_line((template % number).encode(), 3)
    message = str(caught.value)
    assert (caught.value.line, caught.value.field) == (3, field)
    assert message.startswith(f"line 3, field {field!r}: integer {number[:12]}")
    assert "is outside the 64-bit range" in message
    assert "\n" not in message
    assert len(message) < 200  # a long integer is shown cut


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18446744073709551615", 2**64 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", 2**63),
        ("0", 0),
        ("-0", 0),
        ("1.5", 1.5),
        ("1E2", 100.0),
        ("123456789012345678901234567890.0", 1.2345678901234568e29),
        ("1e-400", 0.0),
    ],
)
@pytest.mark.parametrize("spaced", [False, True])
def test_an_integer_stays_an_integer_and_a_decimal_the_nearest_double(
    text: str, expected: float, spaced: bool
) -> None:
    sep = " " if spaced else ""
    raw = f'{{"id":"a",{sep}"patch":[{{"op":"replace","path":"/rank","value":{text}}}],"ref":[{text}]}}'
    job = parse_line(raw.encode(), 1)
    for value in (job.patch[0]["value"], job.ref[0]):
        assert value == expected
        assert type(value) is type(expected)


@RELAXED
@given(st.integers(-(2**70), 2**70) | st.integers(), st.booleans())
def test_any_integer_is_kept_exactly_or_refused(number: int, spaced: bool) -> None:
    obj = {"id": "a", "patch": [{"op": "add", "path": "/c", "value": {"n": [number]}}]}
    raw = json.dumps(obj, separators=(", ", ": ") if spaced else (",", ":")).encode()
    if -(2**63) <= number <= 2**64 - 1:
        value = parse_line(raw, 2).patch[0]["value"]["n"][0]
        assert (value, type(value)) == (number, int)
    else:
        with pytest.raises(InputError) as caught:
            parse_line(raw, 2)
        assert (caught.value.line, caught.value.field) == (2, "patch[0].value.n[0]")


# ---------------------------------------------- names given twice (RFC 8259 § 4), at any depth


@dataclass
class Obj:
    """A JSON object as written: its members in order, a name possibly given twice."""

    pairs: list[tuple[str, Any]]


def render(node: Any, spaced: bool, escaped: bool) -> str:
    """``node`` as JSON text, compact or spaced, its names plain or all \\u-escaped."""
    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(node, Obj):
        members = (name(k, escaped) + colon + render(v, spaced, escaped) for k, v in node.pairs)
        return "{" + comma.join(members) + "}"
    if isinstance(node, list):
        return "[" + comma.join(render(v, spaced, escaped) for v in node) + "]"
    return json.dumps(node, ensure_ascii=False)


def name(key: str, escaped: bool) -> str:
    if not escaped:
        return json.dumps(key, ensure_ascii=False)
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else json.dumps(c)[1:-1] for c in key) + '"'


def plain(node: Any) -> Any:
    """What a parser makes of ``node`` (an object with unique names)."""
    if isinstance(node, Obj):
        return {k: plain(v) for k, v in node.pairs}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


# Names with spaces, quotes and escapes as well as any text: the quick look at a line
# takes its whitespace out, and must not be fooled by what that does to strings.
names = st.text(st.sampled_from('a b"\\\té'), max_size=4) | st.text(max_size=4)


leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | names
)


def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    return st.dictionaries(names, children, max_size=4).map(lambda d: Obj(list(d.items())))


trees = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | objects(inner), max_leaves=12)


@st.composite
def with_a_name_twice(draw: st.DrawFn) -> Obj | list[Any]:
    """A tree with one object, at a random depth, that gives one of its names twice."""
    pairs = list(draw(st.dictionaries(names, trees, min_size=1, max_size=4)).items())
    again = draw(st.sampled_from(pairs))[0]
    node: Any = Obj([*pairs, (again, draw(trees))] if draw(st.booleans()) else [(again, draw(trees)), *pairs])
    for _ in range(draw(st.integers(0, 4))):
        sibling = draw(trees)
        if draw(st.booleans()):
            node = [sibling, node] if draw(st.booleans()) else [node, sibling]
        else:
            key = draw(names)
            node = Obj([(key, node)] + ([] if isinstance(sibling, Obj) else [(key + "'", sibling)]))
    assert isinstance(node, Obj | list)
    return node


def in_a_job(tree_text: str, where: int) -> bytes:
    """A job holding ``tree_text`` in its patch, its ref, the entity it creates, or a note."""
    return (
        '{"id":"a","patch":[{"op":"add","path":"/c","value":' + tree_text + "}]}",
        '{"id":"a","ref":' + tree_text + ',"patch":' + REMOVE + "}",
        '{"create":{"name":"n","x":' + tree_text + "}}",
        '{"id":"a","patch":' + REMOVE + ',"_note":' + tree_text + "}",
    )[where].encode()


@RELAXED
@given(with_a_name_twice(), st.integers(0, 3), st.booleans(), st.booleans())
def test_a_name_given_twice_at_any_depth_is_refused(
    tree: Obj | list[Any], where: int, spaced: bool, escaped: bool
) -> None:
    with pytest.raises(InputError) as caught:
        parse_line(in_a_job(render(tree, spaced, escaped), where), 8)
    assert caught.value.line == 8
    assert "given twice" in str(caught.value)


@RELAXED
@given(trees, st.integers(0, 3), st.booleans(), st.booleans())
def test_names_given_once_are_read_exactly_however_written(
    tree: Any, where: int, spaced: bool, escaped: bool
) -> None:
    job = parse_line(in_a_job(render(tree, spaced, escaped), where), 8)
    if where == 0:
        assert job.patch[0]["value"] == plain(tree)
    elif where == 1:
        assert job.ref == plain(tree)
    elif where == 2:
        assert job.create == {"name": "n", "x": plain(tree)}


@pytest.mark.parametrize("etag", [-1, 2**63, 18446744073709551615, 1.5, True, "3"])
def test_an_etag_outside_the_signed_64_bit_range_is_an_input_error_naming_it(etag: object) -> None:
    line = orjson.dumps({"id": "o1", "etag": etag, "patch": [{"op": "replace", "path": "/name", "value": "x"}]})
    with pytest.raises(InputError) as caught:
        parse_line(line, 7)
    assert caught.value.field == "etag"
    assert caught.value.line == 7


def test_the_largest_etag_is_accepted() -> None:
    line = orjson.dumps({"id": "o1", "etag": 2**63 - 1, "patch": [{"op": "replace", "path": "/name", "value": "x"}]})
    assert parse_line(line, 1).etag == 2**63 - 1


def _nested(levels: int) -> bytes:
    """A value ``levels`` objects deep, as JSON text (no encoder recurses that deep)."""
    return b'{"a":' * levels + b'"x"' + b"}" * levels


@pytest.mark.parametrize("levels", [129, 300, 1000])
def test_a_line_nested_too_deep_is_an_input_error_naming_the_line(levels: int) -> None:
    line = b'{"id":"o1","patch":[{"op":"replace","path":"/characteristics","value":' + _nested(levels) + b"}]}"
    with pytest.raises(InputError, match="deeper than 128") as caught:
        parse_line(line, 4)
    assert caught.value.line == 4


def test_a_line_nested_to_the_limit_is_a_job() -> None:
    # The job object and the patch array and the op take 3 levels: 125 more in the value.
    line = b'{"id":"o1","patch":[{"op":"replace","path":"/characteristics","value":' + _nested(125) + b"}]}"
    assert parse_line(line, 1).patch[0]["op"] == "replace"
