"""The patch job's state machine, driven without a loop: a table of verdicts, then a
property test against a model server that misbehaves in every way a server may.

The model server holds one entity, honours ``If-Match`` (or, drawn, ignores it), applies
a patch with ``verify.apply`` and logs which job each applied write belongs to. The
harness performs the machine's steps against it, each answered under a fault drawn by
hypothesis, and checks after every step what a user relies on:

- a job is ok only if the server applied its write, or it says ``noop``;
- no write of a patch that is not idempotent takes effect twice;
- one entity's writes are applied in input order;
- every job reaches its end within a bounded number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bulkpatch import verify
from bulkpatch.machine import (
    Answer,
    Backoff,
    CreateMachine,
    DeleteMachine,
    Find,
    Finish,
    PatchMachine,
    Purpose,
    Read,
    Rules,
    Step,
    Write,
)
from bulkpatch.retry import Verdict

DOC: dict[str, Any] = {"id": "o1", "etag": 1, "name": "n", "status": "draft", "tags": [], "description": "d"}
REPLACE = [{"op": "replace", "path": "/name", "value": "x"}]
APPEND = [{"op": "add", "path": "/tags/-", "value": "t"}]
RULES = Rules(max_attempts=3, max_conflicts=2)


# --------------------------------------------------------------------------- the table


def _after_first_write(patch: list[dict[str, Any]], **kwargs: Any) -> tuple[PatchMachine, Step]:
    machine = PatchMachine(patch, rules=RULES, **kwargs)
    step = machine.start()
    if isinstance(step, Read):
        step = machine.read(step.purpose, dict(DOC))
    assert isinstance(step, Write)
    machine.sent()
    return machine, step


@pytest.mark.parametrize("patch", [REPLACE, APPEND], ids=["idempotent", "with-pre-image"])
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(Verdict.DONE, 200, 2), Finish(status=200, etag=2)),
        (Answer(Verdict.PERMANENT, 422, None, "no such field"), Finish("http", "no such field", 422)),
        (Answer(Verdict.TRANSIENT, None, None, "cannot connect"), Backoff(1)),
        (Answer(Verdict.UNKNOWN, 503, None, "HTTP 503"), Backoff(1)),
    ],
)
def test_each_verdict_after_a_first_write(patch: list[dict[str, Any]], answer: Answer, expected: Step) -> None:
    machine, _ = _after_first_write(patch, known=1)
    assert machine.answered(answer) == expected


def test_a_pre_image_is_read_first_unless_the_patch_is_idempotent() -> None:
    assert PatchMachine(REPLACE, rules=RULES).start() == Write(None, None)
    assert PatchMachine(APPEND, rules=RULES).start() == Read(Purpose.PRE)
    assert PatchMachine(REPLACE, rules=RULES, needs_pre=True).start() == Read(Purpose.PRE)


def test_after_an_unknown_outcome_an_idempotent_patch_is_resent_under_the_etag_read() -> None:
    machine, _ = _after_first_write(REPLACE)
    assert machine.answered(Answer(Verdict.UNKNOWN, None, None, "dropped")) == Backoff(1)
    assert machine.backed_off() == Read(Purpose.SETTLE)
    # The values are already there: that proves nothing; the resend will.
    landed_or_not = {**DOC, "etag": 7, "name": "x"}
    assert machine.read(Purpose.SETTLE, landed_or_not) == Write(7, landed_or_not)


def test_after_an_unknown_outcome_a_pre_image_proves_a_landed_write() -> None:
    machine, _ = _after_first_write(APPEND)
    machine.answered(Answer(Verdict.UNKNOWN, None, None, "dropped"))
    machine.backed_off()
    landed = {**DOC, "etag": 2, "tags": ["t"]}
    finish = machine.read(Purpose.SETTLE, landed)
    assert finish == Finish(status=200, etag=2, recovered=True, current=landed)


def test_a_held_write_that_lands_before_its_resend_is_not_applied_again() -> None:
    # The server held the first write past the client's timeout; the settle read finds it
    # not applied yet, so it is sent again under the same etag. The held write lands
    # first and the resend is refused: the job is ok once, not appended twice.
    machine, first = _after_first_write(APPEND)
    assert first == Write(1, DOC)
    machine.answered(Answer(Verdict.UNKNOWN, None, None, "timeout"))
    machine.backed_off()
    assert machine.read(Purpose.SETTLE, dict(DOC)) == Write(1, DOC)
    machine.sent()
    assert machine.answered(Answer(Verdict.CONFLICT, 412, None, "stale")) == Read(Purpose.REBASE)
    landed = {**DOC, "etag": 2, "tags": ["t"]}
    assert machine.read(Purpose.REBASE, landed) == Finish(status=200, etag=2, recovered=True, current=landed)


def test_a_held_write_that_did_not_land_leaves_an_ordinary_rebase() -> None:
    machine, _ = _after_first_write(APPEND)
    machine.answered(Answer(Verdict.UNKNOWN, None, None, "timeout"))
    machine.backed_off()
    machine.read(Purpose.SETTLE, dict(DOC))
    machine.sent()
    machine.answered(Answer(Verdict.CONFLICT, 412, None, "stale"))
    other = {**DOC, "etag": 2, "name": "other"}
    assert machine.read(Purpose.REBASE, other) == Write(2, other)
    machine.sent()
    # The entity left etag 1: the held write can never land, so a later conflict rebases.
    machine.answered(Answer(Verdict.CONFLICT, 412, None, "stale"))
    moved = {**other, "etag": 3, "tags": ["t"]}
    assert machine.read(Purpose.REBASE, moved) == Write(3, moved)


def test_a_conflict_at_the_etag_sent_is_the_servers_refusal() -> None:
    machine, _ = _after_first_write(APPEND)
    assert machine.answered(Answer(Verdict.CONFLICT, 409, None, "test failed")) == Read(Purpose.REBASE)
    assert machine.read(Purpose.REBASE, dict(DOC)) == Finish("http", "test failed", 409)


def test_a_conflict_at_a_new_etag_rebases_until_the_limit() -> None:
    machine, _ = _after_first_write(APPEND)
    for etag in (2, 3):
        assert machine.answered(Answer(Verdict.CONFLICT, 412, None, "stale")) == Read(Purpose.REBASE)
        assert machine.read(Purpose.REBASE, {**DOC, "etag": etag}) == Write(etag, {**DOC, "etag": etag})
        machine.sent()
    assert machine.answered(Answer(Verdict.CONFLICT, 412, None, "stale")) == Finish(
        "conflict", "still conflicting after 2 rebases", 412
    )


def test_a_pinned_etag_is_never_rebased_only_read_to_tell_why_it_was_refused() -> None:
    machine, _ = _after_first_write(REPLACE, pinned=1)
    assert machine.answered(Answer(Verdict.CONFLICT, 409, None, "stale")) == Read(Purpose.REBASE)
    assert machine.read(Purpose.REBASE, {**DOC, "etag": 2}) == Finish("conflict", "etag 1 is stale (stale)", 409)
    failed_test, _ = _after_first_write(APPEND, pinned=1)
    failed_test.answered(Answer(Verdict.CONFLICT, 409, None, "test failed"))
    assert failed_test.read(Purpose.REBASE, dict(DOC)) == Finish("http", "test failed", 409)


def test_throttling_is_the_gateways_not_the_jobs() -> None:
    machine, _ = _after_first_write(REPLACE)
    with pytest.raises(ValueError, match="gateway"):
        machine.answered(Answer(Verdict.THROTTLED, 429))


def test_out_of_attempts_with_a_pre_image_takes_a_last_look() -> None:
    machine, _ = _after_first_write(APPEND)
    for attempt in range(1, 3):
        assert machine.answered(Answer(Verdict.UNKNOWN, 504, None, "HTTP 504")) == Backoff(attempt)
        step = machine.backed_off()
        assert step == Read(Purpose.SETTLE)
        step = machine.read(Purpose.SETTLE, dict(DOC))
        machine.sent()
    assert machine.answered(Answer(Verdict.UNKNOWN, 504, None, "HTTP 504")) == Read(Purpose.LAST_LOOK)
    finish = machine.read(Purpose.LAST_LOOK, dict(DOC))
    assert finish == Finish("exhausted", "gave up after 3 attempts; last: HTTP 504 (the entity shows the write did not land)")


def _create(**kwargs: Any) -> CreateMachine:
    settings: dict[str, Any] = {"rules": RULES, "key_name": "name", "key": "k", "resumed": False, "adopt": False}
    settings.update(kwargs)
    return CreateMachine(**settings)


def test_a_create_is_looked_up_first_and_sent_only_when_absent() -> None:
    machine = _create()
    assert machine.start() == Find()
    assert machine.found([]) == Write(None, None, "POST")
    machine.sent()
    assert machine.answered(Answer(Verdict.DONE, 201, 1, id="new")) == Finish(status=201, etag=1, id="new")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "conflict"),
        ({"adopt": True}, None),
        ({"resumed": True}, None),
    ],
)
def test_a_create_whose_key_exists(kwargs: dict[str, Any], expected: str | None) -> None:
    finish = _create(**kwargs).found(["there"])
    assert isinstance(finish, Finish)
    assert finish.kind == expected
    if expected is None:
        assert finish.id == "there"


def test_a_create_of_unknown_outcome_is_found_before_it_is_sent_again() -> None:
    machine = _create()
    machine.found([])
    machine.sent()
    assert machine.answered(Answer(Verdict.UNKNOWN, 502, None, "HTTP 502")) == Find(after_unknown=True)
    assert machine.found(["created"]) == Finish(id="created", recovered=True)
    again = _create()
    again.found([])
    again.sent()
    again.answered(Answer(Verdict.UNKNOWN, None, None, "timeout"))
    assert again.found([]) == Backoff(1)
    assert again.backed_off() == Write(None, None, "POST")


def test_a_delete_reads_first_and_takes_a_404_after_it_as_its_own() -> None:
    machine = DeleteMachine(rules=RULES, resumed=False)
    assert machine.start() == Read(Purpose.PRE)
    assert machine.read(Purpose.PRE, dict(DOC)) == Write(None, DOC, "DELETE")
    machine.sent()
    assert machine.answered(Answer(Verdict.UNKNOWN, None, None, "dropped")) == Backoff(1)
    assert machine.backed_off() == Read(Purpose.SETTLE)
    assert machine.read(Purpose.SETTLE, dict(DOC)) == Write(None, DOC, "DELETE")
    machine.sent()
    gone = machine.answered(Answer(Verdict.PERMANENT, 404, None, "not found"))
    assert gone == Finish(status=404, recovered=True, extra=(("deleted", True),))


def test_a_delete_of_unknown_outcome_is_settled_by_a_read_where_a_404_proves_it() -> None:
    deleted = Finish(status=404, recovered=True, extra=(("deleted", True),))
    machine = DeleteMachine(rules=Rules(max_attempts=2), resumed=False)
    machine.read(Purpose.PRE, dict(DOC))
    machine.sent()
    login_page = Answer(Verdict.UNKNOWN, 200, None, "HTTP 200 without a receipt of this write")
    assert machine.answered(login_page) == Backoff(1)
    assert machine.backed_off() == Read(Purpose.SETTLE)
    assert machine.unreadable(Purpose.SETTLE, "http", "the entity does not exist (404)", 404) == deleted
    # Still there: sent again; out of attempts, a last read says which.
    assert machine.read(Purpose.SETTLE, dict(DOC)) == Write(None, DOC, "DELETE")
    machine.sent()
    assert machine.answered(login_page) == Read(Purpose.LAST_LOOK)
    assert machine.unreadable(Purpose.LAST_LOOK, "http", "the entity does not exist (404)", 404) == deleted
    there = machine.read(Purpose.LAST_LOOK, dict(DOC))
    assert there.kind == "exhausted"  # type: ignore[union-attr]
    assert "still there" in there.message  # type: ignore[union-attr]
    unreadable = machine.unreadable(Purpose.SETTLE, "exhausted", "reading failed 6 times", None)
    assert unreadable.kind == "aborted"  # a resume settles it


def test_a_delete_never_there_fails_unless_an_earlier_run_sent_it() -> None:
    assert DeleteMachine(rules=RULES, resumed=False).unreadable(Purpose.PRE, "http", "no entity", 404).kind == "http"
    resumed = DeleteMachine(rules=RULES, resumed=True).unreadable(Purpose.PRE, "http", "no entity", 404)
    assert resumed.ok
    assert resumed.recovered


def test_a_settle_read_that_fails_leaves_the_job_for_a_resume_to_settle() -> None:
    machine, _ = _after_first_write(APPEND)
    machine.answered(Answer(Verdict.UNKNOWN, None, None, "dropped"))
    assert machine.backed_off() == Read(Purpose.SETTLE)
    finish = machine.unreadable(Purpose.SETTLE, "exhausted", "reading the entity failed 6 times", None)
    assert finish.kind == "aborted"  # not final: --resume settles it from the intent
    assert "outcome is unknown" in finish.message


def test_a_create_whose_receipt_has_no_id_is_found_by_its_key() -> None:
    machine = _create()
    machine.found([])
    machine.sent()
    assert machine.answered(Answer(Verdict.DONE, 201, 1, id=None)) == Find(after_unknown=True)
    assert machine.found(["made"]) == Finish(id="made", recovered=True)
    lost = _create()
    lost.found([])
    lost.sent()
    lost.answered(Answer(Verdict.DONE, 201, 1, id=None))
    assert lost.found([]) == Backoff(1)  # not created: sent again


# --------------------------------------------------------------------------- the model


@dataclass
class ModelServer:
    """One entity; applied writes logged by job (``applied``)."""

    ignores_if_match: bool = False
    doc: dict[str, Any] = field(default_factory=lambda: dict(DOC))
    applied: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # applications that changed a value
    zombies: list[tuple[int, list[dict[str, Any]], int | None]] = field(default_factory=list)

    def write(self, job: int, patch: list[dict[str, Any]], if_match: int | None, stale: int) -> Answer:
        """Apply a write now; the answer the server would give."""
        if if_match is not None and not self.ignores_if_match and if_match != self.doc["etag"]:
            return Answer(Verdict.CONFLICT, stale, None, "etag mismatch")
        try:
            new = verify.apply(patch, self.doc)
        except verify.PatchDoesNotApply as exc:
            return Answer(Verdict.CONFLICT, 409, None, str(exc))  # a failed test, say
        new["etag"] = self.doc["etag"] + 3  # never rely on +1
        if any(verify.resolve(new, p) != verify.resolve(self.doc, p) for p in verify.touched(patch)):
            self.changed.append(job)
        self.doc = new
        self.applied.append(job)
        return Answer(Verdict.DONE, 200, new["etag"])

    def other_writer(self, path: str, value: Any) -> None:
        self.doc = verify.apply([{"op": "add", "path": path, "value": value}], self.doc)
        self.doc["etag"] += 1


# Each fault: (applied now?, zombie?, the verdict and status the client sees).
FAULTS: dict[str, tuple[bool, bool, Answer | None]] = {
    "ok": (True, False, None),
    "ok-without-receipt": (True, False, Answer(Verdict.DONE, 204, None)),
    "303": (False, False, Answer(Verdict.UNKNOWN, 303, None, "HTTP 303")),
    "408": (False, False, Answer(Verdict.UNKNOWN, 408, None, "HTTP 408")),
    "500": (False, False, Answer(Verdict.UNKNOWN, 500, None, "HTTP 500")),
    "500-after-applying": (True, False, Answer(Verdict.UNKNOWN, 500, None, "HTTP 500")),
    "502": (False, False, Answer(Verdict.UNKNOWN, 502, None, "HTTP 502")),
    "503": (False, False, Answer(Verdict.UNKNOWN, 503, None, "HTTP 503")),
    "504": (False, False, Answer(Verdict.UNKNOWN, 504, None, "HTTP 504")),
    "timeout-before": (False, False, Answer(Verdict.UNKNOWN, None, None, "timeout")),
    "timeout-after": (True, False, Answer(Verdict.UNKNOWN, None, None, "timeout")),
    "drop-before-sending": (False, False, Answer(Verdict.TRANSIENT, None, None, "refused")),
    "drop-after": (True, False, Answer(Verdict.UNKNOWN, None, None, "dropped")),
    "zombie": (False, True, Answer(Verdict.UNKNOWN, None, None, "timeout")),
    "429": (False, False, None),
    "429-with-retry-after": (False, False, None),
}
PATCHES: dict[str, list[dict[str, Any]]] = {
    "replace": [{"op": "replace", "path": "/name", "value": "N"}],
    "add-member": [{"op": "add", "path": "/characteristics", "value": {"k": "N"}}],
    "append": [{"op": "add", "path": "/tags/-", "value": "N"}],
    "test-then-replace": [
        {"op": "test", "path": "/status", "value": "draft"},
        {"op": "replace", "path": "/status", "value": "N"},
    ],
    "remove-then-add": [
        {"op": "remove", "path": "/description"},
        {"op": "add", "path": "/description", "value": "N"},
    ],
    "copy": [{"op": "copy", "from": "/name", "path": "/description"}],
}
MAX_STEPS_PER_JOB = 60


def _unique(value: Any, tag: str) -> Any:
    if value == "N":
        return tag
    if isinstance(value, dict):
        return {k: _unique(v, tag) for k, v in value.items()}
    return value


def _job_patch(kind: str, index: int) -> list[dict[str, Any]]:
    """The patch of job ``index``: values made unique, so an application is the job's."""
    return [{k: _unique(v, f"{kind}-{index}") for k, v in op.items()} for op in PATCHES[kind]]


