"""Pre-images from list pages: the collections a run's jobs name, listed ahead of them.

A job that needs its entity's state (a patch that is not idempotent or is written
whole, a delete, a restore, a plan, ``--skip-noop``, ``--backup``, ``--guard always``;
a create's key look-up) reads it with one GET. The list API gives the same state, etag
included, a page of up to ``--page-size`` entities at a time (API notes §1: ``results``,
``total``, ``_links.next``). ``--prefetch``:

- ``get``: one read per entity (no listing);
- ``list``: every collection the jobs name is listed;
- ``auto``: a collection is listed when its pages are fewer than the entities of it the
  jobs name (``Demand``, counted from the input up to that number; from the first
  window when the input is a pipe). The first job's collection's ``total`` is on the
  run's first request (the preflight): deciding costs no request. Another collection's
  first page is read to learn its total, when at least two of its entities are named.

The listing runs beside the jobs, through the run's gateway (its pace and retries). A
job of a collection being listed waits for the listing to end, then takes its entity
from the ``Snapshot``; one that is not there (created since, or the listing failed) is
read with a GET. Jobs of other collections, and jobs that need no state, run
meanwhile. Waiting for the whole listing is what keeps a run at one request per job (an
entity read before its page comes is read twice); a listing that brings no page for
``stall_for`` seconds (a page that hangs, 5xx or 429 answers retried for long) is ended
there, and its waiting jobs read their entities.
Exactly-once rests on If-Match as ever: a pre-image from a page carries its etag, so a
change made since the page was read is a conflict, rebased with a fresh read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import orjson
import structlog
from yarl import URL

from bulkpatch import entities, lifecycle, paging
from bulkpatch.api import DpsDialect
from bulkpatch.config import Mode, PrefetchMode
from bulkpatch.errors import BulkpatchError
from bulkpatch.gateway import Gateway, Halted
from bulkpatch.jobs import BadLine, Job
from bulkpatch.repeat import Given
from bulkpatch.snapshot import Row, Snapshot
from bulkpatch.source import JobStream
from bulkpatch.summary import RunStats

if TYPE_CHECKING:
    from bulkpatch.perform import Performer

log = structlog.get_logger()

# (entity, offer type as an entity's lane key has it: "" for untyped kinds)
Collection = tuple[str, str]
# A sandbox holds at most 10,000 entities of a kind (API notes §1): no collection has
# more pages than this at a page size of ``n``, so no count need go further.
MAX_ENTITIES: Final = 10_000
# A pipe's first window is what comes before its writer pauses this long (seconds): a
# writer that waits for answers must not wait for a window it will never fill.
PIPE_PATIENCE_S: Final = 0.5
# A listing that brings no page for this long (seconds) is given up: a job waits no
# longer for it. Longer than a 429's usual pause; ``stall_for`` lengthens it for a slow
# fixed rate, at which a page may wait its turn behind every worker's request.
STALL_S: Final = 15.0


def collection_of(job: Job) -> Collection:
    return job.key[0], job.key[1]


def probed(first: Job | None) -> Collection:
    """The collection the preflight lists: the first job's, else the default kind's."""
    if first is None:
        entity = entities.DEFAULT_ENTITY
        return entity, entities.lane_type(entity, entities.DEFAULT_OFFER_TYPE)
    return collection_of(first)


def needs_state(job: Job, mode: Mode, *, backup: bool) -> bool:
    """Whether ``job`` reads its entity (or looks its create key up) before writing."""
    if mode.plan or job.create is not None or job.delete or job.restore is not None:
        return True
    if mode.skip_noop or backup or (mode.guard == "always" and job.etag is None):
        return True
    found = entities.KINDS.get(job.entity)
    if found is not None and (found.update == "whole-object" or found.marker):
        return True
    return job.idempotent is not True


@dataclass(slots=True)
class Demand:
    """The entities the jobs name per collection (those that need state), each count
    stopping at ``cap``; a job of each collection (its headers are the listing's)."""

    cap: int
    ids: dict[Collection, set[str]] = field(default_factory=dict)
    creates: Counter[Collection] = field(default_factory=Counter)
    first: dict[Collection, Job] = field(default_factory=dict)
    # A sample's counts stand for this many times as many jobs (a job file's first
    # window, for the whole file).
    scale: float = 1.0

    def add(self, job: Job) -> None:
        where = collection_of(job)
        self.first.setdefault(where, job)
        if job.create is not None:
            self.creates[where] += self.count(where) < self.cap
            return
        named = self.ids.setdefault(where, set())
        if len(named) + self.creates[where] < self.cap:
            named.add(job.id)

    def count(self, where: Collection) -> int:
        counted = len(self.ids.get(where, ())) + self.creates[where]
        return counted if self.scale == 1.0 else min(self.cap, round(counted * self.scale))

    @property
    def full(self) -> bool:
        """Every collection seen is counted to its cap: reading on changes nothing."""
        return bool(self.first) and all(self.count(c) >= self.cap for c in self.first)


async def count_demand(
    items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine],
    needs: Callable[[Job], bool],
    cap: int,
) -> Demand:
    """``Demand`` of ``items``, read until every collection is counted to ``cap``."""
    demand = Demand(cap)
    if isinstance(items, AsyncIterable):
        async for item in items:
            if isinstance(item, Job) and needs(item):
                demand.add(item)
                if demand.full:
                    break
    else:
        for item in items:
            if isinstance(item, Job) and needs(item):
                demand.add(item)
    return demand


