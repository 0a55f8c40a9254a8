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
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp
import jsonpatch
import orjson
import structlog
from aiolimiter import AsyncLimiter
from multidict import CIMultiDict
from yarl import URL

from bulkpatch import verify
from bulkpatch.api import (
    DEFAULT_ENDPOINT,
    XCORE_HOME_ACCEPT,
    Dialect,
    DpsDialect,
    XcoreDialect,
    containers,
    home_url,
)
from bulkpatch.auth import Credentials, TokenProvider, provider
from bulkpatch.backup import Backup
from bulkpatch.client import HttpClient, Response, make_session, request_headers
from bulkpatch.errors import ConfigError, RequestError, TransportError
from bulkpatch.jobs import OFFER_TYPES, BadLine, Job, Outcome, Restore
from bulkpatch.journal import Identity, Journal, Landed, Pending
from bulkpatch.pace import TICK_S, AutoRate, limiter_for
from bulkpatch.retry import (
    Verdict,
    backoff,
    classify_read,
    classify_status,
    classify_transport,
    parse_retry_after,
)
from bulkpatch.source import JobStream
from bulkpatch.summary import LatencyHistogram

log = structlog.get_logger()

Guard = Literal["auto", "always"]
# 429s do not use up a job's attempts (the limiter and the pause deal with them), but a
# job that is throttled this often is given up rather than retried for ever.
MAX_THROTTLED: Final = 50
# Refusals (401) of the current token, without an acceptance in between, before the
# credentials are declared rejected.
MAX_AUTH_FAILURES: Final = 3


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


def _changes_nothing(patch: list[dict[str, Any]], doc: dict[str, Any]) -> bool:
    try:
        return verify.apply(patch, doc) == doc
    except verify.PatchDoesNotApply:
        return False  # the server says why


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run needs. Secrets live in ``credentials`` and never in a repr."""

    credentials: Credentials | None = None
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = None
    org_id: str = ""
    sandbox: str = ""
    rate: float = 20.0  # requests per second, all requests together; 0 = no limit
    auto_rate: bool = False  # find the rate from the server's 429s (``rate`` is ignored)
    max_rate: float = 1000.0  # the most ``auto_rate`` goes to
    shard: tuple[int, int] | None = None  # (K, N): run only slice K of N (see ``shard_of``)
    concurrency: int = 16
    timeout: float = 30.0
    max_attempts: int = 6
    max_conflicts: int = 5
    max_failures: int | None = None
    force: bool = False  # rollback: restore entities changed since the run being undone
    dialect: Literal["dps", "xcore"] = "dps"
    container_id: str | None = None  # xcore: None = discover the decisioning container
    allow_delete: bool = False  # delete jobs fail as input errors without it
    create_key: str = "name"  # the field that finds a create's entity after an unknown outcome
    adopt_existing: bool = False  # a create whose key exists reports that entity, not a conflict
    guard: Guard = "auto"
    dry_run: bool = False
    plan: bool = False  # read each entity, apply its jobs locally, write nothing
    skip_noop: bool = False  # read first; do not send a write that would change nothing
    verify_tls: bool = True
    ca_bundle: Path | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    window: int = 0  # jobs held at once; 0 = max(1024, 8 x concurrency)
    etag_memory: int = 20_000  # entities whose etag is remembered (Adobe caps a sandbox at 10,000)
    seed: int | None = None  # backoff jitter, for reproducible tests

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ConfigError("--rate must be >= 0 (0 means no limit)")
        _positive("--max-rate", self.max_rate)
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 0 <= index < count:
                raise ConfigError(f"--shard must be K/N with 0 <= K < N, got {index}/{count}")
        _positive("--concurrency", self.concurrency)
        _positive("--timeout", self.timeout)
        _positive("--max-attempts", self.max_attempts)
        if self.max_conflicts < 0:
            raise ConfigError("--max-conflicts must be >= 0")
        if self.max_failures is not None:
            _positive("--max-failures", self.max_failures)
        if self.guard not in ("auto", "always"):
            raise ConfigError("--guard must be 'auto' or 'always'")
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"--endpoint must be an http(s) URL, got {self.endpoint!r}")
        if self.dry_run:
            return
        if self.plan and self.skip_noop:
            raise ConfigError("--skip-noop is for run, not plan")
        if self.credentials is None:
            raise ConfigError(
                "no credentials: set ADOBE_ACCESS_TOKEN, or ADOBE_CLIENT_ID and ADOBE_CLIENT_SECRET"
            )
        if not (self.api_key or self.credentials.client_id):
            raise ConfigError("no API key: set ADOBE_API_KEY or --api-key (or ADOBE_CLIENT_ID)")
        if not self.org_id:
            raise ConfigError(
                "no organization: set ADOBE_ORG_ID or --org-id (like ABC123@AdobeOrg)"
            )
        if not self.sandbox:
            raise ConfigError("no sandbox: set ADOBE_SANDBOX_NAME or --sandbox")

    @property
    def held(self) -> int:
        return self.window or max(1024, 8 * self.concurrency)


@dataclass
class RunStats:
    """Counters of a run, for the summary."""

    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    writes: int = 0
    reads: int = 0
    retries: int = 0
    conflicts_rebased: int = 0
    recovered: int = 0
    throttled: int = 0
    skipped: int = 0  # done in an earlier run of the same journal
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # ms per job

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(self.outcomes),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "requests": self.requests,
            "writes": self.writes,
            "reads": self.reads,
            "retries": self.retries,
            "conflicts_rebased": self.conflicts_rebased,
            "recovered": self.recovered,
            "throttled": self.throttled,
            "skipped": self.skipped,
            "latency_ms": self.latency.as_dict(),
        }


class _GiveUp(Exception):
    """A job ends with ``outcome`` (raised from deep in a retry loop)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.kind)
        self.outcome = outcome


