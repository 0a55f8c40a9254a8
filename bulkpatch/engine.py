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
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from typing import Any, TypeVar

import structlog

from bulkpatch import outcomes, prefetch, preflight
from bulkpatch.admission import Admission, Report
from bulkpatch.auth import provider
from bulkpatch.backup import Backup
from bulkpatch.client import HttpClient, Transport, make_session, request_headers
from bulkpatch.config import RunConfig
from bulkpatch.errors import ConfigError, RecordError
from bulkpatch.gateway import Clock, Gateway, Halted, LoopClock
from bulkpatch.jobs import BadLine, Job
from bulkpatch.journal import Identity, Journal
from bulkpatch.outcomes import Outcome
from bulkpatch.perform import Performer
from bulkpatch.scheduler import Outbox, Window
from bulkpatch.scrub import scrub
from bulkpatch.source import JobStream
from bulkpatch.summary import RunStats

log = structlog.get_logger()
T = TypeVar("T")

async def _singles(items: AsyncIterable[Job | BadLine]) -> AsyncIterator[list[Job | BadLine]]:
    async for item in items:
        yield [item]


async def open_clients(
    stack: contextlib.AsyncExitStack, config: RunConfig, base_headers: dict[str, str]
) -> tuple[HttpClient, HttpClient]:
    """The API's client (its constant headers on the session) and IMS's, which is the
    same one with a static token and else has a session of its own: the API's headers
    are not IMS's business. Both are closed with ``stack``."""
    client = await _client(stack, config, config.capacity.concurrency, request_headers(base_headers))
    assert config.credentials is not None
    if config.credentials.access_token:
        return client, client
    return client, await _client(stack, config, 2, None)


async def _client(
    stack: contextlib.AsyncExitStack, config: RunConfig, concurrency: int, headers: Any
) -> HttpClient:
    session = await stack.enter_async_context(
        make_session(
            concurrency=concurrency,
            timeout=config.api.timeout_s,
            verify_tls=config.api.verify_tls,
            ca_bundle=config.api.ca_bundle,
            headers=headers,
        )
    )
    client = HttpClient(session, config.api.timeout_s, config.api.max_response_bytes)
    stack.push_async_callback(client.close)
    return client


