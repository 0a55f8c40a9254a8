"""The run journal: identities, intents, final outcomes, the input check, torn receipts and
the run lock."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bulkpatch.errors import ConfigError, InputError
from bulkpatch.jobs import BadLine, Job
from bulkpatch.journal import DONE, DONE_FAILED, Failed, Journal, Landed, Pending

PATCH = [{"op": "add", "path": "/tags/-", "value": "x"}]


def job(line: int, entity_id: str = "o1", value: str = "x") -> Job:
    return Job(line=line, id=entity_id, patch=[{"op": "add", "path": "/tags/-", "value": value}])


def test_a_line_is_known_by_its_number_and_digest() -> None:
    a1, b1, a7 = Journal.identify(job(1, "a")), Journal.identify(job(2, "b")), Journal.identify(job(7, "a"))
    assert (a1[1], b1[1], a7[1]) == (1, 2, 7)
    assert a1[0] == a7[0] != b1[0]
    assert a1[2] == a7[2]  # same job content, same digest, told apart by line
    assert Journal.identify(job(9, "a", value="other"))[2] != a1[2]
    bad = BadLine(3, InputError("no value", line=3), b'{"id": "a"}', 12)
    assert Journal.identify(bad)[1:2] == (3,)


async def test_intent_landed_and_reported_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    first, second = job(1), job(2)
    id1, id2 = journal.identify(first), journal.identify(second)
    await journal.intent(id1, first, 4, {"id": "o1", "etag": 4, "tags": []})
    await journal.intent(id2, second, None, None)
    journal.landed(id1, 200, 5, line=1, entity_id="o1")
    journal.done([(id1, 1)])
    await journal.close()

    reopened = Journal(path)
    try:
        again1, again2 = reopened.identify(first), reopened.identify(second)
        assert reopened.lookup(again1) == DONE
        assert reopened.lookup(again2) == Pending(None, None)
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
    await journal.close()
    reopened = Journal(path)
    try:
        assert reopened.lookup(identity) == Pending(8, pre)
    finally:
        await reopened.close()


async def test_reconcile_marks_reported_lines_and_cuts_a_torn_line(tmp_path: Path) -> None:
    receipts = tmp_path / "out.ndjson"
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    jobs = [job(1, "a"), job(2, "b"), job(3, "c"), job(4, "d")]
    ids = [journal.identify(j) for j in jobs]
    for identity, j in zip(ids, jobs, strict=True):
        await journal.intent(identity, j, None, None)
    journal.landed(ids[0], 200, 2, line=1, entity_id="a")
    error = {"kind": "http", "status": 404, "message": "gone"}
    journal.failed(ids[3], 404, error, "d")
    receipts.write_bytes(
        orjson.dumps({"line": 1, "id": "a", "ok": True}) + b"\n"
        + orjson.dumps({"line": 2, "id": "b", "ok": False, "error": {"kind": "aborted"}}) + b"\n"
        + orjson.dumps({"line": 4, "id": "d", "ok": False, "error": error}) + b"\n"
        + b'{"line": 3, "id": "c", "o'
    )
    await journal.close()
    reopened = Journal(path)
    try:
        assert await reopened.reconcile(receipts) == (2, 1)
        assert receipts.read_bytes().endswith(b'"message":"gone"}}\n')
        assert reopened.lookup(ids[0]) == DONE
        assert reopened.lookup(ids[3]) == DONE_FAILED
        assert isinstance(reopened.lookup(ids[1]), Pending)  # aborted is no end
        assert isinstance(reopened.lookup(ids[2]), Pending)
    finally:
        await reopened.close()


async def test_a_final_failure_not_yet_reported_is_kept_to_report(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    failing = job(2)
    error = {"kind": "conflict", "message": "the patch no longer applies"}
    journal.failed(journal.identify(failing), None, error, "o1")
    await journal.close()
    reopened = Journal(path)
    try:
        assert reopened.lookup(reopened.identify(failing)) == Failed(None, error, "o1")
    finally:
        await reopened.close()


async def test_a_later_applied_line_of_the_entity_is_found(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    for line, entity in ((1, "a"), (3, "a"), (4, "b")):
        journal.landed(journal.identify(job(line, entity)), 200, 2, line=line, entity_id=entity)
    await journal.close()
    reopened = Journal(path)
    try:
        assert reopened.applied_after(reopened.identify(job(2, "a"))) == 3
        assert reopened.applied_after(reopened.identify(job(5, "a"))) is None
        assert reopened.applied_after(reopened.identify(job(2, "c"))) is None
    finally:
        await reopened.close()


async def test_the_input_check_lets_only_unfinished_or_bad_lines_differ(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    bad = BadLine(2, InputError("no value", line=2), b'{"id": "o1"}', 13)
    journal.landed(journal.identify(job(1)), 200, 2, line=1, entity_id="o1")
    journal.failed(journal.identify(bad), None, {"kind": "input", "message": "no value"}, None)
    await journal.intent(journal.identify(job(3)), job(3), 2, None)
    await journal.close()
    reopened = Journal(path)
    try:
        await reopened.check_input([job(1), job(2, value="mended"), job(3), job(5)], "jobs")
        with pytest.raises(ConfigError, match=r"^line 3 of jobs is not the line 3 .* had sent"):
            await reopened.check_input([job(1), job(3, value="edited")], "jobs")
        with pytest.raises(ConfigError, match=r"^line 1 of jobs .* applied"):
            await reopened.check_input([job(3)], "jobs")  # line 1 blank now
        with pytest.raises(ConfigError, match=r"^line 3 of jobs"):
            await reopened.check_input([job(1)], "jobs")  # line 3 gone
    finally:
        await reopened.close()


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


async def test_a_resume_that_records_nothing_leaves_a_finished_run_finished(tmp_path: Path) -> None:
    """A resume refused before any request must not turn a finished run into one that
    refuses to be started afresh."""
    path = tmp_path / "out.ndjson.journal"
    journal = Journal(path)
    journal.finished()
    await journal.close()
    await Journal(path, resume=True).close()  # opened, then refused: nothing recorded
    await Journal(path, resume=False).close()  # started afresh: allowed
    unfinished = Journal(path)
    unfinished.landed(unfinished.identify(job(1)), 200, 2, line=1, entity_id="o1")
    await unfinished.close()
    with pytest.raises(ConfigError, match="did not finish"):
        Journal(path, resume=False)
