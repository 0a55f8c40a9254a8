"""plan (a dry run that reads), run --skip-noop, run --backup and rollback, over loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bulkpatch.demo import chaos_jobs, comparable
from bulkpatch.simulator import RunningSimulator, SimConfig, running
from tests.conftest import api_headers, offer_url
from tests.test_run_cli import (
    Finished,
    against,
    count,
    ndjson,
    offers_of,
    sim_stats,
)


async def bulkpatch(*args: str | Path, sim: RunningSimulator, stdin: bytes | None = None) -> Finished:
    return await against(sim, *args, stdin=stdin)


def oid(n: int) -> str:
    return f"personalizedOffer{n:06d}"


async def test_plan_classifies_every_job_and_sends_no_write() -> None:
    async with running(SimConfig(offers=6)) as sim:
        before = offers_of(sim)
        status = before[oid(3)]["status"]
        jobs: list[dict[str, Any]] = [
            {"id": oid(1), "patch": [{"op": "replace", "path": "/name", "value": "Renamed"}]},
            # The same change again: the first one leaves nothing for it to do.
            {"id": oid(1), "patch": [{"op": "replace", "path": "/name", "value": "Renamed"}]},
            {"id": oid(2), "patch": [{"op": "add", "path": "/tags/-", "value": "new-tag"}]},
            {"id": oid(3), "patch": [
                {"op": "test", "path": "/status", "value": status},
                {"op": "replace", "path": "/status", "value": status},
            ]},
            {"id": oid(4), "patch": [
                {"op": "test", "path": "/status", "value": "no such status"},
                {"op": "replace", "path": "/status", "value": "approved"},
            ]},
            {"id": oid(5), "patch": [{"op": "remove", "path": "/noSuchField"}]},
            {"id": oid(5), "patch": [{"op": "replace", "path": "/etag", "value": 99}]},
            {"id": "personalizedOfferMissing", "patch": [{"op": "replace", "path": "/name", "value": "x"}]},
        ]  # fmt: skip
        done = await bulkpatch("plan", "-", sim=sim, stdin=ndjson(jobs))
        stats = await sim_stats(sim.base_url)
        assert offers_of(sim) == before
    assert count(stats, "PATCH") == count(stats, "POST") == count(stats, "DELETE") == 0
    assert stats["writes_applied"] == 0
    assert done.code == 1
    plan = done.by_line()
    assert [plan[n]["plan"] for n in range(1, 9)] == [
        "change", "noop", "change", "noop", "fail", "fail", "fail", "fail",
    ]  # fmt: skip
    assert plan[1]["changes"] == [
        {"path": "/name", "old": before[oid(1)]["name"], "new": "Renamed"}
    ]
    tags = before[oid(2)]["tags"]
    assert plan[3]["changes"] == [{"path": f"/tags/{len(tags)}", "new": "new-tag"}]
    assert plan[5]["error"]["kind"] == "conflict"
    assert "not equal to tested value" in plan[5]["error"]["message"]
    assert "non-existent" in plan[6]["error"]["message"]
    assert plan[7]["error"]["kind"] == "input"
    assert "server-managed" in plan[7]["error"]["message"]
    assert plan[8]["error"] == {"kind": "http", "status": 404, "message": "the entity does not exist (404)"}
    stderr = done.stderr.decode()
    assert "8 jobs" in stderr
    assert "2 change, 2 noop, 4 fail" in stderr
    assert "/name (1)" in stderr
    assert "/tags/* (1)" in stderr


async def test_skip_noop_sends_no_write_that_changes_nothing() -> None:
    async with running(SimConfig(offers=3)) as sim:
        name = offers_of(sim)[oid(1)]["name"]
        jobs = [
            {"id": oid(1), "patch": [{"op": "replace", "path": "/name", "value": name}]},
            {"id": oid(2), "patch": [{"op": "replace", "path": "/name", "value": "Changed"}]},
        ]
        done = await bulkpatch("run", "-", "--skip-noop", sim=sim, stdin=ndjson(jobs))
        stats = await sim_stats(sim.base_url)
        assert offers_of(sim)[oid(2)]["name"] == "Changed"
    assert done.code == 0
    outcomes = done.by_line()
    assert outcomes[1]["noop"] is True
    assert "noop" not in outcomes[2]
    assert count(stats, "PATCH") == 1


async def test_run_then_rollback_restores_the_exact_starting_state(tmp_path: Path) -> None:
    backup = tmp_path / "before.ndjson"
    async with running(SimConfig(offers=40, fault_seed=2)) as sim:
        start = offers_of(sim)
        # Replaces, appends, test+replace, removes and copies, several per offer.
        jobs = chaos_jobs(start, 300, seed=8)
        done = await bulkpatch("run", "-", "--backup", backup, sim=sim, stdin=ndjson(jobs))
        assert done.code == 0
        changed = offers_of(sim)
        assert {k: comparable(v) for k, v in changed.items()} != {
            k: comparable(v) for k, v in start.items()
        }
        undone = await bulkpatch("rollback", backup, sim=sim)
        end = offers_of(sim)
    assert undone.code == 0, undone.stderr.decode()[-2000:]
    assert all(o["ok"] for o in undone.outcomes())
    assert {k: comparable(v) for k, v in end.items()} == {k: comparable(v) for k, v in start.items()}


async def test_an_entity_changed_since_the_run_is_not_rolled_back_unless_forced(
    tmp_path: Path,
) -> None:
    backup = tmp_path / "before.ndjson"
    async with running(SimConfig(offers=3)) as sim:
        start = offers_of(sim)
        jobs = [
            {"id": oid(n), "patch": [{"op": "replace", "path": "/name", "value": f"Run {n}"}]}
            for n in (1, 2, 3)
        ]
        assert (await bulkpatch("run", "-", "--backup", backup, sim=sim, stdin=ndjson(jobs))).code == 0
        # Someone else edits offer 2 after the run.
        async with aiohttp.ClientSession() as http:
            headers = api_headers(sim, **{"Content-Type": "application/json"})
            body = orjson.dumps([{"op": "replace", "path": "/description", "value": "by hand"}])
            async with http.patch(offer_url(sim, oid(2)), data=body, headers=headers) as r:
                assert r.status == 200
        undone = await bulkpatch("rollback", backup, sim=sim)
        after_rollback = offers_of(sim)
        forced = await bulkpatch("rollback", backup, "--force", sim=sim)
        after_force = offers_of(sim)
    assert undone.code == 1
    by_id = {o["id"]: o for o in undone.outcomes()}
    assert by_id[oid(2)]["error"]["kind"] == "conflict"
    assert "changed since the run left it" in by_id[oid(2)]["error"]["message"]
    assert by_id[oid(1)]["ok"]
    assert by_id[oid(3)]["ok"]
    assert after_rollback[oid(1)]["name"] == start[oid(1)]["name"]
    assert after_rollback[oid(2)]["name"] == "Run 2"  # blocked: left as it was
    assert forced.code == 0
    # Forced: the run's field is restored; the other writer's field is left alone.
    assert after_force[oid(2)]["name"] == start[oid(2)]["name"]
    assert after_force[oid(2)]["description"] == "by hand"


async def test_no_op_jobs_are_not_reported_twice_on_resume(tmp_path: Path) -> None:
    receipts = tmp_path / "out.ndjson"
    async with running(SimConfig(offers=5)) as sim:
        offers = offers_of(sim)
        jobs = [
            {"id": k, "patch": [{"op": "replace", "path": "/name", "value": v["name"]}]}
            for k, v in offers.items()
        ]
        path = tmp_path / "jobs.ndjson"
        path.write_bytes(ndjson(jobs))
        first = await bulkpatch("run", path, "--skip-noop", "--receipts", receipts, sim=sim)
        again = await bulkpatch("run", path, "--skip-noop", "--receipts", receipts, "--resume", sim=sim)
    assert first.code == 0
    assert again.code == 0
    lines = [orjson.loads(line) for line in receipts.read_bytes().splitlines()]
    assert sorted(o["line"] for o in lines) == [1, 2, 3, 4, 5]


async def test_a_backup_that_cannot_be_written_stops_the_run_with_every_line_reported() -> None:
    async with running(SimConfig(offers=4)) as sim:
        jobs = [
            {"id": k, "patch": [{"op": "replace", "path": "/name", "value": "x"}]}
            for k in offers_of(sim)
        ]
        # /dev/full: every write fails with "no space left on device".
        done = await bulkpatch("run", "-", "--backup", "/dev/full", sim=sim, stdin=ndjson(jobs))
        stats = await sim_stats(sim.base_url)
    assert done.code == 3, done.stderr.decode()[-1500:]
    outcomes = done.outcomes()
    assert sorted(o["line"] for o in outcomes) == [1, 2, 3, 4]
    assert not any(o["ok"] for o in outcomes)
    assert count(stats, "PATCH") == 0  # nothing written without its backup on disk


async def test_a_rollback_done_already_is_ok_as_a_noop(tmp_path: Path) -> None:
    backup = tmp_path / "before.ndjson"
    async with running(SimConfig(offers=3)) as sim:
        jobs = [
            {"id": oid(n), "patch": [{"op": "replace", "path": "/name", "value": f"Run {n}"}]}
            for n in (1, 2, 3)
        ]
        done = await bulkpatch("run", "-", "--backup", backup, sim=sim, stdin=ndjson(jobs))
        assert done.code == 0
        first = await bulkpatch("rollback", backup, sim=sim)
        second = await bulkpatch("rollback", backup, sim=sim)
    assert first.code == 0, first.stderr.decode()[-2000:]
    # The etags moved with the first rollback; every field already equals the backup's.
    assert second.code == 0, second.stderr.decode()[-2000:]
    assert [(o["ok"], o.get("noop")) for o in second.outcomes()] == [(True, True)] * 3
