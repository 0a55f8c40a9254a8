"""The patch job's state machine: what to send next, and what an answer means. Pure.

No I/O, no clock, no ``await``: the engine performs each step and feeds back what came of
it; tests drive it without a loop. One machine runs one job::

    start ─► [Read PRE] ─► Write ─► 2xx ──────────────────────────────► Finish ok
                             │
                             ├─ 409/412 ─► Read REBASE ─► at the etag sent: Finish http
                             │                        ├─► a PUT proven landed: Finish ok
                             │                        ├─► proven landed (a held write):
                             │                        │   Finish ok, recovered
                             │                        └─► patch applies: Write (new etag)
                             ├─ 408, 5xx, 3xx, lost ─► Backoff ─► Read SETTLE
                             │        proven landed (pre-image): Finish ok, recovered
                             │        else: Write again, If-Match of the etag just read
                             ├─ other 4xx ─► Finish http
                             └─ out of attempts ─► [Read LAST_LOOK] ─► Finish exhausted
                                                                    (or ok, recovered)

429 and 401 never reach the machine: the gateway absorbs them (``gateway.Gateway``)
and the request is sent again as it was. The proof rules are ``verify``'s: an ok outcome
is a 2xx to this job's own write, or a settle read that proves it landed (see
``verify.landed``); an idempotent patch is never proven by a read, only by the 2xx to its
resend under If-Match.

A write of unknown outcome may be held by the server and applied later, after a settle
read found it had not landed: If-Match is evaluated when the method is applied (RFC 9110
§13.1.1), so it lands only while the entity is still at the etag it carried, and then the
resend under that etag is refused. The rebase read after that refusal settles it first.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, assert_never

from bulkpatch import entities, verify
from bulkpatch.errors import ErrorKind
from bulkpatch.retry import Verdict

Doc = dict[str, Any]


class Purpose(enum.Enum):
    """Why the entity is read."""

    PRE = "pre"  # a pre-image before the first write
    SETTLE = "settle"  # after an unknown outcome: did the write land?
    REBASE = "rebase"  # after a 409/412: the entity as it is now
    LAST_LOOK = "last_look"  # out of attempts, the last write's fate unknown
    TELL = "tell"  # after a 4xx to a patch with `test` ops: did a test fail?


@dataclass(frozen=True, slots=True)
class Read:
    """GET the entity; feed ``read`` the document, or ``unreadable`` the failure."""

    purpose: Purpose


@dataclass(frozen=True, slots=True)
class Write:
    """Send the job's write (``method``: PATCH the patch, POST the entity to create,
    DELETE; PUT or PATCH ``body``, a whole object) with ``If-Match: if_match`` (none when
    None). ``pre`` is the entity as read before it (for the journal's intent and the
    backup). ``body``: a whole-object write's object (None: the job's own patch)."""

    if_match: int | None
    pre: Doc | None
    method: str = "PATCH"
    body: Doc | None = None


@dataclass(frozen=True, slots=True)
class Find:
    """Look up the entities whose create key is the job's (the list API's ``property``
    filter); feed ``found`` the ids, or ``unreadable`` the failure. ``after_unknown``:
    the create's last POST may have landed."""

    after_unknown: bool = False


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait before retry number ``attempt``; then feed ``backed_off``."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The job's end. ``kind`` is None for ok; ``current`` is the entity as last read
    when the outcome rests on a read (a recovered write, a no-op)."""

    kind: str | None = None
    message: str = ""
    status: int | None = None
    etag: int | None = None
    recovered: bool = False
    noop: bool = False
    current: Doc | None = None
    id: str | None = None  # a create's new entity
    extra: tuple[tuple[str, Any], ...] = ()  # outcome fields: ("adopted", True), ("deleted", True)

    @property
    def ok(self) -> bool:
        return self.kind is None


Step = Read | Write | Find | Backoff | Finish


@dataclass(frozen=True, slots=True)
class Answer:
    """What came of a write: its verdict (``retry.classify_status`` or
    ``classify_transport``), the status (None: no answer), the etag of its receipt, and a
    short reason for messages (the server's, or the transport error)."""

    verdict: Verdict
    status: int | None = None
    etag: int | None = None
    message: str = ""
    id: str | None = None  # the id a create's receipt gives


@dataclass(frozen=True, slots=True)
class Rules:
    """The limits and choices one patch job runs under (from the run's configuration)."""

    max_attempts: int = 6
    max_conflicts: int = 5
    skip_noop: bool = False


class PatchMachine:
    """One patch job, from its first step to its ``Finish`` (see the module docstring).

    ``pinned``: the etag the job itself pins (never rebased). ``known``: the etag the
    run remembers for the entity, sent as If-Match. ``needs_pre``: read a pre-image
    before the first write even if the patch does not need one (``--guard always``
    without a known etag, ``--skip-noop``, a backup). ``pending``: (etag, pre-image) of
    a write an earlier run sent without learning its fate: it is settled first.

    ``whole``: the entity kind when it is written whole (``entities.whole_object``): every
    write is then ``verb`` with the patch applied to the entity as last read, minus what
    the server manages (``entities.writable``), under If-Match of that read's etag, so a
    rebase or a settle read makes the next write's object afresh.
    """

    def __init__(
        self,
        patch: Sequence[dict[str, Any]],
        *,
        rules: Rules,
        pinned: int | None = None,
        known: int | None = None,
        idempotent: bool | None = None,
        needs_pre: bool = False,
        pending: tuple[int | None, Doc | None] | None = None,
        whole: str | None = None,
        verb: str = "PUT",
    ) -> None:
        self.patch = patch
        self.whole, self.verb = whole, verb
        self._body: Doc | None = None  # the whole object the next write sends
        self.rules = rules
        self.pinned = pinned
        self.known = pinned if pinned is not None else known
        self.idempotent = verify.idempotent(patch) if idempotent is None else idempotent
        self.pre: Doc | None = None
        self.tests = verify.has_test(patch)
        self.attempts = 0
        self.conflicts = 0
        self.last_error = ""
        # The last 409/412: its status, the server's message and the etag the write carried.
        self._refused: tuple[int, str, int] = (0, "", 0)
        self._unsettled = False  # the last write's fate is unknown
        # The If-Match of a write of unknown outcome the server may still be holding: it
        # can land while the entity stays at that etag, even after a settle read found it
        # had not (If-Match is evaluated when the method is applied, RFC 9110 §13.1.1).
        self._held: int | None = None
        self._first: Step = (
            Read(Purpose.PRE) if needs_pre or whole or not self.idempotent else self._write()
        )
        if pending is not None:
            self.known, self.pre = pending
            self._unsettled = True
            self._held = self.known
            self._first = Read(Purpose.SETTLE)

    # ------------------------------------------------------------------ steps in

    def start(self) -> Step:
        """The first step."""
        return self._first

    def sent(self) -> None:
        """A write is leaving: count the attempt (the engine's fast path calls this for the
        write it sent before the machine existed)."""
        self.attempts += 1

    def answered(self, answer: Answer) -> Step:
        """The answer to the last write (never a 429 or 401: the gateway's)."""
        match answer.verdict:
            case Verdict.DONE:
                return Finish(status=answer.status, etag=answer.etag)
            case Verdict.CONFLICT:
                return self._conflict(answer)
            case Verdict.PERMANENT:
                if self.tests and answer.status is not None and 400 <= answer.status < 500:
                    return self._tell(answer)
                return Finish(ErrorKind.HTTP, answer.message, answer.status)
            case Verdict.UNKNOWN | Verdict.TRANSIENT:
                return self._transient(answer)
            case Verdict.THROTTLED | Verdict.UNAUTHORIZED:
                return _gateways(answer.verdict)
            case _:
                assert_never(answer.verdict)

    def _tell(self, answer: Answer) -> Read:
        """A 4xx to a patch with ``test`` ops: servers answer a failed test 400, 409 or 422
        (RFC 5789 §2.2 leaves it open), so the entity is read to tell."""
        self._refused = (answer.status or 409, answer.message, self.known or 0)
        return Read(Purpose.TELL)

    def backed_off(self) -> Step:
        """After the wait: settle an unknown outcome first, else send again."""
        return Read(Purpose.SETTLE) if self._unsettled else self._write()

    def read(self, purpose: Purpose, current: Doc) -> Step:
        """The entity as read for ``purpose``."""
        if purpose is Purpose.LAST_LOOK:
            return self._last_look(current)
        if purpose is Purpose.REBASE and (proven := self._resent_put(current)) is not None:
            return proven
        if purpose is Purpose.TELL:
            status, message, _ = self._refused
            failed = verify.failed_test(self.patch, current)
            if failed is not None:
                return Finish(ErrorKind.TEST_FAILED, failed, status)
            return Finish(ErrorKind.HTTP, message, status)
        # An idempotent patch is proven by its resend only: its pre-image may be a read
        # taken after its own write landed, against which no read can prove anything.
        settling = purpose is Purpose.SETTLE or (
            purpose is Purpose.REBASE and self._held_may_have_landed()
        )
        if settling and self.pre is not None and not self.idempotent:
            landed = verify.landed(self.patch, current, self.pre)
            if landed is verify.Landed.YES:
                return Finish(status=200, etag=current.get("etag"), recovered=True, current=current)
            if landed is verify.Landed.UNCLEAR:
                return Finish(
                    ErrorKind.CONFLICT,
                    "after an unknown outcome, the locations this job changes were also "
                    "changed by another writer: cannot tell whether the write landed",
                )
        return self._based_on(purpose, current)

    def _resent_put(self, current: Doc) -> Finish | None:
        """After a 409/412 to a whole-object PUT: the end the entity proves, if any.

        aiohttp sends a PUT again by itself when its connection drops before the answer
        (it counts PUT as idempotent, RFC 9110 §9.2.2), so the refusal may answer that
        resend, the first having landed and moved the etag. ``pre`` is the read the body
        was made from and the write carried its etag, so the read tells (``verify.landed``),
        for an idempotent patch too: landed, the job is done; unclear, a rebase could apply
        a non-idempotent patch twice. None: a conflict like any other."""
        if self.verb != "PUT" or self.whole is None or self.pre is None:
            return None
        landed = verify.landed(self.patch, current, self.pre)
        if landed is verify.Landed.YES:
            return Finish(status=200, etag=current.get("etag"), recovered=True, current=current)
        if landed is verify.Landed.UNCLEAR and not self.idempotent:
            return Finish(
                ErrorKind.CONFLICT,
                "after a refused whole-object write, the locations this job changes were also "
                "changed by another writer: cannot tell whether its write landed",
            )
        return None

    def _held_may_have_landed(self) -> bool:
        """Whether the write just refused carried the etag of a write of unknown outcome:
        a server that held that one and applied it since refuses the resend, and the
        rebase read must first settle whether it landed (an append would apply twice)."""
        held = self._held
        return held is not None and self._refused[2] == held and self.pre is not None and (
            self.pre.get("etag") == held
        )

    def found(self, ids: Sequence[str]) -> Step:
        raise ValueError("a patch job looks nothing up")

    def unreadable(self, purpose: Purpose | None, kind: str, message: str, status: int | None) -> Finish:
        """The read for ``purpose`` failed for good. After a write of unknown outcome
        (``SETTLE``, ``LAST_LOOK``) that is no end: the job is ``aborted`` (a resume
        settles it from the journal's intent), and says why; but an entity that is not
        there (404) was not written by a patch, and that is final."""
        if purpose is Purpose.TELL:
            return Finish(ErrorKind.HTTP, self._refused[1], self._refused[0])
        if purpose in (Purpose.SETTLE, Purpose.LAST_LOOK) and status != 404:
            return Finish(
                ErrorKind.ABORTED,
                f"the last write's outcome is unknown and the entity could not be read to "
                f"settle it ({message}): --resume settles it; sent again as it is, it may "
                "apply twice",
                status,
            )
        return Finish(kind, message, status)

    # ------------------------------------------------------------------ rules

    def _write(self) -> Write:
        if self.whole is not None:
            return Write(self.known, self.pre, self.verb, self._body)
        return Write(self.known, self.pre)

    def _based_on(self, purpose: Purpose, current: Doc) -> Step:
        """Write again on top of ``current`` (read before the first write, or to rebase or
        settle), unless it shows the job cannot or need not be written."""
        etag = current["etag"]
        if purpose is Purpose.REBASE:
            status, message, sent = self._refused
            # A failed `test` is no conflict, whoever moved the etag: no rebase mends it.
            if self.tests and (failed := verify.failed_test(self.patch, current)) is not None:
                return Finish(ErrorKind.TEST_FAILED, failed, status)
            if etag == sent:
                # Still at the etag the write carried: the etag was not the reason (a failed
                # `test`, say), and no rebase can mend it.
                return Finish(ErrorKind.HTTP, message, status)
            if self.pinned is not None:
                return Finish(ErrorKind.CONFLICT, f"etag {self.pinned} is stale ({message})", status)
            self.conflicts += 1
        if self.pinned is not None and etag != self.pinned:
            unknown = " (by this job's write or another's: it cannot tell)" * (
                purpose is Purpose.SETTLE
            )
            return Finish(
                ErrorKind.CONFLICT, f"the job pins etag {self.pinned}; the entity is at etag {etag}{unknown}"
            )
        if purpose is Purpose.PRE and self.rules.skip_noop and _changes_nothing(self.patch, current):
            return Finish(etag=etag, noop=True, current=current)
        if purpose is not Purpose.PRE or self.whole is not None:
            try:
                applied = verify.apply(self.patch, current)
                if self.whole is not None:
                    self._body = entities.writable(self.whole, applied)
            except verify.PatchDoesNotApply as exc:
                if self.tests and (failed := verify.failed_test(self.patch, current)) is not None:
                    return Finish(ErrorKind.TEST_FAILED, failed)
                return Finish(ErrorKind.CONFLICT, f"the patch does not apply to the entity as read: {exc}")
        if etag != self._held:
            self._held = None  # the entity left that etag: the held write can never land now
        self.pre, self.known, self._unsettled = current, etag, False
        return self._write()

    def _conflict(self, answer: Answer) -> Step:
        status = answer.status or 409
        if self.pinned is not None:
            # Never rebased; read only to tell a stale etag from another refusal.
            self._refused = (status, answer.message, self.pinned)
            return Read(Purpose.REBASE)
        if self.known is None:
            # No If-Match went out: whatever the server refused, it was no stale etag.
            if self.tests:
                return self._tell(answer)
            return Finish(ErrorKind.HTTP, answer.message, status)
        if self.conflicts >= self.rules.max_conflicts:
            return Finish(ErrorKind.CONFLICT, f"still conflicting after {self.conflicts} rebases", status)
        self._refused = (status, answer.message, self.known)
        self.known = None  # stale: forgotten until read again
        return Read(Purpose.REBASE)

    def _transient(self, answer: Answer) -> Step:
        self.last_error = answer.message
        if answer.verdict is Verdict.UNKNOWN:
            self._unsettled = True
            if self.pre is not None and not self.idempotent:
                self._held = self.known
        if self.attempts < self.rules.max_attempts:
            return Backoff(self.attempts)
        if self._unsettled and self.pre is not None and not self.idempotent:
            return Read(Purpose.LAST_LOOK)
        unknown = " (whether the last write landed is unknown)" * self._unsettled
        return Finish(ErrorKind.EXHAUSTED, self._gave_up() + unknown)

    def _last_look(self, current: Doc) -> Finish:
        assert self.pre is not None
        landed = verify.landed(self.patch, current, self.pre)
        if landed is verify.Landed.YES:
            return Finish(status=200, etag=current.get("etag"), recovered=True, current=current)
        if landed is verify.Landed.NO:
            return Finish(ErrorKind.EXHAUSTED, f"{self._gave_up()} (the entity shows the write did not land)")
        return Finish(ErrorKind.EXHAUSTED, f"{self._gave_up()} (whether the last write landed is unknown)")

    def _gave_up(self) -> str:
        return f"gave up after {self.attempts} attempts; last: {self.last_error}"


def _changes_nothing(patch: Sequence[dict[str, Any]], doc: Doc) -> bool:
    try:
        return verify.json_equal(verify.apply(patch, doc), doc)
    except verify.PatchDoesNotApply:
        return False  # the server says why


class _Retrying:
    """Attempts, and the give-up after the last (shared by creates and deletes)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.attempts = 0
        self.conflicts = 0  # never rebased: a create or a delete carries no etag to rebase
        self.last_error = ""

    def sent(self) -> None:
        self.attempts += 1

    def _retry(self, answer: Answer) -> Backoff | Finish:
        self.last_error = answer.message
        if self.attempts < self.rules.max_attempts:
            return Backoff(self.attempts)
        return Finish(
            ErrorKind.EXHAUSTED, f"gave up after {self.attempts} attempts; last: {self.last_error}"
        )

    def unreadable(self, purpose: Purpose | None, kind: str, message: str, status: int | None) -> Finish:
        return Finish(kind, message, status)


class CreateMachine(_Retrying):
    """One create job: POST once as far as the API allows. The entity is looked up by its
    create key before the first POST (found: it exists already, or an earlier run that
    stopped created it) and after every unknown outcome (found: this job created it)."""

    def __init__(
        self, *, rules: Rules, key_name: str, key: Any, resumed: bool, adopt: bool
    ) -> None:
        super().__init__(rules)
        self.key_name, self.key = key_name, key
        self.resumed, self.adopt = resumed, adopt
        self._unknown = False

    def start(self) -> Step:
        return Find()

    def found(self, ids: Sequence[str]) -> Step:
        if ids and (self.resumed or self._unknown):
            # Created by this job's POST whose answer was lost, or by the run that
            # stopped before it could say so.
            return Finish(id=ids[0], recovered=True)
        if ids and self.adopt:
            return Finish(id=ids[0], extra=(("adopted", True),))
        if ids:
            return Finish(
                ErrorKind.CONFLICT,
                f"an entity with {self.key_name} {self.key!r} exists already ({ids[0]}); "
                "--adopt-existing reports it instead",
            )
        if self._unknown:
            return self._retry(Answer(Verdict.UNKNOWN, message=self.last_error))
        return Write(None, None, "POST")

    def answered(self, answer: Answer) -> Step:
        match answer.verdict:
            case Verdict.DONE if answer.id is not None:
                return Finish(status=answer.status, etag=answer.etag, id=answer.id)
            case Verdict.PERMANENT | Verdict.CONFLICT:
                return Finish(ErrorKind.HTTP, answer.message, answer.status)
            case Verdict.UNKNOWN | Verdict.DONE:
                # It may have been created: look before asking again. (A 2xx that names
                # no new id is no receipt: ``api.receipt`` makes it unknown before here.)
                self._unknown, self.last_error = True, answer.message
                return Find(after_unknown=True)
            case Verdict.TRANSIENT:
                return self._retry(answer)
            case Verdict.THROTTLED | Verdict.UNAUTHORIZED:
                return _gateways(answer.verdict)
            case _:
                assert_never(answer.verdict)

    def backed_off(self) -> Step:
        self._unknown = False
        return Write(None, None, "POST")

    def read(self, purpose: Purpose, current: Doc) -> Step:
        raise ValueError("a create reads nothing")


class DeleteMachine(_Retrying):
    """One delete job. The entity is read first: a 404 to the DELETE then means this job's
    own delete (or aiohttp's resend of it) took it, not that it was never there. After an
    unknown outcome (a lost answer, a 2xx that is no receipt) the entity is read again
    before anything is sent: a 404 proves the delete; found, it is sent again; still
    unknown when attempts run out, a last read says which."""

    def __init__(self, *, rules: Rules, resumed: bool) -> None:
        super().__init__(rules)
        self.resumed = resumed
        self.pre: Doc | None = None
        self._unsettled = False  # the last DELETE's fate is unknown

    def start(self) -> Step:
        return Read(Purpose.PRE)

    def read(self, purpose: Purpose, current: Doc) -> Step:
        if purpose is Purpose.LAST_LOOK:
            return Finish(
                ErrorKind.EXHAUSTED,
                f"gave up after {self.attempts} attempts; last: {self.last_error} (the entity "
                "is still there)",
            )
        self.pre, self._unsettled = current, False
        return Write(None, current, "DELETE")

    def unreadable(self, purpose: Purpose | None, kind: str, message: str, status: int | None) -> Finish:
        if status == 404 and (self.resumed or purpose in (Purpose.SETTLE, Purpose.LAST_LOOK)):
            # Sent by this job (or by the run that stopped), and now gone: it landed.
            return Finish(status=404, recovered=True, extra=(("deleted", True),))
        if purpose in (Purpose.SETTLE, Purpose.LAST_LOOK):
            return Finish(
                ErrorKind.ABORTED,
                f"the last delete's outcome is unknown and the entity could not be read to "
                f"settle it ({message}): --resume settles it",
                status,
            )
        return Finish(kind, message, status)

    def found(self, ids: Sequence[str]) -> Step:
        raise ValueError("a delete looks nothing up")

    def answered(self, answer: Answer) -> Step:
        if answer.status == 404 and answer.verdict is Verdict.PERMANENT:
            # It was there when read: this job's own delete (or a retry of it) took it.
            return Finish(status=404, recovered=self.attempts > 1, extra=(("deleted", True),))
        match answer.verdict:
            case Verdict.DONE:
                return Finish(status=answer.status, extra=(("deleted", True),))
            case Verdict.PERMANENT | Verdict.CONFLICT:
                return Finish(ErrorKind.HTTP, answer.message, answer.status)
            case Verdict.UNKNOWN:
                self._unsettled = True
                if self.attempts >= self.rules.max_attempts:
                    self.last_error = answer.message
                    return Read(Purpose.LAST_LOOK)
                return self._retry(answer)
            case Verdict.TRANSIENT:
                return self._retry(answer)
            case Verdict.THROTTLED | Verdict.UNAUTHORIZED:
                return _gateways(answer.verdict)
            case _:
                assert_never(answer.verdict)

    def backed_off(self) -> Step:
        return Read(Purpose.SETTLE) if self._unsettled else Write(None, self.pre, "DELETE")


JobMachine = PatchMachine | CreateMachine | DeleteMachine


def _gateways(verdict: Verdict) -> NoReturn:
    """429 and 401 never reach a job: the gateway absorbs them and sends again."""
    raise ValueError(f"{verdict.value} is the gateway's to absorb, not the job's")
