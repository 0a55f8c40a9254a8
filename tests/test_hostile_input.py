"""A hostile input corpus: every line gets one clear outcome, and nothing invalid is sent.

Each case is one line and what must become of it: ``ok`` (a valid job, however odd,
applied to exactly the entity it names) or an ``input`` error naming the line and, where
there is one, the field.
"""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkpatch import verify
from bulkpatch.auth import Credentials
from bulkpatch.config import RunConfig
from bulkpatch.engine import Engine
from bulkpatch.errors import InputError
from bulkpatch.jobs import parse_line
from bulkpatch.simulator import RunningSimulator, SimConfig, running
from bulkpatch.source import read_jobs

OK = "ok"
NAME = [{"op": "replace", "path": "/name", "value": "hostile"}]


def job(entity_id: Any, patch: Any = None, **extra: Any) -> bytes:
    return orjson.dumps({"id": entity_id, "patch": NAME if patch is None else patch, **extra})


ODD_IDS = [
    "a/b",
    "..",
    ".",
    "a?b=c",
    "a#frag",
    "two words",
    "offre-été-日本",
    "50%2F50",
    "~tilde",
    "a+b&c",
]

# (line bytes, expected): expected is OK, or ("input", field or None)
CASES: list[tuple[bytes, Any]] = [
    (b'{"id": "a", "patch": [', ("input", None)),  # truncated
    # Nested 300 deep: orjson reads it but cannot write it back (it used to stop the run).
    (
        b'{"id": "seed-1", "patch": [{"op": "add", "path": "/characteristics/deep", "value": '
        + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}]}",
        ("input", None),
    ),
    (b'{"id": "a', ("input", None)),
    (
        b'{"id": "a", "patch": [{"op": "add", "path": "/x", "value": '
        + b"[" * 2000
        + b"]" * 2000
        + b"}]}",
        ("input", None),
    ),
    (
        job(
            "seed-1",
            [
                {
                    "op": "add",
                    "path": "/characteristics/deep",
                    "value": orjson.loads(b"[" * 100 + b"]" * 100),
                }
            ],
        ),
        OK,
    ),
    # A raw NUL byte: in the first 64 KiB it refuses the whole input (not UTF-8 text:
    # test_bad_usage), after them it fails its line (test_source).
    (job("a\x00b"), ("input", "id")),  # escaped NUL in an id
    (job("seed-2", [{"op": "add", "path": "/characteristics/nul", "value": "x\x00y"}]), OK),
    (b'{"id": "caf\xe9", "patch": []}', ("input", None)),  # Latin-1, not UTF-8
    (b'{"id": "\\ud800", "patch": []}', ("input", None)),  # lone surrogate
    *((job(odd), OK) for odd in ODD_IDS),
    (job(42), ("input", "id")),
    (job(None), ("input", "id")),
    (job(["a"]), ("input", "id")),
    (job(""), ("input", "id")),
    (job("x" * 600), ("input", "id")),
    (
        b'{"id": "seed-3", "patch": [{"op": "remove", "path": "/description"}], "id": "seed-4"}',
        ("input", "id"),
    ),
    (
        b'{"id": "seed-3", "patch": [], "patch": [{"op": "remove", "path": "/description"}]}',
        ("input", "patch"),
    ),
    (
        b'{"id": "seed-3", "patch": [{"op": "add", "op": "remove", "path": "/x", "value": 1}]}',
        ("input", "patch[0].op"),
    ),
    # A name given twice deeper down, or in the second operation.
    (
        b'{"id":"seed-3","patch":[{"op":"add","path":"/characteristics/c","value":{"channel":"email","channel":"sms"}}]}',
        ("input", "patch[0].value.channel"),
    ),
    (
        b'{"id": "seed-3", "patch": [{"op": "remove", "path": "/description"},'
        b' {"op": "copy", "from": "/name", "path": "/characteristics/n", "from": "/description"}]}',
        ("input", "patch[1].from"),
    ),
    (b'{"id":"seed-3","delete":false,"delete":true}', ("input", "delete")),
    # Integers the service would get rounded (RFC 8259 § 6), however written.
    (
        b'{"id":"seed-3","patch":[{"op":"add","path":"/characteristics/n","value":18446744073709551617}]}',
        ("input", "patch[0].value"),
    ),
    (
        b'{"id": "seed-3", "patch": [{"op": "add", "path": "/characteristics/n", "value": [-9223372036854775809]}]}',
        ("input", "patch[0].value[0]"),
    ),
    (job("seed-3", ref="x").replace(b'"x"', b"123456789012345678901234567890"), ("input", "ref")),
    (
        job("seed-5", [{"op": "add", "path": "/characteristics/a~1b~0c", "value": "slash-tilde"}]),
        OK,
    ),
    (
        job("seed-6", [{"op": "add", "path": "/characteristics/a~2", "value": 1}]),
        ("input", "patch"),
    ),
    (job("seed-6", [{"op": "add", "path": "/tags/-/x", "value": 1}]), ("input", "patch")),
    (
        job(
            "seed-7",
            [{"op": "replace", "path": "/name", "value": "n", "from": "/x", "comment": "ignored"}],
        ),
        OK,
    ),
    (job("seed-8", [{"op": "remove", "path": "/description", "value": "ignored"}]), OK),
    (b"{}", ("input", "id")),
    (b"[]", ("input", None)),
    (b'"a string"', ("input", None)),
    (b"42", ("input", None)),
    (b"null", ("input", None)),
    (b"true", ("input", None)),
    (job("seed-9") + b"\r", OK),  # CRLF ending (the LF is the line's end)
    (job("seed-9", pacth=NAME), ("input", "pacth")),
    (job("seed-10", _comment="kept for people", line=3, error={"kind": "http"}), OK),
    (
        job(
            "seed-11",
            [{"op": "add", "path": f"/characteristics/k{i}", "value": i} for i in range(300)],
        ),
        OK,
    ),
    (job("seed-12", etag="1"), ("input", "etag")),
    (job("seed-12", etag=1.0), ("input", "etag")),
    (job("seed-12", type="PERSONALIZED"), ("input", "type")),
    (job("seed-12", entity="offers "), ("input", "entity")),
    (job("seed-12", [{"op": "ADD", "path": "/x", "value": 1}]), ("input", "patch")),
    (job("seed-12", [{"op": "add", "path": 5, "value": 1}]), ("input", "patch")),
    (job("seed-12", [{"op": "test", "path": "/name"}]), ("input", "patch")),
    (job("seed-12", [{"op": "move", "path": "/x"}]), ("input", "patch")),
    (
        job("seed-12", [{"op": "replace", "path": "/createdByClientId", "value": "me"}]),
        ("input", "patch"),
    ),
    (job("seed-12") + b" trailing", ("input", None)),
    (job("seed-12") + job("seed-13"), ("input", None)),
    (b"\xef\xbb\xbf" + job("seed-12"), ("input", None)),  # a BOM is only allowed on line 1
    (b"x" * (10 * 1024 * 1024), ("input", None)),  # a 10 MB line
    (job("seed-14", [{"op": "replace", "path": "/name", "value": "ünïcødé ✓ 日本語"}]), OK),
]


