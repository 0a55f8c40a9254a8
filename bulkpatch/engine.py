"""The engine: a stream of jobs in, one outcome per job out.

::

    source ──► window (bounded) ──► lanes (one job per entity at a time) ──► ready queue
                                                                             │
          outcomes ◄── workers (N coroutines) ◄── rate limiter + global 429 pause

- Memory is bounded by the window: the producer stops reading once ``window`` jobs are
  held (queued, waiting in a lane, or in flight), whatever the input's length.
- Per-entity order: a job waits in its entity's lane until the job before it has an
  outcome, so two jobs for one entity are never in flight together; jobs for other
  entities pass it.
- A write whose fate is unknown (timeout, dropped connection, 5xx) is never sent again
  blindly: the entity is read and the write's effect checked first (``verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import random
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, assert_never
from urllib.parse import quote

import jsonpatch
import orjson
import structlog
from multidict import CIMultiDict
from yarl import URL

from bulkpatch import outcomes, verify
from bulkpatch.api import (
    XCORE_HOME_ACCEPT,
    Dialect,
    DpsDialect,
    XcoreDialect,
    containers,
    home_url,
)
from bulkpatch.auth import TokenProvider, provider
from bulkpatch.backup import Backup
from bulkpatch.client import HttpClient, Response, Session, make_session, request_headers
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError, ErrorKind, TransportError
from bulkpatch.gateway import Exchange, Gateway, Given, Halted, Tally
from bulkpatch.jobs import OFFER_TYPES, BadLine, Job, Restore
from bulkpatch.journal import DONE, DONE_FAILED, Failed, Identity, Journal, Landed, Pending
from bulkpatch.machine import Answer, Backoff, Finish, PatchMachine, Read, Rules, Step, Write
from bulkpatch.outcomes import Outcome
from bulkpatch.retry import Verdict, classify_status, classify_transport
from bulkpatch.scheduler import Outbox, Window
from bulkpatch.source import JobStream
from bulkpatch.summary import RunStats

log = structlog.get_logger()

def shard_of(key: tuple[str, str, str], shards: int) -> int:
    """The slice of ``shards`` an entity's jobs belong to: stable across runs and machines.

    BLAKE2b (8-byte digest) of ``entity + "\\x1f" + offer type ("" outside offers) +
    "\\x1f" + id`` in UTF-8, read as a big-endian integer, modulo ``shards``. All jobs of
    one entity fall in one slice, so per-entity order holds inside each.
    """
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


async def _singles(items: AsyncIterable[Job | BadLine]) -> AsyncIterator[list[Job | BadLine]]:
    async for item in items:
        yield [item]


@dataclass(slots=True, kw_only=True)
class _Attempt(Tally):
    """What one job went through so far: its requests' tally, and its rebases."""

    job: Job
    started: float
    conflicts: int = 0