def lines_in(path: Path) -> int:
    """The number of lines of a file: a count of its newlines, at the speed of a copy."""
    count, last = 0, b"\n"
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            count, last = count + chunk.count(b"\n"), chunk[-1:]
    return count + (last != b"\n")


class PrefetchFailed(BulkpatchError):
    """A page of a listing could not be read: its jobs read their entities one by one."""


def _give_up(exc: Halted | Given, url: URL, first: bool) -> NoReturn:
    raise PrefetchFailed(f"GET {url.path}: {exc}")


@dataclass(frozen=True, slots=True)
class Listing:
    """What a listing needs beyond its collection: the run's endpoint, page size and
    create key, and the headers of its collection's reads."""

    endpoint: str
    page_size: int
    create_key: str
    headers: Mapping[Collection, Mapping[str, str]]  # by collection
    stall_s: float = STALL_S  # no page for this long ends the listing (``stall_for``)


class Prefetch:
    """The run's listings and the snapshot they fill (module docstring)."""

    def __init__(
        self, snapshot: Snapshot, gateway: Gateway, stats: RunStats, listing: Listing
    ) -> None:
        self.snapshot = snapshot
        self.gateway = gateway
        self.stats = stats
        self.listing = listing
        self.on = True  # off once the server is suspected of ignoring If-Match
        # A plan writes nothing: an entity's later job (past the window) finds it as
        # listed, as a GET would, instead of reading it again.
        self.keep = False
        self._ends: dict[Collection, asyncio.Event] = {}
        self._complete: set[Collection] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, where: Collection, demand: int | None) -> None:
        """List ``where`` beside the jobs; with ``demand``, only on while its pages are
        fewer than that (decided on its first page's ``total``)."""
        self._ends[where] = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._list(where, demand)))

    async def stop(self) -> None:
        """End the listings still going, and let the snapshot go."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.snapshot.close()

    async def take(self, job: Job) -> dict[str, Any] | None:
        """The entity as listed (once), after its collection's listing ended; None when
        it is not listed (or no longer to be taken from the listing)."""
        end = self._ends.get(collection_of(job)) if self.on else None
        if end is None:
            return None
        await end.wait()
        return self.snapshot.take("\x1f".join(job.key), keep=self.keep) if self.on else None

    def written(self, job: Job) -> None:
        """A write of ``job``'s entity is leaving: its listed state is stale from now."""
        end = self._ends.get(collection_of(job))
        if end is not None:
            self.snapshot.written("\x1f".join(job.key), listing=not end.is_set())

    async def find(self, job: Job, value: Any) -> list[str] | None:
        """Ids of the listed entities whose create key is ``value``; None unless the
        whole collection was listed (then a look-up must ask the API)."""
        where = collection_of(job)
        end = self._ends.get(where)
        if end is None:
            return None
        await end.wait()
        if where not in self._complete:
            return None
        return self.snapshot.find("\x1f".join(where), value)

    async def _list(self, where: Collection, demand: int | None) -> None:
        entity, offer_type = where
        listing = self.listing
        url = paging.first_url(
            listing.endpoint, entity, offer_type or None, (), None, listing.page_size
        )
        seen: set[str] = set()
        try:
            async for page in self._pages(where, url):
                self.stats.list_pages += 1
                self.snapshot.put("\x1f".join(where), self._rows(where, page["results"]))
                _going_somewhere(page, seen)
                if demand is not None and not _worth_it(page, demand):
                    log.info(
                        "prefetch.stopped",
                        collection=entity,
                        detail="fewer entities named than pages",
                    )
                    return
                demand = None  # decided: on to the end
            self._complete.add(where)
        except (PrefetchFailed, paging.PagingError) as exc:
            log.warning("prefetch.failed", collection=entity, detail=str(exc))
        finally:
            self._ends[where].set()

    async def _pages(self, where: Collection, url: URL) -> AsyncIterator[dict[str, Any]]:
        """``where``'s pages from ``url``; ``PrefetchFailed`` once none came for
        ``stall_s`` (the page in flight is abandoned: it is a read, nothing is lost)."""
        listing = self.listing
        following = paging.pages(
            self.gateway, listing.headers[where], url, listing.endpoint, _give_up
        )
        async with contextlib.aclosing(following) as pages:
            while True:
                try:
                    page = await asyncio.wait_for(anext(pages), listing.stall_s)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise PrefetchFailed(f"no page for {listing.stall_s:.0f} s") from None
                yield page

    def _rows(self, where: Collection, results: list[Any]) -> Iterable[Row]:
        """The page's entries worth keeping: each with a string id and an integer etag
        (any other goes out as no If-Match, or one the run cannot count on), and of
        ``where``'s kind (a server that ignores the shared path's filter lists the
        other's: a GET of one is refused, ``preimage.fetch``)."""
        entity, lane_type = where
        for doc in results:
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
                continue
            if type(doc.get("etag")) is not int or entities.other_kind(entity, doc) is not None:
                continue
            key = lifecycle.key_of(self.listing.create_key, doc)
            create_key = None if key is None else orjson.dumps(key)
            yield (
                "\x1f".join((entity, lane_type, doc["id"])),
                orjson.dumps(doc),
                create_key,
                doc["id"],
            )


