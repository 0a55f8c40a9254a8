"""Where a job reads its entity: a list page's entry, or a GET through the gateway.

Every read of one entity comes through here. A pre-image (before a job's first write,
a plan's, a restore's, a delete's) may come from the run's prefetch (``pre``): the
entity as a list page showed it, etag included, so the write's If-Match still guards
against a change made since. Every other read is live (``fetch``): a rebase after a
conflict, the settling read after an unknown outcome, the last look, a failed test
told; never the snapshot, which cannot say what a write did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkpatch import entities
from bulkpatch.errors import ErrorKind
from bulkpatch.outcomes import Outcome
from bulkpatch.repeat import Given

if TYPE_CHECKING:
    from bulkpatch.perform import Attempt, Performer


async def fetch(p: Performer, st: Attempt) -> dict[str, Any] | Given:
    """GET the entity: its document, or why it could not be had (a 404, a 4xx, out of
    attempts; an entity of the other kind on a shared path is an ``input`` failure)."""
    assert p.gateway is not None
    job = st.job
    p.stats.reads += 1
    try:
        headers = (
            p.headers_for(job, write=False)
            if job.entity in p.slow_kinds
            else p.read_headers[job.type]
        )
        answer = await p.gateway.read(st, p.dialect.entity_url(job), headers, "reading the entity")
    except Given as exc:
        if exc.status == 404:
            return Given(ErrorKind.HTTP, "the entity does not exist (404)", 404)
        return exc
    doc = p.dialect.document(answer.json())
    if doc is None:
        return Given(ErrorKind.HTTP, "the entity read back has no etag", answer.status)
    if (other := entities.other_kind(job.entity, doc)) is not None:
        return Given(
            ErrorKind.INPUT,
            f"{job.id} is one of the {other}, not of the {job.entity} (both live on "
            f"/{entities.collection(job.entity)}): name entity {other!r}",
        )
    return doc


async def pre(p: Performer, st: Attempt) -> dict[str, Any] | Given:
    """The entity before the job's first write: as listed when the run prefetched it
    and its kind's list entries are whole entities (``entities.listed_whole``: a
    summary would make a whole-object write drop what it lacks, a backup record miss
    it, a ``test`` or a ``copy`` misjudge it), else a GET. ``st.pre`` says which."""
    prefetch = p.prefetch
    if prefetch is not None and entities.listed_whole(st.job.entity):
        listed = await prefetch.take(st.job)
        if listed is not None:
            st.pre = "list"
            return listed
    st.pre = "get"
    return await fetch(p, st)


async def read(p: Performer, st: Attempt) -> dict[str, Any] | Outcome:
    """The entity's pre-image (``pre``): its document, or the outcome that ends the job."""
    current = await pre(p, st)
    if isinstance(current, Given):
        return p.failure(st, current.kind, str(current), current.status)
    return current
