"""Create and delete jobs: exactly once as far as the API allows, and undone by rollback."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.entities import server_managed
from bulkpatch.simulator import FaultRates, RunningSimulator, SimConfig, running
from tests.test_run_cli import Finished, against, count, ndjson, offers_of, sim_stats


async def bulkpatch(*args: str | Path, sim: RunningSimulator, stdin: bytes | None = None) -> Finished:
    return await against(sim, *args, stdin=stdin)


def new_offer(n: int) -> dict[str, Any]:
    return {
        "create": {
            "name": f"Created offer {n}",
            "status": "draft",
            "representations": [],
            "tags": [],
            "rank": {"priority": n % 10},
        }
    }


async def test_two_thousand_creates_through_dropped_answers_make_exactly_two_thousand(
    tmp_path: Path,
) -> None:
    id_map = tmp_path / "ids.ndjson"
    faults = FaultRates(drop_after=0.05, error_503=0.05, drop_before=0.02)
    async with running(SimConfig(offers=0, faults=faults, fault_seed=11)) as sim:
        jobs = [new_offer(n) for n in range(2000)]
        done = await bulkpatch(
            "run", "-", "--concurrency", "32", "--id-map", id_map, sim=sim, stdin=ndjson(jobs)
        )
        stats = await sim_stats(sim.base_url)
        offers = offers_of(sim)
    assert done.code == 0, done.stderr.decode()[-2000:]
    assert stats["faults"].get("drop_after", 0) > 50  # answers really were lost
    names = Counter(o["name"] for o in offers.values())
    assert len(offers) == 2000
    assert max(names.values()) == 1
    outcomes = done.by_line()
    assert len(outcomes) == 2000
    assert all(o["ok"] and o["id"] in offers for o in outcomes.values())
    assert sum(1 for o in outcomes.values() if o.get("recovered")) > 0
    assert {offers[o["id"]]["name"] for o in outcomes.values()} == set(names)
    mapped = [orjson.loads(line) for line in id_map.read_bytes().splitlines()]
    assert {m["key"]: m["id"] for m in mapped} == {v["name"]: k for k, v in offers.items()}


async def test_a_key_that_exists_is_a_conflict_unless_adopted_and_twice_is_an_input_error() -> None:
    async with running(SimConfig(offers=3)) as sim:
        existing_id, existing = next(iter(offers_of(sim).items()))
        jobs = [
            {"create": {"name": existing["name"], "status": "draft"}},
            {"create": {"name": "Brand new", "status": "draft"}},
            {"create": {"name": "Brand new", "status": "approved"}},
        ]
        plain = await bulkpatch("run", "-", sim=sim, stdin=ndjson(jobs[:1]))
        adopted = await bulkpatch("run", "-", "--adopt-existing", sim=sim, stdin=ndjson(jobs))
        offers = offers_of(sim)
    first = plain.by_line()[1]
    assert first["error"]["kind"] == "conflict"
    assert existing_id in first["error"]["message"]
    by_line = adopted.by_line()
    assert by_line[1]["ok"]
    assert by_line[1]["id"] == existing_id
    assert by_line[1]["adopted"] is True
    assert by_line[2]["ok"]
    assert by_line[3]["error"]["kind"] == "input"
    assert "same name 'Brand new'" in by_line[3]["error"]["message"]
    assert [o["name"] for o in offers.values()].count("Brand new") == 1


async def test_delete_jobs_need_allow_delete_and_a_lost_answer_is_not_a_failure() -> None:
    faults = FaultRates(drop_after=0.5)
    async with running(SimConfig(offers=30, faults=faults, fault_seed=3)) as sim:
        ids = sorted(offers_of(sim))[:20]
        jobs = [{"id": i, "delete": True} for i in ids]
        refused = await bulkpatch("run", "-", sim=sim, stdin=ndjson(jobs))
        assert len(offers_of(sim)) == 30
        deleted = await bulkpatch("run", "-", "--allow-delete", sim=sim, stdin=ndjson(jobs))
        again = await bulkpatch("run", "-", "--allow-delete", sim=sim, stdin=ndjson(jobs[:1]))
        left = offers_of(sim)
        stats = await sim_stats(sim.base_url)
    assert refused.code == 1
    assert all(o["error"]["kind"] == "input" and "--allow-delete" in o["error"]["message"] for o in refused.outcomes())
    assert deleted.code == 0, deleted.stderr.decode()[-1500:]
    assert all(o["ok"] and o["deleted"] for o in deleted.outcomes())
    # Half the answers were lost after the delete was done: those jobs are ok all the same.
    assert stats["faults"]["drop_after"] >= 5
    assert not set(ids) & set(left)
    assert len(left) == 10
    assert count(stats, "DELETE") >= 20
    # Deleting what is not there, with no lost answer before, is a 404 failure.
    assert again.outcomes()[0]["error"]["status"] == 404


async def test_delete_given_as_false_then_true_is_an_input_error_and_deletes_nothing() -> None:
    async with running(SimConfig(offers=3)) as sim:
        target, other = sorted(offers_of(sim))[:2]
        lines = (
            b'{"id": "%s", "delete": false, "delete": true}\n' % target.encode()
            + b'{"id":"%s","delete":true,"patch":[],"delete":true}\n' % other.encode()
            + ndjson([{"id": other, "delete": True}])
        )
        done = await bulkpatch("run", "-", "--allow-delete", sim=sim, stdin=lines)
        left = offers_of(sim)
        stats = await sim_stats(sim.base_url)
    outcomes = done.by_line()
    for n, field in ((1, "delete"), (2, "delete")):
        assert outcomes[n]["error"]["kind"] == "input"
        assert outcomes[n]["error"]["field"] == field
        assert outcomes[n]["error"]["message"] == f"line {n}, field 'delete': given twice in one object"
    assert outcomes[3]["ok"]
    assert target in left
    assert other not in left
    assert count(stats, "DELETE") == 1


async def test_rollback_deletes_what_the_run_created_and_creates_what_it_deleted(
    tmp_path: Path,
) -> None:
    backup = tmp_path / "before.ndjson"
    async with running(SimConfig(offers=10)) as sim:
        start = offers_of(sim)
        gone = sorted(start)[0]
        jobs = [
            new_offer(1),
            {"id": gone, "delete": True},
            {"id": sorted(start)[1], "patch": [{"op": "add", "path": "/tags/-", "value": "x"}]},
        ]
        run = await bulkpatch("run", "-", "--allow-delete", "--backup", backup, sim=sim, stdin=ndjson(jobs))
        assert run.code == 0, run.stderr.decode()[-1500:]
        undone = await bulkpatch("rollback", backup, sim=sim)
        end = offers_of(sim)
    assert undone.code == 0, undone.stderr.decode()[-1500:]
    recreated = [o for o in undone.outcomes() if o.get("id") not in start and not o.get("deleted")]
    assert len(recreated) == 1  # the deleted offer, back under a new id
    # The same offers as at the start, by content; only the deleted one's id is new (and
    # its server-managed fields: created, createdBy...).
    def contents(offers: dict[str, dict[str, Any]]) -> list[bytes]:
        return sorted(
            orjson.dumps(
                {k: v for k, v in o.items() if not server_managed(k)},
                option=orjson.OPT_SORT_KEYS,
            )
            for o in offers.values()
        )

    assert contents(end) == contents(start)
    assert gone not in end


async def test_plan_shows_what_would_be_created_and_deleted_and_sends_nothing() -> None:
    async with running(SimConfig(offers=3)) as sim:
        existing = offers_of(sim)
        first = sorted(existing)[0]
        jobs = [
            new_offer(7),
            {"create": {"name": existing[first]["name"]}},
            {"id": first, "delete": True},
            {"id": "personalizedOfferGone", "delete": True},
        ]
        plan = await bulkpatch("plan", "-", sim=sim, stdin=ndjson(jobs))
        stats = await sim_stats(sim.base_url)
        assert offers_of(sim) == existing
    assert stats["writes_applied"] == 0
    by_line = plan.by_line()
    assert [by_line[n]["plan"] for n in (1, 2, 3, 4)] == ["create", "fail", "delete", "fail"]
    assert by_line[1]["create"]["name"] == "Created offer 7"
    assert by_line[2]["error"]["kind"] == "conflict"
    assert by_line[4]["error"]["status"] == 404
