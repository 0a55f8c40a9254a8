"""One job, from its first request to its outcome.

The ``Performer`` holds what every job of a run shares (the gateway, the dialect, the
etags remembered, the journal and the backup) and performs one job at a time: a patch
job's machine steps (``machine.PatchMachine``: read, write, back off, finish), a plan,
a restore, a dry run; creates and deletes are ``lifecycle``'s. The fast path sends the
usual write (no read needed, nothing to wait for) before the machine exists and hands
it any answer but a plain success.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

import orjson
import structlog
from multidict import CIMultiDict
from yarl import URL

from bulkpatch import entities, express, lifecycle, outcomes, preimage, preview, scrub
from bulkpatch.api import Dialect, DpsDialect, XcoreDialect, receipt
from bulkpatch.backup import Backup
from bulkpatch.client import request_headers
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError, ErrorKind, TransportError
from bulkpatch.gateway import Clock, Gateway, LoopClock, resend_cause
from bulkpatch.jobs import OFFER_TYPES, Job
from bulkpatch.journal import Identity, Journal, Pending
from bulkpatch.machine import (
    Answer,
    Backoff,
    CreateMachine,
    Find,
    Finish,
    JobMachine,
    PatchMachine,
    Purpose,
    Read,
    Rules,
    Step,
    Write,
)
from bulkpatch.outcomes import Outcome
from bulkpatch.prefetch import Prefetch
from bulkpatch.repeat import Exchange, Given, Tally
from bulkpatch.retry import Verdict
from bulkpatch.summary import RunStats

log = structlog.get_logger()


@dataclass(slots=True, kw_only=True)
class Attempt(Tally):
    """What one job went through so far: its requests' tally, and its rebases."""

    job: Job
    started: float
    conflicts: int = 0
    pre: str | None = None  # where its pre-image came from: "list" or "get"


def _dialect(config: RunConfig) -> Dialect:
    """The run's dialect; with xcore, until discovered, the container is a placeholder
    that is never sent."""
    api = config.api
    if api.dialect == "dps":
        return DpsDialect(api.endpoint)
    return XcoreDialect(api.endpoint, api.container_id or "")


def _slow_kinds(*, xcore: bool) -> frozenset[str]:
    """Kinds whose jobs never take the fast path: they carry headers of their own, are
    written whole, or share a path with another kind (read first to tell which); and with
    the xcore dialect, Decisioning's, which it cannot speak (``refusal``)."""
    return frozenset(
        k.name
        for k in entities.KINDS.values()
        if k.headers or k.update != "json-patch" or k.marker or (xcore and k.decisioning)
    )


