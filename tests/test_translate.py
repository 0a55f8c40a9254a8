"""``bulkpatch translate``: xcore job lines become DPS job lines, or are refused with why."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkpatch.cli import run_command
from bulkpatch.cli.exits import EXIT_FAILED_ITEMS, EXIT_OK, EXIT_USAGE
from bulkpatch.cli.translate import add_translate
from bulkpatch.entities import server_managed
from bulkpatch.errors import BulkpatchError, ConfigError
from bulkpatch.jobs import parse_line
from bulkpatch.translate import (
    Refusal,
    TranslateError,
    load_id_map,
    translate_job,
    translate_line,
    translate_stream,
)

OFFER_X = "0f4bc230-13df-11eb-bc55-c11be7252432"  # the seed page's instance id
OFFER_D = "personalizedOffer1234"
PLACEMENT_X = "xcore:offer-placement:124e0be5699743d3"  # the seed page's placement
PLACEMENT_D = "offerPlacement1234"
IDS = {OFFER_X: OFFER_D, PLACEMENT_X: PLACEMENT_D}
NS = "https://ns.adobe.com/experience/offer-management/content-component-"

# The request body of the legacy page "Update a personalized offer" (seeds/003, xcore API),
# as it is printed there.
SEED_XCORE_PATCH: list[dict[str, Any]] = [
    {
        "op": "add",
        "path": "/_instance/xdm:representations/-",
        "value": {
            "xdm:placement": "xcore:offer-placement:124e0be5699743d3",
            "xdm:components": [
                {
                    "@type": "https://ns.adobe.com/experience/offer-management/content-component-text",
                    "dc:format": "text/plain",
                    "dc:language": ["en"],
                    "xdm:content": "Here is your first sale offer!",
                }
            ],
        },
    }
]
SEED_DPS_JOB: dict[str, Any] = {
    "id": "personalizedOffer1234",
    "patch": [
        {
            "op": "add",
            "path": "/representations/-",
            "value": {
                "placement": "offerPlacement1234",
                "components": [
                    {
                        "type": "text",
                        "format": "text/plain",
                        "language": ["en"],
                        "content": "Here is your first sale offer!",
                    }
                ],
            },
        }
    ],
}
SEED_PAGE = Path("/work/shared/seeds/003_f1f7ef2da8ec78a3.txt")


def job(*ops: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": OFFER_X, "patch": list(ops), **extra}


def op(path: str, value: Any = None, name: str = "replace", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": name, "path": path, **extra}
    if name in ("add", "replace", "test"):
        out["value"] = value
    return out


def one_path(path: str, name: str = "remove") -> str:
    return str(translate_job(job(op(path, name=name)), IDS)["patch"][0]["path"])


def refusal(obj: dict[str, Any] | bytes, line: int = 7, ids: dict[str, str] = IDS) -> Refusal:
    raw = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    out = translate_line(raw, line, ids)
    assert isinstance(out, Refusal), out
    return out


# --------------------------------------------------------------------------- the seed


def test_seed_request_translates_to_the_dps_job() -> None:
    line = orjson.dumps({"id": OFFER_X, "patch": SEED_XCORE_PATCH})
    out = translate_line(line, 1, IDS)
    assert out == SEED_DPS_JOB
    assert json.dumps(out) == json.dumps(SEED_DPS_JOB)  # the key order too
    parse_line(orjson.dumps(out), 1)


def test_the_seed_copy_is_the_page_request() -> None:
    if not SEED_PAGE.exists():
        pytest.skip("the seed pages are not beside this checkout")
    body = re.search(r"-d '(\[.*?\])'", SEED_PAGE.read_text(), re.S)
    assert body is not None
    assert json.loads(body.group(1)) == SEED_XCORE_PATCH


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("xcore", "dps"),
    [
        ("/_instance/xdm:name", "/name"),
        ("/_instance/xdm:status", "/status"),
        ("/_instance/xdm:rank/xdm:priority", "/rank/priority"),
        ("/_instance/xdm:selectionConstraint/xdm:startDate", "/selectionConstraint/startDate"),
        ("/_instance/xdm:representations/-/xdm:placement", "/representations/-/placement"),
        ("/_instance/xdm:representations/0/xdm:components", "/representations/0/components"),
        (
            "/_instance/xdm:representations/0/xdm:components/1/dc:format",
            "/representations/0/components/1/format",
        ),
        (
            "/_instance/xdm:representations/0/xdm:components/1/dc:language",
            "/representations/0/components/1/language",
        ),
        (
            "/_instance/xdm:representations/0/xdm:components/1/xdm:content",
            "/representations/0/components/1/content",
        ),
        (
            "/_instance/xdm:representations/0/xdm:components/1/@type",
            "/representations/0/components/1/type",
        ),
        ("/_instance/xdm:representations/12", "/representations/12"),
        # RFC 6901 escapes: unescaped to map, escaped again after.
        ("/_instance/xdm:a~1b", "/a~1b"),
        ("/_instance/dc:a~0b~01", "/a~0b~01"),
        # Characteristics are the user's own names: kept as they are, prefix or not.
        ("/_instance/xdm:characteristics/dc:mine", "/characteristics/dc:mine"),
        ("/_instance/xdm:characteristics/plain~1key", "/characteristics/plain~1key"),
    ],
)
def test_pointer_tokens(xcore: str, dps: str) -> None:
    assert one_path(xcore) == dps


def test_from_of_move_and_copy() -> None:
    out = translate_job(
        job(
            op("/_instance/xdm:description", name="move", **{"from": "/_instance/xdm:name"}),
            op("/_instance/xdm:rank/xdm:priority", name="copy", **{"from": "/_instance/dc:x~1y"}),
        ),
        IDS,
    )
    assert out["patch"] == [
        {"op": "move", "path": "/description", "from": "/name"},
        {"op": "copy", "path": "/rank/priority", "from": "/x~1y"},
    ]


@pytest.mark.parametrize("kind", ["text", "html", "imagelink", "json"])
def test_component_types_by_last_segment(kind: str) -> None:
    out = translate_job(
        job(op("/_instance/xdm:representations/0/xdm:components/0/@type", NS + kind)), IDS
    )
    assert out["patch"][0] == {
        "op": "replace",
        "path": "/representations/0/components/0/type",
        "value": kind,
    }


def test_whole_representation_is_mapped_recursively() -> None:
    value = {
        "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
        "xdm:placement": PLACEMENT_X,
        "xdm:components": [
            {
                "@type": NS + "imagelink",
                "dc:format": "image/png",
                "xdm:content": "https://cdn.example.com/a.png",
                "xdm:deliveryURL": "https://cdn.example.com/a.png",
                "dc:language": ["en", "fr"],
            },
            {"@type": NS + "json", "dc:format": "application/json", "xdm:content": {"xdm:k": 1}},
        ],
    }
    out = translate_job(job(op("/_instance/xdm:representations/-", value, "add")), IDS)
    assert out["patch"][0]["value"] == {
        "channel": "https://ns.adobe.com/xdm/channel-types/web",
        "placement": PLACEMENT_D,
        "components": [
            {
                "type": "imagelink",
                "format": "image/png",
                "content": "https://cdn.example.com/a.png",
                "deliveryURL": "https://cdn.example.com/a.png",
                "language": ["en", "fr"],
            },
            # Content is the customer's: its keys are not schema names.
            {"type": "json", "format": "application/json", "content": {"xdm:k": 1}},
        ],
    }


def test_a_component_added_alone_and_a_components_array() -> None:
    component = {"@type": NS + "html", "dc:format": "text/html", "xdm:content": "<b>x</b>"}
    mapped = {"type": "html", "format": "text/html", "content": "<b>x</b>"}
    out = translate_job(
        job(
            op("/_instance/xdm:representations/0/xdm:components/-", component, "add"),
            op("/_instance/xdm:representations/1/xdm:components", [component], "test"),
        ),
        IDS,
    )
    assert [o["value"] for o in out["patch"]] == [mapped, [mapped]]


def test_ids_inside_values_and_the_job_id_are_mapped() -> None:
    ids = {**IDS, "xcore:tag:1": "tag1", "xcore:eligibility-rule:9": "offerRule9"}
    out = translate_job(
        job(
            op("/_instance/xdm:tags", ["xcore:tag:1"]),
            op("/_instance/xdm:eligibilityRule", "xcore:eligibility-rule:9"),
            op("/_instance/xdm:representations/0/xdm:placement", PLACEMENT_X),
        ),
        ids,
    )
    assert out["id"] == OFFER_D
    assert [o["value"] for o in out["patch"]] == [["tag1"], "offerRule9", PLACEMENT_D]


def test_type_etag_ref_pass_through_and_ignored_keys_are_dropped() -> None:
    line = job(
        op("/_instance/xdm:name", "n"),
        type="fallback",
        etag=3,
        ref={"ticket": "xcore:not-an-id-to-map"},
        line=4,
        error="old",
        _note="xcore:offer:zzz",
    )
    out = translate_job(line, IDS)
    assert out == {
        "id": OFFER_D,
        "patch": [{"op": "replace", "path": "/name", "value": "n"}],
        "type": "fallback",
        "etag": 3,
        "ref": {"ticket": "xcore:not-an-id-to-map"},
    }


def test_members_not_defined_for_an_op_are_dropped() -> None:
    out = translate_job(
        job({"op": "remove", "path": "/_instance/xdm:name", "value": PLACEMENT_X + "x"}), IDS
    )
    assert out["patch"] == [{"op": "remove", "path": "/name"}]


# --------------------------------------------------------------------------- refusals


def test_unmapped_job_id_is_refused_naming_it() -> None:
    bad = refusal(job(op("/_instance/xdm:name", "n"), id="1111-2222"), line=3)
    assert bad.kind == "translate"
    assert bad.field == "id"
    assert bad.message == "line 3, field 'id': not in the id map: id: '1111-2222'"
    assert bad.unmapped == ("1111-2222",)
    record = bad.record()
    assert record["line"] == 3
    assert record["unmapped"] == ["1111-2222"]
    assert orjson.loads(record["raw"])["id"] == "1111-2222"


def test_unmapped_placement_inside_a_value_is_refused_naming_op_and_location() -> None:
    obj = {"id": OFFER_X, "patch": SEED_XCORE_PATCH}
    bad = refusal(obj, line=5, ids={OFFER_X: OFFER_D})
    assert bad.field == "patch"
    assert bad.message == (
        "line 5, field 'patch': not in the id map: operation 0, value at "
        "/_instance/xdm:representations/-/xdm:placement: 'xcore:offer-placement:124e0be5699743d3'"
    )
    assert bad.unmapped == (PLACEMENT_X,)


def test_every_unmapped_id_of_a_line_is_listed_once() -> None:
    obj = job(op("/_instance/xdm:tags", ["xcore:tag:1", "xcore:tag:1", "xcore:tag:2"]), id="u")
    bad = refusal(obj, ids={})
    assert bad.unmapped == ("u", "xcore:tag:1", "xcore:tag:2")
    assert bad.message.count("'xcore:tag:1'") == 2  # both places named


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/xdm:name", "operation 0: path '/xdm:name' is not under /_instance/"),
        ("/_instance", "operation 0: path '/_instance' is not under /_instance/"),
        ("/name", "operation 0: path '/name' is not under /_instance/"),
        (
            "/_instance/repo:etag",
            "'repo:etag' is in namespace 'repo:', which has no DPS counterpart",
        ),
        ("/_instance/name", "'name' has no xdm: or dc: prefix"),
        ("/_instance/@id", "'@id' is a JSON-LD keyword with no DPS field"),
        ("/_instance/@type", "'@type' outside a component"),
        ("/_instance/xdm:representations/0/@type", "'@type' outside a component"),
        ("/_instance/xdm:", "'xdm:' names no field"),
    ],
)
def test_unmappable_paths_are_refused(path: str, reason: str) -> None:
    bad = refusal(job(op(path, name="remove")))
    assert bad.kind == "translate"
    assert bad.field == "patch"
    assert bad.message.startswith("line 7, field 'patch': operation 0")
    assert reason in bad.message


def test_unmappable_from_is_refused() -> None:
    bad = refusal(job(op("/_instance/xdm:a", name="copy", **{"from": "/other/xdm:name"})))
    assert "operation 0: from '/other/xdm:name' is not under /_instance/" in bad.message


@pytest.mark.parametrize(
    "type_uri",
    [
        NS + "video",
        "https://example.com/experience/offer-management/content-component-text",
        "text",
        7,
    ],
)
def test_unknown_component_type_is_refused(type_uri: Any) -> None:
    value = {"xdm:components": [{"@type": type_uri, "xdm:content": "x"}]}
    bad = refusal(
        job(op("/_instance/xdm:representations/-", value, "add"), op("/_instance/xdm:name", "n"))
    )
    assert bad.field == "patch"
    assert bad.message.startswith(
        "line 7, field 'patch': operation 0 (path '/_instance/xdm:representations/-'): "
        "/_instance/xdm:representations/-/xdm:components/0/@type: component type "
    )
    assert repr(type_uri) in bad.message


def test_unmappable_keys_inside_values_are_refused_naming_them() -> None:
    value = {"xdm:channel": "web", "repo:etag": 4}
    bad = refusal(
        job(op("/_instance/xdm:name", "n"), op("/_instance/xdm:representations/0", value))
    )
    assert bad.message == (
        "line 7, field 'patch': operation 1 (path '/_instance/xdm:representations/0'): key "
        "/_instance/xdm:representations/0/repo:etag in the value: 'repo:etag' is in "
        "namespace 'repo:', which has no DPS counterpart"
    )
    at_type = refusal(job(op("/_instance/xdm:representations/0", {"@type": NS + "text"})))
    assert "'@type' outside a component" in at_type.message


def test_two_keys_mapping_to_one_name_are_refused() -> None:
    bad = refusal(job(op("/_instance/xdm:rank", {"xdm:priority": 1, "dc:priority": 2})))
    assert "two keys of the object at /_instance/xdm:rank map to 'priority'" in bad.message


def test_a_translation_that_is_not_a_valid_dps_job_is_refused() -> None:
    # Valid xcore, but "/_instance/xdm:id" becomes the server-managed "/id".
    bad = refusal(job(op("/_instance/xdm:id", "x")))
    assert bad.kind == "translate"
    assert bad.message == (
        "line 7, field 'patch': the translated job is not a valid DPS job: "
        "operation 0: /id is server-managed and cannot be changed"
    )


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (b'{"id": "a", "patch": [', None, "not valid JSON"),
        (b"[1, 2]", None, "a job must be a JSON object"),
        (b'{"id": "a"}', "patch", "required"),
        (b'{"id": "a", "pacth": []}', "pacth", "unknown key"),
        (
            b'{"id": "a", "patch": [{"op": "zap", "path": "/_instance/xdm:name"}]}',
            "patch",
            "unknown op",
        ),
        # "-" mid-path (as in the issue's own example) is not RFC 6901 for a patch.
        (
            b'{"id": "a", "patch": [{"op": "remove", "path": "/_instance/xdm:r/-/xdm:p"}]}',
            "patch",
            "'-' before its last token",
        ),
    ],
)
def test_lines_that_are_not_jobs_are_input_errors(
    raw: bytes, field: str | None, reason: str
) -> None:
    bad = refusal(raw, line=9)
    assert bad.kind == "input"
    assert bad.field == field
    assert bad.message.startswith("line 9")
    assert reason in bad.message
    assert bad.record()["raw"] == raw.decode()


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"entity": "placements"}, "entity"), ({"delete": True, "patch": None}, "delete")],
)
def test_other_entities_and_actions_are_refused(extra: dict[str, Any], field: str) -> None:
    obj = {
        k: v for k, v in {**job(op("/_instance/xdm:name", "n")), **extra}.items() if v is not None
    }
    with pytest.raises(TranslateError) as caught:
        translate_job(obj, IDS)
    assert caught.value.field == field
    assert isinstance(caught.value, BulkpatchError)


# --------------------------------------------------------------------------- streaming


def lines(*items: dict[str, Any] | bytes) -> bytes:
    return b"".join((i if isinstance(i, bytes) else orjson.dumps(i)) + b"\n" for i in items)


GOOD = job(op("/_instance/xdm:status", "approved"))
GOOD_DPS = {"id": OFFER_D, "patch": [{"op": "replace", "path": "/status", "value": "approved"}]}


async def test_stream_keeps_input_order_and_numbers_refusals() -> None:
    source = io.BytesIO(
        b"\xef\xbb\xbf"
        + lines(
            GOOD,
            job(op("/_instance/xdm:name", "n"), id="nope"),
            b"",  # blank: skipped, still counted as a line number
            b"{broken",
            {"id": OFFER_X, "patch": SEED_XCORE_PATCH, "ref": 1},
            job(op("/name", "n")),
        )
        + b"\r\n"
    )
    out, refused = io.BytesIO(), io.BytesIO()
    counts = await translate_stream(source, IDS, out, refused)
    assert (counts.lines, counts.translated, counts.refused) == (5, 2, 3)
    assert [orjson.loads(x) for x in out.getvalue().splitlines()] == [
        GOOD_DPS,
        {**SEED_DPS_JOB, "ref": 1},
    ]
    records = [orjson.loads(x) for x in refused.getvalue().splitlines()]
    assert [(r["line"], r["error"]["kind"], r["error"]["field"]) for r in records] == [
        (2, "translate", "id"),
        (4, "input", None),
        (6, "translate", "patch"),
    ]
    assert records[0]["unmapped"] == ["nope"]
    assert records[1]["raw"] == "{broken"
    assert records[1]["error"]["message"].startswith("line 4: not valid JSON")
    assert "path '/name' is not under /_instance/" in records[2]["error"]["message"]


async def test_stream_refuses_an_over_long_line_without_keeping_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bulkpatch import source as source_module
    from bulkpatch import translate

    monkeypatch.setattr(source_module, "MAX_LINE", 1000)
    monkeypatch.setattr(translate, "MAX_LINE", 1000)
    big = job(op("/_instance/xdm:description", "x" * 5000))
    out, refused = io.BytesIO(), io.BytesIO()
    counts = await translate_stream(io.BytesIO(lines(big, GOOD)), IDS, out, refused)
    assert (counts.translated, counts.refused) == (1, 1)
    record = orjson.loads(refused.getvalue())
    assert record["line"] == 1
    assert "over the 1000-byte limit" in record["error"]["message"]


# --------------------------------------------------------------------------- id map


def test_id_map_loads_and_bad_lines_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ids.ndjson"
    path.write_text(
        f'{{"xcore": "{OFFER_X}", "dps": "{OFFER_D}"}}\n\n'
        f'{{"xcore": "{PLACEMENT_X}", "dps": "{PLACEMENT_D}", "_why": "seed"}}\n'
        f'{{"xcore": "{OFFER_X}", "dps": "{OFFER_D}"}}\n'  # the same pair again: harmless
    )
    assert load_id_map(path) == IDS
    for text, reason in [
        ("{nope", "line 2: not valid JSON"),
        ('{"xcore": "a"}', "line 2: 'dps' must be a non-empty string"),
        ('{"xcore": "a", "dsp": "b"}', "line 2: unknown key 'dsp'"),
        ('{"xcore": "a", "dps": "xcore:x:1"}', "line 2: 'dps' 'xcore:x:1' is an xcore id"),
        (f'{{"xcore": "{OFFER_X}", "dps": "other"}}', "line 2: '0f4bc230"),
    ]:
        path.write_text(f'{{"xcore": "{OFFER_X}", "dps": "{OFFER_D}"}}\n{text}\n')
        with pytest.raises(ConfigError, match=re.escape(reason)):
            load_id_map(path)


# --------------------------------------------------------------------------- the command


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bulkpatch")
    add_translate(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["translate", *argv])


def run(args: argparse.Namespace) -> int:
    return run_command(args)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ids = tmp_path / "ids.ndjson"
    ids.write_bytes(lines(*({"xcore": k, "dps": v} for k, v in IDS.items())))
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(lines(GOOD, {"id": OFFER_X, "patch": SEED_XCORE_PATCH}))
    return {
        "ids": ids,
        "jobs": jobs,
        "out": tmp_path / "dps.ndjson",
        "refused": tmp_path / "refused.ndjson",
    }


def test_command_translates_everything_exit_0(files: dict[str, Path]) -> None:
    args = parse(
        [
            str(files["jobs"]),
            "--from",
            "xcore",
            "--to",
            "dps",
            "--id-map",
            str(files["ids"]),
            "--output",
            str(files["out"]),
            "--refused",
            str(files["refused"]),
        ]
    )
    assert run(args) == EXIT_OK
    assert [orjson.loads(x) for x in files["out"].read_bytes().splitlines()] == [
        GOOD_DPS,
        SEED_DPS_JOB,
    ]
    assert files["refused"].read_bytes() == b""


def test_command_with_refusals_exit_1(files: dict[str, Path]) -> None:
    # No id map: every line is refused, naming the ids to map.
    args = parse(
        [
            str(files["jobs"]),
            "--from",
            "xcore",
            "--to",
            "dps",
            "--output",
            str(files["out"]),
            "--refused",
            str(files["refused"]),
        ]
    )
    assert run(args) == EXIT_FAILED_ITEMS
    assert files["out"].read_bytes() == b""
    unmapped = {
        i for r in files["refused"].read_bytes().splitlines() for i in orjson.loads(r)["unmapped"]
    }
    assert unmapped == {OFFER_X, PLACEMENT_X}


@pytest.mark.parametrize(
    "argv",
    [
        ["--from", "dps", "--to", "xcore"],
        ["--from", "xcore", "--to", "xcore"],
        ["--from", "xcore", "--to", "dps", "--id-map", "{missing}"],
        ["--from", "xcore", "--to", "dps", "--id-map", "{jobs}"],  # not an id map
        ["--from", "xcore", "--to", "dps", "--output", "{jobs}"],  # would truncate the input
        ["--from", "xcore", "--to", "dps", "--output", "{out}", "--refused", "{out}"],
        ["--from", "xcore", "--to", "dps", "--output", "{nodir}"],
    ],
)
def test_command_bad_usage_exit_2(files: dict[str, Path], argv: list[str]) -> None:
    where = {
        **files,
        "missing": files["ids"].with_name("missing"),
        "nodir": files["ids"].parent / "no" / "such" / "dir",
    }
    argv = [a.format(**{k: str(v) for k, v in where.items()}) for a in argv]
    args = parse([str(files["jobs"]), *argv])
    jobs_before = files["jobs"].read_bytes()
    assert run(args) == EXIT_USAGE
    assert files["jobs"].read_bytes() == jobs_before


def test_command_unreadable_input_exit_2(tmp_path: Path) -> None:
    args = parse([str(tmp_path / "absent.ndjson"), "--from", "xcore", "--to", "dps"])
    assert run(args) == EXIT_USAGE


@pytest.mark.parametrize("argv", [["--from", "legacy", "--to", "dps"], ["--to", "dps"]])
def test_unknown_or_missing_direction_is_an_argparse_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(argv)
    assert caught.value.code == 2


# --------------------------------------------------------------------------- property

# DPS field names (not server-managed), with the characters RFC 6901 escapes.
NAME = st.text("abcxyzAZ_~/", min_size=1, max_size=8).filter(
    lambda n: (
        not server_managed(n)
        and n not in ("characteristics", "content")
    )
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=12).filter(lambda s: not s.startswith("xcore:")),
    st.just(PLACEMENT_D),  # a DPS id: its xcore twin (xcore:...) goes in the xcore job
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAME, inner, max_size=3),
    max_leaves=10,
)
COMPONENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "html", "imagelink", "json"]), "format": st.text(max_size=8)}
)
REPRESENTATION = st.fixed_dictionaries(
    {"placement": st.just(PLACEMENT_D), "components": st.lists(COMPONENT, max_size=2)}
)
BACK = {v: k for k, v in IDS.items()}


def to_xcore(value: Any, in_components: bool = False) -> Any:
    """The xcore twin of a DPS value: the inverse of the rules under test."""
    if isinstance(value, dict):
        return {
            ("@type" if in_components and k == "type" else f"xdm:{k}"): (
                NS + v if in_components and k == "type" else to_xcore(v, k == "components")
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [to_xcore(v, in_components) for v in value]
    return BACK.get(value, value) if isinstance(value, str) else value


def esc(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@st.composite
def dps_op(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DPS operation and its xcore twin."""
    fields = draw(st.lists(NAME, min_size=1, max_size=3))
    index = draw(st.sampled_from(["", "/0", "/-"]))
    name = draw(st.sampled_from(["add", "replace", "test", "remove", "copy"]))
    if index == "/-":
        name = "add"
    dps_path = "".join("/" + esc(f) for f in fields) + index
    xcore_path = "/_instance" + "".join("/" + esc("xdm:" + f) for f in fields) + index
    dps: dict[str, Any] = {"op": name, "path": dps_path}
    xcore: dict[str, Any] = {"op": name, "path": xcore_path}
    if name == "copy":
        source = draw(NAME)
        dps["from"], xcore["from"] = "/" + esc(source), "/_instance/" + esc("dc:" + source)
    if name in ("add", "replace", "test"):
        value = draw(
            st.one_of(
                VALUE, st.lists(REPRESENTATION, max_size=2).map(lambda r: {"representations": r})
            )
        )
        dps["value"], xcore["value"] = value, to_xcore(value)
    return dps, xcore


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(dps_op(), min_size=1, max_size=4),
    offer_type=st.sampled_from([None, "personalized", "fallback"]),
    etag=st.one_of(st.none(), st.integers(0, 1000)),
)
def test_property_translated_xcore_jobs_are_the_dps_jobs_and_valid(
    ops: list[tuple[dict[str, Any], dict[str, Any]]], offer_type: str | None, etag: int | None
) -> None:
    extra: dict[str, Any] = {}
    if offer_type is not None:
        extra["type"] = offer_type
    if etag is not None:
        extra["etag"] = etag
    xcore_job = {"id": OFFER_X, "patch": [x for _, x in ops], **extra}
    expected = {"id": OFFER_D, "patch": [d for d, _ in ops], **extra}
    out = translate_line(orjson.dumps(xcore_job), 1, IDS)
    assert out == expected
    parsed = parse_line(orjson.dumps(out), 1)
    assert parsed.id == OFFER_D


async def test_command_reads_stdin_and_logs_refusals_without_refused_file() -> None:
    from structlog.testing import capture_logs

    from bulkpatch.cli.translate import run_translate

    args = parse(["--from", "xcore", "--to", "dps"])  # no id map, no --refused
    out = io.BytesIO()
    with capture_logs() as logs:
        code = await run_translate(args, stdin=io.BytesIO(lines(GOOD)), stdout=out)
    assert code == EXIT_FAILED_ITEMS
    assert out.getvalue() == b""
    events = [(e["event"], e.get("line")) for e in logs]
    assert events == [("translate.refused", 1), ("translate.summary", None)]
    assert logs[-1]["refused"] == 1