class _Stop(Exception):
    """The run is stopping; the current job ends as ``aborted``."""


@dataclass(slots=True)
class _Attempt:
    """What one job went through so far."""

    job: Job
    started: float
    attempts: int = 0
    conflicts: int = 0
    throttled: int = 0
    request_id: str | None = None
    last_error: str = ""
    connect_failures: int = 0


class _Ready:
    """Jobs ready to start, and workers waiting for one; both first come, first served.

    An ``asyncio.Queue`` without what the engine does not use (bounds, task counting),
    and with a way to take a job without a coroutine when one is waiting.
    """

    def __init__(self) -> None:
        self.jobs: deque[Job | None] = deque()
        self._waiting: deque[asyncio.Future[Job | None]] = deque()

    def put(self, job: Job | None) -> None:
        waiting = self._waiting
        while waiting:
            worker = waiting.popleft()
            if not worker.done():  # not cancelled while it waited
                worker.set_result(job)
                return
        self.jobs.append(job)

    async def wait(self) -> Job | None:
        """The next job, once there is one (``jobs`` is empty)."""
        worker: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(worker)
        return await worker


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds, each formatted once.

    Every outcome carries one, and a busy run finishes several jobs a millisecond;
    ``datetime.isoformat`` per outcome costs more than the rest of writing the outcome line.
    """

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""
        self._second = -1
        self._prefix = ""

    def now_iso(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            self._ms = ms
            second, fraction = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._text = f"{self._prefix}.{fraction:03d}Z"
        return self._text


_now_iso = _Clock().now_iso


class Engine:
    """Runs jobs against the API. One engine, one run."""

    def __init__(
        self,
        config: RunConfig,
        *,
        session: aiohttp.ClientSession | None = None,
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
        self._session = session
        self._client: HttpClient | None = None
        self._auth: TokenProvider | None = None
        self._rng = random.Random(config.seed)
        self._limiter: AsyncLimiter | None = None
        self._pacer: AutoRate | None = None
        if config.auto_rate:
            self._pacer = AutoRate(max_rate=config.max_rate)
            self._limiter = limiter_for(self._pacer.rate)
        elif config.rate > 0:
            self._limiter = limiter_for(config.rate)
        self._resume_at = 0.0
        self._shard = config.shard
        # Nothing in this run makes a write wait or read first (see _process).
        self._express = self._limiter is None and not (
            config.dry_run or config.plan or config.skip_noop or journal is not None or backup is not None
        )
        # Read once here rather than from the config for every job.
        self._special = config.dry_run or config.plan
        self._guard_always = config.guard == "always"
        self._skip_noop = config.skip_noop
        # Jobs need no journal look-up nor shard test before admission (see _produce).
        self._plain_admission = journal is None and config.shard is None
        self._etags: dict[tuple[str, str, str], int] = {}
        # Per entity with a job held: the jobs waiting behind the one in flight.
        self._lanes: dict[tuple[str, str, str], deque[Job] | None] = {}
        self._ready = _Ready()
        # The window: the producer stops reading at `held` jobs and starts again once
        # a quarter of them are done, so it wakes once per batch of jobs, not per job.
        self._producer: asyncio.Task[Any] | None = None
        self._aborting = False
        self._awaiting_input = False
        self._input_cancelled = False
        self._held = 0
        self._held_max = config.held
        self._low_water = config.held - max(1, config.held // 4)
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        # Outcomes pass to the consumer in batches: one wake-up of the consumer per
        # batch, not one per outcome. Bounded by the window (every held job has at most
        # one outcome waiting), so a slow consumer stops the producer, not memory.
        self._outbox: list[Outcome] = []
        self._outbox_ready = asyncio.Event()
        self._outbox_closed = False
        self._failed = 0
        self._refused: dict[str, int] = {}  # 401s per token since it was last accepted
        self._stopping = False
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()
        # x-request-id: the run's random prefix and a sequence number, so a request in the
        # service's logs is found from its outcome line.
        self._request_prefix = f"bulkpatch-{secrets.token_hex(4)}-"
        self._request_seq = 0
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
        per_request = base if session is not None else {}
        # Per offer type: xcore names the type's schema in its media types.
        self._read_headers = {
            t: request_headers({**per_request, **self._dialect.read_headers(t)}) for t in OFFER_TYPES
        }
        self._write_headers = {
            t: request_headers({**per_request, **self._dialect.patch_headers(t)})
            for t in OFFER_TYPES
        }
        self._bearer = ("", "")  # the last token and its Authorization header

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
                config = self.config
                if self._session is None:
                    self._session = await stack.enter_async_context(
                        make_session(
                            concurrency=config.concurrency,
                            timeout=config.timeout,
                            verify_tls=config.verify_tls,
                            ca_bundle=config.ca_bundle,
                            headers=request_headers(self._base_headers),
                        )
                    )
                self._client = HttpClient(self._session, config.timeout)
                stack.push_async_callback(self._client.close)
                assert config.credentials is not None
                auth_client = self._client
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
                self._auth = provider(auth_client, config.credentials)
                if isinstance(self._dialect, XcoreDialect) and not self._dialect.container:
                    self._dialect = XcoreDialect(self.config.endpoint, await self._discover())
            runner = asyncio.create_task(self._run_all(items))
            try:
                while True:
                    batch = await self._take_outcomes()
                    if batch is None:
                        break
                    yield batch
            finally:
                if not runner.done():
                    self.stop("consumer gone")
                    self.abort_in_flight()
                    # Keep draining, so no worker waits for room in the outbox for ever.
                    while await self._take_outcomes() is not None:
                        pass
            await runner

    async def _discover(self) -> str:
        """The one decisioning container of the xcore API; none or several is an error."""
        assert self._client is not None
        assert self._auth is not None
        headers = request_headers({**self._base_headers, "Accept": XCORE_HOME_ACCEPT})
        try:
            headers["Authorization"] = f"Bearer {await self._auth.token()}"
            answer = await self._client.send("GET", home_url(self.config.endpoint), headers)
        except RequestError as exc:
            raise ConfigError(f"cannot discover the xcore container: {exc}") from None
        if answer.status != 200:
            raise ConfigError(
                f"cannot discover the xcore container: HTTP {answer.status}: {answer.message()}"
            )
        found = containers(answer.json())
        if len(found) != 1:
            listed = ", ".join(found) or "none"
            raise ConfigError(
                f"expected one decisioning container, found {len(found)} ({listed}): "
                "name one with --container-id"
            )
        log.info("xcore.container", container=found[0])
        return found[0]

    async def _take_outcomes(self) -> list[Outcome] | None:
        """The outcomes waiting (at least one), or None once the run has ended."""
        while not self._outbox:
            if self._outbox_closed:
                return None
            self._outbox_ready.clear()
            await self._outbox_ready.wait()
        batch, self._outbox = self._outbox, []
        self._outbox_ready.set()  # room again, for a worker waiting on a full outbox
        return batch

    async def _put_outcome(self, outcome: Outcome) -> None:
        while len(self._outbox) >= self._held_max and not self._outbox_closed:
            self._outbox_ready.clear()
            await self._outbox_ready.wait()
        self._outbox.append(outcome)
        self._outbox_ready.set()

    def outcomes_waiting(self) -> int:
        """Outcomes ready but not yet taken by the consumer."""
        return len(self._outbox)

    def stop(self, reason: str) -> None:
        """Stop taking jobs; jobs in flight finish, jobs not started end as ``aborted``."""
        if not self._stopping:
            self._stopping = True
            self._room.set()  # a producer waiting for room reads nothing more
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
        pacing = None if self._pacer is None else asyncio.create_task(self._adapt(self._pacer))
        try:
            async with asyncio.TaskGroup() as group:
                self._workers = [
                    group.create_task(self._worker()) for _ in range(self.config.concurrency)
                ]
                await self._produce(items)
                if self._held:
                    self._idle.clear()
                    await self._idle.wait()
                for _ in self._workers:
                    self._ready.put(None)
        finally:
            if pacing is not None:
                pacing.cancel()
            self._outbox_closed = True
            self._outbox_ready.set()

    async def _adapt(self, pacer: AutoRate) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            if pacer.tick(loop.time()):
                self._set_rate(pacer.rate)

    def _set_rate(self, rate: float) -> None:
        self._limiter = limiter_for(rate)
        log.debug("run.rate", rate=round(rate, 1))

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
                    and self._held < self._held_max
                    and not self._stopping
                ):
                    self._admit(item)
                elif not await self._take(item):
                    return

    async def _take(self, item: Job | BadLine) -> bool:
        """Admit one item; False once the run is stopping (the item is not read)."""
        if self._stopping:
            return False
        if self._shard is not None and not self._mine(item):
            return True
        if isinstance(item, Job) and item.create is not None:
            # The create key is what finds a create's entity after an unknown outcome: two
            # creates with one key in a run could each find the other's.
            value = item.create.get(self.config.create_key)
            marker = orjson.dumps(value)
            # A create without its key fails on its own (it could never be found again).
            if value is not None and marker in self._create_keys:
                await self._emit(self._duplicate_create(item))
                return True
            self._create_keys.add(marker)
        if isinstance(item, BadLine):
            outcome = self._bad_line_outcome(item)
            if self.config.plan:
                outcome.extra["plan"] = "fail"
            await self._emit(outcome)
            return True
        if self._journal is not None:
            identity = self._journal.identify(item)
            state = self._journal.lookup(identity)
            if state == "done":
                self.stats.skipped += 1
                return True
            if isinstance(state, Landed):
                # Applied by an earlier run that stopped before reporting it.
                await self._emit(self._from_journal(item, identity, state))
                return True
            if isinstance(state, Pending):
                self._unsettled[item.line] = state
            self._identities[item.line] = identity
        while self._held >= self._held_max:
            self._room.clear()
            await self._room.wait()
            if self._stopping:
                return False
        self._admit(item)
        return True

    def _admit(self, job: Job) -> None:
        """Hold the job: ready at once, or behind its entity's job in flight."""
        self._held += 1
        lanes = self._lanes
        key = job.key
        if key not in lanes:
            lanes[key] = None  # in flight, nothing behind it (most entities: no deque)
            self._ready.put(job)
        elif (lane := lanes[key]) is None:
            lanes[key] = deque((job,))
        else:
            lane.append(job)

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
        lane = self._lanes[job.key]
        if lane:
            self._ready.put(lane.popleft())
        else:
            del self._lanes[job.key]
            self._plan_docs.pop(job.key, None)
        self._held -= 1
        if self._held <= self._low_water:
            self._room.set()
        if self._held == 0:
            self._idle.set()

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        ready = self._ready
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
                except _Stop as exc:
                    outcome = self._aborted(job, str(exc))
                except Exception as exc:
                    log.exception("job.internal_error", id=job.id, line=job.line)
                    self._halt(f"internal error on line {job.line}: {type(exc).__name__}: {exc}")
                    outcome = self._aborted(
                        job, f"stopped by an internal error: {type(exc).__name__}: {exc}"
                    )
                finally:
                    self._busy.discard(task)
            if outcome.ok and self._journal is not None and outcome.identity is not None:
                self._journal.landed(
                    outcome.identity,
                    outcome.status,
                    outcome.etag,
                    line=outcome.line,
                    entity_id=outcome.id,
                )
            self._count(outcome)
            outbox = self._outbox
            if len(outbox) < self._held_max:  # room: no coroutine for the common case
                outbox.append(outcome)
                if len(outbox) == 1:
                    self._outbox_ready.set()  # the consumer may be waiting for a first one
            else:
                await self._put_outcome(outcome)
            self._release(job)

    async def _emit(self, outcome: Outcome) -> None:
        self._count(outcome)
        await self._put_outcome(outcome)

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

    @staticmethod
    def _bad_line_outcome(bad: BadLine) -> Outcome:
        return Outcome(
            line=bad.line,
            ok=False,
            id=bad.id,
            at=_now_iso(),
            error={"kind": "input", "field": bad.error.field, "message": str(bad.error)},
            job=bad.raw_text(),
            bytes=bad.size,
        )

    def _duplicate_create(self, job: Job) -> Outcome:
        field_name = self.config.create_key
        return Outcome(
            line=job.line,
            ok=False,
            at=_now_iso(),
            error={
                "kind": "input",
                "field": "create",
                "message": f"line {job.line}, field 'create': another create in this run has "
                f"the same {field_name} {(job.create or {}).get(field_name)!r}",
            },
            job=job.as_line(),
        )

    @staticmethod
    def _from_journal(job: Job, identity: Identity, landed: Landed) -> Outcome:
        return Outcome(
            line=job.line,
            ok=True,
            id=landed.id or job.id or None,
            status=landed.status,
            etag=landed.etag,
            recovered=True,
            at=_now_iso(),
            ref=job.ref,
            has_ref=job.has_ref,
            identity=identity,
        )

    def _succeeded(
        self,
        job: Job,
        started: float,
        request_id: str | None,
        status: int,
        etag: int | None,
        st: _Attempt | None = None,
    ) -> Outcome:
        """``_finish(st, True, status=status, etag=etag)``, at a third of the cost: this is
        every successful write's outcome. Without ``st``: the express path's, which is
        one attempt, no conflict, no throttling."""
        # Positional: keywords would cost as much again as the call itself.
        return Outcome(
            job.line,
            True,
            job.id or None,
            status,
            etag,
            1 if st is None else st.attempts,
            0 if st is None else st.conflicts,
            0 if st is None else st.throttled,
            False,
            round((asyncio.get_running_loop().time() - started) * 1000, 1),
            _now_iso(),
            request_id,
            None,
            None,
            None,
            job.ref,
            job.has_ref,
            {},
            self._identities.get(job.line) if self._identities else None,
        )

    def _finish(self, st: _Attempt, ok: bool, **fields: Any) -> Outcome:
        job = st.job
        loop = asyncio.get_running_loop()
        outcome = Outcome(
            line=job.line,
            ok=ok,
            id=fields.pop("id", job.id or None),
            attempts=st.attempts,
            conflicts=st.conflicts,
            throttled=st.throttled,
            ms=round((loop.time() - st.started) * 1000, 1),
            at=_now_iso(),
            request_id=st.request_id,
            ref=job.ref,
            has_ref=job.has_ref,
            identity=self._identities.get(job.line),
            **fields,
        )
        if not ok:
            outcome.job = job.as_line()
        return outcome

    def _failure(self, st: _Attempt, kind: str, message: str, status: int | None = None) -> Outcome:
        error: dict[str, Any] = {"kind": kind}
        if status is not None:
            error["status"] = status
        error["message"] = message
        return self._finish(st, False, status=status, error=error)

    def _aborted(self, job: Job, message: str) -> Outcome:
        st = _Attempt(job, asyncio.get_running_loop().time())
        return self._failure(st, "aborted", message)

    # ------------------------------------------------------------------ requests

    async def _gate(self) -> None:
        """Wait out a global 429 pause, then for the rate limiter."""
        loop = asyncio.get_running_loop()
        # The deadline can move later while we sleep (another 429), so look again after.
        while (wait := self._resume_at - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        limiter = self._limiter
        if limiter is not None:
            await limiter.acquire()
            while limiter is not self._limiter:
                # The rate changed while this request waited: keep to the new one.
                limiter = self._limiter
                assert limiter is not None
                await limiter.acquire()
            if self._pacer is not None:
                self._pacer.sent()

    def _pause(self, seconds: float) -> None:
        """Pause every worker, not only the one that was throttled."""
        until = asyncio.get_running_loop().time() + seconds
        if until > self._resume_at:
            self._resume_at = until
            log.debug("run.throttled", pause_s=round(seconds, 3))

    async def _request(
        self,
        st: _Attempt,
        method: str,
        headers: CIMultiDict[str],
        body: bytes | None = None,
        url: URL | None = None,
    ) -> tuple[Response | TransportError, str]:
        """One request; returns the answer (or the transport error) and the token used."""
        if self._stopping and self.systemic:
            raise _Stop(f"the run stopped: {self.systemic}")
        if self._limiter is not None or self._resume_at:
            await self._gate()
        auth = self._auth
        client = self._client
        assert auth is not None
        assert client is not None
        # The token in hand when there is one: no coroutine per request for it.
        token = auth.current
        if token is None:
            try:
                token = await auth.token()
            except RequestError as exc:
                raise self._halt(f"no access token: {exc}") from exc
        st.request_id = self._stamp(method, headers, token)
        try:
            response = await client.send(method, url or self._dialect.entity_url(st.job), headers, body)
        except TransportError as exc:
            return exc, token
        self._heard(response, token)
        return response, token

    def _stamp(self, method: str, headers: CIMultiDict[str], token: str) -> str:
        """Put the token and a new request id on a request about to leave; count it.
        Returns the request id."""
        bearer = self._bearer
        if bearer[0] != token:
            bearer = self._bearer = (token, f"Bearer {token}")
        headers["Authorization"] = bearer[1]
        self._request_seq = seq = self._request_seq + 1
        headers["x-request-id"] = request_id = f"{self._request_prefix}{seq}"
        stats = self.stats
        stats.requests += 1
        if method != "GET":
            stats.writes += 1
        return request_id

    def _heard(self, response: Response, token: str) -> None:
        """What an answer tells the run as a whole: its status, the pace, the token."""
        self.stats.statuses[response.status] += 1
        pacer = self._pacer
        if pacer is not None and pacer.answered(
            asyncio.get_running_loop().time(), throttled=response.status == 429
        ):
            self._set_rate(pacer.rate)
        if self._refused and response.status != 401:
            self._refused.pop(token, None)  # accepted again: its refusals were passing

    def _halt(self, reason: str) -> _Stop:
        """Stop the run for a systemic failure; the error that ends the current job."""
        self.systemic = reason
        self.stop(reason)
        return _Stop(reason)

    async def _on_unauthorized(self, token: str) -> None:
        assert self._auth is not None
        if token == self._auth.current:
            # Refused without a success since: an expired token is routine, but a token
            # refused again and again (right after its renewal) means bad credentials.
            refused = self._refused.get(token, 0) + 1
            self._refused[token] = refused
            if refused > MAX_AUTH_FAILURES:
                raise self._halt("the credentials are rejected (401) even after renewing the token")
        # Single-flight: the first worker refused with this token fetches a new one; the
        # others refused with it wait for that one instead of asking again.
        try:
            await self._auth.renew(token)
        except RequestError as exc:
            raise self._halt(f"renewing the access token failed: {exc}") from exc

    async def _read(self, st: _Attempt) -> dict[str, Any] | Outcome:
        """GET the entity: its document, or the outcome that ends the job."""
        tries = unreachable = 0
        while True:
            headers = self._read_headers[st.job.type].copy()
            answer, token = await self._request(st, "GET", headers)
            self.stats.reads += 1
            if isinstance(answer, TransportError):
                verdict = Verdict.TRANSIENT
                st.last_error = str(answer)
                unreachable += not answer.sent
            else:
                verdict = classify_read(answer.status)
                if verdict is Verdict.DONE:
                    doc = self._dialect.document(answer.json())
                    if doc is not None:
                        return doc
                    return self._failure(
                        st, "http", "the entity read back has no etag", answer.status
                    )
            if verdict is Verdict.THROTTLED:
                assert isinstance(answer, Response)
                st.throttled += 1
                self.stats.throttled += 1
                self._pause(self._throttle_delay(answer, st.throttled))
                if st.throttled > MAX_THROTTLED:
                    return self._failure(st, "exhausted", "throttled (429) too many times", 429)
                continue
            if verdict is Verdict.UNAUTHORIZED:
                await self._on_unauthorized(token)
                continue
            if verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN):
                tries += 1
                if isinstance(answer, Response):
                    st.last_error = f"HTTP {answer.status}: {answer.message()}"
                if tries >= self.config.max_attempts:
                    if unreachable == tries:
                        # Not this entity: the endpoint. Every other job would only
                        # spend its own retries finding the same.
                        self._halt(f"the endpoint is unreachable: {st.last_error}")
                    return self._failure(
                        st,
                        "exhausted",
                        f"reading the entity failed {tries} times; last: {st.last_error}",
                    )
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(tries))
                continue
            assert isinstance(answer, Response)
            if answer.status == 404:
                return self._failure(st, "http", "the entity does not exist (404)", 404)
            return self._failure(st, "http", answer.message(), answer.status)

    def _backoff(self, attempt: int) -> float:
        return backoff(
            attempt, base=self.config.backoff_base, cap=self.config.backoff_cap, rng=self._rng
        )

    def _throttle_delay(self, answer: Response, count: int) -> float:
        delay = parse_retry_after(answer.retry_after)
        if delay is None:
            if self._pacer is not None:
                return 0.0  # not told how long: the lower rate is the remedy
            delay = self._backoff(min(count, 6))
        return min(delay, self.config.backoff_cap * 4)

    # ------------------------------------------------------------------ one job

    async def _process(self, job: Job) -> Outcome:
        """Apply one job exactly once (see ``verify`` for how an unknown outcome is settled)."""
        started = asyncio.get_running_loop().time()
        # The usual job takes the express path: a write that needs no read first, in a
        # run with no journal, backup, pause or limit to wait for, with a token in hand.
        # It is the loop below's first attempt, sent without the loop's preparations
        # (about 1 % of a job's instructions against a fast server); any answer but a success
        # is then the loop's to deal with, exactly as if the loop had sent it.
        first: tuple[Response | TransportError, str] | None = None
        known: int | None = None
        body = b""
        request_id: str | None = None
        # (Only a parsed patch job knows it is self-verifying: never a create, a delete
        # or a restore.)
        if (
            self._express
            and job.self_verifying
            and not self._resume_at
            and not self._stopping
            and self._auth is not None
            and self._client is not None
            and (token := self._auth.current) is not None
        ):
            known = job.etag if job.etag is not None else self._etags.get(job.key)
            if known is not None or not self._guard_always:
                body = orjson.dumps(job.patch)
                headers = self._write_headers[job.type].copy()
                if known is not None:
                    headers["If-Match"] = self._dialect.if_match(known)
                request_id = self._stamp("PATCH", headers, token)
                try:
                    reply = await self._client.send(
                        "PATCH", self._dialect.entity_url(job), headers, body
                    )
                except TransportError as exc:
                    first = (exc, token)
                else:
                    self._heard(reply, token)
                    if 200 <= reply.status < 300:
                        etag = self._dialect.receipt_etag(reply.json())
                        if etag is not None:
                            self._remember(job, etag)
                        return self._succeeded(job, started, request_id, reply.status, etag)
                    first = (reply, token)
        st = _Attempt(job, started)
        if first is not None:
            st.attempts, st.request_id = 1, request_id
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
        pinned = job.etag is not None
        if first is None:
            known = job.etag if pinned else self._etags.get(job.key)
        backup = self._backup
        verifying = job.self_verifying
        needs_pre = first is None and (
            not (verify.self_verifying(job.patch) if verifying is None else verifying)
            or (self._guard_always and known is None)
            or self._skip_noop
            or (backup is not None and backup.needs(job))
        )
        pre: dict[str, Any] | None = None
        # Why the next step reads the entity: to have a pre-image, to settle an unknown
        # outcome, or to rebase after a conflict. None: no read needed.
        read_for: str | None = "pre" if needs_pre else None
        identity: Identity | None = None
        if self._identities:  # a journal: what it knows of this job
            identity = self._identities.get(job.line)
            pending = self._unsettled.pop(job.line, None)
            if pending is not None:
                # An earlier run sent this job's write and stopped before its answer.
                pre, known, read_for = pending.pre, pending.etag, "settle"
        if first is None:
            body = orjson.dumps(job.patch)
        journaled: tuple[int | None, int] | None = None
        while True:
            if first is not None:
                answer, token = first  # the express attempt's answer, taken from here
                first = None
            else:
                if read_for is not None:
                    current = await self._read(st)
                    if isinstance(current, Outcome):
                        return current
                    if read_for == "settle":
                        landed = verify.landed(job.patch, current, pre)
                        if landed is verify.Landed.YES:
                            return self._landed(st, current, recovered=True)
                        if landed is verify.Landed.UNCLEAR:
                            return self._failure(
                                st,
                                "conflict",
                                "after an unknown outcome, the locations this job changes were also "
                                "changed by another writer: cannot tell whether the write landed",
                            )
                    if pinned and current["etag"] != job.etag:
                        return self._failure(
                            st,
                            "conflict",
                            f"the job pins etag {job.etag}; the entity is at etag {current['etag']}",
                        )
                    if read_for != "pre":
                        try:
                            verify.apply(job.patch, current)
                        except verify.PatchDoesNotApply as exc:
                            return self._failure(
                                st, "conflict", f"the patch no longer applies to the entity: {exc}"
                            )
                    elif self.config.skip_noop and _changes_nothing(job.patch, current):
                        return self._finish(st, True, etag=current["etag"], extra={"noop": True})
                    pre, known, read_for = current, current["etag"], None
                if backup is not None and pre is not None and backup.needs(job):
                    backup.before(job, pre)  # on disk before the write leaves
                headers = self._write_headers[st.job.type].copy()
                if known is not None:
                    headers["If-Match"] = self._dialect.if_match(known)
                if self._journal is not None and identity is not None and journaled != (known, id(pre)):
                    # The intent is on record before the write leaves: a crash from here on
                    # is settled on resume from what the intent says.
                    await self._journal.intent(identity, job, known, pre)
                    journaled = (known, id(pre))
                st.attempts += 1
                answer, token = await self._request(st, "PATCH", headers, body)
            if isinstance(answer, TransportError):
                verdict = classify_transport(answer)
                st.last_error = str(answer)
                if not answer.sent:
                    st.connect_failures += 1
            else:
                verdict = classify_status(answer.status)
            if verdict is Verdict.DONE:
                assert isinstance(answer, Response)
                etag = self._dialect.receipt_etag(answer.json())
                if etag is not None:
                    self._remember(job, etag)
                if backup is not None:
                    backup.after(job, etag)
                return self._succeeded(job, st.started, st.request_id, answer.status, etag, st)
            if verdict is Verdict.CONFLICT:
                assert isinstance(answer, Response)
                if pinned:
                    return self._failure(
                        st,
                        "conflict",
                        f"etag {job.etag} is stale ({answer.message()})",
                        answer.status,
                    )
                if st.conflicts >= self.config.max_conflicts:
                    return self._failure(
                        st,
                        "conflict",
                        f"still conflicting after {st.conflicts} rebases",
                        answer.status,
                    )
                st.conflicts += 1
                self.stats.conflicts_rebased += 1
                self._etags.pop(job.key, None)
                read_for = "rebase"
                continue
            if verdict is Verdict.THROTTLED:
                assert isinstance(answer, Response)
                st.attempts -= 1  # a 429 is the gateway's refusal, not an attempt at the write
                st.throttled += 1
                self.stats.throttled += 1
                if st.throttled > MAX_THROTTLED:
                    return self._failure(st, "exhausted", "throttled (429) too many times", 429)
                self._pause(self._throttle_delay(answer, st.throttled))
                continue
            if verdict is Verdict.UNAUTHORIZED:
                st.attempts -= 1
                await self._on_unauthorized(token)
                continue
            if verdict is Verdict.PERMANENT:
                assert isinstance(answer, Response)
                return self._failure(st, "http", answer.message(), answer.status)
            # Transient: back off, and settle the write's fate first if it may have landed.
            if isinstance(answer, Response):
                st.last_error = f"HTTP {answer.status}: {answer.message()}"
            if verdict is Verdict.UNKNOWN:
                read_for = "settle"
            if st.attempts >= self.config.max_attempts:
                return await self._give_up(st, pre, read_for == "settle")
            self.stats.retries += 1
            log.debug(
                "job.retry", id=job.id, line=job.line, attempt=st.attempts, error=st.last_error
            )
            await asyncio.sleep(self._backoff(st.attempts))

    async def _give_up(self, st: _Attempt, pre: dict[str, Any] | None, unknown: bool) -> Outcome:
        """Out of attempts. If the last write's fate is unknown, look once more."""
        message = f"gave up after {st.attempts} attempts; last: {st.last_error}"
        if st.connect_failures == st.attempts:
            self.systemic = f"the endpoint is unreachable: {st.last_error}"
            self.stop(self.systemic)
        if unknown:
            current = await self._read(st)
            if not isinstance(current, Outcome):
                if verify.landed(st.job.patch, current, pre) is verify.Landed.YES:
                    return self._landed(st, current, recovered=True)
                message += " (the entity shows the write did not land)"
            else:
                message += " (whether the last write landed is unknown)"
        return self._failure(st, "exhausted", message)

    def _landed(self, st: _Attempt, current: dict[str, Any], *, recovered: bool) -> Outcome:
        etag = current.get("etag")
        if isinstance(etag, int):
            self._remember(st.job, etag)
        if self._backup is not None:
            self._backup.after(st.job, etag if isinstance(etag, int) else None)
        log.debug("job.recovered", id=st.job.id, line=st.job.line, etag=etag)
        return self._finish(st, True, status=200, etag=etag, recovered=recovered)

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

    async def _transient(self, st: _Attempt, answer: Response | TransportError, token: str, classify: Callable[[int], Verdict] = classify_status) -> Verdict:
        """Note a 429 (pausing every worker) or renew the token after a 401; the verdict."""
        if isinstance(answer, TransportError):
            st.last_error = str(answer)
            return classify_transport(answer)
        verdict = classify(answer.status)
        if verdict is Verdict.THROTTLED:
            st.throttled += 1
            self.stats.throttled += 1
            if st.throttled > MAX_THROTTLED:
                raise _GiveUp(self._failure(st, "exhausted", "throttled (429) too many times", 429))
            self._pause(self._throttle_delay(answer, st.throttled))
        elif verdict is Verdict.UNAUTHORIZED:
            await self._on_unauthorized(token)
        elif verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN):
            st.last_error = f"HTTP {answer.status}: {answer.message()}"
        return verdict

    async def _find(self, st: _Attempt, value: Any) -> list[str] | Outcome:
        """Ids of the entities whose create key equals ``value`` (the list API's filter)."""
        query = "limit=2&property=" + quote(f"{self.config.create_key}=={value}", safe="")
        url = self._dialect.collection_url(st.job, query)
        tries = 0
        while True:
            answer, token = await self._request(st, "GET", self._read_headers[st.job.type].copy(), url=url)
            self.stats.reads += 1
            try:
                verdict = await self._transient(st, answer, token, classify_read)
            except _GiveUp as give_up:
                return give_up.outcome
            if verdict is Verdict.DONE:
                assert isinstance(answer, Response)
                body = answer.json()
                results = body.get("results") if isinstance(body, dict) else None
                if not isinstance(results, list):
                    return self._failure(st, "http", "the list API answered no results", answer.status)
                return [r["id"] for r in results if isinstance(r, dict) and isinstance(r.get("id"), str)]
            if verdict is Verdict.PERMANENT:
                assert isinstance(answer, Response)
                return self._failure(st, "http", answer.message(), answer.status)
            if verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN):
                tries += 1
                if tries >= self.config.max_attempts:
                    return self._failure(st, "exhausted", f"looking the entity up failed: {st.last_error}")
                await asyncio.sleep(self._backoff(tries))

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
            answer, token = await self._request(
                st, "POST", self._write_headers[st.job.type].copy(), body, url=self._dialect.collection_url(job)
            )
            try:
                verdict = await self._transient(st, answer, token)
            except _GiveUp as give_up:
                return give_up.outcome
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
            self.stats.retries += 1
            await asyncio.sleep(self._backoff(st.attempts))

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
            answer, token = await self._request(st, "DELETE", self._read_headers[st.job.type].copy())
            try:
                verdict = await self._transient(st, answer, token)
            except _GiveUp as give_up:
                return give_up.outcome
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
            self.stats.retries += 1
            await asyncio.sleep(self._backoff(st.attempts))

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
