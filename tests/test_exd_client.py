"""Experience Decisioning's six kinds, client side, over loopback against the simulator:
export → transform → run → export round trips, plan, backup and rollback, and the
settings and refusals that set these kinds apart (README "Decisioning")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog.testing

from bulkpatch import Credentials, perform, verify
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError
from bulkpatch.export import export_entities
from bulkpatch.runner import RunOutputs, run_jobs
from bulkpatch.simulator import RunningSimulator, SimConfig, running
from bulkpatch.simulator.config import FaultRates
from tests.test_run_cli import count, sim_stats

SCHEMA = "https://ns.adobe.com/acme/schemas/offer-items"
# What the server sets on every write (and the receipt-only members): not compared.
MANAGED = frozenset({"etag", "modified", "lastModifiedBy", "lastModifiedByClientId", "simConcurrentWriter"})
DESCRIPTION = "/description"
ITEM = "/_experience/decisioning/decisionitem"

# Per kind: two patches, applied to every entity of the kind in this order (the second
# reads what the first wrote where it can, so the order shows).
CHANGES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "offer-items": (
        [{"op": "replace", "path": f"{ITEM}/itemPriority", "value": 7}],
        [{"op": "copy", "from": f"{ITEM}/itemPriority", "path": f"{ITEM}/itemDescription"},
         {"op": "replace", "path": "/_experience/decisioning/offeritem/lifecycleStatus", "value": "draft"}],
    ),
    "item-collections": (
        [{"op": "replace", "path": "/name", "value": "Renamed collection"}],
        [{"op": "copy", "from": "/name", "path": DESCRIPTION}],
    ),
    "selection-strategies": (
        [{"op": "replace", "path": "/rank/priority", "value": 3}],
        [{"op": "replace", "path": DESCRIPTION, "value": "re-ranked"}],
    ),
    "ranking-formulas": (
        [{"op": "replace", "path": DESCRIPTION, "value": "nightly"}],
        [{"op": "add", "path": "/labels", "value": ["a"]}, {"op": "add", "path": "/labels/-", "value": "b"}],
    ),
    "eligibility-rules": (
        [{"op": "replace", "path": "/name", "value": "Renamed rule"}],
        [{"op": "copy", "from": "/name", "path": DESCRIPTION}],
    ),
    "exd-placements": (
        [{"op": "replace", "path": "/status", "value": "archived"}],
        [{"op": "replace", "path": DESCRIPTION, "value": "archived nightly"}],
    ),
}  # fmt: skip
WHOLE = ("ranking-formulas", "eligibility-rules", "exd-placements")


def config(sim: RunningSimulator, **settings: Any) -> RunConfig:
    base: dict[str, Any] = {
        "credentials": Credentials(access_token=sim.config.access_token),
        "endpoint": sim.endpoint,
        "api_key": "test-client",
        "org_id": "ABC123@AdobeOrg",
        "sandbox": "prod",
        "rate": 0,
        "schema_id": SCHEMA,
        "preflight": True,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
    }
    return RunConfig(**{**base, **settings})


def comparable(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in MANAGED}
    for home in ("characteristics", "_experience"):
        if isinstance(out.get(home), dict):
            out[home] = {k: v for k, v in out[home].items() if k not in MANAGED}
    return out


async def export(sim: RunningSimulator, entity: str, **settings: Any) -> dict[str, dict[str, Any]]:
    docs = export_entities(config(sim, **settings), entity=entity, offer_type=None, page_size=3)
    return {doc["id"]: doc async for doc in docs}


def write_jobs(path: Path, jobs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(j, option=orjson.OPT_APPEND_NEWLINE) for j in jobs))
    return path


def outcomes(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def run(
    sim: RunningSimulator, source: Path, receipts: Path, *, rollback: bool = False, **settings: Any
) -> list[dict[str, Any]]:
    backup = settings.pop("backup", None)
    await run_jobs(
        config(sim, **settings),
        source,
        RunOutputs(receipts=receipts, backup=backup, overwrite=True),
        rollback=rollback,
    )
    return outcomes(receipts)


def sim_config(**settings: Any) -> SimConfig:
    return SimConfig(items=4, examples=True, schema_id=SCHEMA, fault_seed=3, **settings)


@pytest.mark.parametrize("entity", list(CHANGES))
async def test_export_transform_run_export_applies_every_job_once_in_order(
    entity: str, tmp_path: Path
) -> None:
    first, second = CHANGES[entity]
    async with running(sim_config()) as sim:
        start = await export(sim, entity)
        jobs = [
            {"id": i, "entity": entity, "patch": patch} for patch in (first, second) for i in start
        ]
        source = write_jobs(tmp_path / "jobs.ndjson", jobs)
        plan = await run(sim, source, tmp_path / "plan.ndjson", plan=True)
        assert await export(sim, entity) == start  # a plan writes nothing
        done = await run(sim, source, tmp_path / "out.ndjson", backup=tmp_path / "backup.ndjson")
        end = await export(sim, entity)
        stats = await sim_stats(sim.base_url)
        undone = await run(sim, tmp_path / "backup.ndjson", tmp_path / "undo.ndjson", rollback=True)
        restored = await export(sim, entity)
    assert start, "the simulator seeds at least one entity of each kind"
    expected = {i: verify.apply(second, verify.apply(first, doc)) for i, doc in start.items()}
    assert [o["ok"] for o in done] == [True] * len(jobs), done
    assert {i: comparable(d) for i, d in end.items()} == {i: comparable(d) for i, d in expected.items()}
    assert all(end[i]["etag"] == start[i]["etag"] + 2 for i in start)
    assert [o["plan"] for o in plan] == ["change"] * len(jobs), plan
    assert {c["path"] for o in plan for c in o["changes"]} >= {first[0]["path"]}
    # A whole-object kind is written with PUT, the others with JSON Patch.
    assert count(stats, "PUT" if entity in WHOLE else "PATCH") == len(jobs)
    assert [o["ok"] for o in undone] == [True] * len(start), undone
    assert {i: comparable(d) for i, d in restored.items()} == {i: comparable(d) for i, d in start.items()}


def rule_of_both(sim: RunningSimulator) -> tuple[str, str]:
    """A Decision Management rule and an eligibility rule, both on /offer-rules."""
    sim.store.put("offer-rules", {"id": "offerRule0001", "etag": 1, "name": "DM rule", "condition": {}})
    rules = sim.store.dump()["offer-rules"]
    dm = next(r["id"] for r in rules if r.get("exdRule") is not True)
    exd = next(r["id"] for r in rules if r.get("exdRule") is True)
    return dm, exd


async def test_an_item_job_first_without_a_schema_id_stops_the_run_before_any_request(
    tmp_path: Path,
) -> None:
    job = {"id": "offerItem000001", "entity": "offer-items", "patch": CHANGES["offer-items"][0]}
    source = write_jobs(tmp_path / "jobs.ndjson", [job])
    async with running(sim_config()) as sim:
        with pytest.raises(ConfigError) as refused:
            await run(sim, source, tmp_path / "out.ndjson", schema_id=None)
        stats = await sim_stats(sim.base_url)
    assert "--schema-id" in refused.value.flag_message()
    assert "line 1" in str(refused.value)
    assert stats["requests"] == {}


async def test_an_item_job_read_later_without_a_schema_id_fails_as_input_and_sends_nothing(
    tmp_path: Path,
) -> None:
    jobs = [
        {"id": "personalizedOffer1234", "patch": [{"op": "replace", "path": "/name", "value": "x"}]},
        {"id": "offerItem000001", "entity": "offer-items", "patch": CHANGES["offer-items"][0]},
    ]
    async with running(sim_config()) as sim:
        before = sim.store.dump()["offer-items"]
        done = await run(sim, write_jobs(tmp_path / "jobs.ndjson", jobs), tmp_path / "o.ndjson", schema_id=None)
        stats = await sim_stats(sim.base_url)
        assert sim.store.dump()["offer-items"] == before
    by_line = {o["line"]: o for o in done}
    assert by_line[1]["ok"]
    assert by_line[2]["error"]["kind"] == "input"
    assert "BULKPATCH_SCHEMA_ID" in by_line[2]["error"]["message"]
    assert count(stats, "GET") == 1  # the preflight's list of offers, nothing of items
    assert count(stats, "PATCH") == 1


async def test_the_rules_on_one_path_are_told_apart(tmp_path: Path) -> None:
    async with running(sim_config()) as sim:
        dm, exd = rule_of_both(sim)
        eligibility = await export(sim, "eligibility-rules")
        decision_management = await export(sim, "offer-rules")
        jobs = [
            {"id": exd, "entity": "offer-rules", "patch": [{"op": "replace", "path": "/name", "value": "x"}]},
            {"id": dm, "entity": "eligibility-rules", "patch": [{"op": "replace", "path": "/name", "value": "x"}]},
        ]
        before = sim.store.dump()["offer-rules"]
        done = await run(sim, write_jobs(tmp_path / "jobs.ndjson", jobs), tmp_path / "o.ndjson")
        assert sim.store.dump()["offer-rules"] == before
    assert (exd in eligibility, dm in eligibility) == (True, False)
    assert (dm in decision_management, exd in decision_management) == (True, False)
    by_line = {o["line"]: o for o in done}
    assert by_line[1]["error"]["kind"] == "input"
    assert "eligibility-rules" in by_line[1]["error"]["message"]
    assert "offer-rules" in by_line[1]["error"]["message"]
    assert by_line[2]["error"]["kind"] == "input"
    assert "name entity 'offer-rules'" in by_line[2]["error"]["message"]


async def test_an_exd_placement_is_not_deleted_but_archived(tmp_path: Path) -> None:
    job = {"id": "exdPlacement1234", "entity": "exd-placements", "delete": True}
    async with running(sim_config()) as sim:
        done = await run(
            sim, write_jobs(tmp_path / "jobs.ndjson", [job]), tmp_path / "o.ndjson", allow_delete=True
        )
        stats = await sim_stats(sim.base_url)
    assert done[0]["error"] == {
        "kind": "input",
        "message": "exd-placements cannot be deleted through the API; set status to archived",
    }
    assert count(stats, "DELETE") == 0


async def test_a_whole_object_write_rebases_on_another_writers_change(tmp_path: Path) -> None:
    faults = FaultRates(concurrent_writer=0.6, error_503=0.1, drop_after=0.1)
    jobs = [
        {"id": "rankingFormula1234", "entity": "ranking-formulas",
         "patch": [{"op": "add", "path": "/labels", "value": []}]},
        *({"id": "rankingFormula1234", "entity": "ranking-formulas",
           "patch": [{"op": "add", "path": "/labels/-", "value": n}]} for n in range(12)),
    ]  # fmt: skip
    async with running(sim_config(faults=faults)) as sim:
        start = await export(sim, "ranking-formulas")
        done = await run(sim, write_jobs(tmp_path / "jobs.ndjson", jobs), tmp_path / "o.ndjson", update_verb="patch")
        end = await export(sim, "ranking-formulas")
        stats = await sim_stats(sim.base_url)
    assert [o["ok"] for o in done] == [True] * len(jobs), done
    assert end["rankingFormula1234"]["labels"] == list(range(12))  # each once, in order
    assert {k: v for k, v in comparable(end["rankingFormula1234"]).items() if k not in ("labels", "_sim")} == {
        k: v for k, v in comparable(start["rankingFormula1234"]).items() if k != "_sim"
    }
    assert sum(o.get("conflicts", 0) for o in done) > 0
    assert count(stats, "PUT") == 0  # --update-verb patch: a PATCH with the whole object


async def test_the_xcore_dialect_refuses_a_decisioning_job_first(tmp_path: Path) -> None:
    job = {"id": "itemCollection1234", "entity": "item-collections", "patch": CHANGES["item-collections"][0]}
    source = write_jobs(tmp_path / "jobs.ndjson", [job])
    async with running(sim_config()) as sim:
        with pytest.raises(ConfigError, match="xcore dialect cannot speak it"):
            await run(sim, source, tmp_path / "o.ndjson", dialect="xcore", endpoint=sim.base_url + "/data/core/xcore")
        stats = await sim_stats(sim.base_url)
    assert stats["requests"] == {}


async def test_a_create_key_may_be_a_json_pointer(tmp_path: Path) -> None:
    item = {
        "_experience": {
            "decisioning": {
                "decisionitem": {"itemName": "Nightly item", "itemPriority": 1},
                "offeritem": {"lifecycleStatus": "draft"},
            }
        }
    }
    source = write_jobs(tmp_path / "jobs.ndjson", [{"entity": "offer-items", "create": item}])
    key = "/_experience/decisioning/decisionitem/itemName"
    async with running(sim_config()) as sim:
        first = await run(sim, source, tmp_path / "o1.ndjson", create_key=key)
        again = await run(sim, source, tmp_path / "o2.ndjson", create_key=key)
        items = sim.store.dump()["offer-items"]
    assert first[0]["ok"], first
    named = [i["id"] for i in items if i["_experience"]["decisioning"]["decisionitem"]["itemName"] == "Nightly item"]
    assert named == [first[0]["id"]]
    assert again[0]["error"]["kind"] == "conflict"
    assert first[0]["id"] in again[0]["error"]["message"]


async def _formulas_against_a_server_ignoring_if_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> structlog.testing.CapturingLogger:
    """Three writes of one ranking formula, each raced by another writer, against a
    server that ignores If-Match: every job ok; the run's log."""
    jobs = [
        {"id": "rankingFormula1234", "entity": "ranking-formulas",
         "patch": [{"op": "replace", "path": DESCRIPTION, "value": f"v{n}"}]}
        for n in range(3)
    ]  # fmt: skip
    faults = FaultRates(concurrent_writer=1.0)
    async with running(sim_config(faults=faults, ignore_if_match=True)) as sim:
        # The run's own log (another test may have configured structlog for the process).
        logger = structlog.testing.CapturingLogger()
        monkeypatch.setattr(perform, "log", logger)
        source = write_jobs(tmp_path / "jobs.ndjson", jobs)
        done = await run(sim, source, tmp_path / "o.ndjson", **settings)
    assert [o["ok"] for o in done] == [True] * 3
    return logger