async def run_lines(sim: RunningSimulator, data: bytes) -> list[dict[str, Any]]:
    config = RunConfig(
        credentials=Credentials(access_token=sim.config.access_token),
        endpoint=sim.endpoint,
        api_key="hostile",
        org_id="H@AdobeOrg",
        sandbox="h",
        rate=0,
        concurrency=8,
        timeout=5,
    )
    return [o.to_dict() async for o in Engine(config).run(read_jobs(io.BytesIO(data)))]


async def test_hostile_corpus_one_clear_outcome_per_line_nothing_invalid_sent() -> None:
    assert len(CASES) >= 40
    ids = {f"seed-{i}" for i in range(1, 15)} | set(ODD_IDS)
    async with running(SimConfig()) as sim:
        template = sim.store.dump().get("placements", [])[0]
        for entity_id in ids:
            sim.store.put(
                "offers/personalized",
                {
                    **template,
                    "id": entity_id,
                    "name": "n",
                    "description": "d",
                    "tags": [],
                    "characteristics": {},
                },
            )
        # Line 1 carries a BOM (allowed there); blank lines in between are counted.
        lines = [b"\xef\xbb\xbf" + job("seed-1")] + [b""] + [raw for raw, _ in CASES] + [b"   "]
        data = b"\n".join(lines) + b"\n"
        outcomes = await run_lines(sim, data)
        stats = sim.simulator.stats.as_dict(sim.store)

    by_line = {o["line"]: o for o in outcomes}
    assert len(by_line) == len(outcomes) == 1 + len(CASES)
    assert by_line[1]["ok"] is True
    for n, (raw, expected) in enumerate(CASES, start=3):
        outcome = by_line[n]
        if expected == OK:
            assert outcome["ok"] is True, (n, raw[:80], outcome.get("error"))
        else:
            _, field = expected
            assert outcome["ok"] is False, (n, raw[:80])
            assert outcome["error"]["kind"] == "input", (n, outcome["error"])
            assert outcome["error"]["message"].startswith(f"line {n}"), outcome["error"]
            assert outcome["error"]["field"] == field, (n, raw[:80], outcome["error"])
            assert len(outcome["job"].encode()) <= 64 * 1024 * 2  # the cut raw line, not 10 MB
            assert outcome["bytes"] >= min(len(raw), 1)
    expected_ok = 1 + sum(expected == OK for _, expected in CASES)
    assert sum(o["ok"] for o in outcomes) == expected_ok
    # Nothing was sent for an invalid line: one PATCH per valid job, no more.
    assert stats["requests"]["PATCH"] == {"200": expected_ok}


