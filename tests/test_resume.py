"""``--resume`` as a user meets it: lines known by number, finished lines never sent again.

Each test runs ``bulkpatch run`` as a process against an in-process simulator, changes the
job file between runs as a user would, and checks the receipts file, the exit code and the
entities the simulator holds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.simulator import RunningSimulator, SimConfig, running
from tests.test_run_cli import Finished, against, ndjson, offers_of, sim_stats


def oid(n: int) -> str:
    return f"personalizedOffer{n:06d}"


def append_tag(entity_id: str, value: str) -> dict[str, Any]:
    return {"id": entity_id, "patch": [{"op": "add", "path": "/tags/-", "value": value}]}


def bad_append(entity_id: str) -> dict[str, Any]:
    """Not a job: an ``add`` without its ``value``."""
    return {"id": entity_id, "patch": [{"op": "add", "path": "/tags/-"}]}


async def run(sim: RunningSimulator, jobs: Path, receipts: Path, *extra: str) -> Finished:
    return await against(sim, "run", jobs, "--receipts", receipts, *extra)


def records(receipts: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in receipts.read_bytes().splitlines()]


def latest(receipts: Path) -> dict[int, dict[str, Any]]:
    """Each line's outcome as a reader of the receipts takes it: the last one wins."""
    return {record["line"]: record for record in records(receipts)}


def oks(receipts: Path) -> Counter[int]:
    return Counter(record["line"] for record in records(receipts) if record["ok"])


def tags(sim: RunningSimulator, entity_id: str) -> list[str]:
    return list(offers_of(sim)[entity_id]["tags"])


def error_line(done: Finished) -> str:
    """The one stderr line that says why the run was refused."""
    lines = [line for line in done.stderr.decode().splitlines() if "bulkpatch run: error:" in line]
    assert len(lines) == 1, done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    return lines[0]


async def requests_total(sim: RunningSimulator) -> int:
    """Requests the simulator has answered (each such question counts as one)."""
    return int((await sim_stats(sim.base_url))["requests_total"])


async def test_mending_a_bad_line_never_applies_a_confirmed_job_again(tmp_path: Path) -> None:
    jobs, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    async with running(SimConfig(offers=1)) as sim:
        offer = oid(1)
        before = tags(sim, offer)
        jobs.write_bytes(ndjson([append_tag(offer, "x"), bad_append(offer), append_tag(offer, "y")]))
        first = await run(sim, jobs, receipts)
        jobs.write_bytes(
            ndjson([append_tag(offer, "x"), append_tag(offer, "z"), append_tag(offer, "y")])
        )
        again = await run(sim, jobs, receipts, "--resume")
        after = tags(sim, offer)
    assert first.code == 1, first.stderr.decode()[-2000:]
    assert after == [*before, "x", "y"]
    assert oks(receipts) == Counter({1: 1, 3: 1})
    mended = latest(receipts)[2]
    assert mended["error"]["kind"] == "input"
    assert "line 2 was changed after line 3 of the same entity was applied" in (
        mended["error"]["message"]
    )
    assert again.code == 1


async def test_a_mended_line_behind_an_applied_one_fails_alone_and_the_rest_runs(
    tmp_path: Path,
) -> None:
    jobs, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    a, b = oid(1), oid(2)
    async with running(SimConfig(offers=2)) as sim:
        before_a, before_b = tags(sim, a), tags(sim, b)
        jobs.write_bytes(
            ndjson([append_tag(a, "x"), bad_append(a), append_tag(a, "y"), bad_append(b)])
        )
        first = await run(sim, jobs, receipts)
        # Both bad lines mended, and a job appended for the first entity.
        jobs.write_bytes(
            ndjson(
                [
                    append_tag(a, "x"),
                    append_tag(a, "z"),
                    append_tag(a, "y"),
                    append_tag(b, "b"),
                    append_tag(a, "w"),
                ]
            )
        )
        again = await run(sim, jobs, receipts, "--resume")
        after_a, after_b = tags(sim, a), tags(sim, b)
    assert first.code == 1
    assert after_a == [*before_a, "x", "y", "w"]
    assert after_b == [*before_b, "b"]  # no later job of its entity: the mended line runs
    final = latest(receipts)
    assert final[2]["error"]["kind"] == "input"
    assert "run it on its own to apply it out of order" in final[2]["error"]["message"]
    assert final[4]["ok"]
    assert final[5]["ok"]
    assert oks(receipts) == Counter({1: 1, 3: 1, 4: 1, 5: 1})
    assert again.code == 1