class Performer:
    """Performs one job at a time for a run (see the module docstring)."""

    def __init__(
        self,
        config: RunConfig,
        stats: RunStats,
        *,
        journal: Journal | None,
        backup: Backup | None,
        on_halt: Callable[[str], None],
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or LoopClock()  # the gateway's: a job's times are on one clock
        if config.credentials is not None:
            scrub.register(*config.credentials.secrets())
        self.api = config.api
        self.mode = config.mode
        self.job_rules = config.job_rules
        self.capacity = config.capacity
        self.retry_policy = config.retry_policy
        self.stats = stats
        self.journal = journal
        self.backup = None if config.mode.plan else backup
        self.on_halt = on_halt
        # --id-map: called with (key, new id) of each create as it is confirmed.
        self.on_created: Callable[[Any, str], None] | None = None
        self.gateway: Gateway | None = None  # once connected
        self.prefetch: Prefetch | None = None  # once the run lists (``prefetch``)
        self.dialect = _dialect(config)
        self.stopping = False
        # plan: each entity's document as the jobs before this one leave it, kept while
        # the entity has jobs waiting (so bounded by the window, like the lanes).
        self.plan_docs: dict[tuple[str, str, str], dict[str, Any]] = {}
        # Per held job (by line): its journal identity, and a write an earlier run left
        # in flight that must be settled before anything is sent.
        self.identities: dict[int, Identity] = {}
        self.unsettled: dict[int, Pending] = {}
        self.etags: dict[tuple[str, str, str], int] = {}
        self._read_switches(config, journal, backup)
        # The API's constant headers ride on the session; these are per offer type
        # (xcore names the type's schema in its media types).
        self.read_headers = {t: request_headers(self.dialect.read_headers(t)) for t in OFFER_TYPES}
        self.write_headers = {t: request_headers(self.dialect.patch_headers(t)) for t in OFFER_TYPES}
        self.slow_kinds = _slow_kinds(xcore=self.api.dialect == "xcore")
        # On a path two kinds share, the entity is read before it is written, to tell whose.
        self.shared_kinds = frozenset(k.name for k in entities.KINDS.values() if k.marker)
        self.verb = config.update_verb.upper()
        self.if_match_ignored = config.if_match == "ignored"
        self._warned: set[str] = set()  # the once-per-run warnings given

    def _read_switches(
        self, config: RunConfig, journal: Journal | None, backup: Backup | None
    ) -> None:
        """What every job's path asks of the run, read once here rather than from the
        config for every job."""
        mode = config.mode
        # Nothing in this run makes a write wait or read first (see process).
        self.express = not config.pacing.paced and not (
            mode.dry_run or mode.plan or mode.skip_noop or journal is not None or backup is not None
        )
        self.special = mode.dry_run or mode.plan
        self.guard_always = mode.guard == "always"
        self.skip_noop = mode.skip_noop
        self.rules = Rules(
            max_attempts=config.retry_policy.max_attempts,
            max_conflicts=config.retry_policy.max_conflicts,
            skip_noop=mode.skip_noop,
        )

    def headers_for(self, job: Job, *, write: bool) -> CIMultiDict[str]:
        """The headers of a request of ``job`` (a copy): the dialect's for its type, and
        its kind's own (``RunConfig.kind_headers``, checked by ``refusal`` before)."""
        headers = (self.write_headers if write else self.read_headers)[job.type].copy()
        if job.entity in self.slow_kinds:
            headers.update(self.config.kind_headers(job.entity))
        return headers

    def refusal(self, job: Job) -> str | None:
        """Why a job of a slow kind cannot be sent at all (an ``input`` failure), if so."""
        if entities.kind(job.entity).decisioning and isinstance(self.dialect, XcoreDialect):
            return f"{job.entity} is an Experience Decisioning kind: the xcore dialect cannot speak it"
        if job.delete and job.entity in entities.UNDELETABLE:
            return entities.UNDELETABLE[job.entity]
        try:
            self.config.kind_headers(job.entity)
        except ConfigError as exc:
            return str(exc)
        return None

    def warn_once(self, event: str, **fields: Any) -> None:
        """A warning given at most once per run (per ``event``)."""
        if event not in self._warned:
            self._warned.add(event)
            log.warning(event, **fields)

    def heard_etag(self, sent: int | None, etag: int | None) -> None:
        """A 2xx to a write sent with ``If-Match: sent`` left ``etag``: anything but
        ``sent + 1`` suggests the server ignores If-Match (a suspicion: a warning only,
        never evidence of what landed). Said already when ``--if-match ignored``."""
        if self.if_match_ignored:
            return
        if sent is not None and etag is not None and etag != sent + 1:
            if self.prefetch is not None:
                # A listed etag guards nothing against such a server: read each entity.
                self.prefetch.on = False
            self.warn_once(
                "if_match.suspect",
                detail=f"a write sent with If-Match {sent} left etag {etag}, not {sent + 1}: the "
                "server may ignore If-Match, and a whole-object write may then overwrite a change "
                "made between its read and its write (--if-match ignored says so)",
            )

    def carry(self, headers: dict[str, str]) -> None:
        """Send ``headers`` with every request (when no session carries them)."""
        for table in (self.read_headers, self.write_headers):
            for each in table.values():
                each.update(headers)

    # ------------------------------------------------------------------ outcomes

    def succeeded(
        self, job: Job, started: float, request_id: str | None, status: int, etag: int | None,
        st: Attempt | None = None, server_s: float = 0.0,
    ) -> Outcome:
        """A 2xx to the job's write. Without ``st``: the fast path's, one attempt of
        ``server_s`` with the server and no wait."""
        now = self.clock.time()
        ms = round((now - started) * 1000, 1)
        identity = self.identities.get(job.line) if self.identities else None
        if st is None:
            return outcomes.succeeded(
                job, status, etag, ms=ms, request_id=request_id, identity=identity,
                server_ms=round(server_s * 1000, 1),
            )
        return _told(st, outcomes.succeeded(
            job, status, etag, ms=ms, request_id=request_id, attempts=st.attempts,
            conflicts=st.conflicts, throttled=st.throttled, identity=identity,
            server_ms=round(st.server_s * 1000, 1), wait_ms=round(st.wait_s * 1000, 1),
        ))

    def finish(self, st: Attempt, ok: bool, **fields: Any) -> Outcome:
        return _told(st, outcomes.finished(
            st.job,
            ok=ok,
            attempts=st.attempts,
            conflicts=st.conflicts,
            throttled=st.throttled,
            ms=round((self.clock.time() - st.started) * 1000, 1),
            server_ms=round(st.server_s * 1000, 1),
            wait_ms=round(st.wait_s * 1000, 1),
            request_id=st.request_id,
            identity=self.identities.get(st.job.line),
            **fields,
        ))

    def failure(self, st: Attempt, kind: str, message: str, status: int | None = None) -> Outcome:
        return self.finish(st, False, status=status, error=outcomes.error(kind, message, status))

    def aborted(self, job: Job, message: str) -> Outcome:
        st = Attempt(job=job, started=self.clock.time())
        return self.failure(st, ErrorKind.ABORTED, message)

    # ------------------------------------------------------------------ one job

    async def process(self, job: Job) -> Outcome:
        """Apply one job exactly once (see ``verify`` for how an unknown outcome is settled)."""
        started = self.clock.time()
        # (Only a parsed patch job knows it is idempotent: never a create, a delete or a
        # restore.)
        if self.express and job.idempotent and not self.stopping and job.entity not in self.slow_kinds:
            sent = await express.fast(self, job, started)
            if isinstance(sent, Outcome):
                return sent
            if sent is not None:
                return await self._patch(Attempt(job=job, started=started), sent)
        st = Attempt(job=job, started=started)
        if job.entity in self.slow_kinds and (refused := self.refusal(job)) is not None:
            return self.failure(st, ErrorKind.INPUT, refused)
        if self.special:
            return preview.dry_run(self, st) if self.mode.dry_run else await preview.plan(self, st)
        if job.restore is not None:
            return await lifecycle.restore(self, st, job.restore)
        if job.create is not None:
            return await lifecycle.create(self, st, job.create)
        if job.delete:
            return await lifecycle.delete(self, st)
        return await self._patch(st, None)

    async def patch_on(self, st: Attempt, job: Job, current: dict[str, Any]) -> Outcome:
        """``job`` (a patch) through its machine, ``current`` (the entity as ``st``'s job
        read it) its pre-image if it needs one: a restore's write, read once."""
        return await self._patch(Attempt(job=job, started=st.started, pre=st.pre), None, current)

    async def _patch(
        self, st: Attempt, first: express.Sent | None, base: dict[str, Any] | None = None
    ) -> Outcome:
        """A patch job through its machine; ``first``: the fast path's write, answered;
        ``base``: the entity as read already, for a first read to take."""
        job = st.job
        known = job.etag if job.etag is not None else self.etags.get(job.key)
        if first is not None:
            known, st.attempts, st.request_id, st.server_s = first[1], 1, first[2], first[3]
            answer = first[0].answer
            if isinstance(answer, TransportError):
                st.last_error = str(answer)
                st.connect_failures += not answer.sent
                st.resend = ("PATCH", "transport")
            elif (cause := resend_cause(answer.status)) is not None:
                st.resend = ("PATCH", cause)
        backup = self.backup
        pending = self.unsettled.pop(job.line, None) if self.identities else None
        machine = PatchMachine(
            job.patch,
            rules=self.rules,
            pinned=job.etag,
            known=known,
            idempotent=job.idempotent,
            needs_pre=(self.guard_always and known is None)
            or self.skip_noop
            or (backup is not None and backup.needs(job))
            or job.entity in self.shared_kinds,
            # An earlier run sent this job's write and stopped before its answer.
            pending=None if pending is None else (pending.etag, pending.pre),
            whole=job.entity if entities.whole_object(job.entity) else None,
            verb=self.verb,
        )
        if first is None:
            step = machine.start()
            if base is not None and step == Read(Purpose.PRE):
                step = machine.read(Purpose.PRE, base)
            return await self.drive(st, machine, step)
        machine.sent()  # the fast path's write
        return await self.drive(st, machine, await express.answered(self, st, machine, first[0]))

    async def drive(self, st: Attempt, machine: JobMachine, step: Step) -> Outcome:
        """Perform the machine's steps until it finishes: every job's one loop."""
        journaled: tuple[int | None, int] | None = None
        while True:
            match step:
                case Read(purpose=purpose):
                    current = await (
                        preimage.pre(self, st) if purpose is Purpose.PRE else preimage.fetch(self, st)
                    )
                    if isinstance(current, Given):
                        step = machine.unreadable(purpose, current.kind, str(current), current.status)
                    else:
                        step = machine.read(purpose, current)
                case Write():
                    journaled = await self._before_write(st, step, journaled)
                    step = await self._send_write(st, machine, step)
                case Find(after_unknown=after_unknown):
                    assert isinstance(machine, CreateMachine)
                    live = after_unknown or machine.resumed
                    ids = await lifecycle.find(self, st, machine.key, live=live)
                    if isinstance(ids, Given):
                        step = machine.unreadable(None, ids.kind, str(ids), ids.status)
                    else:
                        step = machine.found(ids)
                case Backoff(attempt=attempt):
                    job = st.job
                    log.debug("job.retry", id=job.id, line=job.line, attempt=attempt, error=machine.last_error)
                    assert self.gateway is not None
                    await self.gateway.back_off(attempt, st)
                    step = machine.backed_off()
                case Finish():
                    return self._finished(st, machine, step)
                case _:
                    assert_never(step)

    async def _before_write(
        self, st: Attempt, write: Write, journaled: tuple[int | None, int] | None
    ) -> tuple[int | None, int] | None:
        """What must be on disk before a write leaves: the pre-image in the backup, the
        intent in the journal (a crash from then on is settled on resume from it)."""
        job = st.job
        backup = self.backup
        if backup is not None and write.pre is not None and backup.needs(job):
            backup.before(job, write.pre)
        identity = self.identities.get(job.line) if self.identities else None
        if self.journal is None or identity is None:
            return journaled
        mark = (write.if_match, id(write.pre))
        if journaled != mark:
            await self.journal.intent(identity, job, write.if_match, write.pre)
        return mark

    async def _send_write(self, st: Attempt, machine: JobMachine, write: Write) -> Step:
        """Send the write; its answer fed to the machine. A 429 or 401 is the gateway's to
        absorb: the same write is the next step, sent again as it was."""
        gateway = self.gateway
        assert gateway is not None
        url, headers, body = self._request_for(st.job, write)
        if self.prefetch is not None:
            self.prefetch.written(st.job)
        exchange = await gateway.exchange(st, write.method, url, headers, body)
        try:
            absorbed = await gateway.absorb(exchange, st)
        except Given as exc:
            return Finish(exc.kind, str(exc), exc.status)
        if absorbed and exchange.verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
            return write
        if not absorbed:  # a wait the server asked for (503 + Retry-After) is no attempt
            machine.sent()
        if exchange.verdict is Verdict.CONFLICT:
            self.etags.pop(st.job.key, None)
        answer = self.answer(exchange, st.job, write.method)
        if answer.verdict is Verdict.DONE and write.method in ("PATCH", "PUT"):
            self.heard_etag(write.if_match, answer.etag)
        return machine.answered(answer)

    def _request_for(self, job: Job, write: Write) -> tuple[URL, CIMultiDict[str], bytes | None]:
        """URL, headers and body of a job's write."""
        if write.method == "POST":
            return self.dialect.collection_url(job), self.headers_for(job, write=True), orjson.dumps(job.create)
        if write.method == "DELETE":
            return self.dialect.entity_url(job), self.headers_for(job, write=False), None
        headers = self.headers_for(job, write=True)
        if write.if_match is not None:
            headers["If-Match"] = self.dialect.if_match(write.if_match)
        if write.body is not None:
            if self.if_match_ignored:
                self.warn_once(
                    "if_match.ignored",
                    detail="--if-match ignored: a whole-object write can overwrite a change "
                    "made between bulkpatch's read and its write",
                )
            return self.dialect.entity_url(job), headers, orjson.dumps(write.body)
        return self.dialect.entity_url(job), headers, orjson.dumps(job.patch)

    def answer(self, exchange: Exchange, job: Job, method: str) -> Answer:
        """What the machine is told of an answer. A 2xx proves a write only with its
        receipt (``api.receipt``): a proxy's login page answered 200 is no proof, and the
        outcome is unknown."""
        answer, verdict = exchange.answer, exchange.verdict
        if isinstance(answer, TransportError):
            return Answer(verdict, None, None, str(answer))
        if verdict is Verdict.DONE:
            proof = receipt(self.dialect, method, answer.status, answer.body, job.id)
            if proof is None:
                return Answer(
                    Verdict.UNKNOWN, answer.status, None, f"HTTP {answer.status} without a receipt of this write"
                )
            return Answer(verdict, answer.status, proof[0], id=proof[1])
        message = answer.message()
        if verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN):
            message = f"HTTP {answer.status}: {message}"
        return Answer(verdict, answer.status, None, message)

    def _finished(self, st: Attempt, machine: JobMachine, finish: Finish) -> Outcome:
        """The outcome of a finished job; what its end tells the run."""
        job = st.job
        st.attempts, st.conflicts = machine.attempts, machine.conflicts
        self.stats.conflicts_rebased += machine.conflicts
        if not finish.ok:
            assert finish.kind is not None
            if finish.kind == ErrorKind.EXHAUSTED and 0 < st.attempts <= st.connect_failures:
                self.on_halt(f"the endpoint is unreachable: {machine.last_error}")
            return self.failure(st, finish.kind, finish.message, finish.status)
        if job.create is not None:
            assert isinstance(machine, CreateMachine)
            return self._created(st, machine, finish)
        if job.delete:
            if self.backup is not None:
                self.backup.deleted(job)
            return self.finish(
                st, True, status=finish.status, recovered=finish.recovered, extra=dict(finish.extra)
            )
        if finish.noop:
            return self.finish(st, True, etag=finish.etag, extra={"noop": True})
        if finish.etag is not None:
            self.remember(job, finish.etag)
        if self.backup is not None:
            self.backup.after(job, finish.etag)
        if finish.recovered:
            log.debug("job.recovered", id=job.id, line=job.line, etag=finish.etag)
            return self.finish(st, True, status=200, etag=finish.etag, recovered=True)
        assert finish.status is not None
        return self.succeeded(job, st.started, st.request_id, finish.status, finish.etag, st)

    def _created(self, st: Attempt, machine: CreateMachine, finish: Finish) -> Outcome:
        assert finish.id is not None
        if self.on_created is not None:
            self.on_created(machine.key, finish.id)
        if self.backup is not None:
            self.backup.created(st.job, finish.id)
        return self.finish(
            st, True, id=finish.id, status=finish.status, etag=finish.etag,
            recovered=finish.recovered, extra=dict(finish.extra),
        )

    def remember(self, job: Job, etag: int) -> None:
        etags = self.etags
        etags.pop(job.key, None)
        etags[job.key] = etag
        if len(etags) > self.capacity.etag_memory:
            # Forget the least recently written entity: a forgotten etag costs at most
            # one write without If-Match, never correctness.
            del etags[next(iter(etags))]


def _told(st: Attempt, outcome: Outcome) -> Outcome:
    """The outcome, saying where the job's pre-image came from when it used one."""
    if st.pre is not None:
        outcome.extra["pre"] = st.pre
    return outcome