class PatchJobsAgainstAHostileServer(RuleBasedStateMachine):
    """Jobs for one entity, run in input order against ``ModelServer``."""

    @initialize(
        kinds=st.lists(st.sampled_from(sorted(PATCHES)), min_size=1, max_size=4),
        ignores_if_match=st.booleans(),
        guard_always=st.booleans(),
    )
    def start(self, kinds: list[str], ignores_if_match: bool, guard_always: bool) -> None:
        self.server = ModelServer(ignores_if_match=ignores_if_match)
        self.patches = [_job_patch(kind, n) for n, kind in enumerate(kinds)]
        self.guard_always = guard_always
        self.finished: list[Finish] = []
        self.known: int | None = None  # the etag the run remembers, as the engine does
        self._next_job()

    def _next_job(self) -> None:
        self.job = len(self.finished)
        self.steps = 0
        if self.job < len(self.patches):
            self.machine = PatchMachine(
                self.patches[self.job],
                rules=Rules(max_attempts=4, max_conflicts=3),
                known=self.known,
                needs_pre=self.guard_always and self.known is None,
            )
            self.step: Step = self.machine.start()

    def _running(self) -> bool:
        return self.job < len(self.patches)

    @precondition(_running)
    @rule(fault=st.sampled_from(sorted(FAULTS)), stale=st.sampled_from([409, 412]))
    def perform(self, fault: str, stale: int) -> None:
        """Perform the machine's next step; a write meets ``fault``."""
        self.steps += 1
        step = self.step
        if isinstance(step, Read):
            self.step = self.machine.read(step.purpose, dict(self.server.doc))
        elif isinstance(step, Backoff):
            self.step = self.machine.backed_off()
        elif isinstance(step, Write):
            self.step = self._write(step, fault, stale)
        if isinstance(self.step, Finish):
            self._finish(self.step)

    def _write(self, write: Write, fault: str, stale: int) -> Step:
        if fault.startswith("429"):
            return write  # the gateway pauses and sends it again: no attempt, nothing applied
        applies, zombie, seen = FAULTS[fault]
        if zombie and (write.if_match is None or self.server.ignores_if_match):
            # A write applied long after its client gave up lands after later jobs' unless
            # If-Match refuses it: the documented limit, left out of the model.
            applies, zombie, seen = True, False, Answer(Verdict.UNKNOWN, None, None, "timeout")
        self.machine.sent()
        patch = self.patches[self.job]
        if zombie:
            self.server.zombies.append((self.job, patch, write.if_match))
            assert seen is not None
            return self.machine.answered(seen)
        answer = Answer(Verdict.DONE, 200, None)
        if applies:
            answer = self.server.write(self.job, patch, write.if_match, stale)
        if seen is None or answer.verdict is not Verdict.DONE:
            return self.machine.answered(answer)
        return self.machine.answered(Answer(seen.verdict, seen.status, None, seen.message))

    def _finish(self, finish: Finish) -> None:
        self.finished.append(finish)
        if finish.ok and finish.etag is not None:
            self.known = finish.etag
        elif not finish.ok:
            self.known = None
        self._next_job()

    @precondition(lambda self: bool(self.server.zombies))
    @rule()
    def a_zombie_write_lands(self) -> None:
        job, patch, if_match = self.server.zombies.pop(0)
        self.server.write(job, patch, if_match, 409)

    @rule(path=st.sampled_from(["/name", "/description", "/status", "/tags/-", "/rank"]))
    def another_writer(self, path: str) -> None:
        # Values no job writes: a read that finds a job's values proves its write (the
        # proof rule assumes no other writer sets the very values a job sets).
        self.others = getattr(self, "others", 0) + 1
        self.server.other_writer(path, f"other-{self.others}")

    @invariant()
    def ok_means_applied_once(self) -> None:
        for job, finish in enumerate(self.finished):
            times = self.server.applied.count(job)
            idempotent = verify.idempotent(self.patches[job])
            if finish.ok and not finish.noop:
                assert times >= 1, (job, finish, self.server.applied)
            if not idempotent:
                # Applied twice with an effect twice; a second application that changes
                # nothing (the resend of a patch that left its locations as they were) is
                # no double write.
                assert self.server.changed.count(job) <= 1, (job, finish, self.server.applied)

    @invariant()
    def writes_land_in_input_order(self) -> None:
        applied = self.server.applied
        assert applied == sorted(applied), applied

    @invariant()
    def every_job_ends_in_bounded_steps(self) -> None:
        assert self.steps <= MAX_STEPS_PER_JOB


PatchJobsAgainstAHostileServer.TestCase.settings = settings(
    derandomize=True, deadline=None, max_examples=250, stateful_step_count=60
)
test_patch_jobs_against_a_hostile_server = PatchJobsAgainstAHostileServer.TestCase