class Engine:
    """Runs jobs against the API. One engine, one run."""

    def __init__(
        self,
        config: RunConfig,
        *,
        journal: Journal | None = None,
        backup: Backup | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``transport`` and ``clock``: what sends the requests and tells the time, when
        not aiohttp and the event loop's (tests drive the engine in-process with a
        scripted transport and a virtual clock)."""
        self.config = config
        self._capacity = config.capacity
        self._transport = transport
        self._clock = clock
        self._journal = journal
        self.stats = RunStats()
        self.stop_reason: str | None = None
        self.systemic: str | None = None
        run_clock = clock or LoopClock()
        self._perf = Performer(
            config, self.stats, journal=journal, backup=backup, on_halt=self._on_halt, clock=run_clock
        )
        self._admission = Admission(
            journal, config.job_rules, self.stats, self._perf, shard=config.capacity.shard
        )
        if journal is not None:
            journal.on_failure = self._on_halt  # a journal that cannot be written stops the run
        self._rng = random.Random(config.seed)
        # Jobs need no journal look-up nor shard test before admission (see _produce).
        self._plain_admission = journal is None and config.capacity.shard is None
        self._window: Window[Job] = Window(config.capacity.held, clock=run_clock.time)
        self._outbox: Outbox[Outcome] = Outbox(config.capacity.held)
        self._producer: asyncio.Task[Any] | None = None
        self._aborting = False
        self._awaiting_input = False
        self._input_cancelled = False
        self._failed = 0
        self._stopping = False
        self._preflighting = False
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        self._totals: dict[prefetch.Collection, int] = {}  # read by the preflight
        # The headers every API request carries go into the session this engine makes:
        # aiohttp merges each request's headers in a Python loop, header by header.
        self._base_headers = config.api.headers

    @property
    def on_created(self) -> Callable[[Any, str], None] | None:
        """--id-map: called with (key, new id) of each create as it is confirmed."""
        return self._perf.on_created

    @on_created.setter
    def on_created(self, callback: Callable[[Any, str], None] | None) -> None:
        self._perf.on_created = callback

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
            if not self.config.mode.dry_run:
                self._perf.gateway = await self._connect(stack)
            await self._preflight(items)
            await self._prefetch(stack, items)
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
        """The run's sessions (or the transport it was given) and its gateway."""
        client: Transport
        auth_client: Transport
        if self._transport is None:
            client, auth_client = await open_clients(stack, self.config, self._base_headers)
        else:
            # No session carries the API's constant headers: every request does.
            client = auth_client = self._transport
            self._perf.carry(self._base_headers)
        assert self.config.credentials is not None
        return Gateway(
            client,
            provider(auth_client, self.config.credentials),
            policy=self.config.retry_policy,
            pacing=self.config.pacing,
            traffic=self.stats.traffic,
            rng=self._rng,
            on_halt=self._on_halt,
            clock=self._clock,
        )

    async def _preflight(self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]) -> None:
        """Before the first job: the API checked (``preflight.check_api``), so a wrong
        endpoint, key, org or token stops the run (``PreflightError``) instead of failing
        every job. A gateway halt meanwhile is the preflight's to report."""
        first = await self._first_job(items)
        headers: Mapping[str, Any] = self._perf.read_headers
        if isinstance(first, Job) and first.entity in self._perf.slow_kinds:
            # An item job first and no schema id, say: a setup mistake, before any request.
            if (refused := self._perf.refusal(first)) is not None and not first.delete:
                raise ConfigError(f"line {first.line}: {refused}")
            headers = {first.type: self._perf.headers_for(first, write=False)}
        gateway = self._perf.gateway
        if gateway is None or self._stopping:
            return
        self._preflighting = True
        seen: list[int] = []
        try:
            self._perf.dialect = await preflight.check_api(
                gateway,
                self._perf.dialect,
                first,
                probing=self.config.mode.preflight,
                headers=headers,
                carried=self._base_headers if self._transport is not None else {},
                totals=seen,
            )
        finally:
            self._preflighting = False
        if seen:
            probed = first if isinstance(first, Job) else None
            self._totals[prefetch.probed(probed)] = seen[0]

    async def _prefetch(
        self,
        stack: contextlib.AsyncExitStack,
        items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine],
    ) -> None:
        """Start listing the collections whose entities the jobs need (``prefetch``)."""
        if self._stopping:
            return
        journal = None if self._journal is None else self._journal.path
        begun = prefetch.begin(
            self._perf,
            items,
            journal=journal,
            totals=self._totals,
            backup=self._perf.backup is not None,
            runs=None if self._plain_admission else self._admission.runs_here,
        )
        started = await self._reading(begun, None)
        if started is not None:
            self._perf.prefetch = started
            stack.push_async_callback(started.stop)

    async def _first_job(
        self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]
    ) -> Job | preflight.NoJob:
        """The input's first job (``preflight.first_job``)."""
        return await self._reading(preflight.first_job(items), preflight.NoJob.NONE)

    async def _reading(self, reads: Coroutine[Any, Any, T], stopped: T) -> T:
        """What ``reads`` reads ahead of the input. Waiting for it can last for ever (a
        terminal, a pipe kept open): ``stop()`` cancels the wait, as it does the
        producer's, and ``stopped`` is the answer then."""
        self._producer, self._awaiting_input = asyncio.current_task(), True
        try:
            return await reads
        except asyncio.CancelledError:
            if not self._input_cancelled or self._producer is None:
                raise
            self._producer.uncancel()
            return stopped
        finally:
            self._awaiting_input = False

    def outcomes_waiting(self) -> int:
        """Outcomes ready but not yet taken by the consumer."""
        return len(self._outbox.items)

    def stop(self, reason: str) -> None:
        """Stop taking jobs; jobs in flight finish, jobs not started end as ``aborted``."""
        if not self._stopping:
            self._stopping = self._perf.stopping = True
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

    def halt(self, reason: str) -> None:
        """Stop the run for a systemic failure (exit 3): ``stop``, and ``systemic`` is set."""
        self._on_halt(reason)

    def _on_halt(self, reason: str) -> None:
        """A systemic failure (the gateway's, or the run's own): stop the run for it."""
        reason = scrub(reason)  # it may quote IMS or the API, which may echo a secret
        if self.systemic is None:
            self.systemic = reason
        if not self._preflighting:  # else the preflight's error says it, in one line
            self.stop(reason)

    # ------------------------------------------------------------------ plumbing

    async def _run_all(self, items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]) -> None:
        gateway = self._perf.gateway
        pacing = None if gateway is None else asyncio.create_task(gateway.adapt())
        try:
            async with asyncio.TaskGroup() as group:
                self._workers = [
                    group.create_task(self._worker()) for _ in range(self._capacity.concurrency)
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
        if not self._admission.mine(item):
            return True
        duplicate = self._admission.duplicate(item)
        identity: Identity | None = None
        if self._journal is not None:
            decided = self._admission.journaled(item)
            if isinstance(decided, Report):
                if decided.final:
                    await self._final(decided.outcome, decided.outcome.identity)
                else:
                    await self._emit(decided.outcome)
            if not isinstance(decided, tuple):
                return True  # its outcome comes from the journal
            identity = decided
        if isinstance(item, BadLine):
            outcome = outcomes.bad_line(item)
            if self.config.mode.plan:
                outcome.extra["plan"] = "fail"
            await self._final(outcome, identity)
            return True
        if duplicate is not None:
            await self._final(duplicate, identity)
            return True
        while self._window.full:
            await self._window.room()
            if self._stopping:
                return False
        self._window.admit(item)
        return True

    async def _final(self, outcome: Outcome, identity: Identity | None) -> None:
        """Report an outcome decided at admission, on record in the journal first."""
        if identity is not None:
            outcome.identity = identity
            self._admission.record(outcome)
        await self._emit(outcome)

    def _release(self, job: Job) -> None:
        if self._perf.identities:
            self._perf.identities.pop(job.line, None)
            self._perf.unsettled.pop(job.line, None)
        if self._window.release(job):
            self._perf.plan_docs.pop(job.key, None)

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        ready = self._window.ready
        jobs = ready.jobs
        while (job := jobs.popleft() if jobs else await ready.wait()) is not None:
            if self._stopping:
                outcome = self._perf.aborted(job, "the run stopped before this job started")
            else:
                self._busy.add(task)
                try:
                    outcome = await self._perf.process(job)
                except asyncio.CancelledError:
                    if not self._aborting:
                        raise  # the task group is going down: not this job's doing
                    # abort_in_flight cancelled it: record the job, keep serving.
                    task.uncancel()
                    outcome = self._perf.aborted(
                        job,
                        "the run stopped while this job was in flight; its last write may have been applied",
                    )
                except (Halted, RecordError) as exc:
                    outcome = self._perf.aborted(job, str(exc))
                except Exception as exc:
                    log.exception("job.internal_error", id=job.id, line=job.line)
                    self._on_halt(f"internal error on line {job.line}: {type(exc).__name__}: {exc}")
                    outcome = self._perf.aborted(
                        job, f"stopped by an internal error: {type(exc).__name__}: {exc}"
                    )
                finally:
                    self._busy.discard(task)
            if (laned := self._window.waited) and (waited := laned.pop(id(job), None)) is not None:
                outcome.wait_ms = round(outcome.wait_ms + waited * 1000, 1)
            if self._journal is not None and outcome.identity is not None:
                self._admission.record(outcome)
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
            limit = self._capacity.max_failures
            if limit is not None and self._failed >= limit and not self._stopping:
                self.systemic = f"{self._failed} jobs failed (--max-failures {limit})"
                self.stop(self.systemic)
        if outcome.attempts:
            stats.latency.add(outcome.ms)
            stats.server.add(outcome.server_ms)
            stats.waiting.add(outcome.wait_ms)
        if outcome.recovered:
            stats.recovered += 1

async def patch_all(
    items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine], config: RunConfig
) -> AsyncIterator[Outcome]:
    """Run every job; yield one ``Outcome`` per item, in completion order."""
    async for outcome in Engine(config).run(items):
        yield outcome