def _going_somewhere(page: dict[str, Any], seen: set[str]) -> None:
    """Add the page's ids to ``seen``. ``PrefetchFailed`` when the page links a next one
    yet shows no entity not listed before, or more entities are listed than a sandbox
    holds: a cursor that leads nowhere (each page naming a fresh one) would otherwise be
    followed for ever, and the jobs wait for the listing's end."""
    before = len(seen)
    seen.update(d["id"] for d in page["results"] if isinstance(d, dict) and isinstance(d.get("id"), str))
    if not paging.next_href(page):
        return
    if len(seen) == before:
        raise PrefetchFailed(
            f"a page shows no entity not listed before ({before} listed) and links a next "
            "one: the server's cursor leads nowhere"
        )
    if len(seen) > 2 * MAX_ENTITIES:
        raise PrefetchFailed(f"over {2 * MAX_ENTITIES} entities listed: more than a sandbox holds")


def _worth_it(page: dict[str, Any], demand: int) -> bool:
    """Whether the rest of a listing costs fewer requests than reading ``demand``
    entities one by one, judged on its first page (the server's own page size)."""
    total, shown = page.get("total"), len(page["results"])
    if not isinstance(total, int) or not paging.next_href(page):
        return True  # no total, or no page after this: nothing more to decide
    return pages_of(total, shown) - 1 < demand


def stall_for(rate: float, auto_rate: bool, concurrency: int) -> float:
    """How long a listing may bring no page (seconds): ``STALL_S``, or at a fixed rate
    (requests/s) the time twice as many requests as there are workers take."""
    if auto_rate or rate <= 0:
        return STALL_S
    return max(STALL_S, 2 * concurrency / rate)


def pages_of(total: int, page_size: int) -> int:
    """The pages ``total`` entities take at ``page_size`` a page (at least one)."""
    return max(1, math.ceil(total / max(1, page_size)))


def cap_for(page_size: int) -> int:
    """How far ``Demand`` counts: one past the most pages a collection can have."""
    return pages_of(MAX_ENTITIES, page_size) + 1