async def test_a_server_that_seems_to_ignore_if_match_is_warned_of_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = await _formulas_against_a_server_ignoring_if_match(tmp_path, monkeypatch)
    suspicions = [c for c in logger.calls if c.method_name == "warning" and c.args == ("if_match.suspect",)]
    assert len(suspicions) == 1
    assert "may ignore If-Match" in suspicions[0].kwargs["detail"]


async def test_told_the_server_ignores_if_match_the_run_does_not_warn_it_may(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --if-match ignored has its own warning: the suspicion would say it twice.
    logger = await _formulas_against_a_server_ignoring_if_match(
        tmp_path, monkeypatch, if_match="ignored"
    )
    warnings = [c.args[0] for c in logger.calls if c.method_name == "warning"]
    assert "if_match.suspect" not in warnings


async def test_rollback_archives_the_exd_placements_a_run_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [
        {"entity": "exd-placements", "create": {
            "name": f"Nightly placement {n}", "description": "made by the run", "tags": [],
            "channel": "https://ns.adobe.com/xdm/channel-types/email", "status": "active"}}
        for n in range(2)
    ]  # fmt: skip
    backup = tmp_path / "backup.ndjson"
    # The run's own log (another test may have configured structlog for the process).
    logger = structlog.testing.CapturingLogger()
    monkeypatch.setattr(perform, "log", logger)
    async with running(sim_config()) as sim:
        source = write_jobs(tmp_path / "jobs.ndjson", jobs)
        made = await run(sim, source, tmp_path / "o.ndjson", backup=backup)
        undone = await run(sim, backup, tmp_path / "undo.ndjson", rollback=True)
        again = await run(sim, backup, tmp_path / "again.ndjson", rollback=True)
        after = await export(sim, "exd-placements")
        stats = await sim_stats(sim.base_url)
    ids = [o["id"] for o in made]
    assert [o["ok"] for o in made] == [True, True], made
    assert [after[i]["status"] for i in ids] == ["archived", "archived"]
    assert [after[i]["name"] for i in ids] == ["Nightly placement 0", "Nightly placement 1"]
    # The outcome says what was done: archived, not deleted.
    assert [(o["id"], o["ok"], o.get("archived"), o.get("deleted")) for o in undone] == [
        (i, True, True, None) for i in ids
    ], undone
    said = [c.kwargs["detail"] for c in logger.calls if c.args == ("rollback.archived",)]
    assert said == [
        'exd-placements the run created cannot be deleted through the API: archived instead; '
        'their outcome lines say "archived": true'
    ] * 2  # once per rollback run
    archived_already = [(o["ok"], o.get("archived"), o.get("noop")) for o in again]
    assert archived_already == [(True, True, True)] * 2, again
    assert count(stats, "DELETE") == 0
    # One whole-object write per placement; none by the second rollback.
    assert count(stats, "PUT") == 2
