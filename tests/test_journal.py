"""The run journal: identities, intents, done marks, torn receipts and the run lock."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bulkpatch.errors import ConfigError
from bulkpatch.jobs import Job
from bulkpatch.journal import Journal, Landed, Pending

PATCH = [{"op": "add", "path": "/tags/-", "value": "x"}]


def job(line: int, entity_id: str = "o1", value: str = "x") -> Job:
    return Job(line=line, id=entity_id, patch=[{"op": "add", "path": "/tags/-", "value": value}])


async def test_identity_counts_occurrences_per_entity_not_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "out.ndjson.journal")
    try:
        a1 = journal.identify(job(1, "a"))
        b1 = journal.identify(job(2, "b"))
        a2 = journal.identify(job(7, "a"))
        assert (a1[1], b1[1], a2[1]) == (0, 0, 1)
        assert a1[2] == a2[2]  # same job content, same digest, told apart by occurrence
        assert journal.identify(job(9, "a", value="other"))[2] != a1[2]
    finally:
        await journal.close()


async def test_intent_then_done_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    first, second = job(1), job(2)
    id1, id2 = journal.identify(first), journal.identify(second)
    await journal.intent(id1, first, 4, {"id": "o1", "etag": 4, "tags": []})
    await journal.intent(id2, second, None, None)
    journal.done([id1])
    await journal.close()

    reopened = Journal(path)
    try:
        again1, again2 = reopened.identify(first), reopened.identify(second)
        assert reopened.lookup(again1) == "done"
        assert reopened.lookup(again2) == Pending(None, None)
        # The job at that place was edited between runs: a new job, run afresh.
        assert reopened.lookup((again2[0], again2[1], b"0" * 16)) is None
        assert reopened.lookup(reopened.identify(job(3))) is None  # never sent
    finally:
        await reopened.close()


async def test_a_confirmed_write_is_never_mistaken_for_one_to_settle(tmp_path: Path) -> None:
    """Confirmed, then the entity's next job sent, then a crash before either was reported:
    the first is reported from the journal, not settled against the second's effect."""
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    first, second = job(1), job(2)
    id1, id2 = journal.identify(first), journal.identify(second)
    await journal.intent(id1, first, 4, None)
    journal.landed(id1, 200, 5, line=1, entity_id="o1")
    await journal.intent(id2, second, 5, None)  # queued after: committed after
    await journal.close()

    reopened = Journal(path)
    try:
        assert reopened.lookup(reopened.identify(first)) == Landed(200, 5, "o1")
        assert reopened.lookup(reopened.identify(second)) == Pending(5, None)
    finally:
        await reopened.close()


async def test_pending_keeps_the_pre_image_to_settle_with(tmp_path: Path) -> None:
    path = tmp_path / "j.journal"
    journal = Journal(path)
    the_job = job(3)
    identity = journal.identify(the_job)
    pre = {"id": "o1", "etag": 8, "tags": ["a"]}
    await journal.intent(identity, the_job, 8, pre)
    assert journal.lookup(identity) == Pending(8, pre)
    await journal.close()


async def test_reconcile_marks_reported_jobs_done_and_cuts_a_torn_line(tmp_path: Path) -> None:
    receipts = tmp_path / "out.ndjson"
    journal = Journal(tmp_path / "out.ndjson.journal")
    jobs = [job(1, "a"), job(2, "b"), job(3, "c")]
    ids = [journal.identify(j) for j in jobs]
    for identity, j in zip(ids, jobs, strict=True):
        await journal.intent(identity, j, None, None)
    receipts.write_bytes(
        orjson.dumps({"line": 1, "id": "a", "ok": True}) + b"\n"
        + orjson.dumps({"line": 2, "id": "b", "ok": False}) + b"\n"
        + b'{"line": 3, "id": "c", "o'
    )
    assert await journal.reconcile(receipts) == 1
    assert receipts.read_bytes().endswith(b'"ok":false}\n')
    assert journal.lookup(ids[0]) == "done"
    assert isinstance(journal.lookup(ids[1]), Pending)
    assert isinstance(journal.lookup(ids[2]), Pending)
    await journal.close()


async def test_two_runs_cannot_share_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    try:
        with pytest.raises(ConfigError, match=r"out\.ndjson is in use by another bulkpatch run"):
            Journal(path)
    finally:
        await journal.close()
    await Journal(path).close()  # free again once the first run closed it


async def test_a_job_done_without_any_write_is_remembered_too(tmp_path: Path) -> None:
    """A no-op (or an adopted entity) sends no write, so has no intent: it must still not
    run again, nor be reported ok a second time, on resume."""
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    noop = job(1)
    journal.landed(journal.identify(noop), None, 3, line=1, entity_id="o1")
    await journal.close()
    reopened = Journal(path)
    try:
        assert reopened.lookup(reopened.identify(noop)) == Landed(None, 3, "o1")
    finally:
        await reopened.close()