def chosen(
    mode: PrefetchMode, demand: Demand, known: Mapping[Collection, int], page_size: int
) -> dict[Collection, int | None]:
    """The collections to list, each with the demand that decides on its first page
    (None: listed to the end). ``known``: totals the preflight read. A kind whose list
    entries are not whole entities (``entities.listed_whole``) is never listed: a part
    of an entity is no pre-image (settling an unknown outcome on it can send the write
    again; a backup of it restores fields away) and may lack the create key."""
    out: dict[Collection, int | None] = {}
    for where in demand.first:
        named = demand.count(where)
        if not entities.listed_whole(where[0]):
            continue
        if mode == "list":
            out[where] = None
        elif where in known:
            if pages_of(known[where], page_size) < named:
                out[where] = None
        elif named >= 2:
            out[where] = named
    return out


def usable(mode: PrefetchMode, dialect: object, *, if_match_ignored: bool) -> bool:
    """Whether a run may list at all: DPS only (``RunConfig`` refuses ``list`` with
    xcore), and not against a server that ignores If-Match (a listed etag could not
    guard the write)."""
    return mode != "get" and isinstance(dialect, DpsDialect) and not if_match_ignored


async def begin(
    p: Performer,
    items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine],
    *,
    journal: Path | None,
    totals: Mapping[Collection, int],
    backup: bool,
    runs: Callable[[Job], bool] | None = None,
) -> Prefetch | None:
    """The run's prefetch, its listings started; None when it lists nothing (``get``,
    not DPS, If-Match ignored, or no collection worth listing under ``auto``).
    ``journal``: the journal's file (the snapshot's home), if the run keeps one;
    ``totals``: collection totals the preflight read; ``runs``: whether this process
    runs a job (its shard's, not done by an earlier run): the others are not counted."""
    config = p.config
    if p.gateway is None or not usable(
        config.prefetch, p.dialect, if_match_ignored=p.if_match_ignored
    ):
        return None
    needs = functools.partial(needs_state, mode=config.mode, backup=backup)
    if runs is not None:
        needs = functools.partial(_both, runs, needs)
    demand = await _demand(items, needs, cap_for(config.page_size), config.capacity.held)
    choice = {} if demand is None else chosen(config.prefetch, demand, totals, config.page_size)
    if demand is None or not choice:
        return None
    headers = {
        where: p.headers_for(job, write=False)
        if job.entity in p.slow_kinds
        else p.read_headers[job.type]
        for where, job in demand.first.items()
        if where in choice
    }
    stall_s = stall_for(config.rate, config.auto_rate, config.capacity.concurrency)
    listing = Listing(config.endpoint, config.page_size, config.create_key, headers, stall_s)
    prefetch = Prefetch(Snapshot(journal), p.gateway, p.stats, listing)
    prefetch.keep = config.plan
    for where, decide in choice.items():
        log.info(
            "prefetch.listing",
            collection=where[0],
            type=where[1] or None,
            named=demand.count(where),
        )
        prefetch.start(where, decide)
    return prefetch


def _both(first: Callable[[Job], bool], second: Callable[[Job], bool], job: Job) -> bool:
    return first(job) and second(job)


async def _demand(
    items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine],
    needs: Callable[[Job], bool],
    cap: int,
    window: int,
) -> Demand | None:
    """The input's ``Demand``: a list (a rollback's) whole; a pipe's first ``window``
    items (ending early when its writer pauses, ``PIPE_PATIENCE_S``); a job file's first
    ``window`` items, scaled to its length; None for any other input (it cannot be read
    ahead)."""
    if isinstance(items, list):
        return await count_demand(items, needs, cap)
    if not isinstance(items, JobStream):
        return None
    # A job file too is counted from its first window, read ahead (the run takes those
    # items as read), and the count scaled to the file's lines: parsing the file a
    # second time cost a run of replace jobs 7 % more instructions per job.
    ahead = await items.read_ahead(window, PIPE_PATIENCE_S)
    demand = await count_demand(ahead, needs, cap)
    if items.name != "-" and len(ahead) >= window:
        demand.scale = max(1.0, lines_in(Path(items.name)) / len(ahead))
    return demand