async def test_odd_ids_reach_exactly_their_entity() -> None:
    async with running(SimConfig()) as sim:
        template = sim.store.dump()["placements"][0]
        for entity_id in [*ODD_IDS, "a", "b", "50/50"]:
            sim.store.put("offers/personalized", {**template, "id": entity_id, "name": "before"})
        data = b"".join(
            job(i, [{"op": "replace", "path": "/name", "value": f"after {i}"}]) + b"\n"
            for i in ODD_IDS
        )
        outcomes = await run_lines(sim, data)
        assert all(o["ok"] for o in outcomes), outcomes
        for entity_id in ODD_IDS:
            doc = sim.store.get("offers/personalized", entity_id)
            assert doc is not None
            assert doc["name"] == f"after {entity_id}"
        for bystander in ("a", "b", "50/50"):
            doc = sim.store.get("offers/personalized", bystander)
            assert doc is not None
            assert doc["name"] == "before"


RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=200)
keys = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


# A bare "-" before the last token is refused by design (it names the end of an array,
# which has no members to go into); as an object key it is the one name that cannot be
# addressed in the middle of a path.
inner_keys = keys.filter(lambda k: k != "-")


@RELAXED
@given(st.lists(inner_keys, min_size=0, max_size=3), keys, st.integers(0, 100))
def test_escaped_pointers_are_accepted_and_address_exactly_their_key(
    inner: list[str], last: str, value: int
) -> None:
    tokens = [*inner, last]
    pointer = "/characteristics/" + "/".join(escape(t) for t in tokens)
    parsed = parse_line(job("o", [{"op": "add", "path": pointer, "value": value}]), 1)
    assert parsed.patch[0]["path"] == pointer
    doc: dict[str, Any] = {"characteristics": {}}
    container = doc["characteristics"]
    for token in tokens[:-1]:
        container = container.setdefault(token, {})
    after = verify.apply(parsed.patch, doc)
    assert verify.resolve(after, pointer) == value
    node = after["characteristics"]
    for token in tokens:
        node = node[token]
    assert node == value


@RELAXED
@given(st.text(max_size=12))
def test_any_path_string_is_either_a_valid_pointer_or_a_named_input_error(path: str) -> None:
    try:
        parse_line(job("o", [{"op": "replace", "path": path, "value": 1}]), 9)
    except InputError as exc:
        assert exc.line == 9
        assert exc.field == "patch"
    else:
        assert path.startswith("/")
        assert "-" not in path.split("/")[1:-1]


@pytest.mark.parametrize("line_ending", [b"\n", b"\r\n"])
async def test_line_numbers_count_blank_lines_whatever_the_line_ending(line_ending: bytes) -> None:
    async with running(SimConfig(offers=3)) as sim:
        rows = [job("personalizedOffer000001"), b"", b"{bad", b"  ", job("personalizedOffer000002")]
        outcomes = await run_lines(sim, line_ending.join(rows) + line_ending)
    assert sorted((o["line"], o["ok"]) for o in outcomes) == [(1, True), (3, False), (5, True)]