async def test_a_failed_job_is_not_run_again_after_a_later_job_of_its_entity(
    tmp_path: Path,
) -> None:
    """Job 1 tests a status that job 2 then sets: in input order job 1 fails, always. A
    resume must not send it again, now that job 2 has made its test pass."""
    jobs, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    async with running(SimConfig(offers=2)) as sim:
        offer = oid(1)
        start = offers_of(sim)[offer]
        wanted = "approved" if start["status"] != "approved" else "draft"
        guarded = {
            "id": offer,
            "patch": [
                {"op": "test", "path": "/status", "value": wanted},
                {"op": "replace", "path": "/name", "value": "only if approved first"},
            ],
        }
        sets = {"id": offer, "patch": [{"op": "replace", "path": "/status", "value": wanted}]}
        # The run that stopped had got through lines 1 and 2; the file goes on.
        jobs.write_bytes(ndjson([guarded, sets]))
        first = await run(sim, jobs, receipts)
        jobs.write_bytes(ndjson([guarded, sets, append_tag(oid(2), "later")]))
        patches_before = (await sim_stats(sim.base_url))["requests"].get("PATCH", {})
        again = await run(sim, jobs, receipts, "--resume")
        patches_after = (await sim_stats(sim.base_url))["requests"].get("PATCH", {})
        after = offers_of(sim)[offer]
    assert first.code == 1
    assert after["name"] == start["name"]
    assert after["status"] == wanted
    assert sum(patches_after.values()) - sum(patches_before.values()) == 1  # line 3 only
    assert Counter(record["line"] for record in records(receipts)) == Counter({1: 1, 2: 1, 3: 1})
    assert latest(receipts)[3]["ok"]
    assert again.code == 1  # line 1 failed, and stays failed
    assert "skipped (done before) 2 (1 failed)" in again.stderr.decode()


async def test_a_deleted_line_before_done_ones_refuses_the_resume(tmp_path: Path) -> None:
    jobs, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    async with running(SimConfig(offers=1)) as sim:
        offer = oid(1)
        before = tags(sim, offer)
        lines = [append_tag(offer, value) for value in ("a1", "a2", "a3")]
        jobs.write_bytes(ndjson(lines))
        first = await run(sim, jobs, receipts)
        jobs.write_bytes(ndjson(lines[1:]))
        sent = await requests_total(sim)
        again = await run(sim, jobs, receipts, "--resume")
        assert await requests_total(sim) == sent + 1  # the question before: nothing else
        after = tags(sim, offer)
    assert first.code == 0
    assert again.code == 2
    assert "line 1 " in error_line(again)
    assert after == [*before, "a1", "a2", "a3"]
    assert sorted(record["line"] for record in records(receipts)) == [1, 2, 3]


async def test_an_edit_to_a_finished_line_refuses_the_resume_naming_it(tmp_path: Path) -> None:
    jobs, receipts = tmp_path / "jobs.ndjson", tmp_path / "out.ndjson"
    async with running(SimConfig(offers=3)) as sim:
        lines = [append_tag(oid(n), "v") for n in (1, 2, 3)]
        jobs.write_bytes(ndjson(lines))
        first = await run(sim, jobs, receipts)
        jobs.write_bytes(ndjson([lines[0], append_tag(oid(2), "edited"), lines[2]]))
        sent = await requests_total(sim)
        again = await run(sim, jobs, receipts, "--resume")
        assert await requests_total(sim) == sent + 1  # the question before: nothing else
        edited = tags(sim, oid(2))
        # The edit undone, the run resumes, with nothing left to do.
        jobs.write_bytes(ndjson(lines))
        undone = await run(sim, jobs, receipts, "--resume")
        after = offers_of(sim)
    assert first.code == 0
    assert again.code == 2
    assert "line 2 " in error_line(again)
    assert "edited" not in edited
    assert undone.code == 0
    assert len(records(receipts)) == 3
    assert [after[oid(n)]["tags"].count("v") for n in (1, 2, 3)] == [1, 1, 1]