class Engine:
    """Runs jobs against the API. One engine, one run."""

    def __init__(
        self,
        config: RunConfig,
        *,
        journal: Journal | None = None,
        backup: Backup | None = None,
    ) -> None:
        self.config = config
        self._journal = journal
        self._backup = None if config.plan else backup
        # --id-map: called with (key, new id) of each create as it is confirmed.
        self.on_created: Callable[[Any, str], None] | None = None
        self._create_keys: set[Any] = set()  # keys of this run's creates: two is an error
        # plan: each entity's document as the jobs before this one leave it, kept while
        # the entity has jobs waiting (so bounded by the window, like the lanes).
        self._plan_docs: dict[tuple[str, str, str], dict[str, Any]] = {}
        # Per held job (by line): its journal identity, and a write an earlier run left
        # in flight that must be settled before anything is sent.
        self._identities: dict[int, Identity] = {}
        self._unsettled: dict[int, Pending] = {}
        self.stats = RunStats()
        self.stop_reason: str | None = None
        self.systemic: str | None = None
        self._dialect: Dialect = (
            DpsDialect(config.endpoint)
            if config.dialect == "dps"
            # Until discovered (run()), the container is a placeholder that is never sent.
            else XcoreDialect(config.endpoint, config.container_id or "")
        )
        self._session: Session | None = None
        self._client: HttpClient | None = None
        self._auth: TokenProvider | None = None
        self._rng = random.Random(config.seed)
        self._gateway: Gateway | None = None
        self._shard = config.shard
        # Nothing in this run makes a write wait or read first (see _process).
        self._express = not (config.auto_rate or config.rate > 0) and not (
            config.dry_run or config.plan or config.skip_noop or journal is not None or backup is not None
        )
        # Read once here rather than from the config for every job.
        self._special = config.dry_run or config.plan
        self._guard_always = config.guard == "always"
        self._skip_noop = config.skip_noop
        self._rules = Rules(
            max_attempts=config.max_attempts,
            max_conflicts=config.max_conflicts,
            skip_noop=config.skip_noop,
        )
        # Jobs need no journal look-up nor shard test before admission (see _produce).
        self._plain_admission = journal is None and config.shard is None
        self._etags: dict[tuple[str, str, str], int] = {}
        self._window: Window[Job] = Window(config.held)
        self._outbox: Outbox[Outcome] = Outbox(config.held)
        self._producer: asyncio.Task[Any] | None = None
        self._aborting = False
        self._awaiting_input = False
        self._input_cancelled = False
        self._failed = 0
        self._stopping = False
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        base = {
            "x-api-key": config.api_key
            or (config.credentials.client_id if config.credentials else "")
            or "",
            "x-gw-ims-org-id": config.org_id,
            "x-sandbox-name": config.sandbox,
        }
        self._base_headers = base
        # The headers every API request carries go into the session this engine makes:
        # aiohttp merges each request's headers in a Python loop, header by header.
        # Per offer type: xcore names the type's schema in its media types.
        self._read_headers = {
            t: request_headers(self._dialect.read_headers(t)) for t in OFFER_TYPES
        }
        self._write_headers = {
            t: request_headers(self._dialect.patch_headers(t))
            for t in OFFER_TYPES
        }

    # ------------------------------------------------------------------ public

    async def run(
        self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]
    ) -> AsyncIterator[Outcome]:
        """Run every item; yield one outcome per item, in completion order."""
        async with contextlib.aclosing(self.run_batches(items)) as batches:
            async for batch in batches:
                for outcome in batch:
                    yield outcome

    async def run_batches(
        self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]
    ) -> AsyncGenerator[list[Outcome], None]:
        """``run``, the outcomes a batch at a time: those that finished since the last."""
        async with contextlib.AsyncExitStack() as stack:
            if not self.config.dry_run:
                self._gateway = await self._connect(stack)
                if isinstance(self._dialect, XcoreDialect) and not self._dialect.container:
                    self._dialect = XcoreDialect(self.config.endpoint, await self._discover())
            runner = asyncio.create_task(self._run_all(items))
            try:
                while True:
                    batch = await self._outbox.take()
                    if batch is None:
                        break
                    yield batch
            finally:
                if not runner.done():
                    self.stop("consumer gone")
                    self.abort_in_flight()
                    # Keep draining, so no worker waits for room in the outbox for ever.
                    while await self._outbox.take() is not None:
                        pass
            await runner

    async def _connect(self, stack: contextlib.AsyncExitStack) -> Gateway:
        """The run's sessions (the API's, and IMS's when it fetches tokens) and its gateway."""
        config = self.config
        session = await stack.enter_async_context(
            make_session(
                concurrency=config.concurrency,
                timeout=config.timeout,
                verify_tls=config.verify_tls,
                ca_bundle=config.ca_bundle,
                headers=request_headers(self._base_headers),
            )
        )
        self._client = client = HttpClient(session, config.timeout)
        stack.push_async_callback(client.close)
        assert config.credentials is not None
        auth_client = client
        if not config.credentials.access_token:
            # IMS gets a session of its own: the API's headers are not its business.
            ims_session = await stack.enter_async_context(
                make_session(
                    concurrency=2,
                    timeout=config.timeout,
                    verify_tls=config.verify_tls,
                    ca_bundle=config.ca_bundle,
                )
            )
            auth_client = HttpClient(ims_session, config.timeout)
            stack.push_async_callback(auth_client.close)
        return Gateway(
            client,
            provider(auth_client, config.credentials),
            policy=config.retry_policy,
            pacing=config.pacing,
            traffic=self.stats.traffic,
            rng=self._rng,
            on_halt=self._on_halt,
        )

    async def _discover(self) -> str:
        """The one decisioning container of the xcore API; none or several is an error."""
        assert self._gateway is not None
        headers = request_headers({"Accept": XCORE_HOME_ACCEPT})
        try:
            answer = await self._gateway.read(Tally(), home_url(self.config.endpoint), headers, "reading the xcore home")
        except (Given, Halted) as exc:
            raise ConfigError(f"cannot discover the xcore container: {exc}") from None
        found = containers(answer.json())
        if len(found) != 1:
            listed = ", ".join(found) or "none"
            raise ConfigError(
                f"expected one decisioning container, found {len(found)} ({listed}): "
                "name one with --container-id"
            )
        log.info("xcore.container", container=found[0])
        return found[0]

    def outcomes_waiting(self) -> int:
        """Outcomes ready but not yet taken by the consumer."""
        return len(self._outbox.items)

    def stop(self, reason: str) -> None:
        """Stop taking jobs; jobs in flight finish, jobs not started end as ``aborted``."""
        if not self._stopping:
            self._stopping = True
            self._window.wake()  # a producer waiting for room reads nothing more
            if self._awaiting_input and self._producer is not None:
                self._input_cancelled = True
                self._producer.cancel()  # nor one waiting for its next line
            self.stop_reason = reason
            log.warning("run.stopping", reason=reason)

    def abort_in_flight(self) -> None:
        """Give up on requests in flight (after the grace period): they end as ``aborted``."""
        self._aborting = True
        for task in self._busy:
            task.cancel()

    # ------------------------------------------------------------------ plumbing

    async def _run_all(self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]) -> None:
        gateway = self._gateway
        pacing = None if gateway is None else asyncio.create_task(gateway.adapt())
        try:
            async with asyncio.TaskGroup() as group:
                self._workers = [
                    group.create_task(self._worker()) for _ in range(self.config.concurrency)
                ]
                await self._produce(items)
                await self._window.drained()
                self._window.stop_workers(len(self._workers))
        finally:
            if pacing is not None:
                pacing.cancel()
            self._outbox.close()

    async def _produce(self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]) -> None:
        if isinstance(items, JobStream):
            batches: AsyncIterable[list[Job | BadLine]] = items.batches()
        elif isinstance(items, AsyncIterable):
            batches = _singles(items)
        else:
            for item in items:
                if not await self._take(item):
                    return
            return
        source = aiter(batches)
        self._producer = asyncio.current_task()
        while True:
            if self._stopping:
                return  # stopped while admitting the last line: read nothing more
            # Waiting for input can last for ever (a pipe kept open, a terminal):
            # stop() cancels this wait, and only this one.
            self._awaiting_input = True
            try:
                batch = await anext(source)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if self._input_cancelled and self._producer is not None:
                    self._producer.uncancel()
                    return
                raise
            finally:
                self._awaiting_input = False
            plain = self._plain_admission
            for item in batch:
                # Most jobs need nothing looked up nor waited for: admitted here, without
                # a coroutine each.
                if (
                    plain
                    and type(item) is Job
                    and item.create is None
                    and not self._window.full
                    and not self._stopping
                ):
                    self._window.admit(item)
                elif not await self._take(item):
                    return

    async def _take(self, item: Job | BadLine) -> bool:
        """Admit one item; False once the run is stopping (the item is not read)."""
        if self._stopping:
            return False
        if self._shard is not None and not self._mine(item):
            return True
        duplicate = isinstance(item, Job) and item.create is not None and self._seen_create(item)
        identity: Identity | None = None
        if self._journal is not None:
            identity = await self._journaled(item)
            if identity is None:
                return True  # its outcome comes from the journal
        if isinstance(item, BadLine):
            outcome = outcomes.bad_line(item)
            if self.config.plan:
                outcome.extra["plan"] = "fail"
            await self._final(outcome, identity)
            return True
        if duplicate:
            field_name = self.config.create_key
            value = (item.create or {}).get(field_name)
            duplicate_of = outcomes.refused(
                item,
                f"line {item.line}, field 'create': another create in this run has the same "
                f"{field_name} {value!r}",
                field="create",
            )
            await self._final(duplicate_of, identity)
            return True
        while self._window.full:
            await self._window.room()
            if self._stopping:
                return False
        self._window.admit(item)
        return True

    def _seen_create(self, job: Job) -> bool:
        """Whether an earlier create of this run has the job's create key.

        The create key is what finds a create's entity after an unknown outcome: two
        creates with one key in a run could each find the other's. A create without its
        key fails on its own (it could never be found again).
        """
        value = (job.create or {}).get(self.config.create_key)
        marker = orjson.dumps(value)
        if value is not None and marker in self._create_keys:
            return True
        self._create_keys.add(marker)
        return False

    async def _journaled(self, item: Job | BadLine) -> Identity | None:
        """The item's identity if it is to run (or, a bad line, be reported); None if an
        earlier run gave it its final outcome (reported now if it was not then)."""
        assert self._journal is not None
        identity = self._journal.identify(item)
        state = self._journal.lookup(identity)
        if state in (DONE, DONE_FAILED):
            self.stats.skipped += 1
            self.stats.skipped_failed += state == DONE_FAILED
            return None
        if isinstance(state, Landed | Failed):
            # Ended in an earlier run that stopped before reporting it.
            await self._emit(outcomes.from_journal(item, identity, state))
            return None
        if state is None and isinstance(item, Job):
            later = self._journal.applied_after(identity)
            if later is not None:
                await self._final(outcomes.refused(
                    item,
                    f"line {item.line} was changed after line {later} of the same entity was "
                    "applied: run it on its own to apply it out of order",
                ), identity)
                return None
        if isinstance(state, Pending):
            self._unsettled[item.line] = state
        if isinstance(item, Job):
            self._identities[item.line] = identity
        return identity

    async def _final(self, outcome: Outcome, identity: Identity | None) -> None:
        """Report an outcome decided at admission, on record in the journal first."""
        if identity is not None:
            outcome.identity = identity
            self._journal_outcome(outcome)
        await self._emit(outcome)

    def _journal_outcome(self, outcome: Outcome) -> None:
        """Record a final outcome: ok, or failed with any kind but ``aborted`` (which is
        not an end: the job runs again on resume)."""
        assert self._journal is not None
        if outcome.ok:
            self._journal.landed(
                outcome.identity, outcome.status, outcome.etag, line=outcome.line, entity_id=outcome.id
            )
        elif outcome.error is not None and outcome.kind != "aborted":
            self._journal.failed(outcome.identity, outcome.status, outcome.error, outcome.id)

    def _mine(self, item: Job | BadLine) -> bool:
        """Whether this shard runs the item: bad lines are shard 0's to report."""
        assert self._shard is not None
        index, count = self._shard
        if isinstance(item, BadLine):
            return index == 0
        return shard_of(item.key, count) == index

    def _release(self, job: Job) -> None:
        if self._identities:
            self._identities.pop(job.line, None)
            self._unsettled.pop(job.line, None)
        if self._window.release(job):
            self._plan_docs.pop(job.key, None)

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        ready = self._window.ready
        jobs = ready.jobs
        while (job := jobs.popleft() if jobs else await ready.wait()) is not None:
            if self._stopping:
                outcome = self._aborted(job, "the run stopped before this job started")
            else:
                self._busy.add(task)
                try:
                    outcome = await self._process(job)
                except asyncio.CancelledError:
                    if not self._aborting:
                        raise  # the task group is going down: not this job's doing
                    # abort_in_flight cancelled it: record the job, keep serving.
                    task.uncancel()
                    outcome = self._aborted(
                        job,
                        "the run stopped while this job was in flight; its last write may have been applied",
                    )
                except Halted as exc:
                    outcome = self._aborted(job, str(exc))
                except Exception as exc:
                    log.exception("job.internal_error", id=job.id, line=job.line)
                    self._halt(f"internal error on line {job.line}: {type(exc).__name__}: {exc}")
                    outcome = self._aborted(
                        job, f"stopped by an internal error: {type(exc).__name__}: {exc}"
                    )
                finally:
                    self._busy.discard(task)
            if self._journal is not None and outcome.identity is not None:
                self._journal_outcome(outcome)
            self._count(outcome)
            if not self._outbox.offer(outcome):  # room: no coroutine for the common case
                await self._outbox.put(outcome)
            self._release(job)

    async def _emit(self, outcome: Outcome) -> None:
        self._count(outcome)
        await self._outbox.put(outcome)

    def _count(self, outcome: Outcome) -> None:
        stats = self.stats
        if outcome.ok:
            stats.outcomes["ok"] += 1
        else:
            stats.outcomes[outcome.kind] += 1
            self._failed += 1
            limit = self.config.max_failures
            if limit is not None and self._failed >= limit and not self._stopping:
                self.systemic = f"{self._failed} jobs failed (--max-failures {limit})"
                self.stop(self.systemic)
        if outcome.attempts:
            stats.latency.add(outcome.ms)
        if outcome.recovered:
            stats.recovered += 1

    # ------------------------------------------------------------------ outcomes

    def _succeeded(
        self, job: Job, started: float, request_id: str | None, status: int, etag: int | None,
        st: _Attempt | None = None,
    ) -> Outcome:
        """A 2xx to the job's write. Without ``st``: the fast path's, one attempt."""
        ms = round((asyncio.get_running_loop().time() - started) * 1000, 1)
        identity = self._identities.get(job.line) if self._identities else None
        if st is None:
            return outcomes.succeeded(job, status, etag, ms=ms, request_id=request_id, identity=identity)
        return outcomes.succeeded(
            job, status, etag, ms=ms, request_id=request_id, attempts=st.attempts,
            conflicts=st.conflicts, throttled=st.throttled, identity=identity,
        )

    def _finish(self, st: _Attempt, ok: bool, **fields: Any) -> Outcome:
        return outcomes.finished(
            st.job,
            ok=ok,
            attempts=st.attempts,
            conflicts=st.conflicts,
            throttled=st.throttled,
            ms=round((asyncio.get_running_loop().time() - st.started) * 1000, 1),
            request_id=st.request_id,
            identity=self._identities.get(st.job.line),
            **fields,
        )

    def _failure(self, st: _Attempt, kind: str, message: str, status: int | None = None) -> Outcome:
        return self._finish(st, False, status=status, error=outcomes.error(kind, message, status))

    def _aborted(self, job: Job, message: str) -> Outcome:
        st = _Attempt(job=job, started=asyncio.get_running_loop().time())
        return self._failure(st, ErrorKind.ABORTED, message)

    # ------------------------------------------------------------------ requests

    def _on_halt(self, reason: str) -> None:
        """A systemic failure (the gateway's, or the run's own): stop the run for it."""
        if self.systemic is None:
            self.systemic = reason
        self.stop(reason)

    def _halt(self, reason: str) -> Halted:
        """Stop the run for a systemic failure; the error that ends the current job."""
        self._on_halt(reason)
        return Halted(reason)

    async def _fetch(self, st: _Attempt) -> dict[str, Any] | Given:
        """GET the entity: its document, or why it could not be had."""
        assert self._gateway is not None
        job = st.job
        self.stats.reads += 1
        try:
            answer = await self._gateway.read(
                st, self._dialect.entity_url(job), self._read_headers[job.type], "reading the entity"
            )
        except Given as exc:
            if exc.status == 404:
                return Given("http", "the entity does not exist (404)", 404)
            return exc
        doc = self._dialect.document(answer.json())
        if doc is None:
            return Given("http", "the entity read back has no etag", answer.status)
        return doc

    async def _read(self, st: _Attempt) -> dict[str, Any] | Outcome:
        """GET the entity: its document, or the outcome that ends the job."""
        current = await self._fetch(st)
        if isinstance(current, Given):
            return self._failure(st, current.kind, str(current), current.status)
        return current

    # ------------------------------------------------------------------ one job

    async def _process(self, job: Job) -> Outcome:
        """Apply one job exactly once (see ``verify`` for how an unknown outcome is settled)."""
        started = asyncio.get_running_loop().time()
        # The usual job takes the express path: a write that needs no read first, in a
        # run with no journal, backup, pause or limit to wait for, with a token in hand.
        # It is the loop below's first attempt, sent without the loop's preparations
        # (about 1 % of a job's instructions against a fast server); any answer but a success
        # is then the loop's to deal with, exactly as if the loop had sent it.
        first: Exchange | None = None
        known: int | None = None
        body = b""
        request_id: str | None = None
        gateway = self._gateway
        # (Only a parsed patch job knows it is idempotent: never a create, a delete or a
        # restore.)
        if (
            self._express
            and job.idempotent
            and not self._stopping
            and gateway is not None
            and (token := gateway.express_token()) is not None
        ):
            known = job.etag if job.etag is not None else self._etags.get(job.key)
            if known is not None or not self._guard_always:
                body = orjson.dumps(job.patch)
                headers = self._write_headers[job.type].copy()
                if known is not None:
                    headers["If-Match"] = self._dialect.if_match(known)
                request_id = gateway.stamp("PATCH", headers, token)
                try:
                    reply = await gateway.client.send(
                        "PATCH", self._dialect.entity_url(job), headers, body
                    )
                except TransportError as exc:
                    first = Exchange(exc, classify_transport(exc), token)
                else:
                    gateway.heard(reply, token)
                    if 200 <= reply.status < 300:
                        etag = self._dialect.receipt_etag(reply.json())
                        if etag is not None:
                            self._remember(job, etag)
                        return self._succeeded(job, started, request_id, reply.status, etag)
                    first = Exchange(reply, classify_status(reply.status), token)
        st = _Attempt(job=job, started=started)
        if first is not None:
            st.attempts, st.request_id = 1, request_id
            if isinstance(first.answer, TransportError):
                st.last_error = str(first.answer)
                st.connect_failures += not first.answer.sent
        if self._special:
            if self.config.dry_run:
                return self._dry_run(st)
            return await self._plan(st)
        if job.restore is not None:
            return await self._restore(st, job.restore)
        if job.create is not None:
            return await self._create(st, job.create)
        if job.delete:
            return await self._delete(st)
        if first is None:
            known = job.etag if job.etag is not None else self._etags.get(job.key)
        backup = self._backup
        pending = self._unsettled.pop(job.line, None) if self._identities else None
        machine = PatchMachine(
            job.patch,
            rules=self._rules,
            pinned=job.etag,
            known=known,
            idempotent=job.idempotent,
            needs_pre=(self._guard_always and known is None)
            or self._skip_noop
            or (backup is not None and backup.needs(job)),
            # An earlier run sent this job's write and stopped before its answer.
            pending=None if pending is None else (pending.etag, pending.pre),
        )
        if first is None:
            return await self._drive(st, machine, machine.start())
        machine.sent()  # the fast path's write
        step = await self._answered(st, machine, first)
        return await self._drive(st, machine, step)

    async def _drive(self, st: _Attempt, machine: PatchMachine, step: Step) -> Outcome:
        """Perform the machine's steps until it finishes: the patch job's one loop."""
        journaled: tuple[int | None, int] | None = None
        while True:
            match step:
                case Read(purpose=purpose):
                    current = await self._fetch(st)
                    if isinstance(current, Given):
                        step = machine.unreadable(purpose, current.kind, str(current), current.status)
                    else:
                        step = machine.read(purpose, current)
                case Write():
                    journaled = await self._before_write(st, step, journaled)
                    step = await self._send_patch(st, machine, step)
                case Backoff(attempt=attempt):
                    job = st.job
                    log.debug("job.retry", id=job.id, line=job.line, attempt=attempt, error=machine.last_error)
                    assert self._gateway is not None
                    await self._gateway.back_off(attempt)
                    step = machine.backed_off()
                case Finish():
                    return self._finished(st, machine, step)
                case _:
                    assert_never(step)

    async def _before_write(
        self, st: _Attempt, write: Write, journaled: tuple[int | None, int] | None
    ) -> tuple[int | None, int] | None:
        """What must be on disk before a write leaves: the pre-image in the backup, the
        intent in the journal (a crash from then on is settled on resume from it)."""
        job = st.job
        backup = self._backup
        if backup is not None and write.pre is not None and backup.needs(job):
            backup.before(job, write.pre)
        identity = self._identities.get(job.line) if self._identities else None
        if self._journal is None or identity is None:
            return journaled
        mark = (write.if_match, id(write.pre))
        if journaled != mark:
            await self._journal.intent(identity, job, write.if_match, write.pre)
        return mark

    async def _send_patch(self, st: _Attempt, machine: PatchMachine, write: Write) -> Step:
        """Send the write (again after a 429 or 401, which the gateway absorbs)."""
        job = st.job
        gateway = self._gateway
        assert gateway is not None
        headers = self._write_headers[job.type].copy()
        if write.if_match is not None:
            headers["If-Match"] = self._dialect.if_match(write.if_match)
        url = self._dialect.entity_url(job)
        body = orjson.dumps(job.patch)
        while True:
            exchange = await gateway.exchange(st, "PATCH", url, headers, body)
            if exchange.verdict not in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
                machine.sent()
                return await self._answered(st, machine, exchange)
            try:
                await gateway.absorb(exchange, st)
            except Given as exc:
                return Finish(exc.kind, str(exc), exc.status)

    async def _answered(self, st: _Attempt, machine: PatchMachine, exchange: Exchange) -> Step:
        """Feed the machine an answer (one the gateway absorbs is sent again first)."""
        if exchange.verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
            machine.attempts -= 1  # not an attempt at the write: the gateway's refusal
            gateway = self._gateway
            assert gateway is not None
            try:
                await gateway.absorb(exchange, st)
            except Given as exc:
                return Finish(exc.kind, str(exc), exc.status)
            return Write(machine.known, machine.pre)
        if exchange.verdict is Verdict.CONFLICT:
            self._etags.pop(st.job.key, None)
        return machine.answered(self._answer(exchange))

    def _answer(self, exchange: Exchange) -> Answer:
        answer, verdict = exchange.answer, exchange.verdict
        if isinstance(answer, TransportError):
            return Answer(verdict, None, None, str(answer))
        if verdict is Verdict.DONE:
            return Answer(verdict, answer.status, self._dialect.receipt_etag(answer.json()))
        message = answer.message()
        if verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN):
            message = f"HTTP {answer.status}: {message}"
        return Answer(verdict, answer.status, None, message)

    def _finished(self, st: _Attempt, machine: PatchMachine, finish: Finish) -> Outcome:
        """The outcome of a finished patch job; what its end tells the run."""
        job = st.job
        st.attempts, st.conflicts = machine.attempts, machine.conflicts
        self.stats.conflicts_rebased += machine.conflicts
        if not finish.ok:
            assert finish.kind is not None
            if finish.kind == "exhausted" and 0 < st.attempts <= st.connect_failures:
                self._on_halt(f"the endpoint is unreachable: {machine.last_error}")
            return self._failure(st, finish.kind, finish.message, finish.status)
        if finish.noop:
            return self._finish(st, True, etag=finish.etag, extra={"noop": True})
        if finish.etag is not None:
            self._remember(job, finish.etag)
        if self._backup is not None:
            self._backup.after(job, finish.etag)
        if finish.recovered:
            log.debug("job.recovered", id=job.id, line=job.line, etag=finish.etag)
            return self._finish(st, True, status=200, etag=finish.etag, recovered=True)
        assert finish.status is not None
        return self._succeeded(job, st.started, st.request_id, finish.status, finish.etag, st)

    def _remember(self, job: Job, etag: int) -> None:
        etags = self._etags
        etags.pop(job.key, None)
        etags[job.key] = etag
        if len(etags) > self.config.etag_memory:
            # Forget the least recently written entity: a forgotten etag costs at most
            # one write without If-Match, never correctness.
            del etags[next(iter(etags))]

    async def _plan(self, st: _Attempt) -> Outcome:
        """What the job would do to the entity as the jobs before it leave it."""
        job = st.job
        if job.create is not None:
            key = job.create.get(self.config.create_key)
            found = await self._find(st, key)
            if isinstance(found, Outcome):
                found.extra["plan"] = "fail"
                return found
            if found:
                outcome = self._failure(
                    st, "conflict", f"an entity with {self.config.create_key} {key!r} exists ({found[0]})"
                )
                outcome.extra["plan"] = "fail"
                return outcome
            return self._finish(st, True, extra={"plan": "create", "create": job.create})
        doc = self._plan_docs.get(job.key)
        if doc is None:
            current = await self._read(st)
            if isinstance(current, Outcome):
                current.extra["plan"] = "fail"
                return current
            doc = current
        if job.delete:
            return self._finish(st, True, etag=doc.get("etag"), extra={"plan": "delete"})
        try:
            new = verify.apply(job.patch, doc)
        except verify.PatchDoesNotApply as exc:
            self._plan_docs[job.key] = doc
            outcome = self._failure(st, "conflict", f"the patch does not apply: {exc}")
            outcome.extra["plan"] = "fail"
            return outcome
        self._plan_docs[job.key] = new
        changes = verify.changes(doc, new)
        extra: dict[str, Any] = {"plan": "change" if changes else "noop"}
        if changes:
            extra["changes"] = changes
        return self._finish(st, True, etag=doc.get("etag"), extra=extra)

    async def _restore(self, st: _Attempt, restore: Restore) -> Outcome:
        """A rollback job: put back the fields a run changed, if nobody changed them since."""
        job = st.job
        current = await self._read(st)
        if isinstance(current, Outcome):
            return current
        # A restore an earlier (stopped) rollback sent may have moved the etag itself: then
        # the comparison below is not the test; the pending write is settled instead.
        pending = job.line in self._unsettled
        if restore.etag is not None and current["etag"] != restore.etag and not pending:
            return self._failure(
                st,
                "conflict",
                f"changed since the run left it (etag {restore.etag}, now {current['etag']}): "
                "not restored (--force restores it anyway)",
            )
        now = {f: current[f] for f in restore.fields if f in current}
        then = {f: restore.doc[f] for f in restore.fields if f in restore.doc}
        patch = jsonpatch.make_patch(now, then).patch
        if not patch:
            return self._finish(st, True, etag=current["etag"], extra={"noop": True})
        # The write itself is an ordinary job pinned to the etag just read: a change in
        # between fails it as a conflict instead of overwriting it.
        pinned = None if self.config.force else current["etag"]
        return await self._process(dataclasses.replace(job, patch=patch, restore=None, etag=pinned))

    # ------------------------------------------------------------------ create, delete

    async def _send(
        self, st: _Attempt, method: str, url: URL, headers: CIMultiDict[str], body: bytes | None = None
    ) -> Exchange | Outcome:
        """One request of a create's or delete's loop, a 429 or 401 dealt with (then the
        caller sends it again, as no attempt); the outcome that ends the job instead when
        the gateway gives up."""
        assert self._gateway is not None
        exchange = await self._gateway.exchange(st, method, url, headers.copy(), body)
        try:
            await self._gateway.absorb(exchange, st)
        except Given as exc:
            return self._failure(st, exc.kind, str(exc), exc.status)
        answer = exchange.answer
        if exchange.verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN) and isinstance(answer, Response):
            st.last_error = f"HTTP {answer.status}: {answer.message()}"
        return exchange

    async def _find(self, st: _Attempt, value: Any) -> list[str] | Outcome:
        """Ids of the entities whose create key equals ``value`` (the list API's filter)."""
        assert self._gateway is not None
        query = "limit=2&property=" + quote(f"{self.config.create_key}=={value}", safe="")
        url = self._dialect.collection_url(st.job, query)
        try:
            answer = await self._gateway.read(
                st, url, self._read_headers[st.job.type], "looking the entity up"
            )
        except Given as exc:
            return self._failure(st, exc.kind, str(exc), exc.status)
        finally:
            self.stats.reads += 1
        body = answer.json()
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return self._failure(st, "http", "the list API answered no results", answer.status)
        return [r["id"] for r in results if isinstance(r, dict) and isinstance(r.get("id"), str)]

    async def _create(self, st: _Attempt, entity: dict[str, Any]) -> Outcome:
        """POST a new entity, exactly once as far as the API allows (see the README)."""
        job = st.job
        if isinstance(self._dialect, XcoreDialect):
            return self._failure(st, "input", "create jobs need the dps dialect")
        key = entity.get(self.config.create_key)
        if not isinstance(key, str | int | float) or isinstance(key, bool) or key == "":
            return self._failure(
                st, "input", f"the entity to create has no {self.config.create_key!r} to find it by"
            )
        identity = self._identities.get(job.line)
        resumed = self._unsettled.pop(job.line, None) is not None
        found = await self._find(st, key)
        if isinstance(found, Outcome):
            return found
        if found and resumed:
            # Created by the run that stopped before it could say so.
            return self._created(st, found[0], key, recovered=True)
        if found:
            if self.config.adopt_existing:
                return self._created(st, found[0], key, extra={"adopted": True})
            return self._failure(
                st,
                "conflict",
                f"an entity with {self.config.create_key} {key!r} exists already ({found[0]}); "
                "--adopt-existing reports it instead",
            )
        body = orjson.dumps(entity)
        while True:
            if self._journal is not None and identity is not None and st.attempts == 0:
                await self._journal.intent(identity, job, None, None)
            st.attempts += 1
            exchange = await self._send(
                st, "POST", self._dialect.collection_url(job), self._write_headers[job.type], body
            )
            if isinstance(exchange, Outcome):
                return exchange
            answer, verdict = exchange.answer, exchange.verdict
            if verdict is Verdict.DONE:
                assert isinstance(answer, Response)
                new_id = self._dialect.receipt_id(answer.json())
                if new_id is None:
                    return self._failure(st, "http", "the create's receipt has no id", answer.status)
                return self._created(st, new_id, key, status=answer.status, etag=self._dialect.receipt_etag(answer.json()))
            if verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
                st.attempts -= 1
                continue
            if verdict in (Verdict.PERMANENT, Verdict.CONFLICT):
                assert isinstance(answer, Response)
                return self._failure(st, "http", answer.message(), answer.status)
            if verdict is Verdict.UNKNOWN:
                # It may have been created: look before asking again.
                found = await self._find(st, key)
                if isinstance(found, Outcome):
                    return found
                if found:
                    return self._created(st, found[0], key, recovered=True)
            if st.attempts >= self.config.max_attempts:
                return self._failure(st, "exhausted", f"gave up after {st.attempts} attempts; last: {st.last_error}")
            assert self._gateway is not None
            await self._gateway.back_off(st.attempts)

    def _created(self, st: _Attempt, new_id: str, key: Any, **fields: Any) -> Outcome:
        if self.on_created is not None:
            self.on_created(key, new_id)
        if self._backup is not None:
            self._backup.created(st.job, new_id)
        return self._finish(st, True, id=new_id, **fields)

    async def _delete(self, st: _Attempt) -> Outcome:
        """DELETE the entity; gone after an unknown outcome is done, not a failure.

        The entity is read first. aiohttp sends a DELETE again by itself when a kept-alive
        connection drops under it, so a 404 cannot tell "never there" from "deleted by
        this job a moment ago"; the read that found it there can.
        """
        job = st.job
        if not self.config.allow_delete:
            return self._failure(st, "input", "a delete job needs --allow-delete")
        resumed = self._unsettled.pop(job.line, None) is not None
        current = await self._read(st)
        if isinstance(current, Outcome):
            if resumed and current.status == 404:
                # The run that stopped had sent this delete: it landed.
                return self._deleted(st, 404, recovered=True)
            return current
        backup = self._backup
        if backup is not None and backup.needs(job):
            backup.before(job, current)
        identity = self._identities.get(job.line)
        while True:
            if self._journal is not None and identity is not None and st.attempts == 0:
                await self._journal.intent(identity, job, current["etag"], None)
            st.attempts += 1
            exchange = await self._send(
                st, "DELETE", self._dialect.entity_url(job), self._read_headers[job.type]
            )
            if isinstance(exchange, Outcome):
                return exchange
            answer, verdict = exchange.answer, exchange.verdict
            if verdict is Verdict.DONE:
                assert isinstance(answer, Response)
                return self._deleted(st, answer.status)
            if isinstance(answer, Response) and answer.status == 404:
                # It was there when read: this job's own delete (or a retry of it) took it.
                return self._deleted(st, 404, recovered=st.attempts > 1 or None)
            if verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
                st.attempts -= 1
                continue
            if verdict in (Verdict.PERMANENT, Verdict.CONFLICT):
                assert isinstance(answer, Response)
                return self._failure(st, "http", answer.message(), answer.status)
            if st.attempts >= self.config.max_attempts:
                return self._failure(
                    st, "exhausted", f"gave up after {st.attempts} attempts; last: {st.last_error}"
                )
            assert self._gateway is not None
            await self._gateway.back_off(st.attempts)

    def _deleted(self, st: _Attempt, status: int, recovered: bool | None = None) -> Outcome:
        if self._backup is not None:
            self._backup.deleted(st.job)
        fields: dict[str, Any] = {"status": status, "extra": {"deleted": True}}
        if recovered:
            fields["recovered"] = True
        return self._finish(st, True, **fields)

    def _dry_run(self, st: _Attempt) -> Outcome:
        job = st.job
        method = {"create": "POST", "delete": "DELETE"}.get(job.action, "PATCH")
        url = self._dialect.collection_url(job) if job.create is not None else self._dialect.entity_url(job)
        extra: dict[str, Any] = {"dry_run": True, "method": method, "url": str(url)}
        if job.etag is not None:
            extra["if_match"] = job.etag
        return self._finish(st, True, extra=extra)


async def patch_all(
    items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine], config: RunConfig
) -> AsyncIterator[Outcome]:
    """Run every job; yield one ``Outcome`` per item, in completion order."""
    async for outcome in Engine(config).run(items):
        yield outcome
